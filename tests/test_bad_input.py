"""Bad and extreme input end to end: a 100 MB single-line document, a million tiny documents,
NUL bytes and wrong column types. Each gets a clear error or a counted drop, never a crash, and no
document is lost (kept + rejected = input)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl
from curation.config import pipeline_from_dict
from curation.executor import PipelineError, RunOptions, run_pipeline
from curation.io import InputError


def _run(path, out, stages, **input_options):
    config = pipeline_from_dict({"input": {"path": [str(path)], **input_options}, "output": {"path": str(out)},
                                 "executor": {"kind": "local"}, "stages": stages})
    return run_pipeline(config, RunOptions(progress=False))


def _accounted(stats):
    assert stats["output"]["kept_docs"] + stats["output"]["rejected_docs"] == stats["input"]["docs"]


def test_a_100_mb_line(tmp_path, data_dir):
    prose = " ".join(r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz"))
    huge = (prose * (100_000_000 // len(prose) + 1))[:100_000_000]
    path = tmp_path / "huge.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "small", "text": "A short first document that stays."}) + "\n")
        handle.write(json.dumps({"id": "huge", "text": huge}) + "\n")
        handle.write(json.dumps({"id": "after", "text": "And one after the huge line."}) + "\n")
    stats = _run(path, tmp_path / "out", [{"name": "length_filter", "max_chars": 10_000_000}, {"name": "exact_dedup"}])
    _accounted(stats)
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "part-00000.parquet")
    assert rejected.column("id").to_pylist() == ["huge"] and rejected.column("drop_reason").to_pylist() == ["length:too_long"]
    assert len(rejected.column("text")[0].as_py()) == 100_000_000  # rejected whole, nothing lost
    assert pq.read_table(tmp_path / "out" / "kept" / "part-00000.parquet").column("id").to_pylist() == ["small", "after"]


def test_a_million_tiny_documents(tmp_path):
    n = 1_000_000
    words = ["ok", "yes", "good", "很好", "bad", "no"]
    texts = [f"{words[i % 6]} {i % 1000}" for i in range(n)]
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts}), tmp_path / "tiny.parquet")
    stats = _run(tmp_path / "tiny.parquet", tmp_path / "out",
                 [{"name": "gopher_quality"}, {"name": "fineweb"}, {"name": "exact_dedup", "partitions": 4}])
    _accounted(stats)
    assert stats["input"]["docs"] == n
    assert stats["stages"][0]["dropped"]["gopher_quality:min_doc_words"] == n  # all too short, counted


def test_nul_bytes_and_control_characters_are_text(tmp_path):
    rows = [{"id": "a", "text": "nul \x00 inside " * 30}, {"id": "b", "text": "bell \x07 and escape \x1b " * 30}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ctl.parquet")
    stats = _run(tmp_path / "ctl.parquet", tmp_path / "out", [{"name": "gopher_repetition"}, {"name": "c4"}])
    _accounted(stats)


@pytest.mark.parametrize("column, message", [
    (pa.array([1, 2, 3]), "text column 'text' has type int64, expected string"),
    (pa.array([[1], [2], [3]]), "expected string"),
    (pa.array([{"a": 1}, {"a": 2}, {"a": 3}]), "expected string"),
])
def test_wrong_column_types_name_the_file(tmp_path, column, message):
    pq.write_table(pa.table({"id": ["1", "2", "3"], "text": column}), tmp_path / "typed.parquet")
    with pytest.raises(PipelineError, match=message):
        _run(tmp_path / "typed.parquet", tmp_path / "out", [{"name": "noop"}])
    with pytest.raises(InputError, match="typed.parquet"):
        from curation.config import InputConfig
        from curation.io import list_shards, read_shard

        config = InputConfig(path=(str(tmp_path / "typed.parquet"),))
        list(read_shard(list_shards(config)[0], config))
