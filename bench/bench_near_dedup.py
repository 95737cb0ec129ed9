"""Whole near-dedup, end to end: `curation run` with `minhash_dedup` on a local Ray instance (start-up
included) against datatrove's four MinHash steps (LocalPipelineExecutor), same Parquet shards, 2 cores,
one after the other; MB/s of input text and peak memory (RSS of the process tree, sampled).

    bash scripts/setup_bench.sh && .venv/bin/python bench/bench_near_dedup.py [--mb 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, parquet_corpus  # noqa: E402
from measure import measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    files = parquet_corpus(args.mb, args.shards)
    scratch = Path(tempfile.mkdtemp(prefix="bench_near_dedup_"))
    try:
        pipeline = scratch / "pipeline.json"
        pipeline.write_text(json.dumps({
            "input": {"path": [str(f) for f in files]}, "output": {"path": str(scratch / "ours")},
            "executor": {"kind": "ray", "num_cpus": 2, "dashboard": False}, "stages": [{"name": "minhash_dedup"}]}))
        ours = measure([str(REPO / ".venv" / "bin" / "curation"), "run", str(pipeline), "--no-progress"])
        ours_s, ours_peak = ours["seconds"], ours["peak_rss"]
        env = {**os.environ, "NLTK_DATA": str(REPO / ".cache" / "nltk_data")}
        theirs = measure([str(REPO / ".venv-bench" / "bin" / "python"), str(REPO / "bench" / "_datatrove_minhash.py"),
                          str(files[0].parent), str(scratch / "datatrove"), str(args.shards)], env=env)
        dt_s, dt_peak = theirs["seconds"], theirs["peak_rss"]
        stats = json.loads((scratch / "ours" / "stats.json").read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"text_mb": args.mb, "shards": args.shards, "cores": 2,
              "curation_mb_s": round(args.mb / ours_s, 2), "datatrove_mb_s": round(args.mb / dt_s, 2),
              "speedup_vs_datatrove": round(dt_s / ours_s, 2),
              "peak_rss_mb": {"curation": round(ours_peak / 1e6), "datatrove": round(dt_peak / 1e6)},
              "curation_duplicates": stats["output"]["rejected_docs"]}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "near_dedup.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
