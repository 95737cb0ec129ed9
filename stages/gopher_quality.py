"""`gopher_quality`: the Gopher quality rules (Rae et al. 2021, appendix A1), on whitespace words.

Defaults are the published ones. In CJK documents (see `text_rules.words`) every Han/Kana character is
a word: the word-count bounds apply to characters, the mean-word-length rule is skipped (one character
says nothing about word length), and the stop-word rule uses common Chinese/Japanese function characters.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import register_stage
from curation.stages import text_rules as tr
from curation.stages.rule_stage import RuleStage

STOP_WORDS_EN = ("the", "be", "to", "of", "and", "that", "have", "with")
# The most frequent function characters of Chinese and Japanese text.
STOP_WORDS_CJK = ("的", "了", "是", "在", "和", "有", "不", "这", "也", "就", "都", "而", "及", "与",
                  "の", "に", "は", "を", "た", "が", "で", "て", "と", "し")
BULLETS = tr.BULLETS


@register_stage("gopher_quality")
class GopherQuality(RuleStage):
    """Gopher quality rules: word count and length, symbols, bullets, ellipses, alphabetic words, stop words."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(RuleStage.Config):
        min_doc_words: int | None = 50
        max_doc_words: int | None = 100_000
        min_avg_word_length: float | None = 3
        max_avg_word_length: float | None = 10
        max_symbol_word_ratio: float | None = 0.1
        max_bullet_lines_ratio: float | None = 0.9
        max_ellipsis_lines_ratio: float | None = 0.3
        min_alpha_words_ratio: float | None = 0.8
        min_stop_words: int | None = 2
        stop_words: tuple[str, ...] = STOP_WORDS_EN
        stop_words_cjk: tuple[str, ...] = STOP_WORDS_CJK
        # False (the paper): every line is measured. True: lines of technical text that are not sentences
        # (API signatures, command synopses, code lines: text_rules.TECHNICAL_LINE) are left out of every
        # measure but the document's length, so a code block inside prose does not fail the alphabetic-word
        # ratio; a page of code only is left with no words to measure and still goes (alpha_words).
        skip_technical_lines: bool = False

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        c = self.config
        rows, text, cjk = selected.rows, selected.text, selected.cjk

        # Counted in one compiled pass over the text where the kernels are built (text_rules.quality_counts).
        counts = tr.quality_counts(text, cjk, c.stop_words, c.stop_words_cjk)
        doc_words = counts.words
        if c.skip_technical_lines:
            counts = tr.quality_counts(tr.without_technical_lines(text), cjk, c.stop_words, c.stop_words_cjk)
        n_words = counts.words
        mean_length = tr.safe_ratio(counts.word_chars, n_words)
        symbols = counts.symbols
        n_lines = np.maximum(counts.lines, 1)
        bullet_lines, ellipsis_lines, alpha_words = counts.bullet_lines, counts.ellipsis_lines, counts.alpha_words
        # Case-sensitive, as the rule is usually implemented: shouting text ("THE", "AND") has no stop words.
        stop_words = counts.stop_words

        never = np.zeros(len(rows), dtype=bool)
        checks = [
            ("gopher_quality:min_doc_words", doc_words < c.min_doc_words if c.min_doc_words is not None else never),
            ("gopher_quality:max_doc_words", doc_words > c.max_doc_words if c.max_doc_words is not None else never),
            ("gopher_quality:mean_word_length",
             ~cjk & ((mean_length < c.min_avg_word_length) if c.min_avg_word_length is not None else never)
             | ~cjk & ((mean_length > c.max_avg_word_length) if c.max_avg_word_length is not None else never)),
            ("gopher_quality:symbol_word_ratio",
             tr.safe_ratio(symbols, n_words) > c.max_symbol_word_ratio if c.max_symbol_word_ratio is not None else never),
            ("gopher_quality:bullet_lines",
             bullet_lines / n_lines > c.max_bullet_lines_ratio if c.max_bullet_lines_ratio is not None else never),
            ("gopher_quality:ellipsis_lines",
             ellipsis_lines / n_lines > c.max_ellipsis_lines_ratio if c.max_ellipsis_lines_ratio is not None else never),
            ("gopher_quality:alpha_words",
             tr.safe_ratio(alpha_words, n_words) < c.min_alpha_words_ratio if c.min_alpha_words_ratio is not None else never),
            ("gopher_quality:stop_words", stop_words < c.min_stop_words if c.min_stop_words is not None else never),
        ]
        return tr.apply_reasons(batch, rows, tr.first_reason(checks, len(rows)))
