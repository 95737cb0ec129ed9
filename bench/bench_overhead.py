"""Executor overhead: a pipeline with a `noop` stage over ~500 MB of Parquet text, against a plain pyarrow
read-then-write loop over the same files on the same cores, in one run. Reported as ratios.

    .venv/bin/python bench/bench_overhead.py [--mb 500] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, parquet_corpus  # noqa: E402

from curation.config import pipeline_from_dict  # noqa: E402
from curation.executor import RunOptions, run_pipeline  # noqa: E402


def copy_with_pyarrow(args: tuple[str, str]) -> None:
    source, target = args
    reader = pq.ParquetFile(source)
    with pq.ParquetWriter(target, reader.schema_arrow, compression="zstd") as writer:
        for batch in reader.iter_batches(batch_size=4096):
            writer.write_batch(batch)


def reference(files: list[Path], out: Path, processes: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(f), str(out / f.name)) for f in files]
    start = time.perf_counter()
    if processes == 1:
        for job in jobs:
            copy_with_pyarrow(job)
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(copy_with_pyarrow, jobs)
    return time.perf_counter() - start


def ours(files: list[Path], out: Path, kind: str) -> float:
    raw = {
        "input": {"path": [str(f) for f in files]},
        "output": {"path": str(out)},
        "executor": {"kind": kind, "num_cpus": 2, "dashboard": False},
        "stages": [{"name": "noop"}],
    }
    start = time.perf_counter()
    run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False, overwrite=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    files = parquet_corpus(args.mb, args.shards)
    text_mb = sum(pq.ParquetFile(f).metadata.num_rows for f in files)  # rows, for the record
    scratch = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    try:
        results = {}
        results["pyarrow_loop_1proc_s"] = reference(files, scratch / "ref1", 1)
        results["pyarrow_loop_2proc_s"] = reference(files, scratch / "ref2", 2)
        results["curation_local_s"] = ours(files, scratch / "local", "local")
        results["curation_ray_cold_s"] = ours(files, scratch / "ray", "ray")  # includes starting Ray
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        ours(files, scratch / "ray_warm0", "ray")  # warm-up: worker processes started
        results["curation_ray_warm_s"] = ours(files, scratch / "ray_warm", "ray")
        ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mb = args.mb
    report = {
        "corpus": {"text_mb": mb, "shards": args.shards, "rows": text_mb, "cpus": os.cpu_count()},
        "seconds": {k: round(v, 2) for k, v in results.items()},
        "mb_per_s": {k.removesuffix("_s"): round(mb / v, 1) for k, v in results.items()},
        "ratios_vs_pyarrow_2proc": {
            k.removesuffix("_s"): round(results["pyarrow_loop_2proc_s"] / v, 3)
            for k, v in results.items() if k.startswith("curation")
        },
        "ratios_vs_pyarrow_1proc": {
            k.removesuffix("_s"): round(results["pyarrow_loop_1proc_s"] / v, 3)
            for k, v in results.items() if k.startswith("curation")
        },
    }
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
