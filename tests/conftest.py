"""Shared fixtures: real text from ../shared/data, small shards written to temp dirs, one Ray instance."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATION_TEST_DATA", REPO.parent / "shared" / "data"))


def read_jsonl(name: str, limit: int | None = None) -> list[dict]:
    rows = []
    with gzip.open(DATA / name, "rt", encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}: the tests read real text from ../shared/data")
    return DATA


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole session; the executor reuses it instead of starting its own."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=True, object_store_memory=256 * 1024 * 1024,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture()
def mixed_shards(tmp_path: Path, data_dir: Path) -> Path:
    """Six small input shards of real text in three formats, one of them with exact duplicates."""
    folder = tmp_path / "input"
    folder.mkdir()
    write_jsonl(folder / "a_gum.jsonl", read_jsonl("en_gum_docs.jsonl.gz", 60))
    write_jsonl(folder / "b_msra.jsonl.gz", read_jsonl("zh_msra_news.jsonl.gz", 300), compress=True)
    write_parquet(folder / "c_reviews.parquet", read_jsonl("zh_reviews.jsonl.gz", 2000))
    write_jsonl(folder / "d_code.jsonl", read_jsonl("code_humanevalx_linux.jsonl.gz", 100))
    write_parquet(folder / "e_wiki.parquet", read_jsonl("en_wikitext2_valid_test.jsonl.gz", 40))
    write_jsonl(folder / "f_web.jsonl", [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", 200) if r["text"]])
    return folder
