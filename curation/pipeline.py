"""A pipeline is a list of stages cut into segments at each global stage.

Segment k reads the input (k = 0) or the previous segment's intermediate shards, applies the decisions
of the global stage that opened it, runs its per-batch stages, and either computes the keys of the
global stage that closes it (writing every row to an intermediate shard) or, in the last segment,
writes the kept and rejected outputs. `ShardProcessor` does this for one shard inside a worker; it is
the same code on the Ray and local executors, which is why both give identical output.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.config import InputConfig
from curation.errors import CurationError, ShardFailure
from curation.io import AtomicParquetWriter, InputError, OutputError, Shard, read_parquet_batches, read_shard, write_json_atomic
from curation.stage import DROP_REASON, ID, TEXT, BatchPosition, GlobalStage, Stage, live_mask, text_bytes
from curation.stats import ShardStats, StageStats, stage_key


EMPTY_SHARD_SCHEMA = pa.schema([pa.field(ID, pa.string()), pa.field(TEXT, pa.string()), pa.field(DROP_REASON, pa.string())])


@dataclass
class Segment:
    index: int
    stages: list[tuple[str, Stage]] = field(default_factory=list)  # (stage key, per-batch stage)
    apply_global: tuple[str, GlobalStage] | None = None  # decisions applied first
    keys_for: tuple[str, GlobalStage] | None = None  # keys computed last
    is_last: bool = False

    @property
    def is_first(self) -> bool:
        return self.index == 0

    def all_stages(self) -> list[Stage]:
        found = [stage for _, stage in self.stages]
        if self.apply_global:
            found.insert(0, self.apply_global[1])
        if self.keys_for:
            found.append(self.keys_for[1])
        return found


def plan_segments(stages: list[Stage]) -> list[Segment]:
    segments = [Segment(0)]
    for position, stage in enumerate(stages):
        key = stage_key(position, stage.name)
        if isinstance(stage, GlobalStage):
            segments[-1].keys_for = (key, stage)
            if stage.needs_apply or position < len(stages) - 1:
                segments.append(Segment(len(segments), apply_global=(key, stage)))
        else:
            segments[-1].stages.append((key, stage))
    segments[-1].is_last = True
    return segments


class Layout:
    """Where a run keeps its outputs, intermediates and completion markers: locations (a path, or a
    URI on an object store), all read and written through `curation.storage`."""

    def __init__(self, root: str | Path) -> None:
        self.root = storage.normalise(root)
        self.work = storage.join(self.root, "_work")
        self.state = storage.join(self.root, "_state")

    @staticmethod
    def part_name(shard: Shard) -> str:
        """Output files are named by corpus position, never by the input's name: tools that guess splits
        from file names (HF `datasets` reads `en_wiki_valid_test.parquet` as the validation and test
        splits) must see one table. OUT/shards.json maps each part to its input file."""
        return f"part-{shard.index:05d}.parquet"

    def kept(self, shard: Shard) -> str:
        return storage.join(self.root, "kept", self.part_name(shard))

    def rejected(self, shard: Shard) -> str:
        return storage.join(self.root, "rejected", self.part_name(shard))

    @property
    def shard_index(self) -> str:
        return storage.join(self.root, "shards.json")

    def intermediate(self, segment: int, shard: Shard) -> str:
        return storage.join(self.work, f"segment{segment}", f"{shard.name}.parquet")

    def global_dir(self, key: str) -> str:
        return storage.join(self.work, key)

    def keys(self, key: str, shard: Shard) -> str:
        return storage.join(self.global_dir(key), "keys", f"{shard.name}.parquet")

    def marker_dir(self, segment: Segment) -> str:
        return storage.join(self.state, "final" if segment.is_last else f"segment{segment.index}")

    def marker(self, segment: Segment, shard: Shard) -> str:
        return storage.join(self.marker_dir(segment), f"{shard.name}.json")

    def finished(self, segment: Segment, shards: list[Shard]) -> set[int]:
        """Indexes of the shards whose marker for `segment` exists: one listing of the marker folder,
        not a request per shard."""
        names = storage.names_in(self.marker_dir(segment))
        return {s.index for s in shards if f"{s.name}.json" in names}

    def aggregate_marker(self, key: str) -> str:
        return storage.join(self.state, f"{key}.aggregate.json")

    @property
    def fingerprint(self) -> str:
        return storage.join(self.state, "pipeline.json")

    @property
    def stats(self) -> str:
        return storage.join(self.root, "stats.json")


class ShardProcessor:
    """Runs one segment of the pipeline over whole shards; lives in a worker (Ray actor or in-process)."""

    def __init__(self, segment: Segment, input_config: InputConfig, layout: Layout, compression: str,
                 write_documents: bool = True) -> None:
        self.segment = segment
        self.write_documents = write_documents
        self.input_config = input_config
        self.layout = layout
        self.compression = compression
        self._ready = False
        self._current: str | None = None  # the stage running now, for error messages
        self.reading: tuple[Shard, Counter[str]] | None = None
        self.on_progress = None  # in-process runs: called (shard, bytes of it read) after each batch

    def setup(self) -> None:
        if not self._ready:
            for stage in self.segment.all_stages():
                stage.run_dir = self.layout.root  # runtime context, not config: where this run writes
                stage.setup()
            self._ready = True

    def process(self, shard: Shard) -> dict[str, Any]:
        """Process a shard; returns {"stats": ...} or {"error": message} for bad input."""
        self.setup()
        segment, layout = self.segment, self.layout
        wall0, cpu0 = time.perf_counter(), time.process_time()
        stats = ShardStats()
        if segment.is_last and not self.write_documents:
            outputs = {}
        elif segment.is_last:
            outputs = {
                "kept": AtomicParquetWriter(layout.kept(shard), self.compression),
                "rejected": AtomicParquetWriter(layout.rejected(shard), self.compression),
            }
        else:
            outputs = {"next": AtomicParquetWriter(layout.intermediate(segment.index, shard), self.compression)}
        keys_writer = None
        if segment.keys_for:
            keys_writer = AtomicParquetWriter(layout.keys(segment.keys_for[0], shard), self.compression)
        writers = list(outputs.values()) + ([keys_writer] if keys_writer else [])
        last_schema = None
        try:
            input_counts: Counter[str] = Counter()
            self.reading = (shard, input_counts)  # what `progress()` reports while the shard runs
            if segment.is_first:
                batches = read_shard(shard, self.input_config, input_counts)
            else:
                batches = read_parquet_batches(layout.intermediate(segment.index - 1, shard))
            if segment.apply_global:
                segment.apply_global[1].prepare(layout.global_dir(segment.apply_global[0]), shard.index)
            row_offset = 0
            for batch in batches:
                position = BatchPosition(shard.index, shard.name, row_offset)
                if segment.is_first:
                    self._count_input(batch, stats)
                if segment.apply_global:
                    key, stage = segment.apply_global
                    batch = self._run_stage(stats, key, stage, lambda b: stage.apply(b, position), batch)
                for key, stage in segment.stages:
                    batch = self._run_stage(stats, key, stage, stage, batch)
                if keys_writer is not None:
                    key, stage = segment.keys_for
                    timer = _Timer()
                    keys = stage.keys(batch, position)
                    if keys is not None and keys.num_rows:
                        keys_writer.write(keys)
                    timer.add_to(stats.stage(key, stage.name))
                self._write(batch, outputs, stats)
                last_schema = batch.schema
                row_offset += batch.num_rows
                if self.on_progress is not None:
                    self.on_progress(shard, input_counts["position"])
            if keys_writer is not None:
                key, stage = segment.keys_for
                timer = _Timer()
                keys = stage.keys_end(BatchPosition(shard.index, shard.name, row_offset))
                if keys is not None and keys.num_rows:
                    keys_writer.write(keys)
                timer.add_to(stats.stage(key, stage.name))
            stats.renamed_ids = input_counts["renamed_ids"]
            for stage in segment.all_stages():
                key = self._key_of(stage)
                stats.stage(key, stage.name).metrics.update(stage.metrics)
                stage.metrics.clear()
            for writer in writers:
                fallback = last_schema
                if writer is outputs.get("kept") and last_schema is not None:
                    fallback = last_schema.remove(last_schema.get_field_index(DROP_REASON))
                if writer is keys_writer:
                    fallback = None
                if last_schema is None and writer is not keys_writer:
                    if writer is outputs.get("next"):
                        fallback = EMPTY_SHARD_SCHEMA  # read back by the next pass as no rows
                    else:
                        # An empty input (a 0-byte file) gives no kept/rejected file: a file without
                        # columns would make `read_table(OUT/kept)` lose every column.
                        writer.abort()
                        continue
                writer.commit(fallback)
        except InputError as exc:
            for writer in writers:
                writer.abort()
            if segment.keys_for:
                segment.keys_for[1].keys_abort()
            for stage in segment.all_stages():
                stage.metrics.clear()
            return {"error": str(exc)}
        except OSError as exc:  # ENOSPC, EACCES, EROFS, a store refusing...: say so, leave nothing a rerun would trust
            for writer in writers:
                writer.abort()
            if segment.keys_for:
                segment.keys_for[1].keys_abort()
            if isinstance(exc, storage.StorageError):
                raise  # it names the location and the store already
            hint = "store unreachable or credentials refused?" if storage.is_uri(layout.root) else \
                "disk full or folder not writable?"
            raise OutputError(f"{shard.path}: cannot write its output under {layout.root}: {exc} ({hint}). "
                              "Nothing of this shard was committed: fix it and run again, "
                              "finished shards are kept") from None
        except Exception as exc:  # a stage failed in a way no check foresaw: name the shard and stage
            for writer in writers:
                writer.abort()
            if segment.keys_for:
                segment.keys_for[1].keys_abort()
            if isinstance(exc, CurationError):
                raise
            raise ShardFailure(f"{shard.path}: stage {self._current or '?'} failed: {type(exc).__name__}: {exc}. "
                               "Nothing of this shard was committed") from exc
        except BaseException:  # KeyboardInterrupt, SystemExit: nothing half-written stays
            for writer in writers:
                writer.abort()
            if segment.keys_for:
                segment.keys_for[1].keys_abort()
            raise
        stats.wall_s = time.perf_counter() - wall0
        stats.cpu_s = time.process_time() - cpu0
        result = {"stats": stats.to_dict()}
        # The marker is written last: its presence means every output of the shard is in place.
        try:
            write_json_atomic(layout.marker(segment, shard), {"shard": shard.path, **result})
        except OSError as exc:
            raise OutputError(f"{shard.path}: cannot write its completion marker under {layout.root}: {exc} "
                              "(disk full or folder not writable?); the shard will run again") from None
        return result

    def progress(self) -> tuple[str, int] | None:
        """(path, bytes of the file read so far) of the shard being processed (a later pass reads the
        intermediate file, whose position is not the input's: it reports none)."""
        if self.reading is None or not self.segment.is_first:
            return None
        shard, counts = self.reading
        return shard.path, min(int(counts["position"]), shard.size)

    def _key_of(self, stage: Stage) -> str:
        for key, candidate in self.segment.stages:
            if candidate is stage:
                return key
        for pair in (self.segment.apply_global, self.segment.keys_for):
            if pair and pair[1] is stage:
                return pair[0]
        raise AssertionError("stage not in segment")

    @staticmethod
    def _count_input(batch: pa.RecordBatch, stats: ShardStats) -> None:
        stats.docs += batch.num_rows
        stats.bytes += text_bytes(batch)
        reasons = batch.column(DROP_REASON)
        if reasons.null_count < len(reasons):
            for item in pc.value_counts(reasons.drop_null()).to_pylist():
                stats.input_dropped[item["values"]] += item["counts"]

    def _run_stage(self, stats: ShardStats, key: str, stage: Stage, fn, batch: pa.RecordBatch) -> pa.RecordBatch:
        entry = stats.stage(key, stage.name)
        self._current = stage.name
        before = live_mask(batch)
        entry.docs_in += pc.sum(before).as_py() or 0
        entry.bytes_in += text_bytes(batch, before)
        timer = _Timer()
        out = fn(batch)
        timer.add_to(entry)
        if not isinstance(out, pa.RecordBatch):
            raise TypeError(f"stage {stage.name!r} returned {type(out).__name__}, expected a pyarrow.RecordBatch")
        if out.num_rows != batch.num_rows or DROP_REASON not in out.schema.names or TEXT not in out.schema.names:
            raise RuntimeError(
                f"stage {stage.name!r} must keep every row and the text and drop_reason columns "
                f"(got {out.num_rows} rows for {batch.num_rows}); drop rows by setting drop_reason"
            )
        after = live_mask(out)
        entry.docs_out += pc.sum(after).as_py() or 0
        entry.bytes_out += text_bytes(out, after)
        newly = pc.and_(before, pc.invert(after))
        if pc.any(newly).as_py():
            for item in pc.value_counts(pc.filter(out.column(DROP_REASON), newly)).to_pylist():
                entry.dropped[item["values"]] += item["counts"]
        return out

    @staticmethod
    def _write(batch: pa.RecordBatch, outputs: dict[str, AtomicParquetWriter], stats: ShardStats) -> None:
        if "next" in outputs:
            outputs["next"].write(batch)
            return
        reasons = batch.column(DROP_REASON)
        if reasons.null_count == batch.num_rows:  # nothing dropped: no copy of the batch
            kept, rejected = batch, batch.slice(0, 0)
        else:
            live = live_mask(batch)
            kept, rejected = batch.filter(live), batch.filter(pc.invert(live))
        kept = kept.drop_columns([DROP_REASON])
        stats.kept_docs += kept.num_rows
        stats.kept_bytes += text_bytes(kept)
        stats.rejected_docs += rejected.num_rows
        if not outputs:  # output.documents: false
            return
        if outputs["kept"].schema is None:
            outputs["kept"].schema = kept.schema
            outputs["rejected"].schema = rejected.schema
        outputs["kept"].write(kept)
        outputs["rejected"].write(rejected)


class _Timer:
    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def add_to(self, entry: StageStats) -> None:
        entry.wall_s += time.perf_counter() - self.wall0
        entry.cpu_s += time.process_time() - self.cpu0

