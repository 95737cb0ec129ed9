"""Corpus-wide dedup through the executor: exact copies and perturbed near-copies spread over shards."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl, write_parquet
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from curation.stage import build_stage
from curation.stages import minhash_dedup as mh


def run(input_dir: Path, out: Path, stages, kind="local"):
    raw = {"input": {"path": [str(input_dir / "*")]}, "output": {"path": str(out)}, "executor": {"kind": kind},
           "stages": stages}
    return run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))


def all_rows(folder: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))], promote_options="default")


def perturb(text: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(["alpha", "beta", "gamma", "delta", "omega"])
    return " ".join(words)


def test_exact_duplicates_across_shards(tmp_path, ray_instance):
    docs = read_jsonl("en_gum_docs.jsonl.gz", 30)
    folder = tmp_path / "in"
    folder.mkdir()
    # shard a holds copies (different ids, different white space and case) of documents of shard c
    copies = [{"id": f"copy{i}", "text": "  " + d["text"].upper() + "\n"} for i, d in enumerate(docs[20:25])]
    write_jsonl(folder / "a.jsonl", copies + [{"id": "uniq", "text": "a unique document"}])
    write_parquet(folder / "b.parquet", [{"id": d["id"], "text": d["text"]} for d in docs[:20]])
    write_jsonl(folder / "c.jsonl", [{"id": d["id"], "text": d["text"]} for d in docs[20:]])
    stats = run(folder, tmp_path / "out", [{"name": "exact_dedup", "partitions": 3}], kind="ray")
    rejected = all_rows(tmp_path / "out" / "rejected")
    # Corpus order is by path: a < b < c, so the copies in a are kept and the originals in c dropped.
    assert sorted(rejected.column("id").to_pylist()) == sorted(d["id"] for d in docs[20:25])
    assert set(rejected.column("drop_reason").to_pylist()) == {"exact_duplicate"}
    kept = all_rows(tmp_path / "out" / "kept")
    by_id = dict(zip(kept.column("id").to_pylist(), kept.column("dup_cluster").to_pylist()))
    for original, kept_id, cluster in zip(rejected.column("id").to_pylist(), rejected.column("duplicate_of").to_pylist(),
                                          rejected.column("dup_cluster").to_pylist()):
        assert kept_id.startswith("copy") and by_id[kept_id] == cluster
    assert by_id["uniq"] is None
    assert stats["aggregates"]["00_exact_dedup"]["duplicates"] == 5


def test_signatures_equal_datasketch():
    from datasketch import MinHash

    texts = [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 40)] + ["two words", "", "一二三四五六七八九十"]
    langs = ["en"] * (len(texts) - 1) + ["zh"]
    stage = build_stage({"name": "minhash_dedup"})
    stage.setup()
    ours = stage.signatures(pa.array(texts), pa.array(langs))
    for i, text in enumerate(texts):
        words = list(text) if langs[i] == "zh" else text.split()
        shingles = [" ".join(words[j:j + 5]).encode() for j in range(len(words) - 4)] or (
            [" ".join(words).encode()] if words else [])
        reference = MinHash(num_perm=128, seed=1, hashfunc=mh.shingle_hash32)
        reference.update_batch(shingles)
        assert np.array_equal(reference.hashvalues, ours[i]), i



def test_permutations_and_lsh_params_are_datasketch_ones():
    """The stage takes datasketch's permutations and (bands, rows) without importing datasketch (a
    replica of its draw and a table of its choices): both equal what datasketch gives."""
    from datasketch import MinHash
    from datasketch.lsh import _optimal_param

    for num_perm, seed in [(128, 1), (128, 7), (16, 1), (256, 42), (1, 3)]:
        a, b = mh.permutations(num_perm, seed)
        ref_a, ref_b = MinHash(num_perm=num_perm, seed=seed).permutations
        assert a.dtype == b.dtype == np.uint32
        assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b), (num_perm, seed)
    for key, params in mh.KNOWN_LSH_PARAMS.items():
        assert params == _optimal_param(*key), key
    assert mh.lsh_params(0.6, 64, 0.3, 0.7) == _optimal_param(0.6, 64, 0.3, 0.7)  # off the table

@pytest.fixture()
def near_copies(tmp_path):
    rng = random.Random(7)
    originals = [r for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz") if len(r["text"]) > 2000][:40]
    originals += [r for r in read_jsonl("en_gum_docs.jsonl.gz")][:60]
    folder = tmp_path / "in"
    folder.mkdir()
    rows, truth = [], {}
    for i, doc in enumerate(originals):
        rows.append({"id": doc["id"], "text": doc["text"]})
        if i % 2 == 0:
            copy_id = f"{doc['id']}~copy"
            rows.append({"id": copy_id, "text": perturb(doc["text"], 0.01, rng)})
            truth[copy_id] = doc["id"]
    rng.shuffle(rows)
    for shard in range(4):
        write_parquet(folder / f"s{shard}.parquet", rows[shard::4])
    return folder, rows, truth


def test_near_duplicates_found_across_shards(tmp_path, near_copies):
    folder, rows, truth = near_copies
    stats = run(folder, tmp_path / "out", [{"name": "minhash_dedup", "partitions": 4}])
    table = pa.concat_tables([all_rows(tmp_path / "out" / "kept").select(["id", "dup_cluster"]),
                              all_rows(tmp_path / "out" / "rejected").select(["id", "dup_cluster"])])
    cluster = dict(zip(table.column("id").to_pylist(), table.column("dup_cluster").to_pylist()))
    found = sum(1 for copy, original in truth.items() if cluster[copy] is not None and cluster[copy] == cluster[original])
    assert found / len(truth) >= 0.98
    # No false clusters: every cluster is an original with its own copy.
    clustered = [i for i, c in cluster.items() if c is not None]
    assert len(clustered) == 2 * found
    assert stats["output"]["rejected_docs"] == found
    assert stats["aggregates"]["00_minhash_dedup"]["cluster_size_2"] == found


def test_verification_in_slices_decides_as_in_one_piece(tmp_path, near_copies, monkeypatch):
    """Verification holds VALUE_ROWS edges' signatures at a time (memory no longer grows with a shard's
    edges); cut into slices of 3 edges the kept and rejected files are the same bytes."""
    folder, _, _ = near_copies
    run(folder, tmp_path / "whole", [{"name": "minhash_dedup", "partitions": 4}])
    monkeypatch.setattr(mh, "VALUE_ROWS", 3)
    run(folder, tmp_path / "sliced", [{"name": "minhash_dedup", "partitions": 4}])
    for part in ("kept", "rejected"):
        whole = {p.name: p.read_bytes() for p in (tmp_path / "whole" / part).glob("*.parquet")}
        assert whole and whole == {p.name: p.read_bytes() for p in (tmp_path / "sliced" / part).glob("*.parquet")}


def test_clusters_agree_with_datasketch_lsh(near_copies):
    from datasketch import MinHash, MinHashLSH

    _, rows, _ = near_copies
    stage = build_stage({"name": "minhash_dedup"})
    stage.setup()
    sig = stage.signatures(pa.array([r["text"] for r in rows]), None)
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.2, 0.8))
    for i, row in enumerate(rows):
        lsh.insert(str(i), MinHash(num_perm=128, seed=1, hashvalues=sig[i], scheme="affine32"))
    theirs = {tuple(sorted((i, int(j)))) for i in range(len(rows))
              for j in lsh.query(MinHash(num_perm=128, seed=1, hashvalues=sig[i], scheme="affine32")) if int(j) != i}
    keys = mh.band_keys(sig, stage.bands, stage.rows)
    ours = {tuple(sorted((i, j))) for i in range(len(rows)) for j in range(i + 1, len(rows))
            if (keys[i] == keys[j]).any()}
    assert ours == theirs


@pytest.mark.parametrize("case", ["empty_and_one_word", "all_identical", "one_50mb_document"])
def test_odd_corpora(tmp_path, case):
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "one_50mb_document":  # real prose repeated to 50 MB, beside two ordinary documents
        prose = "\n\n".join(r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz"))
        huge = (prose * (50_000_000 // len(prose) + 1))[:50_000_000]
        rows = [{"id": "huge", "text": huge}, {"id": "a", "text": prose[:5000]}, {"id": "b", "text": prose[:5000]}]
    elif case == "empty_and_one_word":
        rows = [{"id": str(i), "text": t} for i, t in enumerate([" ", "word", "word", "other", "\n\n"])]
    else:
        rows = [{"id": str(i), "text": "the very same document text, again and again"} for i in range(50)]
    write_jsonl(folder / "x.jsonl", rows)
    stats = run(folder, tmp_path / "out", [{"name": "minhash_dedup"}])
    assert stats["output"]["kept_docs"] + stats["output"]["rejected_docs"] == len(rows)
    if case == "all_identical":
        assert stats["output"]["kept_docs"] == 1 and stats["aggregates"]["00_minhash_dedup"]["clusters"] == 1
    elif case == "one_50mb_document":  # the huge one is in no cluster; "b" is a copy of "a"
        assert stats["output"]["kept_docs"] == 2 and stats["aggregates"]["00_minhash_dedup"]["clusters"] == 1
    else:
        assert stats["output"]["rejected_docs"] == 1  # the second "word"


def test_paragraph_dedup_removes_later_copies_across_shards(tmp_path, ray_instance):
    docs = read_jsonl("en_gum_docs.jsonl.gz", 6)
    boiler = "Subscribe to our newsletter for more stories like this one."
    folder = tmp_path / "in"
    folder.mkdir()
    first = [{"id": f"a{i}", "text": d["text"] + "\n" + boiler} for i, d in enumerate(docs[:3])]
    second = [{"id": f"b{i}", "text": boiler.upper() + "\n" + d["text"]} for i, d in enumerate(docs[3:])]
    second.append({"id": "b_short", "text": "A short line.\n" + boiler})
    write_jsonl(folder / "a.jsonl", first)
    write_jsonl(folder / "b.jsonl", second)
    stats = run(folder, tmp_path / "out", [{"name": "paragraph_dedup", "partitions": 2}], kind="ray")
    kept = {r["id"]: r["text"] for r in all_rows(tmp_path / "out" / "kept").to_pylist()}
    # A plain Python reference of the same rule, in corpus order (a.jsonl, then b.jsonl).
    seen, expected, removed = set(), {}, 0
    for row in first + second:
        parts = []
        for paragraph in row["text"].split("\n"):
            key = " ".join(paragraph.lower().split())
            if key and key in seen:
                removed += 1
                continue
            seen.add(key)
            parts.append(paragraph)
        expected[row["id"]] = "\n".join(parts)
    assert kept["a0"].endswith(boiler)  # the first occurrence stays
    assert all(boiler.lower() not in kept[f"b{i}"].lower() for i in range(3))  # later copies go, in any case
    assert kept == {k: v for k, v in expected.items() if k != "b_short"}
    rejected = all_rows(tmp_path / "out" / "rejected").to_pylist()
    assert [(r["id"], r["drop_reason"]) for r in rejected] == [("b_short", "paragraph_dedup:too_short")]
    metrics = stats["stages"][0]["metrics"]
    assert metrics["paragraphs_removed"] == removed >= 6


def test_killed_dedup_run_resumes_from_its_last_finished_pass(tmp_path, near_copies):
    """A run that died after the shuffle (keys and aggregate done, final pass not) redoes only the last
    pass: the key pass and the aggregate are not run again, and the output is identical."""
    import json
    import os
    import shutil

    folder, _, _ = near_copies
    stages = [{"name": "exact_dedup"}, {"name": "minhash_dedup", "partitions": 4}]
    raw = {"input": {"path": [str(folder / "*")]}, "output": {"path": str(tmp_path / "out"), "keep_work": True},
           "executor": {"kind": "local"}, "stages": stages}
    first = run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))
    clean = {p.name: p.read_bytes() for p in (tmp_path / "out" / "kept").glob("*.parquet")}
    state = tmp_path / "out" / "_state"
    aggregate_markers = {p: p.stat().st_mtime_ns for p in state.glob("*.aggregate.json")}
    keys_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "_work").rglob("keys/*.parquet")}
    assert len(aggregate_markers) == 2 and keys_files
    # The crash: the last pass had not finished.
    shutil.rmtree(state / "final")
    shutil.rmtree(tmp_path / "out" / "kept")
    os.remove(tmp_path / "out" / "stats.json")
    second = run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out" / "kept").glob("*.parquet")} == clean
    assert {p: p.stat().st_mtime_ns for p in state.glob("*.aggregate.json")} == aggregate_markers
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "_work").rglob("keys/*.parquet")} == keys_files
    assert second["output"] == first["output"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["aggregates"] == first["aggregates"]
