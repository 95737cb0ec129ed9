"""The executor on real text: every row accounted for, identical output on Ray and in-process,
resumption after a kill, bad shards, and stage actors that really run on Ray."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl, write_parquet
from curation.config import pipeline_from_dict
from curation.executor import PipelineError, RunOptions, run_pipeline

STAGES = [{"name": "length_filter", "min_chars": 30, "max_chars": 20000}]


def make_config(input_dir: Path, out: Path, kind: str, stages=STAGES, **input_options) -> dict:
    return {
        "input": {"path": [str(input_dir / "*")], **input_options},
        "output": {"path": str(out)},
        "executor": {"kind": kind},
        "stages": stages,
    }


def run(raw: dict, **options):
    return run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False, **options))


def digest_folder(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def ids_of(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.glob("*.parquet")):
        ids += pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


def test_every_row_is_kept_or_rejected_local_and_ray_agree(mixed_shards, tmp_path, ray_instance):
    local = run(make_config(mixed_shards, tmp_path / "local", "local"))
    on_ray = run(make_config(mixed_shards, tmp_path / "ray", "ray"))
    n_input = local["input"]["docs"]
    assert n_input == 60 + 300 + 2000 + 100 + 40 + sum(1 for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", 200) if r["text"])
    kept, rejected = ids_of(tmp_path / "local" / "kept"), ids_of(tmp_path / "local" / "rejected")
    assert len(kept) + len(rejected) == n_input
    assert len(set(kept) | set(rejected)) == n_input, "ids are unique and none is both kept and rejected"
    assert local["output"]["kept_docs"] == len(kept) and 0 < len(rejected) < n_input
    stage = local["stages"][0]
    assert stage["docs_in"] == n_input and stage["docs_out"] == len(kept)
    assert sum(stage["dropped"].values()) == len(rejected)
    # Same bytes whichever executor ran it.
    for part in ("kept", "rejected"):
        assert digest_folder(tmp_path / "local" / part) == digest_folder(tmp_path / "ray" / part)
    assert on_ray["executor"]["kind"] == "ray" and local["executor"]["kind"] == "local"
    assert json.loads((tmp_path / "ray" / "stats.json").read_text())["output"] == local["output"]


def test_rejected_rows_carry_their_reason(mixed_shards, tmp_path):
    run(make_config(mixed_shards, tmp_path / "o", "local"))
    rejected = pq.read_table(tmp_path / "o" / "rejected" / "part-00002.parquet")
    assert set(rejected.column("drop_reason").to_pylist()) <= {"length:too_short", "length:too_long"}
    assert all(len(t) < 30 for t, r in zip(rejected.column("text").to_pylist(),
                                           rejected.column("drop_reason").to_pylist()) if r == "length:too_short")
    kept = pq.read_table(tmp_path / "o" / "kept" / "part-00002.parquet")
    assert "drop_reason" not in kept.column_names and "category" in kept.column_names


def test_rerun_skips_finished_shards(mixed_shards, tmp_path):
    raw = make_config(mixed_shards, tmp_path / "o", "local")
    first = run(raw)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "o" / "kept").glob("*.parquet")}
    second = run(raw)
    assert second["shards"]["skipped_done"] == 6
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "o" / "kept").glob("*.parquet")} == before
    assert second["output"] == first["output"] and second["stages"][0]["docs_in"] == first["stages"][0]["docs_in"]


def test_different_pipeline_in_same_output_is_refused(mixed_shards, tmp_path):
    run(make_config(mixed_shards, tmp_path / "o", "local"))
    other = make_config(mixed_shards, tmp_path / "o", "local", stages=[{"name": "noop"}])
    with pytest.raises(PipelineError, match="different pipeline.*--overwrite"):
        run(other)
    assert run(other, overwrite=True)["output"]["rejected_docs"] == 0


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_bad_shard_fails_the_run_or_is_skipped(mixed_shards, tmp_path, kind, ray_instance):
    (mixed_shards / "z_broken.jsonl").write_text('{"text": "a fine line of text here, long enough"}\n{"text": oops}\n')
    with pytest.raises(PipelineError, match=r"z_broken.jsonl: line 2: not valid JSON"):
        run(make_config(mixed_shards, tmp_path / "fail", kind))
    assert not (tmp_path / "fail" / "kept" / "part-00006.parquet").exists()
    assert not list((tmp_path / "fail").rglob(".*.tmp-*")), "no partial output"
    stats = run(make_config(mixed_shards, tmp_path / "skip", kind), skip_bad_shards=True)
    assert [b["path"].endswith("z_broken.jsonl") for b in stats["shards"]["bad"]] == [True]
    assert "line 2" in stats["shards"]["bad"][0]["error"]
    assert len(list((tmp_path / "skip" / "kept").glob("*.parquet"))) == 6


def test_stage_actors_run_on_ray(tmp_path, ray_instance, data_dir):
    """During a run, Ray's state API shows the StageWorker actors alive."""
    from ray.util.state import list_actors

    folder = tmp_path / "in"
    folder.mkdir()
    rows = read_jsonl("lid_lingua_75lang.jsonl.gz", 40000)
    for i in range(8):
        write_parquet(folder / f"part{i}.parquet", rows[i * 5000:(i + 1) * 5000])
    seen: set[str] = set()
    stop = threading.Event()
    # this test's own Ray instance, never another one running on the machine
    address = ray_instance.get_runtime_context().gcs_address

    def watch() -> None:
        while not stop.is_set():
            for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")]):
                seen.add(actor.class_name)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        stages = [{"name": "exact_dedup"}, {"name": "length_filter", "min_chars": 10}]
        stats = run(make_config(folder, tmp_path / "o", "ray", stages=stages))
    finally:
        stop.set()
        watcher.join()
    assert "StageWorker" in seen
    assert stats["input"]["docs"] == 40000


