"""Run statistics: per stage, documents and bytes in and out, drops per reason, wall and CPU seconds.

Workers fill a `ShardStats` per shard; it is saved with the shard's completion marker, so a rerun that
skips finished shards still reports the whole corpus. The driver merges them into `OUT/stats.json`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    metrics: Counter = field(default_factory=Counter)  # stage-specific counters

    def merge(self, other: "StageStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.dropped.update(other.dropped)
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        self.metrics.update(other.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(sorted(self.dropped.items())),
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "metrics": {k: _round(v) for k, v in sorted(self.metrics.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StageStats":
        return cls(
            name=data["name"],
            docs_in=data["docs_in"],
            docs_out=data["docs_out"],
            bytes_in=data["bytes_in"],
            bytes_out=data["bytes_out"],
            dropped=Counter(data["dropped"]),
            wall_s=data["wall_s"],
            cpu_s=data["cpu_s"],
            metrics=Counter(data.get("metrics", {})),
        )


def _round(value: float) -> float | int:
    return value if isinstance(value, int) else round(value, 4)


def stage_key(position: int, name: str) -> str:
    """Stable key of a stage in a pipeline: its position and registered name (a name may repeat)."""
    return f"{position:02d}_{name}"


@dataclass
class ShardStats:
    """What one worker saw on one shard in one segment of the pipeline."""

    docs: int = 0
    bytes: int = 0
    input_dropped: Counter = field(default_factory=Counter)  # dropped by the reader (empty text)
    renamed_ids: int = 0  # ids seen earlier in the shard, made unique by the reader (input.duplicate_ids)
    kept_docs: int = 0
    kept_bytes: int = 0
    rejected_docs: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def stage(self, key: str, name: str) -> StageStats:
        if key not in self.stages:
            self.stages[key] = StageStats(name)
        return self.stages[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "bytes": self.bytes,
            "input_dropped": dict(self.input_dropped),
            "renamed_ids": self.renamed_ids,
            "kept_docs": self.kept_docs,
            "kept_bytes": self.kept_bytes,
            "rejected_docs": self.rejected_docs,
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardStats":
        return cls(
            docs=data["docs"],
            bytes=data["bytes"],
            input_dropped=Counter(data["input_dropped"]),
            renamed_ids=data.get("renamed_ids", 0),
            kept_docs=data["kept_docs"],
            kept_bytes=data["kept_bytes"],
            rejected_docs=data["rejected_docs"],
            stages={k: StageStats.from_dict(v) for k, v in data["stages"].items()},
            wall_s=data["wall_s"],
            cpu_s=data["cpu_s"],
        )


@dataclass
class RunStats:
    """The merged picture written to OUT/stats.json."""

    stage_order: list[tuple[str, str]]  # (key, name) in pipeline order
    input_docs: int = 0
    input_bytes: int = 0
    input_dropped: Counter = field(default_factory=Counter)
    renamed_ids: int = 0
    kept_docs: int = 0
    kept_bytes: int = 0
    rejected_docs: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)
    aggregates: dict[str, dict[str, Any]] = field(default_factory=dict)
    shards_total: int = 0
    shards_skipped: int = 0  # finished by an earlier run
    bad_shards: list[dict[str, str]] = field(default_factory=list)
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        for key, name in self.stage_order:
            self.stages.setdefault(key, StageStats(name))

    def add_shard(self, shard: ShardStats, *, first_segment: bool, last_segment: bool) -> None:
        if first_segment:
            self.input_docs += shard.docs
            self.input_bytes += shard.bytes
            self.input_dropped.update(shard.input_dropped)
            self.renamed_ids += shard.renamed_ids
        if last_segment:
            self.kept_docs += shard.kept_docs
            self.kept_bytes += shard.kept_bytes
            self.rejected_docs += shard.rejected_docs
        for key, stats in shard.stages.items():
            self.stage(key, stats.name).merge(stats)

    def stage(self, key: str, name: str) -> StageStats:
        if key not in self.stages:
            self.stages[key] = StageStats(name)
        return self.stages[key]

    def to_dict(self) -> dict[str, Any]:
        ordered = [key for key, _ in self.stage_order] + sorted(set(self.stages) - {k for k, _ in self.stage_order})
        return {
            "input": {"docs": self.input_docs, "bytes": self.input_bytes, "dropped": dict(self.input_dropped),
                      "renamed_ids": self.renamed_ids},
            "output": {"kept_docs": self.kept_docs, "kept_bytes": self.kept_bytes, "rejected_docs": self.rejected_docs},
            "stages": [{"key": key, **self.stages[key].to_dict()} for key in ordered],
            "aggregates": self.aggregates,
            "shards": {"total": self.shards_total, "skipped_done": self.shards_skipped, "bad": self.bad_shards},
            "wall_s": round(self.wall_s, 3),
        }


def format_table(stats: dict[str, Any]) -> str:
    """The short table the CLI prints at the end of a run."""
    rows = [("stage", "docs in", "docs out", "MB in", "MB out", "dropped", "wall s", "cpu s")]
    for stage in stats["stages"]:
        dropped = sum(stage["dropped"].values())
        rows.append((
            stage["key"],
            f"{stage['docs_in']:,}",
            f"{stage['docs_out']:,}",
            f"{stage['bytes_in'] / 1e6:.2f}",
            f"{stage['bytes_out'] / 1e6:.2f}",
            f"{dropped:,}",
            f"{stage['wall_s']:.1f}",
            f"{stage['cpu_s']:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = stats["output"]
    inp = stats["input"]
    lines.append("")
    lines.append(
        f"input {inp['docs']:,} docs ({inp['bytes'] / 1e6:.2f} MB); kept {out['kept_docs']:,} docs "
        f"({out['kept_bytes'] / 1e6:.2f} MB); rejected {out['rejected_docs']:,}; "
        f"shards {stats['shards']['total']} ({stats['shards']['skipped_done']} already done, "
        f"{len(stats['shards']['bad'])} bad); {stats['wall_s']:.1f} s"
    )
    reasons: Counter = Counter(inp["dropped"])
    for stage in stats["stages"]:
        reasons.update(stage["dropped"])
    if inp.get("renamed_ids"):
        lines.append(f"warning: {inp['renamed_ids']:,} duplicate ids renamed <id>#<row> (input.duplicate_ids)")
    if reasons:
        top = ", ".join(f"{reason} {count:,}" for reason, count in reasons.most_common(8))
        lines.append(f"drop reasons: {top}")
    return "\n".join(lines)
