"""Packing documents of token ids into fixed-length sequences: two strategies as small pure functions.

Every document becomes one *piece list*: its tokens followed by the separator token, so a trainer sees
where a document ends and the boundary is a token it learns to predict. A packed sequence is
`seq_len` tokens plus its *segments*: (position in the sequence, length, document, offset of the
segment's first token inside that document's tokens). From the segments a trainer builds `cu_seqlens`
or `position_ids` and masks attention across documents; every token traces back to its document.

- `concat` (GPT style): documents joined into one stream, cut every `seq_len` tokens. Nothing is
  padded and no token is lost; a document that straddles a cut is split (the rate is in stats). What
  is left after the last full sequence is returned as the *tail*, carried into the next packing call
  (the executor packs shard tails together at the end of a source).
- `bestfit`: documents are kept whole where they fit. Open bins (at most `window`) take each
  document by best fit (the bin whose free space is smallest but enough); when no bin fits and the
  window is full, the fullest bin is closed and padded. A document longer than `seq_len` is cut into
  `seq_len` chunks first (whole sequences) and its rest packed like a short document. Padding is the
  trade-off: with a window of 64 on web text it is a few percent (measured in bench/bench_pack.py).

Invariants (tests/test_pack.py): every input token (and one separator per document) is stored exactly
once, in order within its document; segments of a sequence are contiguous and cover it up to the
padding; no segment crosses a sequence.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("concat", "bestfit")


@dataclass
class Packed:
    """Sequences (n, seq_len) and their segments, one row per segment, in sequence order."""

    tokens: np.ndarray  # (n_sequences, seq_len)
    seg_seq: np.ndarray  # int64: sequence of each segment
    seg_pos: np.ndarray  # int32: first position in the sequence
    seg_len: np.ndarray  # int32
    seg_doc: np.ndarray  # int64: index of the document in the input order
    seg_doc_offset: np.ndarray  # int64: offset of the segment's first token in the document (separator included)
    padding: int = 0  # pad tokens written
    split_docs: int = 0  # documents cut across sequences

    @property
    def sequences(self) -> int:
        return int(self.tokens.shape[0])


def with_separators(doc_tokens: list[np.ndarray] | tuple[np.ndarray, np.ndarray], sep_id: int,
                    dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    """(flat tokens, offsets) of the documents, each followed by `sep_id`. Input: a list of arrays, or
    already flat (values, offsets) as an Arrow list column gives them."""
    if isinstance(doc_tokens, tuple):
        values, offsets = doc_tokens
    else:
        offsets = np.zeros(len(doc_tokens) + 1, np.int64)
        np.cumsum([len(d) for d in doc_tokens], out=offsets[1:])
        values = np.concatenate(doc_tokens) if doc_tokens else np.zeros(0, dtype)
    offsets = np.asarray(offsets, np.int64)
    offsets = offsets - offsets[0]  # values hold the documents' tokens from the first one's on
    # a separator after each document, where the next one starts; numpy's insert places them through a
    # mask of one byte a token: 12x faster than scattering the tokens through an int64 index of their
    # new places, with a quarter of the memory (2 M tokens: 2.6 against 31.7 ms, 10 against 41 MB)
    flat = np.insert(values.astype(dtype, copy=False), offsets[1:], np.array(sep_id, dtype))
    return flat, offsets + np.arange(len(offsets), dtype=np.int64)


def pack_concat(flat: np.ndarray, offsets: np.ndarray, seq_len: int, doc_base: int = 0,
                first_doc_offset: int = 0) -> tuple[Packed, int]:
    """Cut the stream into full sequences. Returns (packed, start of the tail in `flat`): the tokens
    after the last full sequence, which the caller carries on. `doc_base` numbers the documents;
    `first_doc_offset` is how far into its document the stream's first token is (for a carried tail)."""
    total = len(flat)
    n_seq = total // seq_len
    used = n_seq * seq_len
    tokens = flat[:used].reshape(n_seq, seq_len)
    # Segment boundaries: every document start and every sequence start, inside the used part.
    cuts = np.union1d(offsets[:-1][offsets[:-1] < used], np.arange(0, used, seq_len, dtype=np.int64))
    ends = np.append(cuts[1:], used)
    doc = np.searchsorted(offsets, cuts, side="right") - 1
    start_in_doc = cuts - offsets[doc]
    start_in_doc = np.where(doc == 0, start_in_doc + first_doc_offset, start_in_doc)
    starts, last = offsets[:-1], offsets[1:] - 1
    split = int(np.count_nonzero((starts < used) & (starts // seq_len != last // seq_len)))
    packed = Packed(tokens, (cuts // seq_len).astype(np.int64), (cuts % seq_len).astype(np.int32),
                    (ends - cuts).astype(np.int32), doc.astype(np.int64) + doc_base, start_in_doc.astype(np.int64),
                    padding=0, split_docs=split)
    return packed, used


def pad_last(flat: np.ndarray, offsets: np.ndarray, seq_len: int, pad_id: int, doc_base: int = 0,
             first_doc_offset: int = 0) -> Packed:
    """The end of a `concat` source: the last tokens (under seq_len) as one sequence padded with `pad_id`."""
    if len(flat) == 0:
        return empty(seq_len, flat.dtype)
    if len(flat) > seq_len:
        raise ValueError("pad_last takes less than one sequence of tokens")
    row = np.full(seq_len, pad_id, flat.dtype)
    row[:len(flat)] = flat
    starts = offsets[:-1]
    doc = np.arange(len(starts), dtype=np.int64)
    start_in_doc = np.zeros(len(starts), np.int64)
    start_in_doc[0] = first_doc_offset
    return Packed(row[None, :], np.zeros(len(starts), np.int64), starts.astype(np.int32),
                  np.diff(offsets).astype(np.int32), doc + doc_base, start_in_doc, padding=seq_len - len(flat))


def empty(seq_len: int, dtype) -> Packed:
    z = np.zeros(0, np.int64)
    return Packed(np.zeros((0, seq_len), dtype), z, z.astype(np.int32), z.astype(np.int32), z, z)


def pack_bestfit(flat: np.ndarray, offsets: np.ndarray, seq_len: int, pad_id: int, window: int = 64,
                 doc_base: int = 0) -> Packed:
    """Best-fit packing within `window` open bins; see the module docstring."""
    if window < 1:
        raise ValueError("window must be at least 1")
    # pieces: (doc, offset in doc, length); long documents first give whole sequences
    whole: list[tuple[int, int]] = []  # (doc, offset) of full-sequence chunks
    pieces: list[tuple[int, int, int]] = []
    split = 0
    lengths = np.diff(offsets)
    for doc, length in enumerate(lengths.tolist()):
        full = length // seq_len
        if full and length > seq_len:
            split += 1
        for k in range(full):
            whole.append((doc, k * seq_len))
        rest = length - full * seq_len
        if rest:
            pieces.append((doc, full * seq_len, rest))

    bins: list[list[tuple[int, int, int]]] = []  # closed bins, in closing order
    open_bins: list[list[tuple[int, int, int]]] = []
    free: list[int] = []  # free space of open bins
    order: list[tuple[int, int]] = []  # sorted (free, serial) for best fit lookup
    serial_of: list[int] = []
    next_serial = 0

    def close(i: int) -> None:
        bins.append(open_bins.pop(i))
        order.remove((free.pop(i), serial_of.pop(i)))

    for doc, off, length in pieces:
        # the open bin with the smallest free space >= length (ties: the oldest)
        k = bisect.bisect_left(order, (length, -1))
        if k < len(order):
            space, serial = order.pop(k)
            i = serial_of.index(serial)
            open_bins[i].append((doc, off, length))
            free[i] = space - length
            bisect.insort(order, (free[i], serial))
            continue
        if len(open_bins) >= window:
            close(free.index(min(free)))  # the fullest bin leaves the window
        open_bins.append([(doc, off, length)])
        free.append(seq_len - length)
        serial_of.append(next_serial)
        bisect.insort(order, (seq_len - length, next_serial))
        next_serial += 1
    bins.extend(open_bins)

    n_seq = len(whole) + len(bins)
    tokens = np.full((n_seq, seq_len), pad_id, flat.dtype)
    seg_seq, seg_pos, seg_len, seg_doc, seg_off = [], [], [], [], []
    for s, (doc, off) in enumerate(whole):
        start = offsets[doc] + off
        tokens[s] = flat[start:start + seq_len]
        seg_seq.append(s), seg_pos.append(0), seg_len.append(seq_len), seg_doc.append(doc), seg_off.append(off)
    padding = 0
    for b, content in enumerate(bins):
        s = len(whole) + b
        pos = 0
        for doc, off, length in content:
            start = offsets[doc] + off
            tokens[s, pos:pos + length] = flat[start:start + length]
            seg_seq.append(s), seg_pos.append(pos), seg_len.append(length), seg_doc.append(doc), seg_off.append(off)
            pos += length
        padding += seq_len - pos
    return Packed(tokens, np.asarray(seg_seq, np.int64), np.asarray(seg_pos, np.int32), np.asarray(seg_len, np.int32),
                  np.asarray(seg_doc, np.int64) + doc_base, np.asarray(seg_off, np.int64), padding=padding, split_docs=split)


def concat_packed(parts: list[Packed], seq_len: int, dtype) -> Packed:
    parts = [p for p in parts if p.sequences]
    if not parts:
        return empty(seq_len, dtype)
    base = np.cumsum([0] + [p.sequences for p in parts[:-1]])
    return Packed(np.concatenate([p.tokens for p in parts]),
                  np.concatenate([p.seg_seq + b for p, b in zip(parts, base)]),
                  np.concatenate([p.seg_pos for p in parts]), np.concatenate([p.seg_len for p in parts]),
                  np.concatenate([p.seg_doc for p in parts]), np.concatenate([p.seg_doc_offset for p in parts]),
                  padding=sum(p.padding for p in parts), split_docs=sum(p.split_docs for p in parts))
