"""`minhash_dedup`: near-duplicate documents across the whole corpus, MinHash LSH.

Shingles are word n-grams (`ngram`, default 5); in Chinese and Japanese documents, character n-grams
(every Han/Kana character is a "word", see `text_rules.words`). A document shorter than n words is one
shingle. Signatures use datasketch's permutations and scheme (`affine32`: the MurmurHash3 finalizer,
then `a*h + b mod 2^32`), computed for a whole Arrow batch at once with numpy. The shingle hash is
`shingle_hash32` (each distinct word of a batch hashed once, vectorised over its bytes, then folded); `datasketch.MinHash(
num_perm, seed, hashfunc=shingle_hash32)` fed the same shingles gives the same signature.

Bands and rows come from datasketch's optimum for `threshold` and `num_perm`, weighted towards recall.
Corpus-wide in steps: workers spill one row per document (its band keys, and what `verify` compares:
its signature, or with `verify: exact` its set of shingle hashes); the aggregate step explodes the band keys and shuffles them into partitions by key (Ray
tasks); each partition pairs every bucket's members (`bucket_pairs`: all pairs in buckets of up to
2 * bucket_neighbours + 1, a bounded random window beyond), split by the shard of the pair's second
end; with `verify`, two joins per shard (Ray tasks) bring both signatures (or shingle sets) of a pair
together and pairs whose estimated (or exact) Jaccard is under `threshold` are cut; connected components of the kept pairs
(`components.py`: large-star / small-star rounds over edge partitions, Ray tasks) are the clusters;
the first document of a cluster in corpus order (its smallest node) is kept. Two last joins per shard
bring the root's id to its members and write each shard's decisions.

Memory: a map task holds one shard's spilled rows, a reducer one partition, a join task one shard's
signatures and the edges of one pair of shards, a components task one partition of the edges (the
root of the largest cluster brings all of its cluster's edges to one task). The driver holds counts:
nothing it holds grows with the corpus or with the duplicates. Every sub-step leaves a marker
(`components.Steps`), so a killed aggregate resumes at the first unfinished one. Every folder goes
through `curation.storage`: under an `s3://` output the spill, shuffle, joins and decisions live in the
bucket (`OUT/_work`), and no node's local disk holds anything another node reads.

Against an earlier run (`index_read`, see `dedup_index`): an index part holds, per document the
indexed run's stage saw (copies too: a new document may be close only to an old copy), its band keys,
signature and the id of the document its cluster kept (`root_id`), 8 x bands + 4 x num_perm bytes and
two ids (608 bytes and ids at the defaults). Each part becomes a keys file of a shard before the
corpus (negative shard numbers): its documents join the buckets and verification like this run's, pairs
of two indexed documents are dropped (the indexed run decided those), and a new document whose
component holds an indexed one is rejected with `duplicate_of` = that component's earliest indexed
document's `root_id`. `index_write` keeps this run's documents the same way, one part per shard.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.io import AtomicParquetWriter
from curation.stage import ID, TEXT, AggregateContext, BatchPosition, GlobalStage, live_mask, register_stage
from curation.stages import text_rules as tr
from curation.stages.components import Steps, read_keyed, write_undirected
from curation.stages.components import connected_components as distributed_components
from curation.stages import dedup_index, minhash_native
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


# datasketch.MinHashLSH's choice of (bands, rows) for the settings people use, so that building the stage
# does not import datasketch: it imports scipy, 0.6-0.9 s of a run's critical path on the driver (in a
# 20 s run on 2 cores). tests/test_dedup_lsh.py checks every entry against datasketch; any other
# settings ask datasketch. Keys: (threshold, num_perm, false positive weight, false negative weight).
KNOWN_LSH_PARAMS: dict[tuple[float, int, float, float], tuple[int, int]] = {
    (0.7, 128, 0.2, 0.8): (18, 7), (0.75, 128, 0.2, 0.8): (16, 8), (0.8, 128, 0.2, 0.8): (12, 10),
    (0.85, 128, 0.2, 0.8): (9, 13), (0.9, 128, 0.2, 0.8): (7, 18),
    (0.7, 128, 0.5, 0.5): (14, 9), (0.75, 128, 0.5, 0.5): (11, 11), (0.8, 128, 0.5, 0.5): (9, 13),
    (0.85, 128, 0.5, 0.5): (8, 16), (0.9, 128, 0.5, 0.5): (5, 25),
}


def lsh_params(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative rates, as datasketch.MinHashLSH
    picks them for `weights=(fp_weight, fn_weight)`."""
    known = KNOWN_LSH_PARAMS.get((threshold, num_perm, fp_weight, fn_weight))
    if known is not None:
        return known
    from datasketch.lsh import _optimal_param  # the same choice as MinHashLSH, so results compare

    return _optimal_param(threshold, num_perm, fp_weight, fn_weight)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch.MinHash's permutations (a, b) for `num_perm` and `seed` in its default scheme
    (`affine32`: h -> a * h + b mod 2^32, `a` odd), drawn as it draws them (its `_init_permutations`);
    tests/test_minhash_native.py compares them with datasketch's own. Not imported from datasketch: see
    KNOWN_LSH_PARAMS."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


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
    if minhash_native.signatures_into(out, hashes, docs, a, b):  # the same bytes, compiled (minhash_kernels.cc)
        return out
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
# Edges whose signatures are held at once in verification: 2^17 edges with two signatures of 128 uint32
# hashes (the default num_perm) is 134 MB
VALUE_ROWS = 1 << 17


