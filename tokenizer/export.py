"""Export packed shards for other trainers.

`megatron`: Megatron-LM's indexed dataset (`PREFIX.bin` / `PREFIX.idx`, the "MMIDIDX" layout that
`megatron.core.datasets.indexed_dataset.IndexedDataset` reads), one pair per source, one Megatron
sequence per document (its tokens and the separator, which Megatron's GPT dataset takes as the end of
document), with uint16 tokens where the vocabulary fits: Megatron's own preprocessing picks int32 for a
65,536 vocabulary (`vocab_size < 65500`) and doubles the bytes. Megatron packs and shuffles documents
itself, so documents are exported, not our sequences: every packed document comes out as exactly one
Megatron document, whole. A document that `concat` split between an input shard's last full sequence
and the source's `_tail` shard is joined again (the `_tail` metadata's `continues` names the shard it
came from); exported as two it would have been two documents, the first without its separator, which
Megatron would join to an unrelated document.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from curation.tokenizer.packed_folder import TAIL, load_summary
from curation.tokenizer.shards import ShardError, open_shard

INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4, np.dtype(np.uint32): 4}  # uint32 ids go as int32


def shard_documents(shard) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens of the shard's documents laid end to end, document lengths, document numbers in the
    shard), documents in order of first appearance, each document's segments in order of their offset;
    padding left out."""
    flat = shard.tokens.reshape(-1)
    seq_of_segment = np.repeat(np.arange(shard.sequences, dtype=np.int64), np.diff(shard.seg_ptr))
    starts = seq_of_segment * shard.meta["seq_len"] + shard.seg_pos
    doc = shard.seg_doc
    if not len(doc):
        return np.zeros(0, flat.dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    first_seen = np.full(int(doc.max()) + 1, len(doc), np.int64)
    np.minimum.at(first_seen, doc, np.arange(len(doc)))
    order = np.lexsort((shard.seg_doc_offset, first_seen[doc]))
    lengths = shard.seg_len[order].astype(np.int64)
    pieces = np.concatenate([flat[s:s + n] for s, n in zip(starts[order].tolist(), lengths.tolist())])
    doc_sorted = doc[order]
    first = np.concatenate([[True], doc_sorted[1:] != doc_sorted[:-1]])
    doc_lengths = np.add.reduceat(lengths, np.flatnonzero(first))
    return pieces, doc_lengths, doc_sorted[first].astype(np.int64)


def source_documents(folder: Path, shards: list[dict]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens, lengths) blocks of one source's documents, each document whole: a `concat` document
    continued in `_tail` is joined to its start in the shard it came from."""
    opened = {s["name"]: open_shard(folder, s["name"], expect_sha256=s["bin_sha256"]) for s in shards}
    tail = opened.pop(TAIL, None)
    continued: dict[str, int] = {}  # input shard -> the _tail document that finishes its last document
    tail_blocks: dict[int, np.ndarray] = {}
    tail_documents = (np.zeros(0, np.int64),) * 3
    if tail is not None:
        tail_documents = shard_documents(tail)
        pieces, lengths, numbers = tail_documents
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        tail_blocks = {int(n): pieces[bounds[i]:bounds[i + 1]] for i, n in enumerate(numbers.tolist())}
        first_offset = {}
        for doc, offset in zip(tail.seg_doc.tolist(), tail.seg_doc_offset.tolist()):
            first_offset[doc] = min(offset, first_offset.get(doc, offset))
        entries = tail.meta.get("continues")
        if entries is None or any(e.get("shard") is None for e in entries):
            if any(offset > 0 for offset in first_offset.values()):
                raise ShardError(f"{folder / TAIL}.json does not say which shard each continued document came from "
                                 "(written by an older curation): run `curation pack` again to export it")
            entries = []
        for entry in entries:
            if entry["shard"] not in opened or int(entry["doc"]) not in tail_blocks:
                raise ShardError(f"{folder / TAIL}.json: continued document {entry} names no packed shard or document")
            continued[entry["shard"]] = int(entry["doc"])
    for name, shard in opened.items():
        pieces, lengths, numbers = shard_documents(shard)
        if name in continued and len(lengths):
            doc = continued[name]
            rest = tail_blocks[doc]
            tail_id = tail.doc_ids[int(np.flatnonzero(tail.seg_doc == doc)[0])].as_py()
            last_id = shard.doc_ids[len(shard.seg_doc) - 1].as_py()
            starts_at = int(tail.seg_doc_offset[tail.seg_doc == doc].min())
            if shard.seg_doc[-1] != numbers[-1] or tail_id != last_id or starts_at != lengths[-1]:
                raise ShardError(f"{folder / TAIL}: document {tail_id!r} does not continue the last document of "
                                 f"{folder / name} ({last_id!r}, {lengths[-1]} tokens): the pack output is inconsistent")
            pieces = np.concatenate([pieces, rest])
            lengths = lengths.copy()
            lengths[-1] += len(rest)
        yield pieces, lengths
    if tail is not None:
        pieces, lengths, numbers = tail_documents
        keep = ~np.isin(numbers, np.fromiter(continued.values(), np.int64, len(continued)))
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        yield (np.concatenate([pieces[bounds[i]:bounds[i + 1]] for i in np.flatnonzero(keep).tolist()])
               if keep.any() else pieces[:0]), lengths[keep]


def write_megatron(prefix: str | Path, documents: list[tuple[np.ndarray, np.ndarray]], dtype: np.dtype) -> int:
    """Write PREFIX.bin and PREFIX.idx from (tokens, lengths) blocks; returns the number of documents."""
    prefix = Path(prefix)
    dtype = np.dtype(dtype)
    out_dtype = np.dtype(np.uint16) if dtype == np.uint16 else np.dtype(np.int32)
    tmp_bin, tmp_idx = Path(f"{prefix}.bin.tmp"), Path(f"{prefix}.idx.tmp")
    lengths_all = []
    with open(tmp_bin, "wb") as handle:
        for tokens, lengths in documents:
            handle.write(np.ascontiguousarray(tokens, out_dtype.newbyteorder("<")).tobytes())
            lengths_all.append(np.asarray(lengths, np.int64))
    lengths = np.concatenate(lengths_all) if lengths_all else np.zeros(0, np.int64)
    if len(lengths) and lengths.max() >= 2**31:
        raise ValueError(f"{prefix}: a document of {lengths.max()} tokens does not fit Megatron's int32 lengths")
    pointers = np.zeros(len(lengths), np.int64)
    if len(lengths):
        np.cumsum(lengths[:-1] * out_dtype.itemsize, out=pointers[1:])
    document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
    with open(tmp_idx, "wb") as handle:
        handle.write(INDEX_HEADER)
        handle.write(struct.pack("<Q", 1))
        handle.write(struct.pack("<B", DTYPE_CODES[out_dtype]))
        handle.write(struct.pack("<Q", len(lengths)))
        handle.write(struct.pack("<Q", len(document_indices)))
        handle.write(lengths.astype("<i4").tobytes(order="C"))
        handle.write(pointers.astype("<i8").tobytes(order="C"))
        handle.write(document_indices.astype("<i8").tobytes(order="C"))
    os.replace(tmp_bin, f"{prefix}.bin")
    os.replace(tmp_idx, f"{prefix}.idx")
    return int(len(lengths))


def export_megatron(packed_dir: str | Path, out: str | Path) -> dict[str, int]:
    """One PREFIX.bin/.idx per source of a `curation pack` output; returns {prefix: documents}."""
    packed_dir, out = Path(packed_dir), Path(out)
    summary = load_summary(packed_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    dtype = np.dtype(summary["dtype"])
    for source, entry in summary["sources"].items():
        written[str(out / source)] = write_megatron(out / source, source_documents(packed_dir / source, entry["shards"]),
                                                    dtype)
    return written
