"""`lid` stage throughput against calling fastText predict directly on the same documents, in one run.

The reference is the cheapest direct use of fastText: newlines folded in Python, then the pybind
`multilinePredict` on the whole list (faster than the wrapper's `predict`, which also breaks on numpy 2).

    .venv/bin/python bench/bench_lid.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, real_texts  # noqa: E402

from curation.models import lid_model_path  # noqa: E402
from curation.stage import DROP_REASON, build_stage  # noqa: E402


def main() -> None:
    import fasttext

    texts = [r["text"] for r in real_texts()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    batches = [texts[i:i + 4096] for i in range(0, len(texts), 4096)]

    model = fasttext.load_model(str(lid_model_path())).f

    def raw() -> None:
        for chunk in batches:
            model.multilinePredict([" ".join(t[:2000].split("\n")) for t in chunk], 1, 0.0, "strict")

    stage = build_stage({"name": "lid"})
    stage.setup()
    arrow = [pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(c))], "text": c,
                                         DROP_REASON: pa.nulls(len(c), pa.string())}) for c in batches]

    def ours() -> None:
        for batch in arrow:
            stage(batch)

    timings = {}
    for name, fn in (("raw_fasttext", raw), ("lid_stage", ours), ("raw_fasttext_2", raw), ("lid_stage_2", ours)):
        start = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - start
    raw_s = min(timings["raw_fasttext"], timings["raw_fasttext_2"])
    ours_s = min(timings["lid_stage"], timings["lid_stage_2"])
    report = {"docs": len(texts), "text_mb": round(mb, 1), "raw_fasttext_mb_s": round(mb / raw_s, 2),
              "lid_stage_mb_s": round(mb / ours_s, 2), "ratio_stage_vs_raw": round(raw_s / ours_s, 3)}
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "lid.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
