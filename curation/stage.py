"""The stage protocol.

A stage is a small class built from its config, with `setup()` (load models once per worker) and
`__call__(batch: pa.RecordBatch) -> pa.RecordBatch`. Every batch that reaches a stage has the columns
`id` (string), `text` (string) and `drop_reason` (string, null while the row is kept). Rows are never
removed from a batch inside the pipeline: a filtering stage writes its reason into `drop_reason`, the
first reason wins, and the sinks split kept and rejected rows when they write the output. That keeps
row positions stable, which global stages rely on.

Global stages (deduplication) need the whole corpus before they can decide on any row; see
`GlobalStage` for the three steps the executor runs for them. Outputs are sinks (`curation.sink`),
registered and built from YAML the same way (`register_stage`, `build_stage`): both are `Operator`s.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter
from typing import Any, Callable, ClassVar, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.option_types import check_options

TEXT = "text"
ID = "id"
DROP_REASON = "drop_reason"

_REGISTRY: dict[str, type["Operator"]] = {}


def register_stage(name: str) -> Callable[[type["Operator"]], type["Operator"]]:
    """Class decorator: make a stage (or a sink, `curation.sink.Sink`) available under `name` in
    pipeline YAML."""

    def decorate(cls: type[Operator]) -> type[Operator]:
        if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"stage name {name!r} is registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_stages() -> dict[str, type["Operator"]]:
    importlib.import_module("curation.stages")  # registers the built-in stages
    return dict(sorted(_REGISTRY.items()))


def stage_class(name: str) -> type["Operator"]:
    stages = registered_stages()
    if name not in stages:
        raise ValueError(f"unknown stage {name!r}; known stages: {', '.join(stages)}")
    return stages[name]


def build_stage(options: dict[str, Any]) -> "Operator":
    """Build a stage (or a sink) from its YAML mapping: `{name: some_stage, param: value, ...}`."""
    if not isinstance(options, dict) or "name" not in options:
        raise ValueError(f"a stage entry must be a mapping with a 'name' key, got {options!r}")
    params = dict(options)
    cls = stage_class(params.pop("name"))
    return cls(**params)


class Operator:
    """What an entry of `stages:` builds, a stage or a sink: a nested frozen, keyword-only `Config`
    dataclass built from the entry's options (checked), and `metrics`."""

    name: ClassVar[str] = ""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        pass

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        if config is None:
            fields = {f.name for f in dataclasses.fields(self.Config)}
            unknown = sorted(set(options) - fields)
            if unknown:
                raise ValueError(
                    f"stage {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                    f"it takes: {', '.join(sorted(fields)) or 'no options'}"
                )
            check_options(self.Config, options, f"stage {self.name!r}")
            try:
                config = self.Config(**options)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"stage {self.name!r}: {exc}") from exc
        elif options:
            raise ValueError(f"stage {self.name!r}: pass either a config or options, not both")
        self.config = config
        # Stage-specific counters (for example bytes removed by line rules); the executor adds them to
        # the stage's entry in stats.json and resets them per shard.
        self.metrics: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class Stage(Operator):
    """Base class of every stage. Subclasses set a nested frozen, keyword-only `Config` dataclass."""

    def setup(self) -> None:
        """Load models and other heavy state. Runs once per worker, never in the driver."""

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class BatchPosition:
    """Where a batch sits in the corpus: global stages key rows by (shard_index, row)."""

    shard_index: int
    shard_name: str
    row_offset: int


class AggregateContext:
    """What a global stage's aggregate step gets from the executor."""

    def __init__(
        self,
        work_dir: str,
        shard_names: list[str],
        keys_paths: list[str],
        map_fn: Callable[[Callable[..., Any], Iterable[Any]], list[Any]],
        keys_shards: list[int] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.shard_names = shard_names
        self.keys_paths = keys_paths
        # the shard index (corpus order) of each keys file, as BatchPosition.shard_index gave it
        self.keys_shards = keys_shards if keys_shards is not None else list(range(len(keys_paths)))
        self._map = map_fn

    def map(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Any]:
        """Run `fn(item)` for every item: on the Ray executor's actors (retried where one dies), in-process
        on the local one."""
        return self._map(fn, items)


class GlobalStage(Stage):
    """A stage that decides on rows only after seeing the whole corpus.

    The executor runs it in three steps:

    1. `keys(batch, position)` in the workers, on every batch of every shard, after the stages before it.
       It returns a table of keys for the live rows (or None); the executor spills it to Parquet under
       the stage's work folder, so nothing corpus-sized is held in memory.
    2. `aggregate(ctx)` once, on the driver. It may fan work out with `ctx.map(fn, items)` (Ray tasks on
       a cluster): a shuffle of the spilled keys into partitions, then per-partition decisions written
       back under `ctx.work_dir`. Its return value (a small JSON-able dict) goes into stats.
    3. `prepare(work_dir, shard_index)` then `apply(batch, position)` in the workers, per shard: read
       the decisions for that shard and apply them (set `drop_reason`, add columns, rewrite text).

    Each step's output is written atomically, so a killed run resumes after its last finished step.
    Every global stage adds a pass over the documents (its decisions are applied in the next one); a
    step that writes outputs of its own and changes no row is a sink (`curation.sink`), not a global
    stage.
    """

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        raise NotImplementedError

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, work_dir: str, shard_index: int) -> None:
        raise NotImplementedError

    def apply(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.RecordBatch:
        raise NotImplementedError

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        raise TypeError(f"global stage {self.name!r} runs through the executor, not per batch")


# --- helpers that stages use on a batch ------------------------------------------------------------


def live_mask(batch: pa.RecordBatch) -> pa.BooleanArray:
    """True for rows no stage has dropped yet."""
    return pc.is_null(batch.column(DROP_REASON))


def set_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    """Replace column `name`, or append it when the batch has none."""
    index = batch.schema.get_field_index(name)
    if index >= 0:
        return batch.set_column(index, name, values)
    return batch.append_column(name, values)


def drop_rows(batch: pa.RecordBatch, mask: pa.Array, reason: str | pa.Array) -> pa.RecordBatch:
    """Drop the live rows where `mask` is true with `reason` (a string, or one string per row).

    Rows another stage has dropped keep their first reason; a null in `mask` means keep.
    """
    current = batch.column(DROP_REASON)
    newly = pc.and_(pc.fill_null(mask, False), pc.is_null(current))
    if isinstance(reason, str):
        reason = pa.scalar(reason, pa.string())
    return set_column(batch, DROP_REASON, pc.if_else(newly, reason, current))


def text_bytes(batch: pa.RecordBatch | pa.Table, mask: pa.Array | None = None) -> int:
    """UTF-8 bytes of `text`, over the rows where mask is true (all rows when no mask)."""
    text = batch.column(TEXT)
    if mask is not None and mask.false_count:
        text = pc.filter(text, mask)
    # Offsets give the byte length of the whole array without touching the characters.
    total = pc.sum(pc.binary_length(text)).as_py()
    return int(total or 0)
