"""Export packed shards for other trainers.

`megatron`: Megatron-LM's indexed dataset (`PREFIX.bin` / `PREFIX.idx`, the "MMIDIDX" layout that
`megatron.core.datasets.indexed_dataset.IndexedDataset` reads), one pair per source, one Megatron
sequence per document (its tokens and the separator, which Megatron's GPT dataset takes as the end of
document), with uint16 tokens where the vocabulary fits: Megatron's own preprocessing picks int32 for a
65,536 vocabulary (`vocab_size < 65500`) and doubles the bytes. Megatron packs and shuffles documents
itself, so documents are exported, not our sequences. A document that `concat` split between a shard
and the source's `_tail` shard comes out as two documents (the same tokens, in order).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from curation.stages.pack import load_summary
from curation.tokenizer.shards import open_shard

INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4, np.dtype(np.uint32): 4}  # uint32 ids go as int32


def shard_documents(shard) -> tuple[np.ndarray, np.ndarray]:
    """(tokens of the shard's documents laid end to end, document lengths), documents in order of
    first appearance, each document's segments in order of their offset; padding left out."""
    flat = shard.tokens.reshape(-1)
    seq_of_segment = np.repeat(np.arange(shard.sequences, dtype=np.int64), np.diff(shard.seg_ptr))
    starts = seq_of_segment * shard.meta["seq_len"] + shard.seg_pos
    doc = shard.seg_doc
    first_seen = np.full(int(doc.max()) + 1 if len(doc) else 0, len(doc), np.int64)
    np.minimum.at(first_seen, doc, np.arange(len(doc)))
    order = np.lexsort((shard.seg_doc_offset, first_seen[doc]))
    lengths = shard.seg_len[order].astype(np.int64)
    pieces = np.concatenate([flat[s:s + n] for s, n in zip(starts[order].tolist(), lengths.tolist())]) if len(order) \
        else np.zeros(0, flat.dtype)
    doc_sorted = doc[order]
    boundaries = np.flatnonzero(np.diff(doc_sorted)) + 1 if len(doc_sorted) else np.zeros(0, np.int64)
    ends = np.append(np.cumsum(lengths)[boundaries - 1] if len(boundaries) else np.zeros(0, np.int64),
                     lengths.sum() if len(lengths) else 0)
    doc_lengths = np.diff(np.concatenate([[0], ends])) if len(lengths) else np.zeros(0, np.int64)
    return pieces, doc_lengths


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
    for source, entry in summary["sources"].items():
        shards = [open_shard(packed_dir / source, s["name"], expect_sha256=s["bin_sha256"]) for s in entry["shards"]]
        dtype = np.dtype(summary["dtype"])
        written[str(out / source)] = write_megatron(out / source, (shard_documents(s) for s in shards), dtype)
    return written
