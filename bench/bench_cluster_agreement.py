"""Clusters of `minhash_dedup` against `datasketch.MinHashLSH` (same threshold 0.8 and 128 permutations,
in memory) on all of ../shared/data: the share of same-cluster document pairs both agree on.

datasketch gets the same signatures (`signatures()` equals datasketch's MinHash for the same shingles,
tested in tests/test_dedup.py), so what is compared is the corpus-wide machinery: band shuffle on
disk, verification and connected components against one in-memory index queried per document.
Pairs are counted through the cluster contingency table, so large clusters (short reviews that repeat)
cost nothing to compare. Three datasketch variants: raw MinHashLSH queries with its default bands, and
queries kept only when `MinHash.jaccard` reaches the threshold (the check datasketch's docs suggest),
with its default bands and with ours. Disagreeing pairs are split by their estimated Jaccard, to show
which side the evidence favours.

    .venv/bin/python bench/bench_cluster_agreement.py
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import DATA, REPO  # noqa: E402

from curation.config import pipeline_from_dict  # noqa: E402
from curation.executor import RunOptions, run_pipeline  # noqa: E402
from curation.stages.minhash_dedup import MinHashDedup, connected_components  # noqa: E402

SHARDS = 6


def shared_docs() -> list[dict]:
    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if row["text"]:
                    rows.append({"id": str(len(rows)), "text": row["text"], "lang": row.get("lang") or "und"})
    return rows


def ours(docs: list[dict], tmp: Path) -> np.ndarray:
    """Cluster label per document (its own index when it is in no cluster)."""
    folder = tmp / "in"
    folder.mkdir()
    for shard in range(SHARDS):
        pq.write_table(pa.Table.from_pylist(docs[shard::SHARDS]), folder / f"s{shard}.parquet")
    raw = {"input": {"path": [str(folder / "*.parquet")]}, "output": {"path": str(tmp / "out")},
           "executor": {"kind": "ray", "num_cpus": 2}, "stages": [{"name": "minhash_dedup"}]}
    run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))
    label = np.arange(len(docs))
    names: dict[str, int] = {}
    for part in ("kept", "rejected"):
        for path in (tmp / "out" / part).glob("*.parquet"):
            table = pq.read_table(path, columns=["id", "dup_cluster"])
            for doc, cluster in zip(table.column("id").to_pylist(), table.column("dup_cluster").to_pylist()):
                if cluster:
                    label[int(doc)] = names.setdefault(cluster, len(docs) + len(names))
    return label


def signatures(docs: list[dict]) -> np.ndarray:
    stage = MinHashDedup()
    stage.setup()
    return np.concatenate([stage.signatures(pa.array([d["text"] for d in docs[i:i + 5000]]),
                                            pa.array([d["lang"] for d in docs[i:i + 5000]]))
                           for i in range(0, len(docs), 5000)])


def datasketch_lsh(sig: np.ndarray, weights: tuple[float, float], verify: bool) -> np.ndarray:
    """Cluster label per document from MinHashLSH queries (kept only when the two sketches' estimated
    Jaccard reaches the threshold, with `verify`), joined by connected components."""
    from datasketch import MinHash, MinHashLSH

    has_words = (sig != np.iinfo(np.uint32).max).any(axis=1)
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=weights)
    sketches = {}
    for i in np.flatnonzero(has_words).tolist():
        sketches[i] = MinHash(num_perm=128, seed=1, hashvalues=sig[i], scheme="affine32")
        lsh.insert(i, sketches[i])
    src, dst = [], []
    for i, m in sketches.items():
        for j in lsh.query(m):
            if j > i and (not verify or m.jaccard(sketches[j]) >= 0.8):
                src.append(i)
                dst.append(j)
    label = np.arange(len(sig))
    if src:
        nodes, root = connected_components(np.array(src), np.array(dst))
        label[nodes] = root
    return label


def pair_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    def pairs(counts) -> int:
        return sum(c * (c - 1) // 2 for c in counts)

    in_a, in_b = pairs(Counter(a.tolist()).values()), pairs(Counter(b.tolist()).values())
    both = pairs(Counter(zip(a.tolist(), b.tolist())).values())
    either = in_a + in_b - both
    return {"pairs_curation": in_a, "pairs_datasketch": in_b, "pairs_both": both,
            "agreement": round(both / either, 5) if either else 1.0}


def disagreeing_pairs(a: np.ndarray, b: np.ndarray, sig: np.ndarray, largest: int = 300) -> dict:
    """Pairs one side has and the other not, split by the pair's estimated Jaccard (>= 0.8 or not):
    which side the evidence favours. Clusters larger than `largest` are skipped (counted)."""
    out = Counter()
    members_a, members_b = {}, {}
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        members_a.setdefault(x, []).append(i)
        members_b.setdefault(y, []).append(i)
    for side, mine, other in (("curation_only", members_a, b), ("datasketch_only", members_b, a)):
        for group in mine.values():
            if len(group) < 2:
                continue
            if len(group) > largest:
                out["skipped_large_clusters"] += 1
                continue
            g = np.array(group)
            same_other = other[g][:, None] == other[g][None, :]
            estimate = (sig[g][:, None, :] == sig[g][None, :, :]).mean(-1)
            upper = np.triu(np.ones((len(g), len(g)), bool), 1) & ~same_other
            out[f"{side}_estimate_ge_0.8"] += int((upper & (estimate >= 0.8)).sum())
            out[f"{side}_estimate_lt_0.8"] += int((upper & (estimate < 0.8)).sum())
    return dict(out)


def main() -> None:
    docs = shared_docs()
    report: dict = {"docs": len(docs)}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        mine = ours(docs, Path(tmp))
        report["curation_s"] = round(time.perf_counter() - started, 1)
    sig = signatures(docs)
    for name, weights, verify in (("datasketch_default_weights", (0.5, 0.5), False),
                                  ("datasketch_default_weights_verified", (0.5, 0.5), True),
                                  ("datasketch_same_bands_verified", (0.2, 0.8), True)):
        started = time.perf_counter()
        theirs = datasketch_lsh(sig, weights, verify)
        report[name] = {**pair_agreement(mine, theirs), **disagreeing_pairs(mine, theirs, sig),
                        "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "cluster_agreement.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