def _shard_dir(folder: str, prefix: str, shard: int) -> str:
    return storage.join(folder, f"{prefix}-{shard:06d}")


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
    if not files:
        return EDGE_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(storage.parquet_source(f), columns=columns) for f in files])


def _verified_column_of(keys_path: str, column: str) -> tuple[np.ndarray, pa.Array]:
    """(nodes sorted, the column compared by verification in that order) of one shard's spilled rows:
    `signature` (fixed-size binary) or `shingles` (a list of shingle hashes)."""
    table = pq.read_table(storage.parquet_source(keys_path), columns=["node", column])
    node = table.column("node").to_numpy()
    order = np.argsort(node, kind="stable")
    return node[order], table.column(column).combine_chunks().take(pa.array(order))


def shingle_sets(words: tr.Tokens, n: int) -> pa.ListArray:
    """Each document's distinct shingle hashes, sorted (what exact verification compares)."""
    hashes, docs = shingle_hashes(words, n)
    order = np.lexsort((hashes, docs))
    hashes, docs = hashes[order], docs[order]
    first = np.concatenate([[True], (hashes[1:] != hashes[:-1]) | (docs[1:] != docs[:-1])]) if len(hashes) else \
        np.zeros(0, bool)
    hashes, docs = hashes[first], docs[first]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=words.n_docs))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(hashes, pa.uint32()))


def similarity(own: pa.Array, other: pa.Array) -> np.ndarray:
    """Per pair: the share of equal minima of two signatures (fixed-size binary: the estimate of the
    Jaccard index), or the exact Jaccard index of two shingle sets (lists of distinct hashes): the
    intersection counted as equal neighbours after sorting the pairs' hashes together."""
    if pa.types.is_fixed_size_binary(own.type):
        width = own.type.byte_width // 4
        a = np.frombuffer(own.buffers()[1], np.uint32)[own.offset * width:(own.offset + len(own)) * width]
        b = np.frombuffer(other.buffers()[1], np.uint32)[other.offset * width:(other.offset + len(other)) * width]
        return (a.reshape(-1, width) == b.reshape(-1, width)).mean(axis=1) if len(own) else np.zeros(0)
    n = len(own)
    la = pc.list_value_length(own).to_numpy(zero_copy_only=False).astype(np.int64)
    lb = pc.list_value_length(other).to_numpy(zero_copy_only=False).astype(np.int64)
    pair = np.concatenate([np.repeat(np.arange(n), la), np.repeat(np.arange(n), lb)])
    value = np.concatenate([pc.list_flatten(own).to_numpy(), pc.list_flatten(other).to_numpy()])
    order = np.lexsort((value, pair))
    pair, value = pair[order], value[order]
    same = (pair[1:] == pair[:-1]) & (value[1:] == value[:-1])
    intersection = np.bincount(pair[1:][same], minlength=n)
    union = la + lb - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def _partition_band_keys(args: tuple[str, str, int]) -> int:
    """Shuffle map (a Ray task): one shard's spilled rows (one per document, its band keys as a list)
    become one (band_key, node) row per band, split into partitions by band key."""
    keys_path, parts_dir, partitions = args
    table = pq.read_table(storage.parquet_source(keys_path), columns=["node", "band_keys"])
    bands = table.column("band_keys").combine_chunks()
    per_doc = len(bands.values) // max(len(bands), 1)
    flat = pa.table({"band_key": bands.flatten(), "node": pa.array(np.repeat(table.column("node").to_numpy(), per_doc))})
    part = (flat.column("band_key").to_numpy() % np.uint64(partitions)).astype(np.int32)
    write_partitions(flat, part, parts_dir, storage.basename(keys_path), partitions)
    return table.num_rows


