"""Vectorised text primitives for the rule stages: pure functions over Arrow arrays, one row per document.

Everything works on a whole batch at once: words, lines and n-grams are flattened into one Arrow array
with the index of their document (`parent`), dictionary-encoded to integer ids, and counted with numpy.
No per-document Python loop runs, which is what makes the rule stages several times faster than
per-document implementations.

Words follow the published definitions: whitespace-separated tokens (Gopher, C4). For languages written
without spaces (Chinese, Japanese) every Han, Hiragana or Katakana character counts as a word, and runs
of other characters split on white space as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CJK_CHAR = r"([\p{Han}\p{Hiragana}\p{Katakana}])"
CJK_LANGUAGES = ("zh", "ja")
# Sentence-final punctuation, Latin and CJK (full-width and closing quotes after a full stop).
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "。", "！", "？", "”", "」", "』", "．", "｡")
ELLIPSIS = ("...", "…")


@dataclass
class Tokens:
    """The tokens (words or lines) of a batch of documents, flattened."""

    values: pa.Array  # string, all tokens of all documents in order
    parent: np.ndarray  # int64, document index of each token
    counts: np.ndarray  # int64, tokens per document
    n_docs: int

    @classmethod
    def from_lists(cls, lists: pa.ListArray) -> "Tokens":
        if isinstance(lists, pa.ChunkedArray):
            lists = lists.combine_chunks()
        counts = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(lists)
        parent = np.repeat(np.arange(len(lists), dtype=np.int64), counts)
        return cls(values, parent, counts, len(lists))

    def per_doc_sum(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.parent, weights=weights, minlength=self.n_docs)

    def per_doc_count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.parent[mask], minlength=self.n_docs).astype(np.int64)

    def lengths(self) -> np.ndarray:
        return pc.utf8_length(self.values).to_numpy(zero_copy_only=False).astype(np.int64)

    def ids(self) -> np.ndarray:
        """Integer id per token, equal for equal strings within the batch."""
        encoded = pc.dictionary_encode(self.values)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def to_numpy_bool(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def cjk_mask(langs: pa.Array | None, n: int, cjk_languages=CJK_LANGUAGES) -> np.ndarray:
    if langs is None:
        return np.zeros(n, dtype=bool)
    return to_numpy_bool(pc.is_in(langs, value_set=pa.array(list(cjk_languages), pa.string())))


def words(text: pa.Array, cjk: np.ndarray) -> Tokens:
    """Whitespace words; in CJK documents each Han/Kana character is a word of its own."""
    if cjk.any():
        spaced = pc.replace_substring_regex(text, CJK_CHAR, r" \1 ")
        text = pc.if_else(pa.array(cjk), spaced, text)
    # Split keeps an empty token for leading/trailing white space (and gives [""] for ""): trim first,
    # then drop empty tokens.
    tokens = Tokens.from_lists(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text)))
    empty = pc.equal(pc.binary_length(tokens.values), 0)
    if pc.any(empty).as_py():
        keep = pc.invert(empty)
        parent = tokens.parent[to_numpy_bool(keep)]
        tokens = Tokens(pc.filter(tokens.values, keep), parent,
                        np.bincount(parent, minlength=tokens.n_docs).astype(np.int64), tokens.n_docs)
    return tokens


def lines(text: pa.Array) -> Tokens:
    """Lines as `str.split("\\n")` gives them."""
    return Tokens.from_lists(pc.split_pattern(text, "\n"))


def non_blank(tokens: Tokens) -> Tokens:
    """The tokens that hold more than white space (blank lines are not "duplicate lines")."""
    keep = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(tokens.values)), 0)
    keep_np = to_numpy_bool(keep)
    parent = tokens.parent[keep_np]
    return Tokens(pc.filter(tokens.values, keep), parent, np.bincount(parent, minlength=tokens.n_docs).astype(np.int64),
                  tokens.n_docs)


def paragraphs(text: pa.Array) -> Tokens:
    """Paragraphs: separated by two or more newlines, after trimming the document."""
    return Tokens.from_lists(pc.split_pattern_regex(pc.utf8_trim_whitespace(text), r"\n{2,}"))


def ends_with_any(values: pa.Array, suffixes: tuple[str, ...]) -> np.ndarray:
    result = np.zeros(len(values), dtype=bool)
    for suffix in suffixes:
        result |= to_numpy_bool(pc.ends_with(values, suffix))
    return result


def starts_with_any(values: pa.Array, prefixes: tuple[str, ...]) -> np.ndarray:
    result = np.zeros(len(values), dtype=bool)
    for prefix in prefixes:
        result |= to_numpy_bool(pc.starts_with(values, prefix))
    return result


def duplicate_elements(tokens: Tokens) -> np.ndarray:
    """True for each token equal to an earlier token of the same document (the first copy is not a duplicate)."""
    if len(tokens.values) == 0:
        return np.zeros(0, dtype=bool)
    ids = tokens.ids()
    key = tokens.parent * (int(ids.max()) + 1) + ids
    _, first = np.unique(key, return_index=True)
    duplicate = np.ones(len(key), dtype=bool)
    duplicate[first] = False
    return duplicate


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 0.0)


_MIX = np.uint64(0x9E3779B97F4A7C15)
_MUL = np.uint64(0xBF58476D1CE4E5B9)
_DOC = np.uint64(0xD6E8FEB86659FD93)


@dataclass
class NgramStats:
    top_chars: np.ndarray  # per document: characters of its most frequent n-gram times its count
    duplicate_chars: np.ndarray  # per document: characters of words covered by repeated n-grams


def ngram_stats(word_tokens: Tokens, word_ids: np.ndarray, word_lengths: np.ndarray,
                sizes: list[int], joiner: np.ndarray | None = None) -> dict[int, NgramStats]:
    """Gopher's n-gram repetition measures for every document of a batch and every n in `sizes`.

    An n-gram's characters are its words' characters plus the n-1 spaces between them, as in
    `" ".join(words)` (`joiner`, per document: 1, or 0 for CJK text, which has no spaces). Only an
    n-gram that occurs at least twice counts as a top n-gram: one seen once is not repetition. Duplicate characters are those of words covered by an occurrence of an n-gram
    that appeared earlier in the document (the first occurrence is not counted), each word once.
    Hashes grow one word at a time (64-bit, so collisions are negligible), and counting uses a hash
    table (`pandas.factorize`) rather than a sort.
    """
    import pandas as pd

    n_docs, n_words = word_tokens.n_docs, len(word_ids)
    parent = word_tokens.parent
    cumulative = np.concatenate([[0], np.cumsum(word_lengths)])
    results: dict[int, NgramStats] = {}
    u = word_ids.astype(np.uint64)
    h = np.zeros(n_words, dtype=np.uint64)
    for n in range(1, max(sizes) + 1):
        m = n_words - n + 1
        if m <= 0:
            break
        with np.errstate(over="ignore"):
            h = (h[:m] ^ (u[n - 1:n - 1 + m] + np.uint64(n) * _MIX)) * _MUL
            h ^= h >> np.uint64(29)
        if n not in sizes:
            continue
        starts = np.flatnonzero(parent[:m] == parent[n - 1:n - 1 + m])  # n-gram within one document
        top, dup = np.zeros(n_docs), np.zeros(n_docs)
        if len(starts):
            docs = parent[starts]
            with np.errstate(over="ignore"):
                key = h[starts] ^ (docs.astype(np.uint64) * _DOC)
            codes, _ = pd.factorize(key)
            counts = np.bincount(codes)
            spaces = (n - 1) * (joiner[docs] if joiner is not None else 1)
            chars = cumulative[starts + n] - cumulative[starts] + spaces
            # Codes are numbered in order of first appearance: a new maximum is a first occurrence.
            seen_before = np.concatenate([[-1], np.maximum.accumulate(codes)[:-1]])
            repeated = codes <= seen_before
            # `docs` is sorted: the top value of each document by reduceat over its run.
            value = np.where(counts[codes] > 1, counts[codes] * chars, 0)
            run_starts = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
            top[docs[run_starts]] = np.maximum.reduceat(value, run_starts)
            if repeated.any():
                begin = starts[repeated]
                cover = np.bincount(begin, minlength=n_words + 1) - np.bincount(begin + n, minlength=n_words + 1)
                covered = np.cumsum(cover[:n_words]) > 0
                dup = np.bincount(parent[covered], weights=word_lengths[covered], minlength=n_docs)
        results[n] = NgramStats(top, dup)
    for n in sizes:
        results.setdefault(n, NgramStats(np.zeros(n_docs), np.zeros(n_docs)))
    return results


# --- wiring rules to a batch ---------------------------------------------------------------------


def rows_to_check(batch: pa.RecordBatch, languages: tuple[str, ...] | None) -> np.ndarray:
    """Indices of the live rows a rule stage looks at (those in `languages`, when given)."""
    from curation.stage import live_mask

    mask = to_numpy_bool(live_mask(batch))
    if languages is not None and "lang" in batch.schema.names:
        mask &= to_numpy_bool(pc.is_in(batch.column("lang"), value_set=pa.array(list(languages), pa.string())))
    return np.flatnonzero(mask)


@dataclass
class Selected:
    """The rows a rule stage checks, with their text and whether each is CJK."""

    rows: np.ndarray
    text: pa.Array
    cjk: np.ndarray


def select_rows(batch: pa.RecordBatch, languages: tuple[str, ...] | None,
                cjk_languages: tuple[str, ...]) -> Selected | None:
    """The live rows in `languages` (None when there are none), their text and CJK flags."""
    from curation.stage import TEXT

    rows = rows_to_check(batch, languages)
    if len(rows) == 0:
        return None
    take = pa.array(rows)
    langs = pc.take(batch.column("lang"), take) if "lang" in batch.schema.names else None
    return Selected(rows, pc.take(batch.column(TEXT), take), cjk_mask(langs, len(rows), cjk_languages))


def first_reason(checks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per row, the name of the first failing check, or None."""
    reasons = np.full(n, None, dtype=object)
    for name, failed in checks:
        reasons[(reasons == None) & failed] = name  # noqa: E711  (element-wise on an object array)
    return reasons


def apply_reasons(batch: pa.RecordBatch, rows: np.ndarray, reasons: np.ndarray) -> pa.RecordBatch:
    from curation.stage import drop_rows

    full = np.full(batch.num_rows, None, dtype=object)
    full[rows] = reasons
    array = pa.array(full.tolist(), pa.string())
    return drop_rows(batch, pc.is_valid(array), array)

