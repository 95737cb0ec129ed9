"""A pipeline is a list of stages cut into segments at each global stage, then its sinks.

Segment k reads the input (k = 0) or the previous segment's intermediate shards, applies the decisions
of the global stage that opened it, runs its per-batch stages, and either computes the keys of the
global stage that closes it (writing every row to an intermediate shard) or, in the last segment,
hands every batch to the sinks (`curation.sink`): `DocumentsSink` for the kept and rejected Parquet,
and those the pipeline names (`pack`). `ShardProcessor` does this for one shard inside a worker; it is
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
from curation.memory import TRIM_EVERY_BYTES, trim_heap
from curation.output_schema import publish_one_schema
from curation.sink import FinishContext, Sink, SinkContext, SinkWriter
from curation.stage import DROP_REASON, ID, TEXT, BatchPosition, GlobalStage, Stage, live_mask, text_bytes
from curation.stats import ShardStats, StageStats, stage_key


EMPTY_SHARD_SCHEMA = pa.schema([pa.field(ID, pa.string()), pa.field(TEXT, pa.string()), pa.field(DROP_REASON, pa.string())])


@dataclass
class Segment:
    index: int
    stages: list[tuple[str, Stage]] = field(default_factory=list)  # (stage key, per-batch stage)
    apply_global: tuple[str, GlobalStage] | None = None  # decisions applied first
    keys_for: tuple[str, GlobalStage] | None = None  # keys computed last
    is_last: bool = False  # its batches go to the sinks

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
    """The passes over the documents: a new one after each global stage. `stages` are the pipeline's
    stages without its sinks (`curation.sink.split_sinks`)."""
    segments = [Segment(0)]
    for position, stage in enumerate(stages):
        key = stage_key(position, stage.name)
        if isinstance(stage, GlobalStage):
            segments[-1].keys_for = (key, stage)
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

    def finish_marker(self, key: str) -> str:
        """A sink's finish step done: its result, for stats and for a rerun that skips it."""
        return storage.join(self.state, f"{key}.finish.json")

    def sink_context(self, key: str, compression: str) -> SinkContext:
        return SinkContext(output_dir=self.root, work_dir=self.global_dir(key), compression=compression)

    @property
    def fingerprint(self) -> str:
        return storage.join(self.state, "pipeline.json")

    @property
    def stats(self) -> str:
        return storage.join(self.root, "stats.json")


DOCUMENTS = "documents"  # the key of the engine's own sink: OUT/_state/documents.finish.json


class DocumentsSink(Sink):
    """The curated documents: per input shard `OUT/kept/part-NNNNN.parquet` (kept rows, without
    `drop_reason`) and `OUT/rejected/part-NNNNN.parquet` (dropped rows with their reason); `finish`
    gives every file of each folder the folder's union schema, then writes the index, OUT/shards.json."""

    name = DOCUMENTS

    def open(self, shard: Shard, context: SinkContext) -> SinkWriter:
        layout = Layout(context.output_dir)
        return _DocumentsWriter(layout.kept(shard), layout.rejected(shard), context.compression)

    def finish(self, context: FinishContext) -> dict[str, Any]:
        layout = Layout(context.output_dir)
        counts = publish_one_schema([storage.join(layout.root, "kept"), storage.join(layout.root, "rejected")],
                                    storage.join(layout.state, "one_schema.json"), context.compression, context.map)
        kept = storage.names_in(storage.join(layout.root, "kept"))
        write_json_atomic(layout.shard_index, [
            {"input": shard.path, "source": shard.source, "kept": f"kept/{layout.part_name(shard)}",
             "rejected": f"rejected/{layout.part_name(shard)}"}
            for shard in context.shards if layout.part_name(shard) in kept])
        return counts


class _DocumentsWriter(SinkWriter):
    def __init__(self, kept: str, rejected: str, compression: str) -> None:
        self.kept = AtomicParquetWriter(kept, compression)
        self.rejected = AtomicParquetWriter(rejected, compression)
        self.batches = 0

    def write(self, batch: pa.RecordBatch) -> None:
        reasons = batch.column(DROP_REASON)
        if reasons.null_count == batch.num_rows:  # nothing dropped: no copy of the batch
            kept, rejected = batch, batch.slice(0, 0)
        else:
            live = live_mask(batch)
            kept, rejected = batch.filter(live), batch.filter(pc.invert(live))
        kept = kept.drop_columns([DROP_REASON])
        if self.kept.schema is None:
            self.kept.schema = kept.schema
            self.rejected.schema = rejected.schema
        self.kept.write(kept)
        self.rejected.write(rejected)
        self.batches += 1

    def commit(self) -> None:
        if not self.batches:
            # An empty input (a 0-byte file) gives no kept/rejected file: a file without columns would
            # make `read_table(OUT/kept)` lose every column.
            self.abort()
            return
        self.kept.commit()
        self.rejected.commit()

    def abort(self) -> None:
        self.kept.abort()
        self.rejected.abort()


