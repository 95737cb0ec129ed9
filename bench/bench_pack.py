"""Tokenization and packing throughput against `Tokenizer.encode_batch`, same text, same 2 cores, one run.

- reference: `tokenizers.Tokenizer.encode_batch` over the documents already in memory (Rayon threads on
  both cores), in batches of 4096 documents;
- `tokenize` pipeline: the same Parquet shards read, encoded by the `tokenize` stage on two Ray actors
  (one thread each), nothing written (`output.documents: false`): tokenization as the pipeline runs it;
- `curation pack`: read, encode, spill, pack per source (concat, seq_len 2048), write shards and index;
  packing's own cost is the difference to the tokenize pipeline.
Ray is started once before the timed runs (its start-up, about 5 s, is reported apart); each pipeline
runs twice, alternated, and its best time counts.

    .venv/bin/python bench/bench_pack.py [--mb 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, parquet_corpus, real_texts  # noqa: E402

from curation.config import pipeline_from_dict  # noqa: E402
from curation.executor import RunOptions, run_pipeline  # noqa: E402


def tokenizer_file(tmp: Path) -> Path:
    existing = REPO / "out" / "demo" / "tokenizer" / "tokenizer.json"
    if existing.exists():
        return existing
    from curation.tokenizer.train import train_tokenizer

    texts = [r["text"] for r in real_texts()]
    return train_tokenizer(texts[::3], tmp / "tok", vocab_size=65536)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    files = parquet_corpus(args.mb, args.shards)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tok = tokenizer_file(tmp)
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tok))
        texts = [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
        mb = sum(len(t.encode()) for t in texts) / 1e6
        started = time.perf_counter()
        reference_tokens = 0
        for lo in range(0, len(texts), 4096):
            reference_tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[lo:lo + 4096]))
        reference = time.perf_counter() - started
        del texts

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        ray_start = time.perf_counter() - started
        seconds = {"tokenize": float("inf"), "pack": float("inf")}
        # alternated twice, best of each: worker processes Ray starts for the first run do not count
        for round_ in range(2):
            for name, stage in (("tokenize", {"name": "tokenize", "tokenizer": str(tok)}),
                                ("pack", {"name": "pack", "tokenizer": str(tok), "seq_len": 2048})):
                config = pipeline_from_dict({"input": {"path": [str(f) for f in files]},
                                             "output": {"path": str(tmp / f"{name}{round_}"), "documents": False},
                                             "executor": {"kind": "ray"}, "stages": [stage]})
                started = time.perf_counter()
                stats = run_pipeline(config, RunOptions(progress=False))
                seconds[name] = min(seconds[name], time.perf_counter() - started)
                if name == "pack":
                    summary = json.loads((tmp / f"pack{round_}" / "pack.json").read_text())
                    stored = sum(s["document_tokens"] for s in summary["sources"].values())
                    docs = stats["input"]["docs"]
        ray.shutdown()
    report = {"text_mb": round(mb, 1), "cores": 2, "ray_start_s": round(ray_start, 1),
              "reference_encode_batch_mb_s": round(mb / reference, 2),
              "tokenize_pipeline_mb_s": round(mb / seconds["tokenize"], 2),
              "pack_pipeline_mb_s": round(mb / seconds["pack"], 2),
              "ratio_tokenize_to_encode_batch": round(reference / seconds["tokenize"], 3),
              "ratio_pack_to_encode_batch": round(reference / seconds["pack"], 3),
              "packing_adds_fraction": round(seconds["pack"] / seconds["tokenize"] - 1, 3),
              "tokens": reference_tokens, "tokens_stored_minus_separators": stored - docs,
              "note": "pipelines include reading Parquet; pack also packs, writes shards and index, and packs the tails"}
    assert report["tokens_stored_minus_separators"] == reference_tokens, "concat must store every token"
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "pack.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
