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
        # False (the paper): every line is measured. True: lines of technical text that are not sentences
        # (API signatures, command synopses, code lines: text_rules.TECHNICAL_LINE) are left out of the
        # measures, since reference pages repeat them by design (a method summary, then its details).
        skip_technical_lines: bool = False
        # Our extension (1: the paper): on a reference page (text_rules.reference_pages: 3 or more API
        # signature or declaration lines), how many copies of a paragraph, line or n-gram are not
        # repetition. A reference page states each member twice, in its summary table and in its details
        # (a Javadoc page repeats every description: 18% and 45% of the characters of two such pages of the
        # tuning half of bench/bench_filter_chain.py are in repeated 5-grams), so 2 counts a repetition
        # from its third copy there. Other pages are measured as the paper says. The pages recognised are
        # recorded in the `reference_page` column for the stages after it (rule_stage.REFERENCE_PAGE).
        reference_page_copies: int = 1

        def __post_init__(self) -> None:
            # YAML gives lists; keep the config hashable and comparable.
            object.__setattr__(self, "top_n_grams", tuple(tuple(x) for x in self.top_n_grams))
            object.__setattr__(self, "dup_n_grams", tuple(tuple(x) for x in self.dup_n_grams))
            if self.reference_page_copies < 1:
                raise ValueError(f"reference_page_copies must be 1 or more, not {self.reference_page_copies}")

    def reads_reference_pages(self) -> bool:
        return self.config.reference_page_copies != 1

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        c = self.config
        rows = selected.rows
        # A CJK "word" here is one character; a word n-gram spans about `cjk_chars_per_word` times as
        # many characters, so CJK documents are measured on n-grams of n * cjk_chars_per_word characters.
        sizes = sorted({n for n, _ in c.top_n_grams + c.dup_n_grams})
        text = tr.without_technical_lines(selected.text) if c.skip_technical_lines else selected.text
        copies = None
        if c.reference_page_copies != 1:
            batch, pages = self.reference_pages(batch, selected)
            copies = np.where(pages, c.reference_page_copies, 1)
        stats = tr.repetition_stats(text, selected.cjk, sizes, c.cjk_chars_per_word, copies=copies)
        n_chars = np.maximum(stats.n_chars, 1)
        never = np.zeros(len(rows), dtype=bool)

        def over(value: np.ndarray, limit: float | None) -> np.ndarray:
            return value > limit if limit is not None else never

        checks = [
            ("gopher_repetition:dup_para_frac", over(tr.safe_ratio(stats.dup_paragraphs, stats.paragraphs), c.dup_para_frac)),
            ("gopher_repetition:dup_para_char_frac", over(stats.dup_paragraph_chars / n_chars, c.dup_para_char_frac)),
            ("gopher_repetition:dup_line_frac", over(tr.safe_ratio(stats.dup_lines, stats.lines), c.dup_line_frac)),
            ("gopher_repetition:dup_line_char_frac", over(stats.dup_line_chars / n_chars, c.dup_line_char_frac)),
        ]
        checks += [(f"gopher_repetition:top_{n}_gram", over(stats.top_chars[n] / n_chars, frac)) for n, frac in c.top_n_grams]
        checks += [(f"gopher_repetition:dup_{n}_gram", over(stats.duplicate_chars[n] / n_chars, frac))
                   for n, frac in c.dup_n_grams]
        return tr.apply_reasons(batch, rows, tr.first_reason(checks, len(rows)))
