"""Text normalisation for n-gram language models, shared by `curation train-lm` and the `quality`
stage so that a model is scored on text normalised exactly as it was trained (CCNet style).

Lower-case (the KenLM models; the classifier keeps the case); digits folded to 0; punctuation split from words (ASCII punctuation except the apostrophe
and the hyphen, which stay inside words, plus the common Unicode punctuation: quotes, dashes, CJK and
full-width marks); KenLM's own symbols `<s>`, `</s>`, `<unk>` removed (lmplz --skip_symbols reads
them as white space in training, so scoring does too: WikiText-style corpora hold many); accents kept.
Chinese and Japanese are split into characters (each Han/Kana character a token), so a character
n-gram model is trained and scored. A line is a sentence for KenLM; blank lines are dropped; runs of
white space are left to KenLM, which splits on them.

Speed matters here (the scoring budget is a fraction of KenLM's own time), so the ASCII work is done
on the UTF-8 bytes of the whole Arrow array at once with numpy lookup tables, and the regular
expressions run only on the documents that hold non-ASCII text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NORMALISATION_VERSION = 2

_DIGIT_TABLE = bytes.maketrans(b"123456789", b"000000000")
_PUNCT = b'.,!?;:"()[]{}<>|/*=+#&%$@~^_`\\'
_PUNCT_CHARS = [bytes([c]) for c in _PUNCT]
_IS_PUNCT = np.zeros(256, dtype=bool)
_IS_PUNCT[np.frombuffer(_PUNCT, dtype=np.uint8)] = True
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[np.frombuffer(b" \t\r\n\x0b\x0c", dtype=np.uint8)] = True
UNICODE_PUNCT = (r"([\x{00A1}-\x{00BF}\x{00D7}\x{00F7}\x{2010}-\x{205E}\x{3000}-\x{303F}\x{FF01}-\x{FF0F}"
                  r"\x{FF1A}-\x{FF20}\x{FF3B}-\x{FF40}\x{FF5B}-\x{FF65}])")
CJK_CHAR = r"([\p{Han}\p{Hiragana}\p{Katakana}])"


def _string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets relative to the data, UTF-8 bytes) of a string array, without copying the text."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if len(array) else np.zeros(0, np.uint8)
    return offsets - offsets[0], data


def _ascii_pass(array: pa.Array) -> pa.Array:
    """Digits folded and ASCII punctuation padded with spaces, on the bytes of the whole array:
    `bytes.translate` for the digits and one `bytes.replace` per punctuation character present (C loops
    over the buffer: three times faster than a numpy scatter, measured), offsets moved by numpy."""
    offsets, data = _string_buffers(array)
    if len(data) > 2**29 and len(array) > 1:  # int32 offsets below; halves keep them in range
        half = len(array) // 2
        return pa.concat_arrays([_ascii_pass(array.slice(0, half)), _ascii_pass(array.slice(half))])
    folded = data.tobytes().translate(_DIGIT_TABLE)
    punct_at = np.flatnonzero(_IS_PUNCT[np.frombuffer(folded, dtype=np.uint8)])
    if len(punct_at):
        for char in _PUNCT_CHARS:
            if char in folded:
                folded = folded.replace(char, b" " + char + b" ")
    # every punctuation byte before a string's start moves it two bytes on
    new_offsets = (offsets.astype(np.int64) + 2 * np.searchsorted(punct_at, offsets)).astype(np.int32)
    return pa.StringArray.from_buffers(len(array), pa.py_buffer(new_offsets), pa.py_buffer(folded), _validity(array))


def _validity(array: pa.Array) -> pa.Buffer | None:
    if array.null_count == 0:
        return None
    return pa.array(pc.is_valid(array).to_numpy(zero_copy_only=False)).buffers()[1]


def normalise(text: pa.Array, cjk: bool = False, lower: bool = True) -> pa.Array:
    """Normalised text, lines kept (one sentence per line for the language model). `lower=False` keeps
    the case (the quality classifier: shouting and odd capitals are signs it should see)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    out = pc.utf8_lower(text) if lower else text
    if len(out) and pc.any(pc.match_substring(out, "<")).as_py():
        out = pc.replace_substring_regex(out, r"</?s>|<unk>", " ")
    non_ascii = pc.invert(pc.string_is_ascii(out))
    if len(out) and pc.any(non_ascii).as_py():
        rows = pc.filter(out, non_ascii)
        rows = pc.replace_substring_regex(rows, UNICODE_PUNCT, r" \1 ")
        if cjk:
            rows = pc.replace_substring_regex(rows, CJK_CHAR, r" \1 ")
        out = pc.replace_with_mask(out, non_ascii, rows)
    return _ascii_pass(out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out)


def lines(normalised: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(every non-blank line of every document, document index of each line)."""
    split = pc.split_pattern(normalised, "\n")
    flat = split.flatten()
    parent = pc.list_parent_indices(split)
    keep = pc.invert(pc.or_(pc.equal(flat, ""), pc.utf8_is_space(flat)))
    return pc.filter(flat, keep), pc.filter(parent, keep)


def token_counts(line_array: pa.Array) -> np.ndarray:
    """White-space separated tokens per (non-blank) line, counted on the bytes."""
    if len(line_array) == 0:
        return np.zeros(0, np.int64)
    if isinstance(line_array, pa.ChunkedArray):
        line_array = line_array.combine_chunks()
    offsets, data = _string_buffers(line_array)
    space = _IS_SPACE[data]
    starts = ~space & np.concatenate([[True], space[:-1]])
    starts[offsets[:-1][offsets[:-1] < len(data)]] = ~space[offsets[:-1][offsets[:-1] < len(data)]]
    return np.add.reduceat(starts.astype(np.int64), offsets[:-1])


def tokens(line_array: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(every token of every line, line index of each token): KenLM's white-space tokens (split on ASCII
    white space only, as KenLM splits: a no-break space stays inside a token)."""
    split = pc.split_pattern_regex(line_array, r"[ \t\n\r\x0b\x0c]+")
    flat = split.flatten()
    parent = pc.list_parent_indices(split)
    nonempty = pc.not_equal(flat, "")
    return pc.filter(flat, nonempty), pc.filter(parent, nonempty)