def bucket_pairs(key: np.ndarray, node: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (src < dst, unique) from (band key, node) rows: in every bucket (rows of one band
    key), the members in a pseudo-random order, each paired with the next `neighbours` ones, cyclically.

    A bucket of up to 2 * neighbours + 1 members gives all its pairs, so verification cutting one pair
    cannot disconnect it (datatrove's planted clusters, tests/test_dedup_lsh.py). A larger bucket gives
    at most neighbours x members pairs, not members^2 / 2 (a bucket of 10,000 copies of a short review
    stays at 40,000 pairs), and a member that fails verification with some is still tried against
    others: the order is drawn from (band key, node), so each of a document's bands pairs it with
    different members. The star used before (first member to each other) lost a member whenever its
    one pair to the first failed.
    """
    if not len(key):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    with np.errstate(over="ignore"):
        mixed = key ^ (node.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        shuffle = fmix32((mixed ^ (mixed >> np.uint64(32))).astype(np.uint32))
    order = np.lexsort((node, shuffle, key))
    key, node = key[order], node[order]
    new_bucket = np.concatenate([[True], key[1:] != key[:-1]])
    starts = np.flatnonzero(new_bucket)
    sizes = np.diff(np.append(starts, len(key)))
    start_of = np.repeat(starts, sizes)
    size_of = np.repeat(sizes, sizes)
    position = np.arange(len(key)) - start_of
    src, dst = [], []
    for step in range(1, neighbours + 1):
        ok = size_of > step
        partner = start_of[ok] + (position[ok] + step) % size_of[ok]
        a, b = node[ok], node[partner]
        src.append(np.minimum(a, b))
        dst.append(np.maximum(a, b))
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)
    distinct = src_all != dst_all
    return _unique_edges(src_all[distinct], dst_all[distinct])


def _bucket_edges(args: tuple[str, str, int, int, int, bool]) -> int:
    """Shuffle reduce: the candidate pairs of one partition's buckets (`bucket_pairs`). With
    verification they are written split by the shard of `dst`, for the joins; without, they go straight
    to the connected-components input."""
    part_dir, edges_dir, partition, partitions, neighbours, verify = args
    table = read_partition(part_dir)
    if table is None or not table.num_rows:
        return 0
    src, dst = bucket_pairs(table.column("band_key").to_numpy(), table.column("node").to_numpy(), neighbours)
    del table
    ours = dst >= 0  # src < dst: a pair with dst in an index (negative shards) has both ends there
    src, dst = src[ours], dst[ours]
    if not verify:
        write_undirected(src, dst, edges_dir, f"bucket-{partition:04d}", partitions)
        return len(src)
    _write_by_shard(src, dst, dst >> ROW_BITS, edges_dir, "dst", partition)
    return len(src)


def _write_by_shard(src: np.ndarray, dst: np.ndarray, shard: np.ndarray, folder: str, kind: str, partition: int) -> None:
    """Edges (src, dst) split by `shard` into one file per shard under `folder`, for the per-shard steps
    that read only their own shard's edges."""
    order = np.argsort(shard, kind="stable")
    src, dst, shard = src[order], dst[order], shard[order]
    for lo, hi in _runs(shard):
        writer = AtomicParquetWriter(storage.join(_shard_dir(folder, kind, int(shard[lo])), f"p{partition:04d}.parquet"),
                                     schema=EDGE_SCHEMA)
        writer.write(pa.table({"src": src[lo:hi], "dst": dst[lo:hi]}))
        writer.commit()


def _attach_dst_signatures(args: tuple[int, str, str, str, str]) -> int:
    """Verification, first half (a Ray task per shard): the edges ending in this shard get the
    signature (or shingle set) of their `dst`, and are written split by the shard of their `src`.
    Holds one shard's column."""
    shard, keys_path, edges_dir, joined_dir, column = args
    files = storage.parquet_files(_shard_dir(edges_dir, "dst", shard))  # one listing
    if not files:
        return 0
    edges = _read_edges(files)
    src, dst = _unique_edges(edges.column("src").to_numpy(), edges.column("dst").to_numpy())
    nodes, values = _verified_column_of(keys_path, column)
    src_shard = src >> ROW_BITS
    order = np.argsort(src_shard, kind="stable")
    src, dst, src_shard = src[order], dst[order], src_shard[order]
    positions = np.searchsorted(nodes, dst)
    for lo, hi in _runs(src_shard):
        writer = AtomicParquetWriter(
            storage.join(_shard_dir(joined_dir, "src", int(src_shard[lo])), f"dst-{shard:06d}.parquet"))
        # The attached values in slices: every edge ending in the shard with its dst signature at once
        # was the largest process of the run (1.6 GB at 5 GB of near-copies, 1.9 M edges a shard); a
        # slice holds VALUE_ROWS of them, and the rows written are the same, in the same order.
        for start in range(lo, hi, VALUE_ROWS):
            end = min(hi, start + VALUE_ROWS)
            writer.write(pa.table({"src": src[start:end], "dst": dst[start:end],
                                   "dst_value": values.take(pa.array(positions[start:end]))}))
        writer.commit()
    return len(src)


def _verify_src(args: tuple[int, str, str, float, str, int, str]) -> int:
    """Verification, second half (a Ray task per shard): compare the signature (or shingle set) of each
    edge's `src` (in this shard) with the attached `dst` one; the edges whose Jaccard (estimated, or
    exact) reaches the threshold are written as the connected-components input. Reads one (src shard,
    dst shard) file at a time."""
    shard, keys_path, joined_dir, threshold, cc_dir, partitions, column = args
    files = storage.parquet_files(_shard_dir(joined_dir, "src", shard))  # one listing
    if not files:
        return 0
    nodes, values = _verified_column_of(keys_path, column)
    kept_src, kept_dst = [], []
    for path in files:  # a slice of VALUE_ROWS edges at a time: two signatures per edge in memory
        for batch in pq.ParquetFile(storage.parquet_source(path)).iter_batches(batch_size=VALUE_ROWS):
            src, dst = batch.column("src").to_numpy(), batch.column("dst").to_numpy()
            own = values.take(pa.array(np.searchsorted(nodes, src)))
            keep = similarity(own, batch.column("dst_value")) >= threshold
            kept_src.append(src[keep])
            kept_dst.append(dst[keep])
    src, dst = np.concatenate(kept_src), np.concatenate(kept_dst)
    write_undirected(src, dst, cc_dir, f"verified-{shard:06d}", partitions)
    return len(src)


def _root_shard_of_stars(args: tuple[str, int, str]) -> int:
    """Decisions, first half (a task per partition of the star forest): its (leaf, root) edges,
    written split by the shard of the root, whose spilled rows hold the root's id."""
    star_dir, partition, by_root_dir = args
    leaf, root = read_keyed(star_dir, partition)
    _write_by_shard(leaf, root, root >> ROW_BITS, by_root_dir, "root", partition)
    return len(leaf)


def _cluster_decisions(args: tuple[int, str, str, str]) -> dict[str, int]:
    """Decisions, second half (a task per shard): the clusters whose root (the smallest node, so the
    first document in corpus order) is in this shard. Every member gets `dup_cluster` from the root's
    node and every other member `duplicate_of` = the root's id (from this shard's spilled rows); rows
    are written split by the member's shard, as decisions/sNNNNNN/root-MMMMMM.parquet."""
    shard, keys_path, by_root_dir, decisions_dir = args
    files = storage.parquet_files(_shard_dir(by_root_dir, "root", shard))  # one listing
    if not files:
        return {}
    edges = _read_edges(files)
    leaf, root = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
    del edges
    roots, sizes = np.unique(root, return_counts=True)
    sizes = sizes + 1
    spilled = pq.read_table(storage.parquet_source(keys_path), columns=["node", "id"])
    spilled_node = spilled.column("node").to_numpy()
    order = np.argsort(spilled_node, kind="stable")
    root_ids = spilled.column("id").take(pa.array(order[np.searchsorted(spilled_node[order], roots)]))
    del spilled
    member = np.concatenate([roots, leaf])
    member_root = np.concatenate([roots, root])
    duplicate_of = pa.concat_arrays([pa.nulls(len(roots), pa.string()),
                                     root_ids.combine_chunks().take(pa.array(np.searchsorted(roots, root)))])
    cluster = pc.binary_join_element_wise("mh-", pa.array(np.char.mod("%x", member_root)), "")
    member_shard = (member >> ROW_BITS).astype(np.int32)
    table = pa.table({"shard": member_shard, "row": member & ((1 << ROW_BITS) - 1),
                      "duplicate_of": duplicate_of, "dup_cluster": cluster}).cast(DECISION_SCHEMA)
    order = np.lexsort((member, member_shard))
    order = order[member_shard[order] >= 0]  # indexed documents (negative shards) keep their decisions
    table, member_shard = table.take(pa.array(order)), member_shard[order]
    for lo, hi in _runs(member_shard):
        writer = AtomicParquetWriter(storage.join(decisions_dir, f"s{member_shard[lo]:06d}", f"root-{shard:06d}.parquet"),
                                     schema=DECISION_SCHEMA)
        writer.write(table.slice(lo, hi - lo))
        writer.commit()
    histogram = np.unique(np.minimum(sizes, 10), return_counts=True)
    return {"clusters": int(len(roots)), "duplicates": int((leaf >= 0).sum()),
            **{f"cluster_size_{int(k)}{'+' if k == 10 else ''}": int(v) for k, v in zip(*histogram)}}


def _index_as_keys(args: tuple[str, int, str]) -> int:
    """An index part as the keys file of shard `shard` (negative: before the corpus). Its `id` is the
    indexed `root_id`: a new copy names the document the indexed run kept, which `_cluster_decisions`
    reads from the root's keys file."""
    index_path, shard, out_path = args
    table = pq.read_table(storage.parquet_source(index_path))
    node = (np.int64(shard) << ROW_BITS) + np.arange(table.num_rows, dtype=np.int64)
    writer = AtomicParquetWriter(out_path)
    writer.write(pa.table({"node": node, "id": table.column("root_id"), "band_keys": table.column("band_keys"),
                           **{c: table.column(c) for c in ("signature", "shingles") if c in table.schema.names}}))
    writer.commit()
    return table.num_rows


def _index_part(args: tuple[int, str, str, str]) -> int:
    """This run's index part for one shard: every document of its spilled rows, in corpus order, with
    the id of the document its cluster kept (its own where it is kept)."""
    shard, keys_path, decisions_dir, out_path = args
    keys = pq.read_table(storage.parquet_source(keys_path))
    keys = keys.take(pa.array(np.argsort(keys.column("node").to_numpy(), kind="stable")))
    files = storage.parquet_files(storage.join(decisions_dir, f"s{shard:06d}"))  # one listing
    row = keys.column("node").to_numpy() & ((1 << ROW_BITS) - 1)
    root_id = keys.column("id").combine_chunks()
    if files:
        decided = storage.dataset(files, format="parquet", schema=DECISION_SCHEMA).to_table(columns=["row", "duplicate_of"])
        decided = decided.filter(pc.is_valid(decided.column("duplicate_of")))
        where = pc.index_in(pa.array(row), value_set=decided.column("row").combine_chunks())
        root_id = pc.coalesce(decided.column("duplicate_of").combine_chunks().take(where), root_id)
    writer = AtomicParquetWriter(out_path)
    writer.write(pa.table({"id": keys.column("id"), "root_id": root_id, "band_keys": keys.column("band_keys"),
                           **{c: keys.column(c) for c in ("signature", "shingles") if c in keys.schema.names}}))
    writer.commit()
    return keys.num_rows


def connected_components(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, root) where root is the smallest node of each node's component (min-label propagation
    with pointer jumping, vectorised), all in one process. The stage no longer uses it (it runs
    `components.connected_components` over edge partitions); it is the reference the tests and
    bench/bench_cluster_agreement.py compare against."""
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
        # Candidate pairs are kept when their Jaccard reaches `threshold`: "signature" estimates it from
        # the signatures (num_perm x 4 bytes spilled per document), "exact" computes it on the shingle
        # sets (4 bytes per distinct shingle spilled per document), "none" keeps every candidate. The
        # default and its measurement: bench/bench_dedup_verify.py (results/dedup_verify.json). Exact
        # finds every exact-Jaccard cluster there (datatrove's planted set: recall 1.0 where the estimate
        # gives 0.85, losing [0, 20, 50]; shared data: precision 1.0 against 0.978, one false pair of 45,
        # recall 1.0 for both), but its spill grows with the text (738 bytes a document on the shared
        # data, 0.95 of the text bytes, against 485 for a signature whatever the length) and building
        # the sets adds 46% to the signatures' time. At 50 TB that is about as much spill as text, for
        # pairs within one standard deviation of the estimate (0.033) of the threshold: the default
        # stays "signature"; "exact" where those pairs matter or the documents are short.
        verify: Literal["none", "signature", "exact"] = "signature"
        # Each member of an LSH bucket is paired with the next `bucket_neighbours` members in a random
        # order, cyclically: all pairs for buckets of up to 2n+1 members, n pairs per member beyond
        # (see `bucket_pairs`; measured in bench/bench_dedup_lsh.py).
        bucket_neighbours: int = 4
        cjk_languages: tuple[str, ...] = tr.CJK_LANGUAGES
        index_read: tuple[str, ...] = ()  # indexes of earlier runs (see `dedup_index`), oldest first
        index_write: str | None = None  # a new folder: this run's band keys and signatures, for later runs

        def __post_init__(self) -> None:
            if not 0 < self.threshold < 1 or self.num_perm < 2 or self.ngram < 1:
                raise ValueError("need 0 < threshold < 1, num_perm >= 2, ngram >= 1")
            if self.verify not in ("none", "signature", "exact"):
                raise ValueError("verify must be 'none', 'signature' or 'exact' (false was 'none', true 'signature')")
            if not 1 <= self.bucket_neighbours <= 64:
                raise ValueError("bucket_neighbours must be between 1 and 64 (pairs per bucket member)")

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        c = self.config
        self.bands, self.rows = lsh_params(c.threshold, c.num_perm, c.false_positive_weight, c.false_negative_weight)
        # Taken here, where the stage is built (the driver), and carried to the workers with the stage.
        self._a, self._b = permutations(c.num_perm, c.seed)
        dedup_index.check_options(self.name, c.index_read, c.index_write, self.index_settings())

    def index_settings(self) -> dict[str, Any]:
        """What an index's band keys and signatures depend on (the threshold only through bands x rows)."""
        c = self.config
        return {"shingles": "word_hash32 words folded by FNV (shingle_hash32); CJK characters as words",
                "ngram": c.ngram, "num_perm": c.num_perm, "seed": c.seed, "bands": self.bands, "rows": self.rows,
                "cjk_languages": list(c.cjk_languages), "shingle_sets": c.verify == "exact"}

    def words(self, text: pa.Array, langs: pa.Array | None) -> tr.Tokens:
        return tr.words(text, tr.cjk_mask(langs, len(text), self.config.cjk_languages))

    def signatures(self, text: pa.Array, langs: pa.Array | None) -> np.ndarray:
        return signatures(self.words(text, langs), self.config.ngram, self._a, self._b)

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        rows = np.flatnonzero(tr.to_numpy_bool(live_mask(batch)))
        if len(rows) == 0:
            return None
        take = pa.array(rows)
        text = pc.take(batch.column(TEXT), take)
        langs = pc.take(batch.column("lang"), take) if "lang" in batch.schema.names else None
        words = self.words(text, langs)
        signature = signatures(words, self.config.ngram, self._a, self._b)
        has_words = (signature != np.iinfo(np.uint32).max).any(axis=1)  # empty documents take no part
        keys = band_keys(signature[has_words], self.bands, self.rows)
        node = (np.int64(position.shard_index) << ROW_BITS) + position.row_offset + rows[has_words]
        ids = pc.take(batch.column(ID), pa.array(rows[has_words]))
        columns = {
            "node": pa.array(node),
            "id": ids,
            "band_keys": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), self.bands),
        }
        if self.config.verify == "signature" or self.config.index_write:  # read back for candidates, the index
            width = 4 * self.config.num_perm
            columns["signature"] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), len(node), [None, pa.py_buffer(np.ascontiguousarray(signature[has_words]).tobytes())])
        if self.config.verify == "exact":
            columns["shingles"] = shingle_sets(words, self.config.ngram).take(pa.array(np.flatnonzero(has_words)))
        return pa.table(columns)

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        """Every sub-step is a `Steps` step: a rerun after a kill resumes at the first unfinished one.
        Each step's input is removed once the step after it has finished."""
        work = ctx.work_dir
        parts_dir, edges_dir, joined_dir, verified_dir, by_root_dir, decisions_dir = (
            storage.join(work, f) for f in ("parts", "edges", "joined", "cc-input", "by-root", "decisions"))
        n, c = self.config.partitions, self.config
        steps = Steps(work)
        shards = list(zip(ctx.keys_shards, ctx.keys_paths))
        settings = self.index_settings()
        index_in = dedup_index.index_parts(c.index_read, self.name, settings)
        token = dedup_index.run_token(ctx.work_dir, ctx.keys_paths)
        writing = c.index_write is not None and dedup_index.begin_write(c.index_write, self.name, token)
        # Index parts are shards -len(parts)..-1: all before the corpus, the first listed index first.
        index_dir = storage.join(work, "index-keys")
        indexed_shards = [(k - len(index_in), storage.join(index_dir, f"i{k:06d}.parquet")) for k in range(len(index_in))]
        indexed = steps.run("index-keys", [index_dir], lambda: sum(ctx.map(_index_as_keys, [
            (path, shard, out) for path, (shard, out) in zip(index_in, indexed_shards)])))
        shards = indexed_shards + shards
        steps.run("bands", [parts_dir], lambda: sum(ctx.map(_partition_band_keys, [
            (path, parts_dir, n) for _, path in shards])))
        verify = c.verify != "none"
        column = "shingles" if c.verify == "exact" else "signature"
        candidates = steps.run("buckets", [edges_dir, verified_dir], lambda: sum(ctx.map(_bucket_edges, [
            (storage.join(parts_dir, f"p{p:04d}"), edges_dir if verify else verified_dir, p, n,
             c.bucket_neighbours, verify) for p in range(n)])))
        storage.delete_tree(parts_dir)
        if verify:
            steps.run("attach", [joined_dir], lambda: sum(ctx.map(_attach_dst_signatures, [
                (s, path, edges_dir, joined_dir, column) for s, path in shards])))
            storage.delete_tree(edges_dir)
            verified = steps.run("verify", [verified_dir], lambda: sum(ctx.map(_verify_src, [
                (s, path, joined_dir, c.threshold, verified_dir, n, column) for s, path in shards])))
            storage.delete_tree(joined_dir)
        else:
            verified = candidates
        star_dir, cc = distributed_components(ctx.map, steps, work, verified_dir, n)
        steps.run("by-root", [by_root_dir], lambda: sum(ctx.map(_root_shard_of_stars, [
            (star_dir, p, by_root_dir) for p in range(n)])))
        totals = steps.run("decisions", [decisions_dir], lambda: _sum_counts(ctx.map(_cluster_decisions, [
            (s, path, by_root_dir, decisions_dir) for s, path in shards])))
        storage.make_dirs(decisions_dir)
        for folder in (verified_dir, star_dir, by_root_dir, index_dir):
            storage.delete_tree(folder)
        index_written = {}
        if writing:
            staging = dedup_index.staging_dir(c.index_write)
            ours = list(zip(ctx.keys_shards, ctx.keys_paths))
            steps.run("index-write", [staging], lambda: sum(ctx.map(_index_part, [
                (s, path, decisions_dir, storage.join(staging, dedup_index.part_name(k)))
                for k, (s, path) in enumerate(ours)])))
            index_written = {"index_written": dedup_index.publish(c.index_write, self.name, settings, token,
                                                                  len(ours))["rows"]}
        histogram = sorted((k, v) for k, v in totals.items() if k.startswith("cluster_size_"))
        return {"bands": self.bands, "rows": self.rows, "candidate_edges": int(candidates),
                "verified_edges": int(verified), "components_rounds": cc["rounds"],
                "clusters": totals.get("clusters", 0), "duplicates": totals.get("duplicates", 0),
                "indexed_documents": int(indexed), **index_written,
                **dict(sorted(histogram, key=lambda kv: int(kv[0].split("_")[-1].rstrip("+"))))}


def _sum_counts(results: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for result in results:
        for key, value in result.items():
            total[key] = total.get(key, 0) + value
    return total
