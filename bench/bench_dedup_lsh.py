"""LSH candidate pairs against exact Jaccard (issue 24 item 2): how many same-cluster document pairs
`minhash_dedup`'s candidate scheme recovers, against the clusters of exact Jaccard >= 0.8 joined by
connected components, on datatrove's planted set and on the shared data.

The stage's machinery in memory (same signatures, band keys, verification by estimated Jaccard and
components as the stage; tests/test_dedup_components.py shows the distributed run gives the same
clusters): only the way pairs are drawn from a bucket varies, the star used before (first member to each
other) against `bucket_pairs` with 1, 2, 4 and 8 neighbours. Exact Jaccard for every pair that shares a
shingle, by a sparse product of the document x shingle matrix.

    .venv/bin/python bench/bench_dedup_lsh.py [--reviews 20000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from corpus import DATA, REPO  # noqa: E402

from curation.stages import minhash_dedup as mh  # noqa: E402
from curation.stages import text_rules as tr  # noqa: E402


def shared_docs(reviews: int) -> list[dict]:
    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        limit = reviews if path.name.startswith("zh_reviews") else None
        if path.name.startswith("lid_"):
            continue  # 104 K single sentences of 75 languages: few duplicates, and the product grows
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for n, line in enumerate(handle):
                if limit is not None and n >= limit:
                    break
                row = json.loads(line)
                if row["text"].strip():
                    rows.append({"text": row["text"], "lang": row.get("lang") or "und"})
    return rows


def planted_docs() -> list[dict]:
    from test_dedup_lsh import LOREM, planted_docs as planted

    texts, _ = planted(LOREM)
    return [{"text": t, "lang": "la"} for t in texts]


def shingle_matrix(docs: list[dict], stage: mh.MinHashDedup):
    from scipy.sparse import csr_matrix

    hashes, owners = [], []
    for i in range(0, len(docs), 5000):
        chunk = docs[i:i + 5000]
        words = tr.words(pa.array([d["text"] for d in chunk]),
                         tr.cjk_mask(pa.array([d["lang"] for d in chunk]), len(chunk), stage.config.cjk_languages))
        h, d = mh.shingle_hashes(words, stage.config.ngram)
        hashes.append(h)
        owners.append(d + i)
    h, d = np.concatenate(hashes), np.concatenate(owners)
    _, column = np.unique(h, return_inverse=True)
    matrix = csr_matrix((np.ones(len(h), np.float32), (d, column)), shape=(len(docs), column.max() + 1))
    matrix.data[:] = 1  # a shingle repeated in a document counts once
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def exact_labels(docs: list[dict], stage: mh.MinHashDedup) -> np.ndarray:
    matrix = shingle_matrix(docs, stage)
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    both = (matrix @ matrix.T).tocoo()
    upper = both.row < both.col
    i, j, inter = both.row[upper], both.col[upper], both.data[upper]
    keep = inter >= stage.config.threshold * (sizes[i] + sizes[j] - inter)
    return labels_of(len(docs), i[keep], j[keep])


def labels_of(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    label = np.arange(n)
    if len(src):
        nodes, root = mh.connected_components(np.asarray(src, np.int64), np.asarray(dst, np.int64))
        label[nodes] = root
    return label


def star_pairs(key: np.ndarray, node: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scheme before: the first member of each bucket (by node) to each other one."""
    order = np.lexsort((node, key))
    key, node = key[order], node[order]
    new = np.concatenate([[True], key[1:] != key[:-1]])
    first = np.maximum.accumulate(np.where(new, np.arange(len(key)), 0))
    return mh._unique_edges(node[first[~new]], node[~new])


def lsh_labels(docs: list[dict], stage: mh.MinHashDedup, scheme) -> tuple[np.ndarray, int]:
    sig = np.concatenate([stage.signatures(pa.array([d["text"] for d in docs[i:i + 5000]]),
                                           pa.array([d["lang"] for d in docs[i:i + 5000]]))
                          for i in range(0, len(docs), 5000)])
    has_words = (sig != np.iinfo(np.uint32).max).any(axis=1)
    live = np.flatnonzero(has_words).astype(np.int64)
    keys = mh.band_keys(sig[has_words], stage.bands, stage.rows)
    src, dst = scheme(keys.reshape(-1), np.repeat(live, stage.bands))
    keep = (sig[src] == sig[dst]).mean(axis=1) >= stage.config.threshold
    return labels_of(len(docs), src[keep], dst[keep]), len(src)


def pair_scores(found: np.ndarray, truth: np.ndarray) -> dict:
    def pairs(counts) -> int:
        return sum(c * (c - 1) // 2 for c in counts)

    in_found, in_truth = pairs(Counter(found.tolist()).values()), pairs(Counter(truth.tolist()).values())
    both = pairs(Counter(zip(found.tolist(), truth.tolist())).values())
    return {"pairs_found": in_found, "pairs_exact": in_truth, "pairs_both": both,
            "precision": round(both / in_found, 4) if in_found else 1.0,
            "recall": round(both / in_truth, 4) if in_truth else 1.0,
            "clusters_found": int(sum(1 for c in Counter(found.tolist()).values() if c > 1)),
            "clusters_exact": int(sum(1 for c in Counter(truth.tolist()).values() if c > 1))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=20000, help="zh_reviews rows (the rest of the data whole)")
    args = parser.parse_args()
    stage = mh.MinHashDedup()
    schemes = {"star (before)": star_pairs}
    for n in (1, 2, 4, 8):
        schemes[f"bucket_pairs, {n} neighbours"] = lambda k, v, n=n: mh.bucket_pairs(k, v, n)
    report: dict = {"threshold": stage.config.threshold, "bands": stage.bands, "rows": stage.rows}
    for name, docs in (("datatrove_planted", planted_docs()), ("shared_data", shared_docs(args.reviews))):
        started = time.perf_counter()
        truth = exact_labels(docs, stage)
        entry = {"docs": len(docs), "exact_jaccard_s": round(time.perf_counter() - started, 1)}
        for scheme_name, scheme in schemes.items():
            started = time.perf_counter()
            labels, candidates = lsh_labels(docs, stage, scheme)
            entry[scheme_name] = {"candidate_pairs": candidates, **pair_scores(labels, truth),
                                  "seconds": round(time.perf_counter() - started, 1)}
        report[name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    out = REPO / "bench" / "results" / "dedup_lsh.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
