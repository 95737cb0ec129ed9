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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, parquet_corpus  # noqa: E402


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            # Ray's workers are started by the raylet, outside the driver's tree: count the session.
            peak = max(peak, session_rss(proc.pid))
            time.sleep(0.2)

    thread = threading.Thread(target=sample)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return time.perf_counter() - start, peak, out


def session_rss(pid: int) -> int:
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == pid:
                    with open(f"/proc/{entry}/statm") as handle:
                        total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                continue
    return total


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
        ours_s, ours_peak, _ = measure([str(REPO / ".venv" / "bin" / "curation"), "run", str(pipeline), "--no-progress"])
        env = {**os.environ, "NLTK_DATA": str(REPO / ".cache" / "nltk_data")}
        dt_s, dt_peak, _ = measure([str(REPO / ".venv-bench" / "bin" / "python"), str(REPO / "bench" / "_datatrove_minhash.py"),
                                    str(files[0].parent), str(scratch / "datatrove"), str(args.shards)], env=env)
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
