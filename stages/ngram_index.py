"""Normalised tokens, 64-bit n-gram hashes and a sorted-array n-gram index, vectorised over Arrow arrays.

Tokens (`tokenize`): each Han, Hiragana or Katakana character is a token of its own (no segmenter is
needed, and Chinese has no spaces to split on); any other run of letters, digits and combining marks is
a word. Everything else (punctuation, symbols, white space, line breaks) only separates tokens, so
re-wrapped lines, changed punctuation and spacing give the same tokens. Each token is then NFKC-folded
(full-width `Ａ１` to `a1`, ligatures, circled digits) and lower-cased. Token boundaries are found on the
original text, so every token keeps its code-point span there (the `cut` policy needs it).

Hashes: a token's hash is a polynomial hash of its UTF-8 bytes, and an n-gram's hash a polynomial hash
of its token hashes, both modulo 2^64 and both computed for every position at once from prefix sums
(the odd base has an inverse modulo 2^64, so a window is (S[i+n] - S[i]) * base^-i), then mixed with
the splitmix64 finaliser. Any n is one subtraction per position, which is what lets a document be
checked against several n-gram lengths cheaply. Collisions: with about 10^7 index entries and 10^9
document n-grams, 2^-64 per pair gives an expected 5e-4 false matches over the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.regex_spans import split_on_matches

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
TOKEN = rf"[{_CJK}]|(?:[^{_CJK}\P{{L}}]|[\p{{N}}\p{{M}}])+"
CJK_TOKEN = rf"^[{_CJK}]$"

_U = np.uint64
_BYTE_BASE = 0x100000001B3  # odd (the FNV prime)
_TOKEN_BASE = 0x9E3779B97F4A7C15  # odd
_LENGTH_SALT = _U(0xD6E8FEB86659FD93)
MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise (uint64 arithmetic wraps)."""
    x = x ^ (x >> _U(30))
    x = x * _U(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U(27))
    x = x * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def _powers(base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """base^i and base^-i modulo 2^64 for i in 0..n."""
    up = np.full(n + 1, base, dtype=np.uint64)
    up[0] = 1
    down = np.full(n + 1, pow(base, -1, 1 << 64), dtype=np.uint64)
    down[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(up, dtype=np.uint64), np.cumprod(down, dtype=np.uint64)


class PrefixHash:
    """Window hashes over a sequence of uint64 values: hash(i, n) for any start i and length n."""

    def __init__(self, values: np.ndarray, base: int) -> None:
        self.up, self.down = _powers(base, len(values))
        self.prefix = np.zeros(len(values) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(values * self.up[:-1], out=self.prefix[1:])

    def window(self, start: np.ndarray, n: int | np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            raw = (self.prefix[start + n] - self.prefix[start]) * self.down[start]
            return mix64(raw ^ (np.asarray(n, dtype=np.uint64) * _LENGTH_SALT))


def string_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes (equal strings, equal hashes, in any process)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, dtype=np.uint64)
    values = values.cast(pa.large_binary()) if not pa.types.is_large_binary(values.type) else values
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + len(values) + 1]
    data = values.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0]:offsets[-1]].astype(np.uint64) + _U(1)  # + 1: a zero byte still counts
    rel = offsets - offsets[0]
    return PrefixHash(data, _BYTE_BASE).window(rel[:-1], rel[1:] - rel[:-1])


@dataclass
class TokenStream:
    """The tokens of some texts, flattened: one entry per token."""

    hashes: np.ndarray  # uint64: hash of the normalised token
    parent: np.ndarray  # int64: the text each token is in
    start: np.ndarray  # int64: code-point span of the token in its (original) text
    end: np.ndarray
    cjk: np.ndarray  # bool: a Han/Kana character
    normalised: pa.Array  # string: the normalised tokens (stop-word checks)
    row_offsets: np.ndarray  # int64, n_texts + 1: text r's tokens are row_offsets[r]:row_offsets[r+1]

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def doc_end(self) -> np.ndarray:
        """Per token, the index one past the last token of its text."""
        return self.row_offsets[1:][self.parent]

    def windows(self, n: int) -> np.ndarray:
        """Start positions of every window of n tokens that stays inside its text."""
        starts = np.arange(len(self.hashes), dtype=np.int64)
        return starts[starts + n <= self.doc_end] if len(starts) else starts


SEPARATORS = r"[^\p{L}\p{N}\p{M}]+"
CJK_CHAR = rf"[{_CJK}]"


