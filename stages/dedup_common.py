"""What the dedup stages share: the shuffle of spilled keys into partitions, the decision files, and
applying them to a shard (drop the duplicates, add `duplicate_of` and `dup_cluster`)."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.io import AtomicParquetWriter
from curation.stage import BatchPosition, drop_rows, set_column

# One row per document that is in a cluster: duplicate_of is null for the kept one.
DECISION_SCHEMA = pa.schema([
    ("shard", pa.int32()), ("row", pa.int64()), ("duplicate_of", pa.string()), ("dup_cluster", pa.string()),
])


def partition_of(values: pa.Array, partitions: int) -> np.ndarray:
    """Partition number from a key column: a fixed-size binary (its first 4 bytes) or an unsigned integer."""
    if pa.types.is_fixed_size_binary(values.type) or pa.types.is_binary(values.type):
        prefix = pc.binary_slice(values, 0, 4).cast(pa.binary(4)) if not pa.types.is_fixed_size_binary(values.type) \
            else pc.binary_slice(values, 0, 4)
        raw = prefix.combine_chunks() if isinstance(prefix, pa.ChunkedArray) else prefix
        first = np.frombuffer(raw.buffers()[-1], dtype=">u4")[: len(raw)] if len(raw) else np.zeros(0, ">u4")
        return (first % partitions).astype(np.int32)
    numbers = values.to_numpy(zero_copy_only=False).astype(np.uint64)
    return (numbers % np.uint64(partitions)).astype(np.int32)


def partition_keys(args: tuple[str, str, int, str]) -> int:
    """Shuffle map (a Ray task): split one shard's spilled keys into partitions by `column`."""
    keys_path, parts_dir, partitions, column = args
    table = pq.read_table(storage.parquet_source(keys_path))  # a path, or a URI under an s3:// output
    part = partition_of(table.column(column).combine_chunks(), partitions) if table.num_rows else np.zeros(0, np.int32)
    write_partitions(table, part, parts_dir, storage.basename(keys_path), partitions)
    return table.num_rows


def write_partitions(table: pa.Table, part: np.ndarray, parts_dir: str, name: str, partitions: int) -> None:
    """Write the rows of each partition to parts_dir/pNNNN/name (an empty file where none fall)."""
    for p in range(partitions):
        writer = AtomicParquetWriter(storage.join(parts_dir, f"p{p:04d}", name), schema=table.schema)
        writer.write(table.filter(pa.array(part == p)))
        writer.commit()


def read_partition(part_dir: str) -> pa.Table | None:
    files = storage.parquet_files(part_dir)  # one listing, on disk or in a bucket
    if not files:
        return None
    return storage.dataset(files, format="parquet").to_table()


class AppliesDecisions:
    """Mixin for global dedup stages whose aggregate step writes DECISION_SCHEMA files under decisions/."""

    reason = "duplicate"

    def prepare(self, work_dir: str, shard_index: int) -> None:
        import pyarrow.dataset as ds  # late: it imports pandas (40 MB in every process)

        # Files that hold many shards (exact_dedup: one per partition, filtered here) and a folder per
        # shard (minhash_dedup: decisions/sNNNNNN/, one file per shard of cluster roots); listed through
        # the storage layer, so the work folder may be in a bucket.
        files = storage.parquet_files(storage.join(work_dir, "decisions"))
        files += storage.parquet_files(storage.join(work_dir, "decisions", f"s{shard_index:06d}"))
        table = storage.dataset(files, format="parquet", schema=DECISION_SCHEMA).to_table(
            filter=ds.field("shard") == shard_index)
        self._decisions = table.sort_by("row")
        self._rows = self._decisions.column("row").to_numpy()

    def apply(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.RecordBatch:
        n = batch.num_rows
        lo, hi = np.searchsorted(self._rows, [position.row_offset, position.row_offset + n])
        local = self._decisions.slice(lo, hi - lo)
        duplicate_of: list[str | None] = [None] * n
        cluster: list[str | None] = [None] * n
        # Only rows in a cluster are visited: a small fraction of the batch.
        for row, of, name in zip((self._rows[lo:hi] - position.row_offset).tolist(),
                                 local.column("duplicate_of").to_pylist(), local.column("dup_cluster").to_pylist()):
            duplicate_of[row] = of
            cluster[row] = name
        duplicate_of_array = pa.array(duplicate_of, pa.string())
        batch = drop_rows(batch, pc.is_valid(duplicate_of_array), self.reason)
        batch = set_column(batch, "duplicate_of", _keep_earlier(batch, "duplicate_of", duplicate_of_array))
        return set_column(batch, "dup_cluster", _keep_earlier(batch, "dup_cluster", pa.array(cluster, pa.string())))


def _keep_earlier(batch: pa.RecordBatch, name: str, ours: pa.Array) -> pa.Array:
    """This stage's value where it has one, else what an earlier dedup stage wrote.

    Rows an earlier stage rejected reach this one (rows are never removed) but take no part in it, so
    their `duplicate_of`, the edge to the document they copied, survives; a document an earlier stage
    kept and this one clusters takes this stage's `dup_cluster`, and its earlier cluster stays reachable
    through the `duplicate_of` of the copies it kept (see the README on recovering the whole graph).
    """
    index = batch.schema.get_field_index(name)
    if index < 0:
        return ours
    earlier = batch.column(index)
    if earlier.null_count == len(earlier):
        return ours
    return pc.coalesce(ours, earlier.cast(pa.string()))


def duplicate_roots(ids: pa.Array, duplicate_of: pa.Array) -> pa.Array:
    """For every row of a run's output (kept and rejected together), the id of the document at the end
    of its `duplicate_of` chain: its cluster across every dedup stage of the run.

    Each dedup stage rejects a copy with `duplicate_of` = the document it kept, and a later stage may
    reject that one in turn, so the edges form a forest whose roots are documents no stage marked as a
    copy. Rows in no cluster are their own root. Pointer jumping: log2(longest chain) rounds.
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    duplicate_of = duplicate_of.combine_chunks() if isinstance(duplicate_of, pa.ChunkedArray) else duplicate_of
    parent = pc.index_in(duplicate_of, value_set=ids).to_numpy(zero_copy_only=False)
    own = np.arange(len(ids))
    parent = np.where(np.isnan(parent.astype(float)), own, parent).astype(np.int64) if len(ids) else own
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            return ids.take(pa.array(parent))
        parent = jumped
