"""Hostile input through the CLI, as a user meets it: every case ends in a clear error naming the file
and line (JSONL, 1-based) or row (Parquet, 0-based), or in a counted outcome; never a traceback, and
an interrupted run resumes to the same bytes as a clean one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, read_jsonl, write_jsonl
from curation.cli import main


def write_config(tmp_path: Path, inputs: list[str], out: Path, stages=None, kind="local", **input_options) -> Path:
    path = tmp_path / f"config-{out.name}.yaml"
    path.write_text(yaml.safe_dump({
        "input": {"path": inputs, **input_options},
        "output": {"path": str(out)},
        "executor": {"kind": kind, **({"num_cpus": 2} if kind == "ray" else {})},
        "stages": stages or [{"name": "length_filter", "min_chars": 20}],
    }))
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.parametrize("ids", [
    pa.array([[1, 2], [3], [4]], pa.list_(pa.int64())),
    pa.array([{"a": 1}, {"a": 2}, {"a": 3}]),
])
def test_an_id_column_of_lists_or_structs_names_the_file_and_is_skippable(tmp_path, capsys, ids):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 6)
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(pa.table({"id": ids, "text": [r["text"] for r in rows[:3]]}), inputs / "bad_ids.parquet")
    write_jsonl(inputs / "good.jsonl", rows[3:])
    config = write_config(tmp_path, [str(inputs / "*")], tmp_path / "out")
    assert main(["run", str(config), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "bad_ids.parquet: id column 'id' has type" in err and "Traceback" not in err, err
    assert main(["run", str(config), "--no-progress", "--skip-bad-shards"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert [Path(b["path"]).name for b in stats["shards"]["bad"]] == ["bad_ids.parquet"]
    assert stats["output"]["kept_docs"] == 3


def test_an_id_column_of_lists_on_ray_is_the_same_clear_error(tmp_path, capsys, ray_instance):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 3)
    pq.write_table(pa.table({"id": pa.array([[1], [2], [3]]), "text": [r["text"] for r in rows]}), tmp_path / "bad.parquet")
    config = write_config(tmp_path, [str(tmp_path / "bad.parquet")], tmp_path / "out", kind="ray")
    assert main(["run", str(config), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "bad.parquet: id column 'id' has type list<" in err, err
    assert "RayTaskError" not in err and "Traceback" not in err


def test_a_jsonl_column_whose_type_changes_after_the_first_block_names_the_line(tmp_path, capsys):
    rows = [{"id": r["id"], "text": r["text"], "label": str(r.get("label"))} for r in read_jsonl("zh_reviews.jsonl.gz", 60_000)]
    line = 45_123  # far past Arrow's first 4 MiB block, so Arrow's own row number is block-relative
    rows[line - 1]["label"] = 7
    write_jsonl(tmp_path / "reviews.jsonl", rows)
    assert (tmp_path / "reviews.jsonl").stat().st_size > 3 * (4 << 20)
    config = write_config(tmp_path, [str(tmp_path / "reviews.jsonl")], tmp_path / "out")
    assert main(["run", str(config), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"reviews.jsonl: line {line}: field 'label' is a number here but a string on line 1" in err, err


def test_an_empty_jsonl_gives_no_columnless_output(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", read_jsonl("en_ud_ewt_web_docs.jsonl.gz", 30))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    config = write_config(tmp_path, [str(tmp_path / "*.jsonl")], tmp_path / "out")
    assert main(["run", str(config), "--no-progress"]) == 0
    kept = pq.read_table(tmp_path / "out" / "kept", columns=["id", "text"])
    assert kept.num_rows > 0 and kept.column_names == ["id", "text"]
    for part in ("kept", "rejected"):
        for path in (tmp_path / "out" / part).glob("*.parquet"):
            assert {"id", "text"} <= set(pq.read_schema(path).names), path


def test_duplicate_ids_are_renamed_and_counted_or_refused(tmp_path, capsys):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 12)
    rows[7]["id"] = rows[2]["id"]
    rows[9]["id"] = rows[2]["id"]
    write_jsonl(tmp_path / "gum.jsonl", rows)
    config = write_config(tmp_path, [str(tmp_path / "gum.jsonl")], tmp_path / "out")
    assert main(["run", str(config), "--no-progress"]) == 0
    assert "2 duplicate ids renamed" in capsys.readouterr().out
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["input"]["renamed_ids"] == 2
    ids = pq.read_table(tmp_path / "out" / "kept").column("id").to_pylist() + \
        pq.read_table(tmp_path / "out" / "rejected").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12
    assert f"{rows[2]['id']}#7" in ids and f"{rows[2]['id']}#9" in ids
    strict = write_config(tmp_path, [str(tmp_path / "gum.jsonl")], tmp_path / "strict", duplicate_ids="error")
    assert main(["run", str(strict), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"gum.jsonl: line 8: id {rows[2]['id']!r} was already used" in err, err


def test_ctrl_c_says_what_was_kept_and_a_rerun_resumes_to_identical_output(tmp_path):
    rows = [r for r in read_jsonl("zh_msra_news.jsonl.gz") if r["text"]]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(12):
        write_jsonl(inputs / f"part{k:02d}.jsonl", rows[k::12])
    stages = [{"name": "gopher_repetition"}, {"name": "fineweb", "languages": ["zh"]}]
    clean = write_config(tmp_path, [str(inputs / "*.jsonl")], tmp_path / "clean", stages)
    assert main(["run", str(clean), "--no-progress"]) == 0
    config = write_config(tmp_path, [str(inputs / "*.jsonl")], tmp_path / "out", stages)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "curation.cli", "run", str(config), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    markers = tmp_path / "out" / "_state" / "final"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 2:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert process.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err, err
    assert not list((tmp_path / "out").rglob(".*.tmp-*"))
    assert main(["run", str(config), "--no-progress"]) == 0
    for part in ("kept", "rejected"):
        assert digest(tmp_path / "out" / part) == digest(tmp_path / "clean" / part)


def test_a_lang_column_null_all_through_passes_every_stage_that_reads_it(tmp_path):
    # the Common Crawl sample's `lang` is null on every row: Arrow reads the column as type null
    rows = [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", 120) if r.get("lang") is None and r["text"]]
    write_jsonl(tmp_path / "web.jsonl", rows)
    stages = [{"name": "gopher_quality", "languages": ["en"]}, {"name": "gopher_quality"}, {"name": "gopher_repetition"},
              {"name": "c4"}, {"name": "fineweb", "languages": ["en", "zh"]}, {"name": "paragraph_dedup"},
              {"name": "minhash_dedup"}]
    config = write_config(tmp_path, [str(tmp_path / "web.jsonl")], tmp_path / "out", stages)
    assert main(["run", str(config), "--no-progress"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["input"]["docs"] == len(rows) > 50
    assert stats["output"]["kept_docs"] + stats["output"]["rejected_docs"] == len(rows)
