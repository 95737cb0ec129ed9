"""Loader throughput from the page cache: tokens per second one rank gets from `PhaseLoader`, beside a
raw memory-map read of the same sequences (numpy fancy indexing, the limit for this access pattern).

Synthetic packed shards (uint16, seq_len 2048, random documents) of `--gb` GB across three sources,
read once to warm the page cache, then one phase over them. `num_workers` 0 (in process) and 2.

    .venv/bin/python bench/bench_loader.py [--mb 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.loader import PhaseLoader  # noqa: E402
from curation.manifest import build_manifest  # noqa: E402
from curation.tokenizer import packing  # noqa: E402
from curation.tokenizer.shards import write_shard  # noqa: E402

SEQ_LEN = 2048


def make_sources(root: Path, total_mb: int) -> None:
    rng = np.random.default_rng(0)
    per_shard_tokens = 16 * 1024 * 1024  # 32 MB a shard
    shards = max(3, total_mb * 1024 * 1024 // (2 * per_shard_tokens))
    for k in range(shards):
        source = ("web", "wiki", "code")[k % 3]
        lengths = rng.integers(50, 3000, per_shard_tokens // 1500)
        flat = rng.integers(10, 65000, int(lengths.sum())).astype(np.uint16)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat, offsets = packing.with_separators((flat, offsets), 3)
        packed, _ = packing.pack_concat(flat, offsets, SEQ_LEN)
        write_shard(root / source, f"part{k:03d}", packed, [f"d{i}" for i in range(len(lengths))], source=source,
                    seq_len=SEQ_LEN, strategy="concat", sep_id=3, pad_id=2, tokenizer_sha256="0" * 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        make_sources(tmp / "packed", args.mb)
        phases = {"root": "packed", "sources": {"web": {}, "wiki": {}, "code": {}},
                  "phases": [{"name": "p1", "tokens": 10**12, "seed": 1, "weights": {"web": 0.5, "wiki": 0.3, "code": 0.2}}]}
        # one phase as large as the data (sources may repeat where their weight asks for more)
        total = sum(p.stat().st_size for p in (tmp / "packed").rglob("*.bin")) // 2
        phases["phases"][0]["tokens"] = int(total)
        phases["sources"] = {s: {"max_epochs": 5} for s in phases["sources"]}
        (tmp / "phases.yaml").write_text(yaml.safe_dump(phases))
        manifest = tmp / "manifest.json"
        build_manifest(tmp / "phases.yaml", manifest)
        for path in (tmp / "packed").rglob("*.bin"):  # warm the page cache
            path.read_bytes()
        results = {"data_mb": args.mb, "batch_size": args.batch_size, "seq_len": SEQ_LEN}

        loader = PhaseLoader(manifest, "p1", batch_size=args.batch_size)
        plan = loader.dataset.plan
        shards = [loader.dataset._shard(i) for i in range(len(plan.shards))]
        started = time.perf_counter()
        n = 0
        for lo in range(0, len(plan), args.batch_size):
            g = np.arange(lo, min(lo + args.batch_size, len(plan)))
            out = np.empty((len(g), SEQ_LEN), np.int64)
            for i, pos in enumerate(g.tolist()):
                out[i] = shards[plan.shard_of[pos]].tokens[plan.row_of[pos]]
            n += out.size
        raw = n / (time.perf_counter() - started)
        results["raw_memmap_gather_tokens_per_s"] = round(raw)

        for workers in (0, 1, 2):
            loader = PhaseLoader(manifest, "p1", batch_size=args.batch_size, num_workers=workers, prefetch_factor=8)
            started = time.perf_counter()
            n = 0
            for batch in loader:
                n += batch["input_ids"].numel()
            rate = n / (time.perf_counter() - started)
            results[f"loader_workers{workers}_tokens_per_s"] = round(rate)
            results[f"ratio_workers{workers}_to_raw"] = round(rate / raw, 3)
        results["tokens_read"] = n
    print(json.dumps(results, indent=2))
    (REPO / "bench" / "results" / "loader.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
