"""Tokenizer training time and peak memory at 100 MB, 500 MB and 2 GB samples: the plain
`train_from_iterator` (`curation train-tokenizer --method stream`) side by side with training from
pruned pre-token counts on Ray (`--method counts`, the default), same sample, same 2 cores, one after
the other. Corpus: the shared documents with word-level perturbed copies (bench/bench_dedup_scale.py),
so that distinct pre-tokens grow with the size as they do in real data. Peak memory: the sum over the
command's processes (Ray's included) of RSS and of PSS, sampled every 0.2 s. Vocabulary 65,536.

    .venv/bin/python bench/bench_tokenizer_scale.py [--sizes 0.1,0.5,2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_dedup_scale import build  # noqa: E402
from measure import measure  # noqa: E402
from corpus import REPO  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0.1,0.5,2")
    parser.add_argument("--methods", default="stream,counts")
    args = parser.parse_args()
    results = []
    out_path = REPO / "bench" / "results" / "tokenizer_scale.json"
    for gb in (float(s) for s in args.sizes.split(",")):
        files = build(gb, max(4, int(gb * 20)))
        row = {"sample_gb": gb}
        for method in args.methods.split(","):
            scratch = Path(tempfile.mkdtemp(prefix="bench_tok_"))
            try:
                run = measure([str(REPO / ".venv" / "bin" / "curation"), "train-tokenizer", "--out", str(scratch / "tok"),
                               "--method", method, "--shares", "other=1", "--budget-mb", str(gb * 1000 + 1),
                               *[str(f) for f in files]])
                meta = json.loads((scratch / "tok" / "tokenizer_meta.json").read_text())
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            row[method] = {"seconds": round(run["seconds"], 1), "peak_rss_mb": round(run["peak_rss"] / 1e6),
                           "peak_pss_mb": round(run["peak_pss"] / 1e6), "vocab": meta["vocab_size"],
                           **({"counts": meta["counts"]} if "counts" in meta else {})}
            print(json.dumps({**row, "method": method}), flush=True)
        results.append(row)
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
