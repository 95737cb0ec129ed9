"""End to end against datatrove, the same input and the same 2 cores, one after the other in one run:
LID, Gopher quality and repetition, C4, FineWeb, MinHash dedup and tokenization (the stages datatrove
has). curation: one `curation run` ending in `pack`, twice: on the embedded default (a local Ray instance,
start-up included, two stage actors) and with `executor: local` (one process);
datatrove: its filters, four MinHash steps and DocumentTokenizer on LocalPipelineExecutor (2 workers).
MB/s of input text, and peak memory of everything each started: the sum over its processes of
resident memory (RSS, shared pages counted in every process) and of proportional memory (PSS, shared
pages split between the processes that map them), sampled every 0.2 s.

    bash scripts/setup_bench.sh && .venv/bin/python bench/bench_peer.py [--mb 56]
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
from corpus import REPO, parquet_corpus, real_texts  # noqa: E402
from measure import measure  # noqa: E402

from curation.stages.model_files import lid_model_path  # noqa: E402


def tokenizer_file(scratch: Path) -> Path:
    existing = REPO / "out" / "demo" / "tokenizer" / "tokenizer.json"
    if existing.exists():
        return existing
    from curation.tokenizer.train import train_tokenizer

    return train_tokenizer([r["text"] for r in real_texts()][::3], scratch / "tok", vocab_size=65536)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=56)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    files = parquet_corpus(args.mb, args.shards)
    scratch = Path(tempfile.mkdtemp(prefix="bench_peer_"))
    try:
        tok = tokenizer_file(scratch)
        ours: dict[str, dict] = {}
        for executor in ("ray", "local"):
            pipeline = scratch / f"pipeline_{executor}.json"
            out, packed = scratch / f"ours_{executor}", scratch / f"ours_{executor}_packed"
            pipeline.write_text(json.dumps({
                "input": {"path": [str(f) for f in files]}, "output": {"path": str(out)},
                "executor": {"kind": "ray", "num_cpus": 2, "dashboard": False} if executor == "ray" else {"kind": "local"},
                "stages": [{"name": "lid"}, {"name": "gopher_repetition"}, {"name": "gopher_quality"}, {"name": "c4"},
                           {"name": "fineweb"}, {"name": "minhash_dedup"},
                           {"name": "pack", "tokenizer": str(tok), "out": str(packed)}]}))
            measured = measure([str(REPO / ".venv" / "bin" / "curation"), "run", str(pipeline), "--no-progress"])
            stats = json.loads((out / "stats.json").read_text())
            tokens = sum(s["document_tokens"] for s in json.loads((packed / "pack.json").read_text())["sources"].values())
            ours[executor] = {"measured": measured, "stats": stats, "tokens": tokens}
        env = {**os.environ, "NLTK_DATA": str(REPO / ".cache" / "nltk_data"), "LID_MODEL": str(lid_model_path())}
        theirs = measure([str(REPO / ".venv-bench" / "bin" / "python"), str(REPO / "bench" / "_datatrove_peer.py"),
                          str(files[0].parent), str(scratch / "datatrove"), str(args.shards), str(tok)], env=env)
        dt_tokens = sum(p.stat().st_size for p in (scratch / "datatrove" / "tokens").rglob("*.ds")) // 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stats = ours["ray"]["stats"]
    assert ours["local"]["stats"]["output"] == stats["output"], "the executors kept different documents"
    text_mb = stats["input"]["bytes"] / 1e6

    def row(m: dict) -> dict:
        return {"seconds": round(m["seconds"], 1), "mb_s": round(text_mb / m["seconds"], 2),
                "peak_rss_mb": round(m["peak_rss"] / 1e6), "peak_pss_mb": round(m["peak_pss"] / 1e6)}

    report = {"text_mb": round(text_mb, 1), "shards": args.shards, "cores": 2,
              "stages": "lid, gopher_repetition, gopher_quality, c4, fineweb, minhash dedup, tokenization",
              "kept_docs": stats["output"]["kept_docs"]}
    for executor, run in ours.items():
        # CPU-seconds per MB of input text of each stage (stats.json: the stage's own calls, summed over
        # its workers; reading, writing and start-up are the rest of the run)
        per_stage = {s["name"]: round(s["cpu_s"] / text_mb, 4) for s in run["stats"]["stages"]}
        report[f"curation_{executor}"] = {**row(run["measured"]), "tokens_incl_separators": run["tokens"],
                                          "stage_cpu_s_per_mb": per_stage,
                                          "pss_at_peak_mb": run["measured"]["pss_at_peak_mb"]}
    report["datatrove"] = {**row(theirs), "tokens_incl_eos": dt_tokens, "pss_at_peak_mb": theirs["pss_at_peak_mb"]}
    for executor, run in ours.items():
        report[f"speedup_{executor}"] = round(theirs["seconds"] / run["measured"]["seconds"], 2)
        report[f"peak_pss_ratio_{executor}"] = round(run["measured"]["peak_pss"] / theirs["peak_pss"], 2)
    print(json.dumps(report, indent=2))
    name = "peer.json" if args.mb == 56 else f"peer_{args.mb}mb.json"  # the default size keeps its old name
    (REPO / "bench" / "results" / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
