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
tasks); each partition emits an edge from the first document of every bucket to each other one; with
`verify`, the signatures of the candidate documents only are read back and edges whose estimated
Jaccard is under `threshold` are cut; connected components of the edges are clusters; the first
document of a cluster in corpus order is kept. Memory: a reducer holds one partition; the components
step holds the candidate edges, which grow with the number of duplicates, not with the corpus.
"""

from __future__ import annotations

import dataclasses
import glob
import os
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


def _partition_band_keys(args: tuple[str, str, int]) -> int:
    """Shuffle map (a Ray task): one shard's spilled rows (one per document, its band keys as a list)
    become one (band_key, node, id) row per band, split into partitions by band key."""
    keys_path, parts_dir, partitions = args
    table = pq.read_table(keys_path, columns=["node", "id", "band_keys"])
    bands = table.column("band_keys").combine_chunks()
    per_doc = len(bands.values) // max(len(bands), 1)
    flat = pa.table({"band_key": bands.flatten(),
                     "node": pa.array(np.repeat(table.column("node").to_numpy(), per_doc)),
                     "id": pc.take(table.column("id"), pa.array(np.repeat(np.arange(table.num_rows), per_doc)))})
    part = (flat.column("band_key").to_numpy() % np.uint64(partitions)).astype(np.int32)
    write_partitions(flat, part, parts_dir, os.path.basename(keys_path), partitions)
    return table.num_rows


def _bucket_edges(args: tuple[str, str]) -> int:
    """Shuffle reduce: in one partition, an edge from the first document of each bucket to each other."""
    part_dir, out_path = args
    table = read_partition(part_dir)
    schema = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("src_id", pa.string()), ("dst_id", pa.string())])
    writer = AtomicParquetWriter(out_path, schema=schema)
    if table is not None and table.num_rows:
        table = table.sort_by([("band_key", "ascending"), ("node", "ascending")])
        key = table.column("band_key").to_numpy()
        node = table.column("node").to_numpy()
        ids = table.column("id").combine_chunks()
        new_bucket = np.concatenate([[True], key[1:] != key[:-1]])
        first = np.maximum.accumulate(np.where(new_bucket, np.arange(len(key)), 0))
        member = ~new_bucket
        edges = pa.table({"src": node[first[member]], "dst": node[member],
                          "src_id": ids.take(pa.array(first[member])), "dst_id": ids.take(pa.array(np.flatnonzero(member)))})
        writer.write(edges)
    writer.commit()
    return 0


def _candidate_signatures(args: tuple[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, signatures) of the candidate nodes found in one shard's spilled rows (a Ray task)."""
    keys_path, wanted = args
    table = pq.read_table(keys_path, columns=["node", "signature"])
    node = table.column("node").to_numpy()
    keep = np.isin(node, wanted)
    column = table.column("signature").combine_chunks().filter(pa.array(keep))
    width = column.type.byte_width // 4
    sig = np.frombuffer(column.buffers()[1], dtype=np.uint32)[: len(column) * width].reshape(-1, width)
    return node[keep], sig.copy()


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

    def setup(self) -> None:
        from datasketch import MinHash

        a, b = MinHash(num_perm=self.config.num_perm, seed=self.config.seed).permutations
        self._a, self._b = np.asarray(a, np.uint32), np.asarray(b, np.uint32)

    def signatures(self, text: pa.Array, langs: pa.Array | None) -> np.ndarray:
        if not hasattr(self, "_a"):
            self.setup()
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
        parts_dir = os.path.join(ctx.work_dir, "parts")
        edges_dir = os.path.join(ctx.work_dir, "edges")
        n = self.config.partitions
        ctx.map(_partition_band_keys, [(path, parts_dir, n) for path in ctx.keys_paths])
        ctx.map(_bucket_edges, [(os.path.join(parts_dir, f"p{p:04d}"), os.path.join(edges_dir, f"p{p:04d}.parquet"))
                                for p in range(n)])
        files = sorted(glob.glob(os.path.join(edges_dir, "*.parquet")))
        edges = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
        candidates = edges.num_rows if edges is not None else 0
        if edges is not None and edges.num_rows and self.config.verify:
            edges = self._verify(ctx, edges)
        decisions = pa.table({name: pa.array([], field.type) for name, field in zip(DECISION_SCHEMA.names, DECISION_SCHEMA)})
        sizes = np.zeros(0, np.int64)
        if edges is not None and edges.num_rows:
            src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
            nodes, root = connected_components(src, dst)
            id_of = dict(zip(np.concatenate([src, dst]).tolist(),
                             edges.column("src_id").to_pylist() + edges.column("dst_id").to_pylist()))
            root_ids = [id_of[r] for r in root.tolist()]
            is_root = nodes == root
            decisions = pa.table({
                "shard": pa.array((nodes >> ROW_BITS).astype(np.int32)),
                "row": pa.array(nodes & ((1 << ROW_BITS) - 1)),
                "duplicate_of": pa.array([None if k else r for k, r in zip(is_root.tolist(), root_ids)], pa.string()),
                "dup_cluster": pa.array([f"mh-{r:x}" for r in root.tolist()], pa.string()),
            }).sort_by([("shard", "ascending"), ("row", "ascending")])
            _, sizes = np.unique(root, return_counts=True)
        writer = AtomicParquetWriter(os.path.join(ctx.work_dir, "decisions", "all.parquet"), schema=DECISION_SCHEMA)
        writer.write(decisions.cast(DECISION_SCHEMA))
        writer.commit()
        histogram = dict(zip(*np.unique(np.minimum(sizes, 10), return_counts=True))) if len(sizes) else {}
        return {"bands": self.bands, "rows": self.rows, "candidate_edges": int(candidates),
                "verified_edges": int(edges.num_rows) if edges is not None else 0, "clusters": int(len(sizes)),
                "duplicates": int(sizes.sum() - len(sizes)) if len(sizes) else 0,
                **{f"cluster_size_{int(k)}{'+' if k == 10 else ''}": int(v) for k, v in histogram.items()}}

    def _verify(self, ctx: AggregateContext, edges: pa.Table) -> pa.Table:
        """Keep the candidate edges whose signatures agree on at least `threshold` of their values."""
        src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
        wanted = np.unique(np.concatenate([src, dst]))
        found = ctx.map(_candidate_signatures, [(path, wanted) for path in ctx.keys_paths])
        nodes = np.concatenate([f[0] for f in found])
        sigs = np.concatenate([f[1] for f in found])
        order = np.argsort(nodes)
        nodes, sigs = nodes[order], sigs[order]
        estimate = (sigs[np.searchsorted(nodes, src)] == sigs[np.searchsorted(nodes, dst)]).mean(axis=1)
        return edges.filter(pa.array(estimate >= self.config.threshold))
