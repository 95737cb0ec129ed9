"""Text normalisation for n-gram language models, shared by `curation train-lm` and the `quality`
stage so that a model is scored on text normalised exactly as it was trained (CCNet style).

Vectorised over an Arrow array with pyarrow.compute: lower-case, digits folded to 0, Unicode
punctuation mapped to ASCII (CJK full-width punctuation included) and split from words, accents kept (they carry meaning in
most languages), white space inside a line collapsed. Chinese and Japanese are split into characters
(each Han/Kana character a token), so a character n-gram model is trained and scored. A line is a
sentence for KenLM; empty lines are dropped.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

NORMALISATION_VERSION = 1

# (pattern, replacement) applied in order; RE2 syntax.
_PUNCTUATION = [
    ("[\u201c\u201d\u201e\u201f\u00ab\u00bb\u300c\u300d\u300e\u300f\uff02]", '"'),
    ("[\u2018\u2019\u201a\u201b\u2032\uff07]", "'"),
    ("[\u2010-\u2015\u2212\uff0d]", "-"),
    ("[\u3002\uff0e]", "."),
    ("[\uff0c\u3001]", ","),
    ("\uff1a", ":"),
    ("\uff1b", ";"),
    ("\uff01", "!"),
    ("\uff1f", "?"),
    ("[\uff08\u3010\u3014]", "("),
    ("[\uff09\u3011\u3015]", ")"),
    ("\u2026", "..."),
]
_CJK_CHAR = r"([\p{Han}\p{Hiragana}\p{Katakana}])"


def normalise(text: pa.Array, cjk: bool = False) -> pa.Array:
    """Normalised text, lines kept (one sentence per line for the language model)."""
    # KenLM's own symbols: lmplz --skip_symbols reads them as white space in training, so scoring does too
    # (WikiText-style corpora hold many literal <unk>).
    out = pc.replace_substring_regex(text, r"</?s>|<unk>", " ")
    out = pc.utf8_lower(out)
    out = pc.replace_substring_regex(out, r"\d", "0")
    for pattern, replacement in _PUNCTUATION:
        out = pc.replace_substring_regex(out, pattern, replacement)
    out = pc.replace_substring_regex(out, r"([.,!?;:\"()\[\]{}<>|/*=+#&%$@~^_`\\])", r" \1 ")  # tokens
    if cjk:
        out = pc.replace_substring_regex(out, _CJK_CHAR, r" \1 ")
    out = pc.replace_substring_regex(out, "[ \t\r\f\v\u00a0\u3000]+", " ")
    out = pc.replace_substring_regex(out, r" ?\n ?", "\n")
    out = pc.replace_substring_regex(out, r"\n+", "\n")
    return pc.utf8_trim(out, " \n")


def lines(normalised: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(every non-empty line of every document, document index of each line)."""
    split = pc.split_pattern(normalised, "\n")
    flat = split.flatten()
    parent = pc.list_parent_indices(split)
    nonempty = pc.not_equal(flat, "")
    return pc.filter(flat, nonempty), pc.filter(parent, nonempty)


def tokens(line_array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(every token of every line, line index of each token): KenLM's white-space tokens."""
    split = pc.split_pattern(line_array, " ")
    flat = split.flatten()
    parent = pc.list_parent_indices(split)
    nonempty = pc.not_equal(flat, "")
    return pc.filter(flat, nonempty), pc.filter(parent, nonempty)
