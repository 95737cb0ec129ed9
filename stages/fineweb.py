"""`fineweb`: the FineWeb quality rules (Penedo et al. 2024), document level, after the reference
implementation (datatrove `pipeline/filters/fineweb_quality_filter.py`, FineWebQualityFilter).

Drops a document when: the fraction of lines ending in terminal punctuation is at most `line_punct_thr`;
the fraction of lines of at most `short_line_length` characters is at least `short_line_thr`; the
characters of duplicated lines over the document's characters other than newlines are at least
`char_duplicates_ratio`; newlines per word are over `new_line_ratio`.

Deliberate differences from the reference, each kept for a stated reason:
- Lines are the non-blank lines. The reference counts blank lines too, as short lines without
  punctuation, so text whose paragraphs are separated by blank lines fails for its layout alone
  (datatrove keeps 13.9% of the WikiText articles here, this stage 97.5%: bench/results/rules.json).
- Terminal punctuation is the reference's `. ' " ! ?` plus the CJK sentence ends and closing quotes
  (`text_rules.TERMINAL_PUNCTUATION`), and a CJK line is short at `short_line_length_cjk` characters:
  a CJK line says as much in about a third of the characters.
- Words for the newline ratio approximate NLTK's Treebank tokens (the reference's `word_tokenize`) with
  one regular expression (`TREEBANK_TOKEN`), since NLTK's models cannot be downloaded by a worker; CJK
  documents count characters as words (`text_rules.words`).
- An empty document (no non-blank line) is dropped as `fineweb:empty` (the reference divides by zero).

Our extension, off by default: `reference_page_copies` (as gopher_repetition's).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import register_stage
from curation.stages import text_rules as tr
from curation.stages.rule_stage import RuleStage


@register_stage("fineweb")
class FineWeb(RuleStage):
    """FineWeb rules: line punctuation ratio, short-line ratio, duplicate-line characters, list-like newlines."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(RuleStage.Config):
        line_punct_thr: float | None = 0.12
        line_punct_exclude_zero: bool = False
        short_line_thr: float | None = 0.67
        short_line_length: int = 30
        short_line_length_cjk: int = 10
        char_duplicates_ratio: float | None = 0.01
        new_line_ratio: float | None = 0.3
        terminal_punctuation: tuple[str, ...] = tr.TERMINAL_PUNCTUATION
        # Our extension (1: the reference): on a reference page (text_rules.reference_pages), how many copies
        # of a line are not duplicated characters, as gopher_repetition's option of the same name. A reference
        # page states each member's description twice (summary, details), and the reference's 1% of the
        # characters in duplicated lines drops it for that alone: with 2, 3 of the tuning half's reference
        # pages of bench/bench_filter_chain.py that gopher_repetition's option lets through stay, every junk
        # kind is dropped as before. fineweb runs after c4, which removes the signature lines a reference
        # page is recognised by, so a page an earlier stage recognised is read from the `reference_page`
        # column (rule_stage.REFERENCE_PAGE); it is recognised from this stage's text only where none did.
        reference_page_copies: int = 1

        def __post_init__(self) -> None:
            if self.reference_page_copies < 1:
                raise ValueError(f"reference_page_copies must be 1 or more, not {self.reference_page_copies}")

    def reads_reference_pages(self) -> bool:
        return self.config.reference_page_copies != 1

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        c = self.config
        rows, text, cjk = selected.rows, selected.text, selected.cjk
        copies = None
        if c.reference_page_copies != 1:
            batch, pages = self.reference_pages(batch, selected)
            copies = np.where(pages, c.reference_page_copies, 1)
        counts = tr.fineweb_counts(text, cjk, c.terminal_punctuation, c.short_line_length, c.short_line_length_cjk,
                                   copies=copies)
        newlines = counts.newlines
        # The reference divides by the characters other than newlines (len(text.replace("\n", ""))).
        n_chars = np.maximum(counts.chars - newlines, 1)
        n_lines = counts.lines
        punct_ratio = tr.safe_ratio(counts.punct_lines, n_lines)
        short_ratio = tr.safe_ratio(counts.short_lines, n_lines)
        dup_chars = counts.dup_chars
        words = counts.words

        never = np.zeros(len(rows), dtype=bool)
        low_punct = never
        if c.line_punct_thr is not None:
            low_punct = (punct_ratio <= c.line_punct_thr) & ~((punct_ratio == 0) & c.line_punct_exclude_zero)
        checks = [
            ("fineweb:empty", n_lines == 0),
            ("fineweb:line_punct_ratio", low_punct),
            ("fineweb:short_line_ratio", short_ratio >= c.short_line_thr if c.short_line_thr is not None else never),
            ("fineweb:char_dup_ratio",
             dup_chars / n_chars >= c.char_duplicates_ratio if c.char_duplicates_ratio is not None else never),
            ("fineweb:list_ratio",
             tr.safe_ratio(newlines, words) > c.new_line_ratio if c.new_line_ratio is not None else never),
        ]
        return tr.apply_reasons(batch, rows, tr.first_reason(checks, len(rows)))
