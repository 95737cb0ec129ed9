"""`minhash_dedup`: near-duplicate documents across the whole corpus, MinHash LSH.

Shingles are word n-grams (`ngram`, default 5); in Chinese and Japanese documents, character n-grams
(every Han/Kana character is a "word", see `text_rules.words`). A document shorter than n words is one
shingle. Signatures use datasketch's permutations and scheme (`affine32`: the MurmurHash3 finalizer,
then `a*h + b mod 2^32`), computed for a whole Arrow batch at once with numpy. The shingle hash is
`shingle_hash32` (each distinct word of a batch hashed once, vectorised over its bytes, then folded); `datasketch.MinHash(
num_perm, seed, hashfunc=shingle_hash32)` fed the same shingles gives the same signature.

Bands and rows come from datasketch's optimum for `threshold` and `num_perm`, weighted towards recall.
Corpus-wide in steps: workers spill one row per document (its band keys, and its signature when
`verify`); the aggregate step explodes the band keys and shuffles them into partitions by key (Ray
tasks); each partition emits an edge from the first document of every bucket to each other one, split
by the shard of its second end; with `verify`, two joins per shard (Ray tasks) bring both signatures of
an edge together and edges whose estimated Jaccard is under `threshold` are cut; connected components
of the edges are clusters; the first document of a cluster in corpus order is kept.

Memory: a map task holds one shard's spilled rows, a reducer one partition, a join task one shard's
signatures and the edges of one pair of shards. The driver holds the verified edges as two int64
arrays (16 bytes per edge, at most one edge per duplicate and band, usually about one per duplicate):
it grows with the number of duplicates, not with the corpus.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.io import AtomicParquetWriter
from curation.stage import ID, TEXT, AggregateContext, BatchPosition, GlobalStage, live_mask, register_stage
from curation.stages import text_rules as tr
from curation.stages.dedup_common import DECISION_SCHEMA, AppliesDecisions, read_partition, write_partitions

FNV_OFFSET = np.uint32(0x811C9DC5)
FNV_PRIME = np.uint32(0x01000193)
FMIX32 = (16, np.uint32(0x85EBCA6B), 13, np.uint32(0xC2B2AE35), 16)
ROW_BITS = 40  # node key = shard << 40 | row


WORD_PRIME = 0x01000193
LONG_WORD = 4096  # bytes; longer words (rare) are hashed one by one
# P^k mod 2^32: products wrap mod 2^64, and 2^32 divides 2^64, so the low 32 bits are exact.
_POWERS = np.concatenate([[1], np.cumprod(np.full(LONG_WORD - 1, WORD_PRIME, dtype=np.uint64)) & 0xFFFFFFFF]).astype(np.uint32)


def _fmix32_int(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def word_hash32(word: bytes) -> int:
    """A word's 32-bit hash: the polynomial sum(byte_i * P^(len-1-i)) mod 2^32, then MurmurHash3's
    finalizer. Polynomial so that a whole batch of words hashes at once in numpy (`word_hashes32`)."""
    h = 0
    for byte in word:
        h = (h * WORD_PRIME + byte) & 0xFFFFFFFF
    return _fmix32_int(h ^ len(word))


def word_hashes32(words: pa.Array) -> np.ndarray:
    """`word_hash32` of every string of an Arrow array, vectorised over its bytes."""
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks()
    n = len(words)
    if n == 0:
        return np.zeros(0, np.uint32)
    offsets = np.frombuffer(words.buffers()[1], dtype=np.int32)[words.offset:words.offset + n + 1].astype(np.int64)
    data = np.frombuffer(words.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].astype(np.uint32)
    lengths = np.diff(offsets)
    long = lengths > LONG_WORD
    word_of_byte = np.repeat(np.arange(n), lengths)
    exponent = (offsets[1:] - offsets[0])[word_of_byte] - 1 - np.arange(len(data))
    with np.errstate(over="ignore"):
        contribution = data * _POWERS[np.minimum(exponent, LONG_WORD - 1)]
        sums = np.zeros(n, dtype=np.uint32)
        nonempty = lengths > 0
        starts = (offsets[:-1] - offsets[0])[nonempty]
        if len(starts):
            sums[nonempty] = np.add.reduceat(contribution, starts, dtype=np.uint32)
        hashes = fmix32(sums ^ lengths.astype(np.uint32))
    for i in np.flatnonzero(long):
        hashes[i] = word_hash32(words[i].as_py().encode("utf-8"))
    return hashes


def shingle_hash32(shingle: bytes) -> int:
    """The hash of a shingle (words joined by single spaces): usable as datasketch's `hashfunc`."""
    h = int(FNV_OFFSET)
    for word in shingle.split(b" "):
        h = ((h ^ word_hash32(word)) * int(FNV_PRIME)) & 0xFFFFFFFF
    return h


def fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = FMIX32
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(s1))
        h = h * m1
        h = h ^ (h >> np.uint32(s2))
        h = h * m2
        return h ^ (h >> np.uint32(s3))


def lsh_params(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative rates, as datasketch.MinHashLSH
    picks them for `weights=(fp_weight, fn_weight)`."""
    from datasketch.lsh import _optimal_param  # the same choice as MinHashLSH, so results compare

    return _optimal_param(threshold, num_perm, fp_weight, fn_weight)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch.MinHash's permutations (a, b) for `num_perm` and `seed`, as uint32 (affine32)."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return np.asarray(a, np.uint32), np.asarray(b, np.uint32)


def shingle_hashes(words: tr.Tokens, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, document) of every shingle of a batch; documents with fewer than n words give one."""
    if len(words.values) == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(words.values)
    unique_hashes = word_hashes32(encoded.dictionary)
    w = unique_hashes[encoded.indices.to_numpy(zero_copy_only=False)]
    parent, counts = words.parent, words.counts
    starts_of_doc = np.concatenate([[0], np.cumsum(counts)[:-1]])
    m = len(w) - n + 1
    hashes, docs = [], []
    if m > 0:
        h = np.full(m, FNV_OFFSET, dtype=np.uint32)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = (h ^ w[k:k + m]) * FNV_PRIME
        valid = parent[:m] == parent[n - 1:n - 1 + m]
        hashes.append(h[valid])
        docs.append(parent[:m][valid])
    for doc in np.flatnonzero((counts > 0) & (counts < n)):  # short documents: one shingle of all words
        h = FNV_OFFSET
        with np.errstate(over="ignore"):
            for value in w[starts_of_doc[doc]:starts_of_doc[doc] + counts[doc]]:
                h = (h ^ value) * FNV_PRIME
        hashes.append(np.array([h], np.uint32))
        docs.append(np.array([doc], np.int64))
    hashes_all, docs_all = np.concatenate(hashes), np.concatenate(docs)
    order = np.argsort(docs_all, kind="stable")
    return hashes_all[order], docs_all[order]


def signatures(words: tr.Tokens, n: int, a: np.ndarray, b: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """MinHash signatures (n_docs x num_perm, uint32); documents without words keep the max value."""
    hashes, docs = shingle_hashes(words, n)
    out = np.full((words.n_docs, len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    mixed = fmix32(hashes)
    with np.errstate(over="ignore"):
        for start in range(0, len(mixed), chunk):  # bounded memory: chunk x num_perm at a time
            hv = mixed[start:start + chunk, None]
            permuted = hv * a[None, :] + b[None, :]
            d = docs[start:start + chunk]
            run_starts = np.flatnonzero(np.concatenate([[True], d[1:] != d[:-1]]))
            mins = np.minimum.reduceat(permuted, run_starts, axis=0)
            out[d[run_starts]] = np.minimum(out[d[run_starts]], mins)
    return out


def band_keys(signature: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """64-bit key per (document, band): equal keys mean an equal band of the signature."""
    keys = np.zeros((signature.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(signature.shape[0], np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for r in range(rows):
                h = (h ^ signature[:, band * rows + r].astype(np.uint64)) * np.uint64(0x100000001B3)
                h ^= h >> np.uint64(32)
            keys[:, band] = h
    return keys


EDGE_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64())])


def _shard_dir(folder: str, prefix: str, shard: int) -> str:
    return os.path.join(folder, f"{prefix}-{shard:06d}")


def _unique_edges(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    keep = np.concatenate([[True], (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])]) if len(src) else np.zeros(0, bool)
    return src[keep], dst[keep]


def _runs(sorted_values: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal values in a sorted array."""
    if len(sorted_values) == 0:
        return []
    bounds = np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1], [True]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _read_edges(files: list[str], columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files]) if files else EDGE_SCHEMA.empty_table()


def _signatures_of(keys_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(nodes sorted, signatures in that order) of one shard's spilled rows."""
    table = pq.read_table(keys_path, columns=["node", "signature"])
    node = table.column("node").to_numpy()
    column = table.column("signature").combine_chunks()
    width = column.type.byte_width // 4
    sig = np.frombuffer(column.buffers()[1], dtype=np.uint32)[: len(column) * width].reshape(-1, width)
    order = np.argsort(node, kind="stable")
    return node[order], sig[order]


def _partition_band_keys(args: tuple[str, str, int]) -> int:
    """Shuffle map (a Ray task): one shard's spilled rows (one per document, its band keys as a list)
    become one (band_key, node) row per band, split into partitions by band key."""
    keys_path, parts_dir, partitions = args
    table = pq.read_table(keys_path, columns=["node", "band_keys"])
    bands = table.column("band_keys").combine_chunks()
    per_doc = len(bands.values) // max(len(bands), 1)
    flat = pa.table({"band_key": bands.flatten(), "node": pa.array(np.repeat(table.column("node").to_numpy(), per_doc))})
    part = (flat.column("band_key").to_numpy() % np.uint64(partitions)).astype(np.int32)
    write_partitions(flat, part, parts_dir, os.path.basename(keys_path), partitions)
    return table.num_rows


def _bucket_edges(args: tuple[str, str, int]) -> int:
    """Shuffle reduce: in one partition, an edge from the first document of each bucket to each other
    one (src < dst), written split by the shard of `dst` so the next step reads one shard's edges."""
    part_dir, edges_dir, partition = args
    table = read_partition(part_dir)
    if table is None or not table.num_rows:
        return 0
    table = table.sort_by([("band_key", "ascending"), ("node", "ascending")])
    key = table.column("band_key").to_numpy()
    node = table.column("node").to_numpy()
    new_bucket = np.concatenate([[True], key[1:] != key[:-1]])
    first = np.maximum.accumulate(np.where(new_bucket, np.arange(len(key)), 0))
    member = ~new_bucket
    src, dst = _unique_edges(node[first[member]], node[member])
    shard = dst >> ROW_BITS
    order = np.argsort(shard, kind="stable")
    src, dst, shard = src[order], dst[order], shard[order]
    for lo, hi in _runs(shard):
        writer = AtomicParquetWriter(os.path.join(_shard_dir(edges_dir, "dst", int(shard[lo])), f"p{partition:04d}.parquet"),
                                     schema=EDGE_SCHEMA)
        writer.write(pa.table({"src": src[lo:hi], "dst": dst[lo:hi]}))
        writer.commit()
    return len(src)


def _attach_dst_signatures(args: tuple[int, str, str, str]) -> int:
    """Verification, first half (a Ray task per shard): the edges ending in this shard get the
    signature of their `dst`, and are written split by the shard of their `src`. Holds one shard."""
    shard, keys_path, edges_dir, joined_dir = args
    files = sorted(glob.glob(os.path.join(_shard_dir(edges_dir, "dst", shard), "*.parquet")))
    if not files:
        return 0
    edges = _read_edges(files)
    src, dst = _unique_edges(edges.column("src").to_numpy(), edges.column("dst").to_numpy())
    nodes, sig = _signatures_of(keys_path)
    dst_sig = sig[np.searchsorted(nodes, dst)]
    src_shard = src >> ROW_BITS
    order = np.argsort(src_shard, kind="stable")
    src, dst, dst_sig, src_shard = src[order], dst[order], dst_sig[order], src_shard[order]
    width = 4 * sig.shape[1]
    for lo, hi in _runs(src_shard):
        block = np.ascontiguousarray(dst_sig[lo:hi])
        writer = AtomicParquetWriter(
            os.path.join(_shard_dir(joined_dir, "src", int(src_shard[lo])), f"dst-{shard:06d}.parquet"))
        writer.write(pa.table({"src": src[lo:hi], "dst": dst[lo:hi], "dst_signature": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), hi - lo, [None, pa.py_buffer(block.tobytes())])}))
        writer.commit()
    return len(src)


def _verify_src(args: tuple[int, str, str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Verification, second half (a Ray task per shard): compare the signature of each edge's `src`
    (in this shard) with the attached `dst` one; keep the edges whose estimated Jaccard reaches the
    threshold. Reads one (src shard, dst shard) file at a time."""
    shard, keys_path, joined_dir, threshold = args
    files = sorted(glob.glob(os.path.join(_shard_dir(joined_dir, "src", shard), "*.parquet")))
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes, sig = _signatures_of(keys_path)
    kept_src, kept_dst = [], []
    for path in files:
        table = pq.read_table(path)
        src, dst = table.column("src").to_numpy(), table.column("dst").to_numpy()
        column = table.column("dst_signature").combine_chunks()
        other = np.frombuffer(column.buffers()[1], dtype=np.uint32)[: len(column) * sig.shape[1]].reshape(-1, sig.shape[1])
        estimate = (sig[np.searchsorted(nodes, src)] == other).mean(axis=1)
        keep = estimate >= threshold
        kept_src.append(src[keep])
        kept_dst.append(dst[keep])
    return np.concatenate(kept_src), np.concatenate(kept_dst)


def _ids_of(args: tuple[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """(nodes, ids) of the wanted nodes found in one shard's spilled rows (a Ray task)."""
    keys_path, wanted = args
    table = pq.read_table(keys_path, columns=["node", "id"])
    node = table.column("node").to_numpy()
    keep = np.isin(node, wanted)
    return node[keep], table.column("id").filter(pa.array(keep)).to_pylist()


def connected_components(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, root) where root is the smallest node of each node's component (min-label propagation
    with pointer jumping, vectorised)."""
    nodes, inverse = np.unique(np.concatenate([src, dst]), return_inverse=True)
    u, v = inverse[: len(src)], inverse[len(src):]
    label = np.arange(len(nodes))
    while True:
        before = label.copy()
        np.minimum.at(label, u, label[v])
        np.minimum.at(label, v, label[u])
        label = label[label]  # pointer jumping
        if np.array_equal(label, before):
            break
    return nodes, nodes[label]


@register_stage("minhash_dedup")
class MinHashDedup(AppliesDecisions, GlobalStage):
    """Near-duplicate dedup: MinHash signatures, LSH bands shuffled on Ray, connected components."""

    reason = "near_duplicate"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        threshold: float = 0.8
        num_perm: int = 128
        seed: int = 1
        ngram: int = 5
        partitions: int = 16
        # LSH bands/rows favour recall (12 x 10 for 0.8 and 128: P(candidate) 0.994 at Jaccard 0.9);
        # verification then cuts the extra candidates by the signatures' estimated Jaccard.
        false_positive_weight: float = 0.2
        false_negative_weight: float = 0.8
        verify: bool = True
        cjk_languages: tuple[str, ...] = tr.CJK_LANGUAGES

        def __post_init__(self) -> None:
            if not 0 < self.threshold < 1 or self.num_perm < 2 or self.ngram < 1:
                raise ValueError("need 0 < threshold < 1, num_perm >= 2, ngram >= 1")

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        c = self.config
        self.bands, self.rows = lsh_params(c.threshold, c.num_perm, c.false_positive_weight, c.false_negative_weight)
        # Taken here, where the stage is built (the driver), and carried to the workers with the stage:
        # datasketch imports scipy, about 45 MB in every worker that imported it for two small arrays.
        self._a, self._b = permutations(c.num_perm, c.seed)

    def signatures(self, text: pa.Array, langs: pa.Array | None) -> np.ndarray:
        words = tr.words(text, tr.cjk_mask(langs, len(text), self.config.cjk_languages))
        return signatures(words, self.config.ngram, self._a, self._b)

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        rows = np.flatnonzero(tr.to_numpy_bool(live_mask(batch)))
        if len(rows) == 0:
            return None
        take = pa.array(rows)
        text = pc.take(batch.column(TEXT), take)
        langs = pc.take(batch.column("lang"), take) if "lang" in batch.schema.names else None
        signature = self.signatures(text, langs)
        has_words = (signature != np.iinfo(np.uint32).max).any(axis=1)  # empty documents take no part
        keys = band_keys(signature[has_words], self.bands, self.rows)
        node = (np.int64(position.shard_index) << ROW_BITS) + position.row_offset + rows[has_words]
        ids = pc.take(batch.column(ID), pa.array(rows[has_words]))
        columns = {
            "node": pa.array(node),
            "id": ids,
            "band_keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), self.bands),
        }
        if self.config.verify:  # one signature per document, read back only for candidate pairs
            width = 4 * self.config.num_perm
            columns["signature"] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), len(node), [None, pa.py_buffer(np.ascontiguousarray(signature[has_words]).tobytes())])
        return pa.table(columns)

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        for folder in ("parts", "edges", "joined", "decisions"):  # a rerun after a kill starts this step afresh
            shutil.rmtree(os.path.join(ctx.work_dir, folder), ignore_errors=True)
        parts_dir, edges_dir, joined_dir = (os.path.join(ctx.work_dir, f) for f in ("parts", "edges", "joined"))
        n = self.config.partitions
        ctx.map(_partition_band_keys, [(path, parts_dir, n) for path in ctx.keys_paths])
        candidates = sum(ctx.map(_bucket_edges, [(os.path.join(parts_dir, f"p{p:04d}"), edges_dir, p) for p in range(n)]))
        shutil.rmtree(parts_dir, ignore_errors=True)
        shards = list(zip(ctx.keys_shards, ctx.keys_paths))
        if self.config.verify:
            ctx.map(_attach_dst_signatures, [(s, path, edges_dir, joined_dir) for s, path in shards])
            found = ctx.map(_verify_src, [(s, path, joined_dir, self.config.threshold) for s, path in shards])
            src = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64)
            dst = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.int64)
        else:
            edges = _read_edges(sorted(glob.glob(os.path.join(edges_dir, "*", "*.parquet"))))
            src, dst = _unique_edges(edges.column("src").to_numpy(), edges.column("dst").to_numpy())
            del edges
        verified = len(src)
        sizes = np.zeros(0, np.int64)
        decisions_dir = os.path.join(ctx.work_dir, "decisions")
        if len(src):
            nodes, root = connected_components(src, dst)
            del src, dst
            roots, sizes = np.unique(root, return_counts=True)
            root_ids = self._root_ids(ctx, roots)
            duplicate_of = pc.take(root_ids, pa.array(np.searchsorted(roots, root)))
            is_root = nodes == root
            duplicate_of = pc.if_else(pa.array(is_root), pa.scalar(None, pa.string()), duplicate_of)
            cluster = pc.binary_join_element_wise("mh-", pa.array(np.char.mod("%x", root)), "")
            shard = (nodes >> ROW_BITS).astype(np.int32)
            table = pa.table({"shard": shard, "row": nodes & ((1 << ROW_BITS) - 1),
                              "duplicate_of": duplicate_of, "dup_cluster": cluster}).cast(DECISION_SCHEMA)
            for lo, hi in _runs(shard):  # nodes are sorted, so shards are runs
                writer = AtomicParquetWriter(os.path.join(decisions_dir, f"s{shard[lo]:06d}.parquet"), schema=DECISION_SCHEMA)
                writer.write(table.slice(lo, hi - lo))
                writer.commit()
        os.makedirs(decisions_dir, exist_ok=True)
        shutil.rmtree(joined_dir, ignore_errors=True)
        histogram = dict(zip(*np.unique(np.minimum(sizes, 10), return_counts=True))) if len(sizes) else {}
        return {"bands": self.bands, "rows": self.rows, "candidate_edges": int(candidates),
                "verified_edges": int(verified), "clusters": int(len(sizes)),
                "duplicates": int(sizes.sum() - len(sizes)) if len(sizes) else 0,
                **{f"cluster_size_{int(k)}{'+' if k == 10 else ''}": int(v) for k, v in histogram.items()}}

    def _root_ids(self, ctx: AggregateContext, roots: np.ndarray) -> pa.Array:
        """The document id of every root node (sorted), looked up in the spilled rows of its shard."""
        root_shard = roots >> ROW_BITS
        work = [(path, roots[root_shard == s]) for s, path in zip(ctx.keys_shards, ctx.keys_paths)
                if (root_shard == s).any()]
        found = ctx.map(_ids_of, work)
        nodes = np.concatenate([f[0] for f in found])
        ids = pa.array([i for f in found for i in f[1]], pa.string())
        return pc.take(ids, pa.array(np.argsort(nodes, kind="stable")))