def tokenize(text: pa.Array, offsets: bool = False) -> TokenStream:
    """Tokens of every text (`text` already `regex_spans.sanitize`d), normalised and hashed.

    With `offsets`, each token's code-point span in its text too (`start`, `end`; zeros otherwise). The
    two ways give the same tokens; the one without offsets splits at separators instead of cutting out
    every token, about twice as fast (2.5 vs 1.3 s on 3 MB of the mixed shared text).
    """
    if offsets:
        pieces = split_on_matches(text, TOKEN)
        index = pieces.matches()
        raw = pc.take(pieces.values, pa.array(index))
        parent = pieces.parent[index]
        start = pieces.start[index]
        end = start + pieces.length[index]
        n_rows = pieces.n_rows
    else:
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        n_rows = len(text)
        cjk_rows = np.flatnonzero(pc.fill_null(pc.match_substring_regex(text, CJK_CHAR), False)
                                  .to_numpy(zero_copy_only=False))
        if len(cjk_rows):  # every Han/Kana character a token of its own: spaces around them
            spaced = pc.replace_substring_regex(pc.take(text, pa.array(cjk_rows)), CJK_CHAR, r" \0 ")
            position = np.full(n_rows, -1, dtype=np.int64)
            position[cjk_rows] = np.arange(len(cjk_rows))
            text = pc.if_else(pa.array(position >= 0), pc.take(spaced, pa.array(np.maximum(position, 0))), text)
        lists = pc.split_pattern_regex(text, SEPARATORS)
        counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(lists)
        nonempty = pc.greater(pc.binary_length(values), 0)
        raw = pc.filter(values, nonempty)
        parent = np.repeat(np.arange(n_rows, dtype=np.int64), counts)[nonempty.to_numpy(zero_copy_only=False)]
        start = end = np.zeros(len(raw), dtype=np.int64)
    normalised = pc.utf8_lower(pc.utf8_normalize(raw, "NFKC"))
    encoded = pc.dictionary_encode(normalised)
    hashes = string_hashes(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
    counts = np.bincount(parent, minlength=n_rows)
    row_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    cjk = pc.fill_null(pc.match_substring_regex(raw, CJK_TOKEN), False).to_numpy(zero_copy_only=False)
    return TokenStream(hashes, parent, start, end, cjk, normalised, row_offsets)


@dataclass
class Hits:
    """n-gram matches between documents and indexed n-grams."""

    doc: np.ndarray  # int64: the text
    token: np.ndarray  # int64: first token of the matching window (index into the TokenStream)
    length: np.ndarray  # int64: window length in tokens
    entry: np.ndarray  # int64: index of the matching key in NgramIndex.keys


@dataclass
class NgramIndex:
    """Sorted n-gram hashes, each with the items (ints) it came from.

    `prefix_keys` holds the hash of the first `prefix_len` tokens of every key: a document's windows of
    that one length are checked first, and only where one is found are the longer windows hashed and
    looked up, so a document costs one sorted-array lookup per token whatever the number of lengths.
    """

    keys: np.ndarray  # uint64, sorted, unique
    item_offsets: np.ndarray  # int64, len(keys) + 1: key k's items are items[item_offsets[k]:item_offsets[k+1]]
    items: np.ndarray  # int64
    lengths: tuple[int, ...]  # the window lengths present among the keys
    prefix_len: int
    prefix_keys: np.ndarray  # uint64, sorted, unique

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.item_offsets.nbytes + self.items.nbytes + self.prefix_keys.nbytes

    @classmethod
    def build(cls, keys: np.ndarray, prefixes: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> "NgramIndex":
        """From one row per (n-gram, item): its hash, the hash of its first min(lengths) tokens, its length."""
        if not len(keys):
            empty = np.zeros(0, dtype=np.uint64)
            return cls(empty, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64), (), 0, empty)
        order = np.lexsort((items, keys))
        keys, items = keys[order], items[order]
        pair_new = np.ones(len(keys), dtype=bool)
        pair_new[1:] = (keys[1:] != keys[:-1]) | (items[1:] != items[:-1])
        keys, items = keys[pair_new], items[pair_new]
        unique, first = np.unique(keys, return_index=True)
        offsets = np.append(first, len(keys)).astype(np.int64)
        return cls(unique, offsets, items.astype(np.int64), tuple(sorted(set(lengths.tolist()))),
                   int(lengths.min()), np.unique(prefixes))

    def lookup(self, tokens: TokenStream) -> Hits:
        empty = np.zeros(0, dtype=np.int64)
        if not len(self.keys) or not len(tokens):
            return Hits(empty, empty, empty, empty)
        hasher = PrefixHash(tokens.hashes, _TOKEN_BASE)
        starts = tokens.windows(self.prefix_len)
        candidates = starts[_member(self.prefix_keys, hasher.window(starts, self.prefix_len))]
        found: list[tuple[np.ndarray, int, np.ndarray]] = []
        doc_end = tokens.doc_end
        for n in self.lengths:
            at = candidates[candidates + n <= doc_end[candidates]]
            if not len(at):
                continue
            hashes = hasher.window(at, n)
            position = np.searchsorted(self.keys, hashes)
            hit = self.keys[np.minimum(position, len(self.keys) - 1)] == hashes
            found.append((at[hit], n, position[hit]))
        if not found:
            return Hits(empty, empty, empty, empty)
        token = np.concatenate([f[0] for f in found])
        length = np.concatenate([np.full(len(f[0]), f[1], dtype=np.int64) for f in found])
        entry = np.concatenate([f[2] for f in found]).astype(np.int64)
        return Hits(tokens.parent[token], token, length, entry)

    def items_of(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each entry, its items: (entry position in `entries`, item), flattened."""
        counts = self.item_offsets[entries + 1] - self.item_offsets[entries]
        which = np.repeat(np.arange(len(entries), dtype=np.int64), counts)
        first = np.repeat(self.item_offsets[entries], counts)
        within = np.arange(len(which), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return which, self.items[first + within]


def _member(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    position = np.searchsorted(sorted_keys, values)
    return sorted_keys[np.minimum(position, len(sorted_keys) - 1)] == values


def token_hasher(tokens: TokenStream) -> PrefixHash:
    return PrefixHash(tokens.hashes, _TOKEN_BASE)
