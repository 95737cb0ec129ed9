"""Dedup against an earlier run's index (issue 20 item 2): curating a corpus in two halves, the second
against the first half's index, keeps what one run over the whole keeps, for each dedup stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.config import pipeline_from_dict
from test_dedup import all_rows, run
from test_dedup_lineage import planted  # noqa: F401  (fixture: real documents with planted copies)

STAGES = [("exact_dedup", {}), ("paragraph_dedup", {}), ("minhash_dedup", {}), ("minhash_dedup", {"verify": "exact"})]


def halves(tmp_path: Path, folder: Path) -> tuple[Path, Path]:
    """The planted corpus's shards s0, s1 (first in corpus order) and s2, s3, as two inputs."""
    first, second = tmp_path / "first", tmp_path / "second"
    for target, names in ((first, ("s0", "s1")), (second, ("s2", "s3"))):
        target.mkdir()
        for name in names:
            shutil.copy(folder / f"{name}.parquet", target / f"{name}.parquet")
    return first, second


def outcome(out: Path) -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
    """(id -> kept text, id -> (drop reason, duplicate_of)) of a run."""
    kept, rejected = all_rows(out / "kept"), all_rows(out / "rejected")
    texts = dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist()))
    dup_of = rejected.column("duplicate_of").to_pylist() if "duplicate_of" in rejected.schema.names \
        else [None] * rejected.num_rows
    return texts, dict(zip(rejected.column("id").to_pylist(), zip(rejected.column("drop_reason").to_pylist(), dup_of)))


@pytest.mark.parametrize("stage,options", STAGES)
def test_second_half_against_first_half_index_equals_one_run(tmp_path, planted, stage, options):  # noqa: F811
    folder, truth = planted
    first, second = halves(tmp_path, folder)
    index = tmp_path / "index" / stage
    run(folder, tmp_path / "whole", [{"name": stage, "partitions": 3, **options}])
    run(first, tmp_path / "a", [{"name": stage, "partitions": 3, "index_write": str(index), **options}])
    stats = run(second, tmp_path / "b", [{"name": stage, "partitions": 2, "index_read": [str(index)], **options}])
    kept_whole, rejected_whole = outcome(tmp_path / "whole")
    kept_a, rejected_a = outcome(tmp_path / "a")
    kept_b, rejected_b = outcome(tmp_path / "b")
    # The second half alone would keep copies of first-half documents; against the index it does not.
    assert kept_a | kept_b == kept_whole  # same documents, same (paragraph-cut) texts
    assert rejected_a | rejected_b == rejected_whole  # same reasons, same duplicate_of targets
    crossing = [doc for doc, (_, of) in rejected_b.items() if of is not None and of in kept_a]
    if stage == "paragraph_dedup":
        assert stats["aggregates"]["00_paragraph_dedup"]["duplicate_paragraphs"] > 0
        assert any(kept_b[d] != t for d, t in _texts(second).items() if d in kept_b)  # some cut by the index
    else:
        assert len(crossing) >= 5, crossing  # copies whose original is only in the index
    manifest = json.loads((index / "index.json").read_text())
    assert manifest["stage"] == stage and manifest["version"] == 1
    assert manifest["rows"] == sum(pq.ParquetFile(index / p["name"]).metadata.num_rows for p in manifest["parts"]) > 0
    assert not Path(str(index) + ".partial").exists()


def _texts(folder: Path) -> dict[str, str]:
    table = all_rows(folder)
    return dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))


def test_chained_indexes_third_run_reads_both(tmp_path, planted):  # noqa: F811
    """Extending: each run writes its own entries; the next reads every earlier index, oldest first."""
    folder, _ = planted
    parts = []
    for k in range(4):
        part = tmp_path / f"in{k}"
        part.mkdir()
        shutil.copy(folder / f"s{k}.parquet", part / f"s{k}.parquet")
        parts.append(part)
    run(folder, tmp_path / "whole", [{"name": "minhash_dedup", "partitions": 3}])
    indexes: list[str] = []
    for k, part in enumerate(parts):
        run(part, tmp_path / f"out{k}", [{"name": "minhash_dedup", "partitions": 3, "index_read": list(indexes),
                                          "index_write": str(tmp_path / f"idx{k}")}])
        indexes.append(str(tmp_path / f"idx{k}"))
    kept_whole, rejected_whole = outcome(tmp_path / "whole")
    kept, rejected = {}, {}
    for k in range(4):
        kept_k, rejected_k = outcome(tmp_path / f"out{k}")
        kept |= kept_k
        rejected |= rejected_k
    assert kept == kept_whole and rejected == rejected_whole


def _config(tmp_path: Path, stage: dict) -> dict:
    return {"input": {"path": [str(tmp_path / "*.jsonl")]}, "output": {"path": str(tmp_path / "out")},
            "stages": [stage]}


def test_index_errors_name_the_file(tmp_path, planted):  # noqa: F811
    folder, _ = planted
    first, _ = halves(tmp_path, folder)
    index = tmp_path / "idx"
    run(first, tmp_path / "a", [{"name": "minhash_dedup", "partitions": 2, "index_write": str(index)}])
    manifest = str(index / "index.json")
    with pytest.raises(ValueError, match="does not exist"):
        pipeline_from_dict(_config(tmp_path, {"name": "minhash_dedup", "index_read": [str(tmp_path / "nope")]}))
    for option, value in (("ngram", 3), ("num_perm", 64), ("seed", 2), ("threshold", 0.6), ("verify", "exact")):
        with pytest.raises(ValueError, match=f"{manifest}.*other settings.*{ {'threshold': 'bands', 'verify': 'shingle_sets'}.get(option, option)}"):
            pipeline_from_dict(_config(tmp_path, {"name": "minhash_dedup", option: value, "index_read": [str(index)]}))
    with pytest.raises(ValueError, match=f"{manifest} is an index of 'minhash_dedup'"):
        pipeline_from_dict(_config(tmp_path, {"name": "exact_dedup", "index_read": [str(index)]}))
    with pytest.raises(ValueError, match="also in index_read"):
        pipeline_from_dict(_config(tmp_path, {"name": "minhash_dedup", "index_read": [str(index)], "index_write": str(index)}))
    # A finished index is never overwritten by another run.
    with pytest.raises(ValueError, match="already exists"):
        run(first, tmp_path / "again", [{"name": "minhash_dedup", "partitions": 2, "index_write": str(index)}])
    # A manifest from another format version is refused, naming it.
    data = json.loads(Path(manifest).read_text())
    Path(manifest).write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ValueError, match=f"{manifest} has format version 99"):
        pipeline_from_dict(_config(tmp_path, {"name": "minhash_dedup", "index_read": [str(index)]}))
