"""The sink protocol: where the rows go once the last stage has seen them.

A sink is an output writer (the shape of mosaicml/streaming's `Writer`: `write(sample)`, then
`finish()`, the index written last), cut to the executor's unit of work, the input shard:

    sink.setup()                          once per worker (load a tokenizer, say), never in the driver
    out = sink.open(shard, context)       in the worker, per input shard
    out.write(batch)                      every batch of the shard, as the last stage left it
    out.commit()                          the shard is done: publish its files atomically
    out.abort()                           the shard failed: leave nothing under a final name
    sink.finish(FinishContext)            once, on the driver, after every shard is committed:
                                          what spans shards, then the sink's index, written last

A batch reaches `write` with every row and its `drop_reason` column (null while the row is kept;
`curation.stage.live_mask` gives the kept rows), so a sink sees row positions as the stages did. The
executor writes a shard's completion marker only after every sink committed it: a rerun skips
finished shards, and a killed worker loses at most the shard in flight, whose writers never committed
(a commit publishes whole files only: `curation.storage`'s publishing, also on an object store).
`finish` may therefore run again after a crash (a rerun calls it while its result is not recorded), so
it rewrites the same bytes.

The engine's own sink writes `OUT/kept/` and `OUT/rejected/` Parquet (`curation.pipeline.DocumentsSink`);
a registered sink named as the last entries of `stages:` in a pipeline YAML (`pack`) is another. A sink
class is registered and built like a stage (`curation.stage.register_stage`, a nested `Config`), and
the executor tells them apart by class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import pyarrow as pa

from curation.shard import Shard
from curation.stage import Operator
from curation.stats import stage_key



@dataclasses.dataclass(frozen=True)
class SinkContext:
    """The run a sink writes for: given to `open` and `finish`, never set on the sink."""

    output_dir: str  # the run's output folder (a path or a URI): outputs go under it unless told otherwise
    work_dir: str  # the sink's own scratch folder (OUT/_work/<key>), removed after a run without bad shards
    compression: str  # the run's Parquet compression (output.compression)


@dataclasses.dataclass(frozen=True)
class FinishContext(SinkContext):
    """What `finish` gets: the context, the committed shards and the executor's map."""

    shards: tuple[Shard, ...]  # every committed input shard, in corpus order (bad shards left out)
    map_fn: Callable[[Callable[..., Any], Iterable[Any]], list[Any]]

    def map(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        """Run `fn(item)` for every item: on the Ray executor's actors, in-process on the local one."""
        return self.map_fn(fn, items)


class SinkWriter:
    """One input shard's output in progress: what `Sink.open` returns."""

    def write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Publish the shard's files (each whole, or not at all)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Discard whatever the shard wrote; called on any failure, also after a failed commit."""
        raise NotImplementedError


class Sink(Operator):
    """Base class of a sink. Subclasses set a nested frozen, keyword-only `Config` dataclass (as a stage
    does), `open` and, when something spans shards or an index lists them, `finish`."""

    def setup(self) -> None:
        """Load heavy state. Runs once per worker, never in the driver."""

    def open(self, shard: Shard, context: SinkContext) -> SinkWriter:
        raise NotImplementedError

    def finish(self, context: FinishContext) -> dict[str, Any]:
        """After every shard is committed; returns a small JSON-able dict for stats."""
        return {}


def split_sinks(operators: list[Operator]) -> tuple[list[Operator], list[tuple[str, Sink]]]:
    """The stages of a pipeline, and the sinks that end it with their stats keys (`02_pack`). A sink
    writes the rows as the last stage left them, so a stage after a sink is an error."""
    stages: list[Operator] = []
    sinks: list[tuple[str, Sink]] = []
    for position, operator in enumerate(operators):
        if isinstance(operator, Sink):
            sinks.append((stage_key(position, operator.name), operator))
        elif sinks:
            raise ValueError(f"stage {operator.name!r} comes after the sink {sinks[-1][1].name!r}: a sink writes the "
                             "rows as the last stage left them, so sinks end the list of stages")
        else:
            stages.append(operator)
    return stages, sinks
