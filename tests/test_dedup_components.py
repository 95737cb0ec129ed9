"""Connected components over edge partitions (issue 20 item 1): the same components as the driver-side
reference (`minhash_dedup.connected_components`, what the stage ran before), no task holding more than
its partition, and a killed run resuming at its first unfinished round."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl, write_parquet
from curation.stages import components as cc
from curation.stages import minhash_dedup as mh
from curation.stages import text_rules as tr
from test_dedup import run
from test_dedup_lineage import output


def serial_map(fn, items):
    return [fn(item) for item in items]


def distributed(tmp_path, src: np.ndarray, dst: np.ndarray, partitions: int, map_fn=serial_map):
    work = str(tmp_path / "work")
    first = os.path.join(work, "input")
    if not os.path.isdir(first):
        cc.write_undirected(src, dst, first, "edges", partitions)
    star, info = cc.connected_components(map_fn, cc.Steps(work), work, first, partitions)
    leaf, root = cc.read_stars(star, partitions)
    return dict(zip(leaf.tolist(), root.tolist())), info


def reference(src: np.ndarray, dst: np.ndarray) -> dict[int, int]:
    nodes, root = mh.connected_components(src, dst)
    return {n: r for n, r in zip(nodes.tolist(), root.tolist()) if n != r}


def graphs():
    rng = np.random.default_rng(3)
    node = lambda n: (rng.integers(0, 40, n) << mh.ROW_BITS) + rng.integers(0, 10**6, n)  # noqa: E731
    # a long path in shuffled node order (the most rounds), a star, a random sparse graph, cliques
    path = rng.permutation(node(2000))
    yield "path", path[:-1], path[1:]
    hub = node(1)[0]
    leaves = node(500)
    yield "star", np.full(500, hub), leaves
    a, b = node(3000), node(3000)
    pool = np.concatenate([a, b])
    yield "random", pool[rng.integers(0, len(pool), 2500)], pool[rng.integers(0, len(pool), 2500)]
    cliques = [node(k) for k in (2, 3, 7, 30)]
    src = np.concatenate([np.repeat(c, len(c)) for c in cliques])
    dst = np.concatenate([np.tile(c, len(c)) for c in cliques])
    yield "cliques", src, dst


@pytest.mark.parametrize("partitions", [1, 4])
def test_same_components_as_the_driver_reference(tmp_path, partitions):
    for name, src, dst in graphs():
        found, info = distributed(tmp_path / f"{name}-{partitions}", src.astype(np.int64), dst.astype(np.int64), partitions)
        assert found == reference(src, dst), name
        assert info["rounds"] <= 30, (name, info)


def test_no_task_reads_more_than_its_partition(tmp_path):
    """A random graph of 12,000 edges over 40,000 nodes (mean degree 0.6: many small components, as
    duplicate clusters are) in 16 partitions: every round's task reads about 1/16 of the edges (twice
    each: both directions), never the whole graph. (A giant component would bring all its edges to
    its root's task: the largest cluster bounds a task, see components.py.)"""
    rng = np.random.default_rng(5)
    src, dst = rng.integers(0, 40_000, 12_000), rng.integers(0, 40_000, 12_000)
    largest = []

    def measuring_map(fn, items):
        results = []
        for item in items:
            largest.append(len(cc.read_keyed(item[0], item[2])[0]))
            results.append(fn(item))
        return results

    found, _ = distributed(tmp_path, src, dst, 16, measuring_map)
    assert found == reference(src, dst)
    assert max(largest) < 2 * 12_000 / 16 * 1.5, max(largest)


def test_killed_components_resume_at_the_first_unfinished_round(tmp_path):
    rng = np.random.default_rng(9)
    path = rng.permutation(3000).astype(np.int64)
    src, dst = path[:-1], path[1:]
    calls = []

    def dying_map(fn, items):
        items = list(items)
        if len(calls) == 3:
            raise RuntimeError("worker killed")
        calls.append(fn.__name__)
        return serial_map(fn, items)

    with pytest.raises(RuntimeError):
        distributed(tmp_path, src, dst, 4, dying_map)
    markers = sorted(os.listdir(tmp_path / "work" / "steps"))
    assert len(markers) == 3
    stamps = {m: os.stat(tmp_path / "work" / "steps" / m).st_mtime_ns for m in markers}
    resumed = []

    def counting_map(fn, items):
        resumed.append(fn.__name__)
        return serial_map(fn, items)

    found, info = distributed(tmp_path, src, dst, 4, counting_map)
    assert found == reference(src, dst)
    assert len(resumed) == 2 * info["rounds"] - 1 - 3  # the three finished rounds are not run again
    assert {m: os.stat(tmp_path / "work" / "steps" / m).st_mtime_ns for m in markers} == stamps


def test_stage_clusters_equal_the_driver_reference_on_shared_data(tmp_path):
    """Real reviews (many natural exact and near copies) and news: the stage's clusters through the
    executor equal those of the same candidate pairs and verification with the driver-side components."""
    docs = [r for r in read_jsonl("zh_reviews.jsonl.gz")[::12] if r["text"].strip()]  # every category
    docs += read_jsonl("zh_msra_news.jsonl.gz", 300)
    docs += [r for r in read_jsonl("en_ud_ewt_web_docs.jsonl.gz", 300) if r["text"].strip()]
    rows = [{"id": str(i), "text": d["text"], "lang": d["lang"]} for i, d in enumerate(docs)]
    folder = tmp_path / "in"
    folder.mkdir()
    for shard in range(3):
        write_parquet(folder / f"s{shard}.parquet", rows[shard::3])
    run(folder, tmp_path / "out", [{"name": "minhash_dedup", "partitions": 4}])
    table = output(tmp_path / "out")
    ours: dict[str, set[str]] = {}
    for doc, cluster in zip(table.column("id").to_pylist(), table.column("dup_cluster").to_pylist()):
        if cluster is not None:
            ours.setdefault(cluster, set()).add(doc)
    # The reference: the same signatures, band keys, bucket pairs and threshold, in memory.
    stage = mh.MinHashDedup()
    order = [r for shard in range(3) for r in rows[shard::3]]  # corpus order: shard, then row
    node = np.array([(shard << mh.ROW_BITS) + i for shard in range(3) for i in range(len(rows[shard::3]))])
    sig = stage.signatures(pa.array([r["text"] for r in order]), pa.array([r["lang"] for r in order]))
    has_words = (sig != np.iinfo(np.uint32).max).any(axis=1)
    keys = mh.band_keys(sig[has_words], stage.bands, stage.rows)
    live = node[has_words]
    src, dst = mh.bucket_pairs(keys.reshape(-1), np.repeat(live, stage.bands), stage.config.bucket_neighbours)
    index = {n: i for i, n in enumerate(node.tolist())}
    s_i = np.array([index[n] for n in src.tolist()])
    d_i = np.array([index[n] for n in dst.tolist()])
    keep = (sig[s_i] == sig[d_i]).mean(axis=1) >= stage.config.threshold
    nodes, root = mh.connected_components(src[keep], dst[keep])
    theirs: dict[int, set[str]] = {}
    for n, r in zip(nodes.tolist(), root.tolist()):
        theirs.setdefault(r, set()).add(order[index[n]]["id"])
    assert len(ours) > 50  # the reviews repeat: a real test of the clusters
    assert sorted(map(sorted, ours.values())) == sorted(map(sorted, theirs.values()))
