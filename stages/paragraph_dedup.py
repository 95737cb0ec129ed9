"""`paragraph_dedup`: exact duplicate paragraphs across the whole corpus, removed CCNet style.

A paragraph is a line (`separator`, default a newline, as CCNet). Paragraphs are compared after
normalisation (lower case, white space collapsed); blank ones are ignored. The first occurrence in corpus
order (input shard, row, paragraph) stays; every later occurrence is cut out of its document, and a
document left with fewer than `min_chars` characters is dropped as `paragraph_dedup:too_short`.
Metrics: `paragraphs_removed`, `bytes_removed`.

Corpus-wide like `exact_dedup`: workers spill (hash, shard, row, paragraph) for every paragraph, the
aggregate step shuffles them by hash into partitions (Ray tasks) and each partition lists the later
copies; each worker then reads only the removals of its shard. Every folder goes through
`curation.storage`, so the work folder may be in a bucket (`s3://.../_work`).

Against an earlier run (`index_read`, see `dedup_index`): the indexed paragraph hashes join the shuffle
as shards before the corpus, so a paragraph an indexed run saw is cut wherever it appears in this one.
`index_write` keeps the hashes this run saw first: 8 bytes per distinct paragraph.
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
from curation.stage import TEXT, AggregateContext, BatchPosition, GlobalStage, drop_rows, live_mask, register_stage, set_column
from curation.stages import text_rules as tr
from curation.stages import dedup_index
from curation.stages.dedup_common import partition_keys, partition_of, read_partition, write_partitions

REMOVAL_SCHEMA = pa.schema([("shard", pa.int32()), ("row", pa.int64()), ("paragraph", pa.int32())])
INDEX_SCHEMA = pa.schema([("hash", pa.uint64())])
INDEX_HASH = "blake2b-64 little-endian of the paragraph lower-cased, white space collapsed and trimmed"


def _partition_index(args: tuple[str, int, str, int]) -> int:
    """Shuffle map of an index part: its hashes as paragraphs of shard `shard` (negative: before the corpus)."""
    index_path, shard, parts_dir, partitions = args
    hashes = pq.read_table(storage.parquet_source(index_path)).cast(INDEX_SCHEMA).column("hash").combine_chunks()
    n = len(hashes)
    table = pa.table({"hash": hashes, "shard": pa.array(np.full(n, shard, np.int32)),
                      "row": pa.array(np.zeros(n, np.int64)), "paragraph": pa.array(np.zeros(n, np.int32))})
    write_partitions(table, partition_of(hashes, partitions), parts_dir, f"index{-shard:06d}.parquet", partitions)
    return n


def _removals(args: tuple[str, str, str | None]) -> dict[str, int]:
    """Shuffle reduce: in one partition, every occurrence of a paragraph after its first; with an index
    to write, the hashes whose first occurrence is in this run."""
    part_dir, out_path, index_out = args
    table = read_partition(part_dir)
    writer = AtomicParquetWriter(out_path, schema=REMOVAL_SCHEMA)
    index_writer = AtomicParquetWriter(index_out, schema=INDEX_SCHEMA) if index_out else None
    removed = ours_total = 0
    if table is not None and table.num_rows:
        table = table.sort_by([("hash", "ascending"), ("shard", "ascending"), ("row", "ascending"),
                               ("paragraph", "ascending")])
        hashes = table.column("hash").to_numpy()
        later = np.concatenate([[False], hashes[1:] == hashes[:-1]])
        ours = table.column("shard").to_numpy() >= 0  # index rows (negative shards) are never cut
        removals = table.select(["shard", "row", "paragraph"]).filter(pa.array(later & ours))
        writer.write(removals.sort_by([("shard", "ascending"), ("row", "ascending")]).cast(REMOVAL_SCHEMA))
        if index_writer:
            index_writer.write(pa.table({"hash": hashes[~later & ours]}, schema=INDEX_SCHEMA))
        removed, ours_total = int((later & ours).sum()), int(ours.sum())
    writer.commit()
    if index_writer:
        index_writer.commit()
    return {"paragraphs": ours_total, "duplicate_paragraphs": removed}


@register_stage("paragraph_dedup")
class ParagraphDedup(GlobalStage):
    """Removes paragraphs seen earlier in the corpus (CCNet); drops documents left too short."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        separator: str = "\n"
        min_chars: int = 50  # a document left shorter is dropped
        partitions: int = 16
        index_read: tuple[str, ...] = ()  # indexes of earlier runs (see `dedup_index`), oldest first
        index_write: str | None = None  # a new folder: the paragraph hashes this run saw first

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        super().__init__(config, **options)
        dedup_index.check_options(self.name, self.config.index_read, self.config.index_write, self.index_settings())

    def index_settings(self) -> dict[str, Any]:
        return {"hash": INDEX_HASH, "separator": self.config.separator}

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        rows = np.flatnonzero(tr.to_numpy_bool(live_mask(batch)))
        if len(rows) == 0:
            return None
        text = pc.take(batch.column(TEXT), pa.array(rows))
        paragraphs = tr.Tokens.from_lists(pc.split_pattern(text, self.config.separator))
        index = np.arange(len(paragraphs.values)) - np.repeat(
            np.concatenate([[0], np.cumsum(paragraphs.counts)[:-1]]), paragraphs.counts)
        normal = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(paragraphs.values), r"\s+", " "))
        keep = tr.to_numpy_bool(pc.greater(pc.utf8_length(normal), 0))
        values = pc.filter(normal, pa.array(keep)).to_pylist()
        hashes = np.fromiter((int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
                              for v in values), np.uint64, len(values))
        return pa.table({
            "hash": pa.array(hashes),
            "shard": pa.array(np.full(len(values), position.shard_index, np.int32)),
            "row": pa.array(rows[paragraphs.parent[keep]] + position.row_offset),
            "paragraph": pa.array(index[keep].astype(np.int32)),
        })

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        parts_dir = storage.join(ctx.work_dir, "parts")
        n, c, settings = self.config.partitions, self.config, self.index_settings()
        index_in = dedup_index.index_parts(c.index_read, self.name, settings)
        token = dedup_index.run_token(ctx.work_dir, ctx.keys_paths)
        writing = c.index_write is not None and dedup_index.begin_write(c.index_write, self.name, token)
        staging = dedup_index.staging_dir(c.index_write) if writing else None
        ctx.map(partition_keys, [(path, parts_dir, n, "hash") for path in ctx.keys_paths])
        # Index parts are shards -len(parts)..-1: all before the corpus, the first listed index first.
        ctx.map(_partition_index, [(path, k - len(index_in), parts_dir, n) for k, path in enumerate(index_in)])
        results = ctx.map(_removals, [(storage.join(parts_dir, f"p{p:04d}"),
                                       storage.join(ctx.work_dir, "removals", f"p{p:04d}.parquet"),
                                       storage.join(staging, dedup_index.part_name(p)) if staging else None)
                                      for p in range(n)])
        total = {key: sum(r[key] for r in results) for key in ("paragraphs", "duplicate_paragraphs")}
        if writing:
            total["index_written"] = dedup_index.publish(c.index_write, self.name, settings, token, n)["rows"]
        return total

    def prepare(self, work_dir: str, shard_index: int) -> None:
        import pyarrow.dataset as ds  # late: it imports pandas (40 MB in every process)

        files = storage.parquet_files(storage.join(work_dir, "removals"))  # one listing, on disk or in a bucket
        table = storage.dataset(files, format="parquet", schema=REMOVAL_SCHEMA).to_table(
            filter=ds.field("shard") == shard_index)
        table = table.sort_by([("row", "ascending"), ("paragraph", "ascending")])
        self._rows = table.column("row").to_numpy()
        self._paragraphs = table.column("paragraph").to_numpy()

    def apply(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.RecordBatch:
        lo, hi = np.searchsorted(self._rows, [position.row_offset, position.row_offset + batch.num_rows])
        if lo == hi:
            return batch
        texts = batch.column(TEXT).to_pylist()
        rows = self._rows[lo:hi] - position.row_offset
        paragraphs = self._paragraphs[lo:hi]
        too_short = np.zeros(batch.num_rows, dtype=bool)
        sep = self.config.separator
        # Only documents that lose a paragraph are rebuilt, in Python: a small share of a batch.
        for row in np.unique(rows):
            drop = set(paragraphs[rows == row].tolist())
            parts = texts[row].split(sep)
            kept = sep.join(p for i, p in enumerate(parts) if i not in drop)
            self.metrics["paragraphs_removed"] += len(drop)
            self.metrics["bytes_removed"] += len(texts[row].encode()) - len(kept.encode())
            texts[row] = kept
            too_short[row] = len(kept.strip()) < self.config.min_chars
        batch = set_column(batch, TEXT, pa.array(texts, pa.string()))
        return drop_rows(batch, pa.array(too_short), "paragraph_dedup:too_short")