CLI_KILL_SCRIPT = """
import sys
from curation.cli import main
sys.exit(main(sys.argv[1:]))
"""


KILL_STAGES = [{"name": "length_filter", "min_chars": 40}, {"name": "exact_dedup", "partitions": 4}]


@pytest.fixture(scope="module")
def kill_input_and_clean_run(tmp_path_factory, data_dir) -> tuple[Path, Path]:
    """16 input shards and their uninterrupted run (in-process executor, through the CLI in a process of
    its own), read-only: both executors' kill tests compare with the same clean output (it took 8-15 s
    to write, once per test before)."""
    root = tmp_path_factory.mktemp("kill_9")
    folder = root / "in"
    folder.mkdir()
    rows = read_jsonl("lid_lingua_75lang.jsonl.gz")
    for i in range(16):
        write_jsonl(folder / f"part{i:02d}.jsonl", rows[i * 6000:(i + 1) * 6000])
    clean = root / "clean.yaml"
    clean.write_text(json.dumps(make_config(folder, root / "clean", "local", stages=KILL_STAGES)))
    subprocess.run([sys.executable, "-c", CLI_KILL_SCRIPT, "run", str(clean), "--no-progress"], check=True,
                   capture_output=True)
    return folder, root / "clean"


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_kill_9_halfway_then_rerun_gives_identical_output(tmp_path, kill_input_and_clean_run, kind):
    folder, clean_out = kill_input_and_clean_run
    killed = tmp_path / "killed.yaml"
    killed.write_text(json.dumps(make_config(folder, tmp_path / "killed", kind, stages=KILL_STAGES)))
    markers = tmp_path / "killed" / "_state" / "segment0"
    proc = subprocess.Popen([sys.executable, "-c", CLI_KILL_SCRIPT, "run", str(killed), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 5 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every worker it started
    proc.wait()
    done_before = len(list(markers.glob("*.json")))
    assert 5 <= done_before < 16
    assert not (tmp_path / "killed" / "stats.json").exists()

    rerun = subprocess.run([sys.executable, "-c", CLI_KILL_SCRIPT, "run", str(killed), "--no-progress"],
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    for part in ("kept", "rejected"):
        assert digest_folder(tmp_path / "killed" / part) == digest_folder(clean_out / part)
    assert len(digest_folder(clean_out / "kept")) == 16
    clean_stats = json.loads((clean_out / "stats.json").read_text())
    resumed_stats = json.loads((tmp_path / "killed" / "stats.json").read_text())
    assert resumed_stats["output"] == clean_stats["output"]
    assert resumed_stats["input"] == clean_stats["input"]


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_progress_within_a_single_large_shard(tmp_path, kind, ray_instance, monkeypatch):
    """One big input file: the progress bar hears how far into it the run is, not only when it ends."""
    import curation.executor

    monkeypatch.setattr(curation.executor, "PROGRESS_EVERY_S", 0.05)  # the compiled rules take 2-3 s here

    from curation.config import ExecutorConfig
    from curation.executor import make_backend
    from curation.io import list_shards
    from curation.pipeline import DOCUMENTS, DocumentsSink, Layout, ShardProcessor, plan_segments
    from curation.stage import build_stage

    # about 50 MB: a dozen of the reader's 4 MiB blocks, more than Arrow reads ahead
    path = tmp_path / "lingua.jsonl"
    rows = read_jsonl("lid_lingua_75lang.jsonl.gz")
    with open(path, "w", encoding="utf-8") as handle:
        for copy in range(3):
            for i, row in enumerate(rows):
                handle.write(json.dumps({"id": f"{copy}-{i}", "text": row["text"]}, ensure_ascii=False) + "\n")
    config = pipeline_from_dict({**make_config(tmp_path, tmp_path / "o", kind, stages=[{"name": "gopher_repetition"}]),
                                 "input": {"path": [str(path)], "block_bytes": 256 << 10}})
    (shard,) = list_shards(config.input)
    segment = plan_segments([build_stage(s) for s in config.stages])[0]
    processor = ShardProcessor(segment, config.input, Layout(tmp_path / "o"), "zstd", [(DOCUMENTS, DocumentsSink())])
    heard: list[int] = []
    with make_backend(ExecutorConfig(kind=kind)) as backend:
        results = list(backend.map_shards(processor, [shard], progress=lambda p, position: heard.append(position)))
    assert "stats" in results[0][1]
    # Arrow's JSON reader reads ahead (about 32 MB here), so positions come in steps; at least one is
    # heard inside the file, before the shard ends, and they never go back
    inside = sorted({position for position in heard if 0 < position < shard.size})
    assert inside, heard
    assert heard == sorted(heard) and heard[-1] <= shard.size


EMBEDDED_PROCESSES_SCRIPT = """
import json, os
from curation.config import ExecutorConfig
from curation.executor import RayBackend

def descendants(root):
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid:
                found.append(child)
                frontier.append(child)
    commands = []
    for pid in found:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                commands.append(handle.read().replace(b"\\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return commands

with RayBackend(ExecutorConfig(num_cpus=1, dashboard=False)):
    commands = descendants(os.getpid())
from ray._private.node import Node
print(json.dumps({"commands": commands, "restored": Node.start_monitor.__name__}))
"""


def test_embedded_instance_starts_no_autoscaler_monitor(tmp_path):
    """The embedded instance (one node, one run) starts Ray without its autoscaler monitor
    (curation.embedded_ray), on the Ray installed here; Ray's own start step is put back afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", EMBEDDED_PROCESSES_SCRIPT], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    commands = found["commands"]
    assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands), commands
    assert not any("autoscaler/_private/monitor.py" in c or c.split(" ")[1:2] == ["monitor.py"] for c in commands), commands
    assert found["restored"] == "start_monitor"
