"""`gopher_repetition`: the Gopher repetition rules (Rae et al. 2021, table A1).

Duplicate line and paragraph fractions (by count and by characters), the character fraction of the most
frequent 2-, 3- and 4-gram, and the character fraction covered by repeated 5- to 10-grams. Words are
whitespace words; in CJK documents characters (see `text_rules.words`), so Chinese text is not seen as a
few giant "words".
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import register_stage
from curation.stages import text_rules as tr
from curation.stages.rule_stage import RuleStage


@register_stage("gopher_repetition")
class GopherRepetition(RuleStage):
    """Gopher repetition rules: duplicate lines/paragraphs, top n-grams, duplicated n-grams."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(RuleStage.Config):
        dup_line_frac: float | None = 0.3
        dup_para_frac: float | None = 0.3
        dup_line_char_frac: float | None = 0.2
        dup_para_char_frac: float | None = 0.2
        top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
        dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
        cjk_chars_per_word: int = 2

        def __post_init__(self) -> None:
            # YAML gives lists; keep the config hashable and comparable.
            object.__setattr__(self, "top_n_grams", tuple(tuple(x) for x in self.top_n_grams))
            object.__setattr__(self, "dup_n_grams", tuple(tuple(x) for x in self.dup_n_grams))

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        c = self.config
        rows, text, cjk = selected.rows, selected.text, selected.cjk
        n_chars = np.maximum(pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64), 1)
        never = np.zeros(len(rows), dtype=bool)
        checks: list[tuple[str, np.ndarray]] = []

        for name, tokens, frac, char_frac in (
            ("para", tr.non_blank(tr.paragraphs(text)), c.dup_para_frac, c.dup_para_char_frac),
            ("line", tr.non_blank(tr.lines(text)), c.dup_line_frac, c.dup_line_char_frac),
        ):
            duplicate = tr.duplicate_elements(tokens)
            n_dup = tokens.per_doc_count(duplicate)
            dup_chars = tokens.per_doc_sum(np.where(duplicate, tokens.lengths(), 0))
            checks.append((f"gopher_repetition:dup_{name}_frac",
                           tr.safe_ratio(n_dup, tokens.counts) > frac if frac is not None else never))
            checks.append((f"gopher_repetition:dup_{name}_char_frac",
                           dup_chars / n_chars > char_frac if char_frac is not None else never))

        words = tr.words(text, cjk)
        # A CJK "word" here is one character; a word n-gram spans about `cjk_chars_per_word` times as
        # many characters, so CJK documents are measured on n-grams of n * cjk_chars_per_word characters.
        scale = c.cjk_chars_per_word
        sizes = {n for n, _ in c.top_n_grams + c.dup_n_grams}
        wanted = (sizes if (~cjk).any() else set()) | ({n * scale for n in sizes} if cjk.any() else set())
        stats = tr.ngram_stats(words, words.ids(), words.lengths(), sorted(wanted), joiner=(~cjk).astype(np.int64))

        def pick(n: int, field: str) -> np.ndarray:
            plain = getattr(stats[n], field) if n in stats else np.zeros(len(rows))
            scaled = getattr(stats[n * scale], field) if n * scale in stats else np.zeros(len(rows))
            return np.where(cjk, scaled, plain)

        for n, frac in c.top_n_grams:
            checks.append((f"gopher_repetition:top_{n}_gram", pick(n, "top_chars") / n_chars > frac))
        for n, frac in c.dup_n_grams:
            checks.append((f"gopher_repetition:dup_{n}_gram", pick(n, "duplicate_chars") / n_chars > frac))
        return tr.apply_reasons(batch, rows, tr.first_reason(checks, len(rows)))
