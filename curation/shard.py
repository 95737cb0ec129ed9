"""An input shard: one input file, the executor's unit of work (its own module so that the sink protocol
can name it without importing the reader, which imports the config, which checks sinks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int  # position in the sorted input list: the corpus order that global stages use
    path: str
    name: str  # output file stem, unique within a run
    format: str
    size: int
    source: str | None = None  # from input.sources
