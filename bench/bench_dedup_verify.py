"""Verification of MinHash candidates (issue 24 item 2): `verify: none | signature | exact` against the
clusters of exact Jaccard >= threshold joined by connected components, on datatrove's planted set and
the shared data, with what each costs: bytes spilled per document (the column verification reads,
written as the stage writes it: Parquet, zstd) and seconds to build that column and to verify the
candidate pairs.

The stage's functions in memory (signatures, band keys, `bucket_pairs` at the default 4 neighbours,
`shingle_sets`, `similarity`, connected components); tests/test_dedup_lsh.py runs the stage itself.

    .venv/bin/python bench/bench_dedup_verify.py [--reviews 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_dedup_lsh import exact_labels, labels_of, pair_scores, planted_docs, shared_docs  # noqa: E402
from corpus import REPO  # noqa: E402

from curation.stages import minhash_dedup as mh  # noqa: E402

CHUNK = 5000


def parquet_bytes(column: pa.Array) -> int:
    sink = io.BytesIO()
    pq.write_table(pa.table({"c": column}), sink, compression="zstd")
    return sink.tell()


def measure(docs: list[dict], stage: mh.MinHashDedup) -> dict:
    sigs, sets, t_sig, t_sets = [], [], 0.0, 0.0
    for i in range(0, len(docs), CHUNK):
        chunk = docs[i:i + CHUNK]
        words = stage.words(pa.array([d["text"] for d in chunk]), pa.array([d["lang"] for d in chunk]))
        started = time.perf_counter()
        sigs.append(mh.signatures(words, stage.config.ngram, stage._a, stage._b))
        t_sig += time.perf_counter() - started
        started = time.perf_counter()
        sets.append(mh.shingle_sets(words, stage.config.ngram))
        t_sets += time.perf_counter() - started
    sig = np.concatenate(sigs)
    shingles = pa.concat_arrays(sets)
    has_words = (sig != np.iinfo(np.uint32).max).any(axis=1)
    live = np.flatnonzero(has_words).astype(np.int64)
    keys = mh.band_keys(sig[has_words], stage.bands, stage.rows)
    src, dst = mh.bucket_pairs(keys.reshape(-1), np.repeat(live, stage.bands), stage.config.bucket_neighbours)
    width = 4 * stage.config.num_perm
    sig_column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(sig), [None, pa.py_buffer(sig.tobytes())])
    truth = exact_labels(docs, stage)
    entry: dict = {"docs": len(docs), "candidate_pairs": int(len(src))}
    started = time.perf_counter()
    estimate = mh.similarity(sig_column.take(pa.array(src)), sig_column.take(pa.array(dst)))
    t_verify_sig = time.perf_counter() - started
    started = time.perf_counter()
    exact = mh.similarity(shingles.take(pa.array(src)), shingles.take(pa.array(dst)))
    t_verify_exact = time.perf_counter() - started
    threshold = stage.config.threshold
    for mode, keep, build_s, verify_s, column in (
            ("none", np.ones(len(src), bool), 0.0, 0.0, None),
            ("signature", estimate >= threshold, t_sig, t_verify_sig, sig_column),
            ("exact", exact >= threshold, t_sets, t_verify_exact, shingles)):
        spilled = parquet_bytes(column) / len(docs) if column is not None else 0.0
        entry[mode] = {**pair_scores(labels_of(len(docs), src[keep], dst[keep]), truth),
                       "verified_pairs": int(keep.sum()), "spilled_bytes_per_doc": round(spilled, 1),
                       "build_column_s": round(build_s, 2), "verify_s": round(verify_s, 3)}
    entry["text_bytes_per_doc"] = round(sum(len(d["text"].encode()) for d in docs) / len(docs), 1)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=20000, help="zh_reviews rows (the rest of the data whole)")
    args = parser.parse_args()
    stage = mh.MinHashDedup()
    report: dict = {"threshold": stage.config.threshold, "bands": stage.bands, "rows": stage.rows,
                    "bucket_neighbours": stage.config.bucket_neighbours}
    for name, docs in (("datatrove_planted", planted_docs()), ("shared_data", shared_docs(args.reviews))):
        report[name] = measure(docs, stage)
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    out = REPO / "bench" / "results" / "dedup_verify.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
