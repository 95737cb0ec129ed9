"""A sink written by a user (JSONL files of the kept rows, defined here) on a real run: it receives every
kept row, commits per shard, is aborted for the shard that fails, gets `finish` once; a rerun skips the
shards it finished."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import storage
from curation.config import pipeline_from_dict
from curation.errors import ShardFailure
from curation.executor import RunOptions, run_pipeline
from curation.io import write_json_atomic
from curation.sink import Sink, SinkWriter
from curation.stage import ID, TEXT, live_mask, register_stage


@register_stage("test_jsonl")
class JsonlSink(Sink):
    """Kept rows as OUT/jsonl/<shard>.jsonl, an index of them last; every call noted in `events`."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        events: str  # a file outside the output folder: one line per call
        fail_flag: str  # while this file exists, writing the shard it names fails

    def note(self, *words: str) -> None:
        with open(self.config.events, "a") as handle:
            handle.write(" ".join(words) + "\n")

    def open(self, shard, context):
        self.note("open", shard.name)
        return JsonlWriter(self, shard, storage.join(context.output_dir, "jsonl", f"{shard.name}.jsonl"))

    def finish(self, context):
        names = [shard.name for shard in context.shards]
        self.note("finish", *names)
        write_json_atomic(storage.join(context.output_dir, "jsonl", "index.json"), names)
        return {"files": len(names)}


class JsonlWriter(SinkWriter):
    def __init__(self, sink: JsonlSink, shard, location: str) -> None:
        self.sink, self.shard = sink, shard
        self.pending = storage.Pending(location)
        self.handle = open(self.pending.local_path, "w", encoding="utf-8")

    def write(self, batch):
        flag = Path(self.sink.config.fail_flag)
        if flag.exists() and flag.read_text() == self.shard.name:
            raise RuntimeError("injected failure")
        kept = batch.filter(live_mask(batch))
        for doc_id, text in zip(kept.column(ID).to_pylist(), kept.column(TEXT).to_pylist()):
            self.handle.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        self.sink.metrics["rows"] += kept.num_rows

    def commit(self):
        self.handle.close()
        self.pending.commit()
        self.sink.note("commit", self.shard.name)

    def abort(self):
        self.handle.close()
        self.pending.abort()
        self.sink.note("abort", self.shard.name)


def events_of(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [line.split() for line in lines]


def test_a_user_sink_gets_every_kept_row_commits_per_shard_aborts_the_failing_one(mixed_shards, tmp_path):
    events, flag, out = tmp_path / "events.log", tmp_path / "fail", tmp_path / "out"
    config = pipeline_from_dict({
        "input": {"path": [str(mixed_shards / "*")]},
        "output": {"path": str(out)},
        "executor": {"kind": "local"},
        "stages": [{"name": "length_filter", "min_chars": 200},
                   {"name": "test_jsonl", "events": str(events), "fail_flag": str(flag)}],
    })
    names = sorted(p.name.split(".")[0] for p in mixed_shards.iterdir())
    assert len(names) == 6

    flag.write_text(names[2])
    with pytest.raises(ShardFailure, match=f"{names[2]}.*stage test_jsonl failed: RuntimeError: injected failure"):
        run_pipeline(config, RunOptions(progress=False))
    assert events_of(events) == [["open", names[0]], ["commit", names[0]], ["open", names[1]], ["commit", names[1]],
                                 ["open", names[2]], ["abort", names[2]]]
    assert sorted(p.name for p in (out / "jsonl").iterdir()) == [f"{n}.jsonl" for n in names[:2]]  # no temporary left

    flag.unlink()
    stats = run_pipeline(config, RunOptions(progress=False))
    assert events_of(events) == [[step, name] for name in names[2:] for step in ("open", "commit")] + \
        [["finish", *names]]  # the shards finished before are skipped; finish once, after the last commit
    assert json.loads((out / "jsonl" / "index.json").read_text()) == names

    # every kept row, in order, and no rejected one
    kept = {n: pq.read_table(out / "kept" / f"part-{i:05d}.parquet", columns=[ID, TEXT]).to_pylist()
            for i, n in enumerate(names)}
    written = {n: [json.loads(line) for line in (out / "jsonl" / f"{n}.jsonl").read_text().splitlines()] for n in names}
    assert written == kept
    assert stats["output"]["rejected_docs"] > 0
    entry = next(s for s in stats["stages"] if s["name"] == "test_jsonl")
    assert entry["metrics"]["rows"] == stats["output"]["kept_docs"] == sum(map(len, kept.values()))
    assert stats["aggregates"][entry["key"]] == {"files": 6}

    again = run_pipeline(config, RunOptions(progress=False))
    assert events_of(events) == []  # nothing opened, finish not repeated
    assert again["shards"]["skipped_done"] == 6 and again["aggregates"] == stats["aggregates"]


def test_finish_runs_once_after_the_last_shard(mixed_shards, tmp_path):
    events = tmp_path / "events.log"
    config = pipeline_from_dict({
        "input": {"path": [str(mixed_shards / "*")]},
        "output": {"path": str(tmp_path / "out"), "documents": False},
        "executor": {"kind": "local"},
        "stages": [{"name": "test_jsonl", "events": str(events), "fail_flag": str(tmp_path / "none")}],
    })
    run_pipeline(config, RunOptions(progress=False))
    seen = events_of(events)
    assert [e[0] for e in seen].count("finish") == 1 and seen[-1][0] == "finish"
    assert not (tmp_path / "out" / "kept").exists()  # documents: false leaves the engine's sink out


def test_a_stage_after_a_sink_is_refused_when_the_config_is_loaded(tmp_path):
    with pytest.raises(ValueError, match="stage 'noop' comes after the sink 'test_jsonl'"):
        pipeline_from_dict({
            "input": {"path": [str(tmp_path / "*")]},
            "output": {"path": str(tmp_path / "out")},
            "stages": [{"name": "test_jsonl", "events": "e", "fail_flag": "f"}, {"name": "noop"}],
        })
