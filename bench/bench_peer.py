"""End to end against datatrove, the same input and the same 2 cores, one after the other in one run:
LID, Gopher quality and repetition, C4, FineWeb, MinHash dedup and tokenization (the stages datatrove
has). curation: one `curation run` on a local Ray instance (start-up included) ending in `pack`;
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

from curation.models import lid_model_path  # noqa: E402


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
        pipeline = scratch / "pipeline.json"
        pipeline.write_text(json.dumps({
            "input": {"path": [str(f) for f in files]}, "output": {"path": str(scratch / "ours")},
            "executor": {"kind": "ray", "num_cpus": 2, "dashboard": False},
            "stages": [{"name": "lid"}, {"name": "gopher_repetition"}, {"name": "gopher_quality"}, {"name": "c4"},
                       {"name": "fineweb"}, {"name": "minhash_dedup"},
                       {"name": "pack", "tokenizer": str(tok), "out": str(scratch / "ours_packed")}]}))
        ours = measure([str(REPO / ".venv" / "bin" / "curation"), "run", str(pipeline), "--no-progress"])
        env = {**os.environ, "NLTK_DATA": str(REPO / ".cache" / "nltk_data"), "LID_MODEL": str(lid_model_path())}
        theirs = measure([str(REPO / ".venv-bench" / "bin" / "python"), str(REPO / "bench" / "_datatrove_peer.py"),
                          str(files[0].parent), str(scratch / "datatrove"), str(args.shards), str(tok)], env=env)
        stats = json.loads((scratch / "ours" / "stats.json").read_text())
        dt_tokens = sum(p.stat().st_size for p in (scratch / "datatrove" / "tokens").rglob("*.ds")) // 2
        ours_tokens = sum(s["document_tokens"] for s in
                          json.loads((scratch / "ours_packed" / "pack.json").read_text())["sources"].values())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text_mb = stats["input"]["bytes"] / 1e6
    report = {"text_mb": round(text_mb, 1), "shards": args.shards, "cores": 2,
              "stages": "lid, gopher_repetition, gopher_quality, c4, fineweb, minhash dedup, tokenization",
              "curation": {"seconds": round(ours["seconds"], 1), "mb_s": round(text_mb / ours["seconds"], 2),
                           "peak_rss_mb": round(ours["peak_rss"] / 1e6), "peak_pss_mb": round(ours["peak_pss"] / 1e6),
                           "kept_docs": stats["output"]["kept_docs"], "tokens_incl_separators": ours_tokens,
                           "pss_at_peak_mb": ours["pss_at_peak_mb"]},
              "datatrove": {"seconds": round(theirs["seconds"], 1), "mb_s": round(text_mb / theirs["seconds"], 2),
                            "peak_rss_mb": round(theirs["peak_rss"] / 1e6), "peak_pss_mb": round(theirs["peak_pss"] / 1e6),
                            "tokens_incl_eos": dt_tokens, "pss_at_peak_mb": theirs["pss_at_peak_mb"]},
              "speedup": round(theirs["seconds"] / ours["seconds"], 2)}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "peer.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
