"""Connected components of an edge list that no process holds whole: large-star / small-star
(Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014) over Parquet edge partitions.

Edges live on disk as (u, v) rows keyed by `u` and split into `partitions` folders by a hash of `u`.
One round is one `map_fn` call per partition (the executor's Ray actors): the task reads the edges of
its partition, groups them by `u` and writes its output edges already keyed and split for the next
round. Large-star links every neighbour larger than u to the smallest node of u's neighbourhood;
small-star links u and its smaller neighbours to the smallest of them. Alternated, they end in a star
forest: every node points at the smallest node of its component, in O(log n) rounds (5-8 on the
shared data). A task holds its partition's edges (16 bytes each, twice: both directions), and the
driver only counts: no process holds the graph. The one skew: a component's root ends with all of its
component's edges, so the largest cluster (not the corpus) bounds the largest task (32 bytes per member).

Each round is a step with a marker (`Steps`): a killed aggregate resumes at its first unfinished round,
and a round's outputs are rewritten whole (same names, atomic files) when it runs again.

Every folder may be on local disk or in object storage (`curation.storage`: a cluster whose nodes share
no disk keeps the rounds under `s3://.../_work`): a file appears whole under its final name or not at
all, a task lists its partition's folder once, and a step's marker is written after its outputs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.io import AtomicParquetWriter, write_json_atomic

EDGE_SCHEMA = pa.schema([("u", pa.int64()), ("v", pa.int64())])
MapFn = Callable[[Callable[..., Any], Iterable[Any]], list[Any]]
MAX_ROUNDS = 200  # a star forest is reached in O(log n) rounds; this only stops a bug from looping


class Steps:
    """Sub-steps of an aggregate step, each run once: its result is kept in a marker under
    work_dir/steps, and a rerun after a kill skips every step whose marker exists. A step without a
    marker starts from empty output folders (what a killed attempt left is removed first). The markers
    are found with one listing of the folder, when the first step runs."""

    def __init__(self, work_dir: str) -> None:
        self.folder = storage.join(work_dir, "steps")
        self._done: set[str] | None = None

    def run(self, name: str, outputs: list[str], fn: Callable[[], Any]) -> Any:
        marker = storage.join(self.folder, f"{name}.json")
        if self._done is None:
            self._done = storage.names_in(self.folder)
        if f"{name}.json" in self._done:
            return storage.read_json(marker)["result"]
        for folder in outputs:
            storage.delete_tree(folder)
        result = fn()
        write_json_atomic(marker, {"result": result})
        self._done.add(f"{name}.json")
        return result


def key_partition(u: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of each key. Node ids are `shard << 40 | row`, dense in their low bits: a multiplicative
    hash spreads them before the modulo."""
    with np.errstate(over="ignore"):
        mixed = (u.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    return (mixed % np.uint64(partitions)).astype(np.int32)


def write_keyed(u: np.ndarray, v: np.ndarray, folder: str, name: str, partitions: int) -> int:
    """Write the edges (u, v), keyed by u, as folder/pNNNN/name.parquet (partitions with none: no file)."""
    if not len(u):
        return 0
    part = key_partition(u, partitions)
    order = np.argsort(part, kind="stable")
    u, v, part = u[order], v[order], part[order]
    bounds = np.flatnonzero(np.concatenate([[True], part[1:] != part[:-1], [True]]))
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        writer = AtomicParquetWriter(storage.join(folder, f"p{part[lo]:04d}", f"{name}.parquet"), schema=EDGE_SCHEMA)
        writer.write(pa.table({"u": u[lo:hi], "v": v[lo:hi]}, schema=EDGE_SCHEMA))
        writer.commit()
    return len(u)


def write_undirected(src: np.ndarray, dst: np.ndarray, folder: str, name: str, partitions: int) -> int:
    """The input of a large-star round: every edge in both directions, keyed by its first end."""
    return write_keyed(np.concatenate([src, dst]), np.concatenate([dst, src]), folder, name, partitions)


def read_keyed(folder: str, partition: int) -> tuple[np.ndarray, np.ndarray]:
    """The edges of one partition, sorted by (u, v), repeated edges and self-loops removed."""
    files = storage.parquet_files(storage.join(folder, f"p{partition:04d}"))  # one listing
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tables = [pq.read_table(storage.parquet_source(f)) for f in files]
    u = np.concatenate([t.column("u").to_numpy() for t in tables])
    v = np.concatenate([t.column("v").to_numpy() for t in tables])
    del tables
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    keep = np.concatenate([[True], (u[1:] != u[:-1]) | (v[1:] != v[:-1])]) & (u != v)
    return u[keep], v[keep]


def _groups(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start of each row's group, group starts) of a sorted key array."""
    new = np.concatenate([[True], u[1:] != u[:-1]])
    starts = np.flatnonzero(new)
    return starts[np.cumsum(new) - 1], starts


def large_star(args: tuple[str, str, int, int]) -> dict[str, int]:
    """A large-star reduce (a task per partition). For each u with neighbourhood G(u): m = min(G(u) + u);
    emit (v, m) for every neighbour v > u, keyed by v for the small-star round. Also counts the nodes
    that show the graph is not yet a star forest (a node with a smaller neighbour and another neighbour)."""
    in_dir, out_dir, partition, partitions = args
    name = f"from-{partition:04d}"  # one file per (this task, next partition): tasks never share a name
    u, v = read_keyed(in_dir, partition)
    if not len(u):
        return {"edges": 0, "not_star": 0}
    start_of, starts = _groups(u)
    m = np.minimum(u, v[start_of])  # v is sorted within a group: its first is the smallest neighbour
    larger = v > u
    out = write_keyed(v[larger], m[larger], out_dir, name, partitions)
    smaller_count = np.add.reduceat((v < u).astype(np.int64), starts)
    larger_any = np.maximum.reduceat(larger, starts)
    not_star = int(((smaller_count > 0) & (larger_any | (smaller_count > 1))).sum())
    return {"edges": out, "not_star": not_star}


def small_star(args: tuple[str, str, int, int]) -> dict[str, int]:
    """A small-star reduce (a task per partition). Its input holds, for each u, its neighbours smaller
    than u; with m the smallest of them, emit (x, m) for u and every such neighbour x other than m, in
    both directions for the next large-star round."""
    in_dir, out_dir, partition, partitions = args
    name = f"from-{partition:04d}"  # one file per (this task, next partition): tasks never share a name
    u, v = read_keyed(in_dir, partition)
    if not len(u):
        return {"edges": 0}
    start_of, starts = _groups(u)
    m = v[start_of]
    others = v != m
    x = np.concatenate([v[others], u[starts]])
    root = np.concatenate([m[others], m[starts]])
    return {"edges": write_undirected(x, root, out_dir, name, partitions) // 2}


def connected_components(map_fn: MapFn, steps: Steps, work_dir: str, first: str, partitions: int,
                         prefix: str = "cc") -> tuple[str, dict[str, int]]:
    """Run large-star / small-star rounds from the edges under `first` (written by `write_undirected`)
    until they form a star forest. Returns the folder of the star edges, (leaf, root) keyed by leaf,
    with root the smallest node of the leaf's component, and {"rounds": ...}. Each round's input is
    removed once the next round has finished."""
    current = first
    for round_index in range(MAX_ROUNDS):
        large_out = storage.join(work_dir, f"{prefix}-{round_index:03d}-large")
        result = steps.run(f"{prefix}-{round_index:03d}-large", [large_out], lambda: _sum(map_fn(large_star, [
            (current, large_out, p, partitions) for p in range(partitions)])))
        if current != first:
            storage.delete_tree(current)
        if result["not_star"] == 0:
            return large_out, {"rounds": round_index + 1}
        small_out = storage.join(work_dir, f"{prefix}-{round_index:03d}-small")
        steps.run(f"{prefix}-{round_index:03d}-small", [small_out], lambda: _sum(map_fn(small_star, [
            (large_out, small_out, p, partitions) for p in range(partitions)])))
        storage.delete_tree(large_out)
        current = small_out
    raise AssertionError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _sum(results: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for result in results:
        for key, value in result.items():
            total[key] = total.get(key, 0) + value
    return total


def read_stars(folder: str, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """All (leaf, root) edges of a star forest (tests and small graphs only: it holds them all)."""
    parts = [read_keyed(folder, p) for p in range(partitions)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
