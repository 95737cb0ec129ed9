"""OUT/kept as the tools next to a curation library read it: DuckDB, polars on the glob, and HF
`datasets` on the folder each see every kept row in one table (one split), although the inputs carry
different pass-through columns, a column typed int in one file and string in another, and file names
that `datasets` would read as splits."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import DATA
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interop")
    inputs = folder / "in"
    inputs.mkdir()
    import gzip

    # the shared files as they are (different columns per file; wikitext's name says "valid_test")
    for name, limit in (("en_wikitext2_valid_test.jsonl.gz", 30), ("en_gum_docs.jsonl.gz", 40),
                        ("code_humanevalx_linux.jsonl.gz", 60), ("zh_reviews.jsonl.gz", 300)):
        with gzip.open(DATA / name, "rt", encoding="utf-8") as source, \
                open(inputs / name.replace(".gz", ""), "w", encoding="utf-8") as target:
            for number, line in enumerate(source):
                if number >= limit:
                    break
                row = json.loads(line)
                if name.startswith("en_gum"):
                    row["label"] = f"genre-{row['genre']}"  # string here, an int in zh_reviews
                target.write(json.dumps(row, ensure_ascii=False) + "\n")
    config = pipeline_from_dict({"input": {"path": [str(inputs / "*.jsonl")]}, "output": {"path": str(folder / "out")},
                                 "executor": {"kind": "local"},
                                 "stages": [{"name": "length_filter", "min_chars": 20}, {"name": "exact_dedup"}]})
    stats = run_pipeline(config, RunOptions(progress=False))
    folder.joinpath("kept_docs").write_text(str(stats["output"]["kept_docs"]))
    return folder / "out"


def kept_count(curated: Path) -> int:
    return int((curated.parent / "kept_docs").read_text())


def test_every_kept_file_has_one_schema_and_names_say_no_split(curated):
    files = sorted((curated / "kept").glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(4)]
    schemas = {pq.read_schema(f).to_string() for f in files}
    assert len(schemas) == 1
    schema = pq.read_schema(files[0])
    assert {"genre", "task_id", "has_unk", "label", "category"} <= set(schema.names)
    assert str(schema.field("label").type) == "string"  # int in one input, string in another
    index = json.loads((curated / "shards.json").read_text())
    assert [Path(entry["input"]).name for entry in index] == [
        "code_humanevalx_linux.jsonl", "en_gum_docs.jsonl", "en_wikitext2_valid_test.jsonl", "zh_reviews.jsonl"]
    assert all((curated / entry["kept"]).exists() for entry in index)


def test_duckdb_polars_and_datasets_read_every_kept_row(curated):
    import duckdb
    import polars as pl
    from datasets import load_dataset

    expected = kept_count(curated)
    assert expected > 300
    glob = str(curated / "kept" / "*.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0] == expected
    frame = pl.read_parquet(glob)
    assert frame.height == expected and "task_id" in frame.columns
    loaded = load_dataset("parquet", data_dir=str(curated / "kept"), cache_dir=str(curated.parent / "hf_cache"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == expected
    rejected = pl.read_parquet(str(curated / "rejected" / "*.parquet"))
    assert "drop_reason" in rejected.columns and rejected.height > 0
