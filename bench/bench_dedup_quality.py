"""Near-duplicate quality: `minhash_dedup` against `datasketch.MinHashLSH` (same threshold and number of
permutations, in memory) on real documents with known perturbed copies. Reports pair precision and
recall, recall by edit rate and for copies whose true word-5-gram Jaccard is at least 0.9.

    .venv/bin/python bench/bench_dedup_quality.py
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl  # noqa: E402

from curation.config import pipeline_from_dict  # noqa: E402
from curation.executor import RunOptions, run_pipeline  # noqa: E402

EDIT_RATES = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
FILLER = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()


def shingles(text: str, n: int = 5) -> set[str]:
    words = text.split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)} or {" ".join(words)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def edit(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for word in text.split():
        r = rng.random()
        if r < rate / 3:
            continue  # deletion
        if r < 2 * rate / 3:
            out.append(rng.choice(FILLER))  # substitution
            continue
        out.append(word)
        if r < rate:
            out.append(rng.choice(FILLER))  # insertion
    return " ".join(out)


def build(rng: random.Random) -> tuple[list[dict], list[tuple[str, str, str]]]:
    sources = [r for name in ("en_wikitext2_valid_test.jsonl.gz", "en_gum_docs.jsonl.gz")
               for r in read_jsonl(name) if len(r["text"].split()) >= 200]
    docs, planted = [], []  # planted: (a, b, kind)
    wrapper_head = " ".join(rng.choice(FILLER + ["news", "home", "menu", "share"]) for _ in range(60))
    for i, src in enumerate(sources):
        docs.append({"id": src["id"], "text": src["text"]})
        rate = EDIT_RATES[i % len(EDIT_RATES)]
        copy_id = f"{src['id']}~edit{rate}"
        docs.append({"id": copy_id, "text": edit(src["text"], rate, rng)})
        planted.append((src["id"], copy_id, f"edit_{rate}"))
        if i % 5 == 0:  # the same document inside a boilerplate wrapper
            wrapped = f"{src['id']}~wrapped"
            docs.append({"id": wrapped, "text": wrapper_head + "\n" + src["text"] + "\n" + wrapper_head})
            planted.append((src["id"], wrapped, "wrapper"))
    # different short documents inside one shared wrapper: should not be duplicates
    for i, src in enumerate(sources[:30]):
        docs.append({"id": f"shared_wrapper_{i}", "text": wrapper_head + "\n" + " ".join(src["text"].split()[:40])})
    rng.shuffle(docs)
    return docs, planted


def clusters_to_pairs(groups: dict) -> set[tuple[str, str]]:
    pairs = set()
    for members in groups.values():
        pairs.update(tuple(sorted(p)) for p in itertools.combinations(members, 2))
    return pairs


def ours(docs: list[dict]) -> set[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for shard in range(4):
            pq.write_table(pa.Table.from_pylist(docs[shard::4]), folder / f"s{shard}.parquet")
        raw = {"input": {"path": [str(folder / "*.parquet")]}, "output": {"path": str(Path(tmp) / "out")},
               "executor": {"kind": "local"}, "stages": [{"name": "minhash_dedup"}]}
        run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))
        groups = defaultdict(list)
        for part in ("kept", "rejected"):
            for path in (Path(tmp) / "out" / part).glob("*.parquet"):
                table = pq.read_table(path, columns=["id", "dup_cluster"])
                for doc, cluster in zip(table.column("id").to_pylist(), table.column("dup_cluster").to_pylist()):
                    if cluster:
                        groups[cluster].append(doc)
    return clusters_to_pairs(groups)


def datasketch_lsh(docs: list[dict]) -> set[tuple[str, str]]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    sketches = {}
    for doc in docs:
        m = MinHash(num_perm=128)
        m.update_batch([s.encode() for s in shingles(doc["text"])])
        sketches[doc["id"]] = m
        lsh.insert(doc["id"], m)
    return {tuple(sorted((d, other))) for d, m in sketches.items() for other in lsh.query(m) if other != d}


def main() -> None:
    rng = random.Random(11)
    docs, planted = build(rng)
    text = {d["id"]: d["text"] for d in docs}
    truth_j = {tuple(sorted((a, b))): (jaccard(text[a], text[b]), kind) for a, b, kind in planted}
    positives = {p for p, (j, _) in truth_j.items() if j >= 0.8}
    found = {"curation": ours(docs), "datasketch_lsh": datasketch_lsh(docs)}
    report = {"docs": len(docs), "planted_pairs": len(planted), "true_pairs_j_ge_0.8": len(positives)}
    for name, pairs in found.items():
        tp = len(pairs & positives)
        by_kind = defaultdict(lambda: [0, 0])
        for pair, (j, kind) in truth_j.items():
            if j >= 0.8:
                by_kind[kind][1] += 1
                by_kind[kind][0] += pair in pairs
        high = [p for p, (j, _) in truth_j.items() if j >= 0.9]
        report[name] = {
            "precision": round(tp / max(len(pairs), 1), 4), "recall": round(tp / max(len(positives), 1), 4),
            "recall_j_ge_0.9": round(sum(p in pairs for p in high) / max(len(high), 1), 4),
            "recall_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())},
            "pairs_found": len(pairs),
        }
    report["mean_jaccard_by_kind"] = {k: round(sum(j for j, kk in truth_j.values() if kk == k) /
                                               max(1, sum(1 for _, kk in truth_j.values() if kk == k)), 3)
                                      for k in sorted({kind for _, kind in truth_j.values()})}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "dedup_quality.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
