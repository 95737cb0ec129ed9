"""`exact_dedup`: one document per normalised text across the whole corpus.

Rule for which copy is kept: the first in corpus order, that is the lowest (input shard index, row),
with input shards sorted by path. The others are rejected with reason `exact_duplicate` and
`duplicate_of` set to the kept document's id; every row that took part gets `dup_cluster` (the hash).

Corpus-wide in three steps (see `GlobalStage`): each worker hashes its batches and spills
(hash, shard, row, id) to Parquet; the aggregate step shuffles those keys into partitions by hash
(Ray tasks), then each partition finds its duplicates and writes the decisions sorted by shard;
each worker then reads only the decisions of its shard. No step holds the corpus's keys in one place.

Against an earlier run (`index_read`, see `dedup_index`): the indexed (hash, id) rows join the shuffle
as shards before the corpus (negative shard numbers), so a document whose text an indexed run kept is
rejected with `duplicate_of` = that document's id. `index_write` keeps this run's first copy of each
hash not already indexed: 16 bytes of hash and the id per kept document.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.io import AtomicParquetWriter
from curation.stage import ID, TEXT, AggregateContext, BatchPosition, GlobalStage, live_mask, register_stage
from curation.stages import dedup_index
from curation.stages.dedup_common import DECISION_SCHEMA, AppliesDecisions, partition_keys, partition_of, write_partitions

HASH_BYTES = 16  # 128 bits: no accidental collision at any corpus size we will see
# What an index's hashes depend on: another normalisation or digest makes them incomparable.
INDEX_SETTINGS = {"hash": f"blake2b-{8 * HASH_BYTES} of lower-cased text, white space collapsed and trimmed"}
INDEX_SCHEMA = pa.schema([("hash", pa.binary(HASH_BYTES)), ("id", pa.string())])


def normalise_for_hash(text: pa.Array) -> pa.Array:
    """Lower-case, collapse runs of white space, trim: copies differing only in those count as one."""
    text = pc.utf8_lower(text)
    text = pc.replace_substring_regex(text, r"\s+", " ")
    return pc.utf8_trim_whitespace(text)


def text_hashes(text: pa.Array) -> pa.FixedSizeBinaryArray:
    normalised = normalise_for_hash(text).to_pylist()
    digests = [hashlib.blake2b(t.encode("utf-8"), digest_size=HASH_BYTES).digest() for t in normalised]
    return pa.array(digests, pa.binary(HASH_BYTES))


def _partition_index(args: tuple[str, int, str, int]) -> int:
    """Shuffle map of an index part: its (hash, id) rows as keys of shard `shard` (negative: before
    the corpus), split into partitions like the spilled keys."""
    index_path, shard, parts_dir, partitions = args
    index = pq.read_table(storage.parquet_source(index_path)).cast(INDEX_SCHEMA)
    table = pa.table({"hash": index.column("hash"), "shard": pa.array(np.full(index.num_rows, shard, np.int32)),
                      "row": pa.array(np.arange(index.num_rows, dtype=np.int64)), "id": index.column("id")})
    part = partition_of(table.column("hash").combine_chunks(), partitions)
    write_partitions(table, part, parts_dir, f"index{-shard:06d}.parquet", partitions)
    return table.num_rows


def _reduce_partition(args: tuple[str, str, str | None]) -> dict[str, int]:
    """Shuffle reduce: within one partition, keep the first copy of each hash; with an index to write,
    also the (hash, id) of each kept copy that no index held."""
    part_dir, out_path, index_out = args
    files = storage.parquet_files(part_dir)  # one listing, on disk or in a bucket
    table = storage.dataset(files, format="parquet").to_table() if files else None
    if table is None or table.num_rows == 0:
        AtomicParquetWriter(out_path, schema=DECISION_SCHEMA).commit()
        if index_out:
            AtomicParquetWriter(index_out, schema=INDEX_SCHEMA).commit()
        return {"keys": 0, "duplicates": 0, "clusters": 0}
    table = table.sort_by([("hash", "ascending"), ("shard", "ascending"), ("row", "ascending")])
    hashes = table.column("hash").combine_chunks()
    same_as_previous = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows > 1:
        same_as_previous[1:] = pc.equal(hashes[1:], hashes[:-1]).to_numpy(zero_copy_only=False)
    # The kept row of each group is its first; every row of a group of size > 1 is in a cluster.
    group_start = np.flatnonzero(~same_as_previous)
    group_of_row = np.cumsum(~same_as_previous) - 1
    group_size = np.diff(np.append(group_start, table.num_rows))
    in_cluster = group_size[group_of_row] > 1
    ours = table.column("shard").to_numpy() >= 0  # index rows (negative shards) only name kept copies
    if index_out:
        new = ~same_as_previous & ours
        writer = AtomicParquetWriter(index_out, schema=INDEX_SCHEMA)
        writer.write(pa.table({"hash": hashes.filter(pa.array(new)),
                               "id": table.column("id").filter(pa.array(new))}).cast(INDEX_SCHEMA))
        writer.commit()
    kept_ids = table.column("id").combine_chunks().take(pa.array(group_start[group_of_row]))
    decisions = pa.table({
        "shard": table.column("shard"),
        "row": table.column("row"),
        "duplicate_of": pc.if_else(pa.array(same_as_previous), kept_ids, pa.nulls(table.num_rows, pa.string())),
        "dup_cluster": pa.array([h.hex() for h in pc.binary_slice(hashes, 0, 8).to_pylist()], pa.string()),
    }).filter(pa.array(in_cluster & ours))
    # Only rows in a cluster are written: the apply step treats every other row as unique.
    decisions = decisions.sort_by([("shard", "ascending"), ("row", "ascending")])
    writer = AtomicParquetWriter(out_path, schema=DECISION_SCHEMA)
    writer.write(decisions.cast(DECISION_SCHEMA))
    writer.commit()
    sizes = group_size[group_size > 1]
    return {"keys": int(ours.sum()), "indexed_keys": int((~ours).sum()),
            "duplicates": int((same_as_previous & ours).sum()), "clusters": int(len(sizes)),
            **{f"cluster_size_{k}": int(v) for k, v in zip(*np.unique(np.minimum(sizes, 10), return_counts=True))}}


@register_stage("exact_dedup")
class ExactDedup(AppliesDecisions, GlobalStage):
    """Keeps the first copy (corpus order) of each normalised text; rejects the others as exact_duplicate."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        partitions: int = 16  # shuffle partitions: a reducer holds about 1/partitions of the keys
        index_read: tuple[str, ...] = ()  # indexes of earlier runs (see `dedup_index`), oldest first
        index_write: str | None = None  # a new folder: this run's kept hashes, for later runs

        def __post_init__(self) -> None:
            if not 1 <= self.partitions <= 4096:
                raise ValueError("partitions must be between 1 and 4096")

    reason = "exact_duplicate"

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        dedup_index.check_options(self.name, self.config.index_read, self.config.index_write, INDEX_SETTINGS)

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        live = live_mask(batch)
        rows = pc.indices_nonzero(live)
        if len(rows) == 0:
            return None
        text = pc.take(batch.column(TEXT), rows)
        return pa.table({
            "hash": text_hashes(text),
            "shard": pa.array(np.full(len(rows), position.shard_index, dtype=np.int32)),
            "row": pc.add(rows.cast(pa.int64()), position.row_offset),
            "id": pc.take(batch.column(ID), rows),
        })

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        parts_dir = storage.join(ctx.work_dir, "parts")
        decisions_dir = storage.join(ctx.work_dir, "decisions")
        n, c = self.config.partitions, self.config
        index_in = dedup_index.index_parts(c.index_read, self.name, INDEX_SETTINGS)
        token = dedup_index.run_token(ctx.work_dir, ctx.keys_paths)
        writing = c.index_write is not None and dedup_index.begin_write(c.index_write, self.name, token)
        staging = dedup_index.staging_dir(c.index_write) if writing else None
        ctx.map(partition_keys, [(path, parts_dir, n, "hash") for path in ctx.keys_paths])
        # Index parts are shards -len(parts)..-1: all before the corpus, the first listed index first.
        ctx.map(_partition_index, [(path, k - len(index_in), parts_dir, n) for k, path in enumerate(index_in)])
        results = ctx.map(_reduce_partition, [
            (storage.join(parts_dir, f"p{p:04d}"), storage.join(decisions_dir, f"p{p:04d}.parquet"),
             storage.join(staging, dedup_index.part_name(p)) if staging else None) for p in range(n)
        ])
        total: dict[str, int] = {}
        for result in results:
            for key, value in result.items():
                total[key] = total.get(key, 0) + value
        if writing:
            total["index_written"] = dedup_index.publish(c.index_write, self.name, INDEX_SETTINGS, token, n)["rows"]
        return total

