"""`lid`: quality on English against languages lid.176 does not know, and throughput against fastText.

Quality (bench/results/lid_quality.json): the evaluation of tests/lid_eval_set.py (English of at least
200 characters; lingua's ten languages lid.176 lacks, and two web pages in Amis and Min Nan), per split
and per language, for raw fastText (top label, no threshold), the stage without English evidence
(`min_scores: {en: 0.7}` alone) and the stage as configured by default; also the 75-language lingua
`doc3` set, where the right answer for a language lid.176 lacks is `und`.

Throughput (bench/results/lid.json): the reference is the cheapest direct use of fastText: newlines
folded in Python, then the pybind `multilinePredict` on the whole list (faster than the wrapper's
`predict`, which also breaks on numpy 2).

    .venv/bin/python bench/bench_lid.py [--quality-only]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from corpus import REPO, real_texts  # noqa: E402
from conftest import read_jsonl  # noqa: E402
from lid_eval_set import evaluation_rows  # noqa: E402

from curation.stages.model_files import lid_model_path  # noqa: E402
from curation.stage import DROP_REASON, build_stage  # noqa: E402


def as_batch(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                       DROP_REASON: pa.nulls(len(texts), pa.string())})


def english_scores(pred: np.ndarray, gold: np.ndarray) -> dict:
    tp = int(((pred == "en") & (gold == "en")).sum())
    said_en = int((pred == "en").sum())
    return {"en_precision": round(tp / max(said_en, 1), 4), "en_recall": round(tp / max(int((gold == "en").sum()), 1), 4),
            "false_en": said_en - tp, "positives": int((gold == "en").sum()), "negatives": int((gold != "en").sum())}


def per_language(pred: np.ndarray, gold: np.ndarray, target: np.ndarray) -> dict:
    out = {}
    for lang in sorted(set(gold.tolist())):
        m = gold == lang
        out[lang] = {"docs": int(m.sum()), "accuracy": round(float((pred[m] == target[m]).mean()), 4),
                     "labelled_en": round(float((pred[m] == "en").mean()), 4),
                     "labelled_und": round(float((pred[m] == "und").mean()), 4)}
        if lang == "en":
            out[lang].update(english_scores(pred, gold))
    return out


def quality() -> dict:
    """English precision/recall and per-language accuracy, before (raw, threshold only) and after."""
    variants = {"raw_fasttext": None, "threshold_only": {"en_evidence": False}, "stage": {}}
    stages = {}
    for name, options in variants.items():
        if options is not None:
            stages[name] = build_stage({"name": "lid", **options})
            stages[name].setup()
    stages["raw_fasttext"] = stages["stage"]

    def run(name: str, texts: list[str]) -> np.ndarray:
        if name == "raw_fasttext":
            return np.array(stages[name].predict(pa.array(texts))[0])
        return np.array(stages[name](as_batch(texts)).column("lang").to_pylist())

    rows = evaluation_rows()
    report: dict = {"evaluation": "tests/lid_eval_set.py; cut-offs chosen on split 'tune'", "splits": {}}
    for split in ("tune", "test"):
        for units in ("documents", "lingua_sentences"):
            chosen = [r for r in rows if r["split"] == split
                      and (r["gold"] == "en" or (r["group"] == "lingua_sentence") == (units == "lingua_sentences"))]
            texts = [r["text"] for r in chosen]
            gold = np.array([r["gold"] for r in chosen])
            target = np.where(gold == "en", "en", "und")
            entry = {}
            for name in variants:
                pred = run(name, texts)
                entry[name] = {**english_scores(pred, gold), "accuracy": round(float((pred == target).mean()), 4),
                               "per_language": per_language(pred, gold, target)}
            report["splits"][f"{split}/{units}"] = entry
    # The whole 75-language doc3 set: a language lid.176 lacks should come out "und" (Norwegian is "no").
    doc3 = [r for r in read_jsonl("lid_lingua_75lang.jsonl.gz") if r["unit"] == "doc3"]
    texts = [r["text"] for r in doc3]
    gold = np.array([r["lang"] for r in doc3])
    labels = {label[9:] for label in stages["stage"]._model.getLabels("__label__")[0]}
    gold = np.where(gold == "nb", "no", gold)
    target = np.where(np.isin(gold, list(labels)), gold, "und")
    report["lingua_doc3_75_languages"] = {}
    for name in variants:
        pred = run(name, texts)
        report["lingua_doc3_75_languages"][name] = {**english_scores(pred, gold),
                                                    "accuracy": round(float((pred == target).mean()), 4)}
    return report


def main() -> None:
    import fasttext

    report = quality()
    print(json.dumps({k: {n: {m: v[m] for m in ("en_precision", "en_recall", "accuracy")} for n, v in e.items()}
                      for k, e in {**report["splits"], "doc3_75": report["lingua_doc3_75_languages"]}.items()},
                     indent=1))
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "lid_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    if "--quality-only" in sys.argv:
        return

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
