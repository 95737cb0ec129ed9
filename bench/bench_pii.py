"""`pii` and `decontaminate` beside the batch rule stages, on the same record batches of shared text, in one run.

    .venv/bin/python bench/bench_pii.py [--mb 8] [--rounds 3]

Every stage gets the same 1 MiB record batches (the executor's batch size) of a mix of every file of
../shared/data (English, Chinese, code, 75-language sentences, web), one core, stages interleaved round
by round; the best round counts. `decontaminate` checks against the demo's two evaluation sets plus
1,000 items made from UD English-EWT and UD Chinese sentences (the index holds about 20 K n-grams).
Results: bench/results/pii.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO, real_texts  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl, write_jsonl  # noqa: E402

from curation.stage import build_stage  # noqa: E402

BATCH_BYTES = 1 << 20


def batches(total_mb: float, seed: int = 0) -> list[pa.RecordBatch]:
    rows = real_texts()
    random.Random(seed).shuffle(rows)
    out, ids, texts, size, total = [], [], [], 0, 0
    for row in rows:
        ids.append(row["id"])
        texts.append(row["text"])
        size += len(row["text"].encode())
        if size >= BATCH_BYTES:
            out.append(pa.record_batch({"id": pa.array(ids), "text": pa.array(texts, pa.string()),
                                        "drop_reason": pa.nulls(len(ids), pa.string())}))
            total += size
            ids, texts, size = [], [], 0
            if total >= total_mb * 1e6:
                break
    return out


def eval_sets(folder: Path) -> list[dict]:
    items = [{"q": s} for r in read_jsonl("en_ud_ewt_web_docs.jsonl.gz") for s in r["text"].split("\n") if s.strip()][:700]
    items += [{"q": r["text"]} for r in read_jsonl("zh_ud_gsdsimp_wiki.jsonl.gz", 300)]
    write_jsonl(folder / "ud.jsonl", items)
    demo = REPO / "manifests" / "demo_eval"
    return [{"name": "wiki_qa", "path": str(demo / "wiki_qa.jsonl"), "fields": ["question", "choices"], "id_field": "id"},
            {"name": "news_qa", "path": str(demo / "news_qa.jsonl"), "fields": ["question", "choices"], "id_field": "id"},
            {"name": "ud", "path": str(folder / "ud.jsonl"), "fields": ["q"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = batches(args.mb)
    mb = sum(pc.sum(pc.binary_length(b.column("text"))).as_py() for b in data) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        specs = {
            "pii": {"name": "pii"},
            "pii_annotate": {"name": "pii", "mode": "annotate"},
            "decontaminate": {"name": "decontaminate", "benchmarks": eval_sets(Path(tmp))},
            "c4": {"name": "c4"},
            "gopher_quality": {"name": "gopher_quality"},
            "gopher_repetition": {"name": "gopher_repetition"},
            "fineweb": {"name": "fineweb"},
        }
        stages = {}
        for key, spec in specs.items():
            stages[key] = build_stage(spec)
            stages[key].setup()
    best = {key: float("inf") for key in stages}
    for _ in range(args.rounds):
        for key, stage in stages.items():
            stage.metrics.clear()
            started = time.perf_counter()
            for batch in data:
                stage(batch)
            best[key] = min(best[key], time.perf_counter() - started)
    result = {"mb": round(mb, 1), "batches": len(data), "rounds": args.rounds,
              "mb_per_s": {key: round(mb / t, 2) for key, t in sorted(best.items(), key=lambda kv: kv[1])},
              "pii_metrics": dict(stages["pii"].metrics),
              "decontaminate_metrics": {k: v for k, v in stages["decontaminate"].metrics.items() if not k.startswith("item:")}}
    print(json.dumps(result, indent=1, ensure_ascii=False))
    out = REPO / "bench" / "results" / "pii.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