class ShardProcessor:
    """Runs one segment of the pipeline over whole shards; lives in a worker (Ray actor or in-process).
    The last segment hands every batch to `sinks`: (key, sink) pairs, the key naming the sink's work
    folder, its finish marker and (but for `DOCUMENTS`) its entry in stats."""

    def __init__(self, segment: Segment, input_config: InputConfig, layout: Layout, compression: str,
                 sinks: list[tuple[str, Sink]] | None = None) -> None:
        self.segment = segment
        self.sinks = list(sinks or []) if segment.is_last else []
        self.input_config = input_config
        self.layout = layout
        self.compression = compression
        self._ready = False
        self._current: str | None = None  # the stage or sink running now, for error messages
        self.reading: tuple[Shard, Counter[str]] | None = None
        self.on_progress = None  # in-process runs: called (shard, bytes of it read) after each batch

    def setup(self) -> None:
        if not self._ready:
            for stage in self.segment.all_stages():
                stage.setup()
            for _, sink in self.sinks:
                sink.setup()
            self._ready = True

    def process(self, shard: Shard) -> dict[str, Any]:
        """Process a shard; returns {"stats": ...} or {"error": message} for bad input."""
        self.setup()
        segment, layout = self.segment, self.layout
        wall0, cpu0 = time.perf_counter(), time.process_time()
        stats = ShardStats()
        next_writer = None
        if not segment.is_last:
            next_writer = AtomicParquetWriter(layout.intermediate(segment.index, shard), self.compression)
        keys_writer = None
        if segment.keys_for:
            keys_writer = AtomicParquetWriter(layout.keys(segment.keys_for[0], shard), self.compression)
        writers: list[AtomicParquetWriter | SinkWriter] = [w for w in (next_writer, keys_writer) if w is not None]
        last_schema = None
        try:
            opened = []
            for key, sink in self.sinks:
                opened.append((key, sink, sink.open(shard, layout.sink_context(key, self.compression))))
                writers.append(opened[-1][2])
            input_counts: Counter[str] = Counter()
            self.reading = (shard, input_counts)  # what `progress()` reports while the shard runs
            if segment.is_first:
                batches = read_shard(shard, self.input_config, input_counts)
            else:
                batches = read_parquet_batches(layout.intermediate(segment.index - 1, shard))
            if segment.apply_global:
                segment.apply_global[1].prepare(layout.global_dir(segment.apply_global[0]), shard.index)
            row_offset = 0
            since_trim = 0  # bytes of batches since the last trim_heap()
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
                if next_writer is not None:
                    next_writer.write(batch)
                else:
                    self._count_output(batch, stats)
                for key, sink, writer in opened:
                    self._run_sink(stats, key, sink, lambda: writer.write(batch))
                last_schema = batch.schema
                row_offset += batch.num_rows
                since_trim += batch.nbytes
                if since_trim >= TRIM_EVERY_BYTES:
                    trim_heap()
                    since_trim = 0
                if self.on_progress is not None:
                    self.on_progress(shard, input_counts["position"])
            for key, sink, writer in opened:
                self._run_sink(stats, key, sink, writer.commit)
            stats.renamed_ids = input_counts["renamed_ids"]
            for key, operator in self._operators():
                stats.stage(key, operator.name).metrics.update(operator.metrics)
                operator.metrics.clear()
            if keys_writer is not None:
                keys_writer.commit()
            if next_writer is not None:
                # no batch (an empty input): a file the next pass reads back as no rows
                next_writer.commit(last_schema or EMPTY_SHARD_SCHEMA)
        except InputError as exc:
            for writer in writers:
                writer.abort()
            for _, operator in self._operators():
                operator.metrics.clear()
            return {"error": str(exc)}
        except OSError as exc:  # ENOSPC, EACCES, EROFS, a store refusing...: say so, leave nothing a rerun would trust
            for writer in writers:
                writer.abort()
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
            if isinstance(exc, CurationError):
                raise
            raise ShardFailure(f"{shard.path}: stage {self._current or '?'} failed: {type(exc).__name__}: {exc}. "
                               "Nothing of this shard was committed") from exc
        except BaseException:  # KeyboardInterrupt, SystemExit: nothing half-written stays
            for writer in writers:
                writer.abort()
            raise
        # The shard's freed buffers go back before the next shard (curation.memory): the bench's packing
        # actors grew from about 175 MB to 325-375 MB over their four shards without it, 280-300 with it.
        trim_heap()
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

    def _operators(self) -> list[tuple[str, Stage | Sink]]:
        """(stats key, stage or sink) of everything in this segment that has a stats entry."""
        found: list[tuple[str, Stage | Sink]] = list(self.segment.stages)
        for pair in (self.segment.apply_global, self.segment.keys_for):
            if pair:
                found.append(pair)
        return found + [(key, sink) for key, sink in self.sinks if key != DOCUMENTS]

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

    def _run_sink(self, stats: ShardStats, key: str, sink: Sink, fn) -> None:
        self._current = sink.name
        timer = _Timer()
        fn()
        if key != DOCUMENTS:  # writing the documents is the run's own output, no stage of its stats
            timer.add_to(stats.stage(key, sink.name))

    @staticmethod
    def _count_output(batch: pa.RecordBatch, stats: ShardStats) -> None:
        live = live_mask(batch)
        kept = pc.sum(live).as_py() or 0
        stats.kept_docs += kept
        stats.kept_bytes += text_bytes(batch, live)
        stats.rejected_docs += batch.num_rows - kept


class _Timer:
    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def add_to(self, entry: StageStats) -> None:
        entry.wall_s += time.perf_counter() - self.wall0
        entry.cpu_s += time.process_time() - self.cpu0

