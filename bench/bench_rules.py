"""The four rule stages against datatrove's GopherQuality, GopherRepetition, C4Quality and FineWebQuality
filters on the same English documents, one core each, in one run; also the agreement on GUM.

    bash scripts/setup_bench.sh && .venv/bin/python bench/bench_rules.py [--repeat 3]

datatrove runs in .venv-bench (its dependencies clash with ours), in a subprocess on the same Parquet file.

    .venv/bin/python bench/bench_rules.py --kernels [--rounds 3]

measures each rule stage alone, CPU-seconds per MB of text over all nine shared/data files, with the
compiled kernels (stages/text_rules.cc) and with the numpy path, in alternating rounds of one
run (bench/results/rules_kernels.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl  # noqa: E402

from curation.stage import DROP_REASON, build_stage  # noqa: E402

RULES = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"


def english_documents(repeat: int) -> list[dict]:
    rows = []
    for name in ("en_gum_docs.jsonl.gz", "en_wikitext2_valid_test.jsonl.gz", "en_ud_ewt_web_docs.jsonl.gz"):
        rows += read_jsonl(name)
    rows += [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz") if r["text"]]
    out = []
    for copy in range(repeat):
        out += [{"id": f"{r['id']}#{copy}", "text": r["text"]} for r in rows]
    return out


def ours(rows: list[dict]) -> tuple[float, list]:
    stages = [build_stage({"name": n}) for n in RULES]
    batches = []
    for i in range(0, len(rows), 4096):
        chunk = rows[i:i + 4096]
        batches.append(pa.RecordBatch.from_pydict({"id": [r["id"] for r in chunk], "text": [r["text"] for r in chunk],
                                                   DROP_REASON: pa.nulls(len(chunk), pa.string())}))
    reasons = []
    start = time.perf_counter()
    for batch in batches:
        for stage in stages:
            batch = stage(batch)
        reasons += batch.column(DROP_REASON).to_pylist()
    return time.perf_counter() - start, reasons


def datatrove(rows: list[dict], folder: Path) -> tuple[float, list[dict]]:
    source = folder / "docs.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}), source)
    decisions = folder / "decisions.jsonl"
    env = {**os.environ, "NLTK_DATA": str(REPO / ".cache" / "nltk_data"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(BENCH_PYTHON), str(REPO / "bench" / "_datatrove_rules.py"), str(source), str(decisions)],
                         check=True, capture_output=True, text=True, env=env)
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    return seconds, [json.loads(line) for line in decisions.read_text().splitlines()]


WHY = {
    ("gopher_quality:gopher_below_alpha_threshold", None):
        "datatrove's word tokenizer makes punctuation separate words, so fewer than 80% of its words hold a "
        "letter; Gopher's published rule is on whitespace words, of which over 80% do",
}


def gum_agreement(folder: Path) -> dict:
    rows = [{"id": r["id"], "text": r["text"]} for r in read_jsonl("en_gum_docs.jsonl.gz")]
    _, theirs = datatrove(rows, folder)
    _, mine = ours(rows)
    disagreements = []
    for row, dt, reason in zip(rows, theirs, mine):
        if dt["kept"] != (reason is None):
            disagreements.append({"id": row["id"], "datatrove": dt["reason"] or "kept", "curation": reason or "kept",
                                  "why": WHY.get((dt["reason"], reason), "unexplained")})
    return {"docs": len(rows), "agree": 1 - len(disagreements) / len(rows),
            "datatrove_decisions": {row["id"]: dt["reason"] for row, dt in zip(rows, theirs)},
            "datatrove_kept": sum(d["kept"] for d in theirs) / len(rows),
            "curation_kept": sum(r is None for r in mine) / len(rows), "disagreements": disagreements}


def junk_comparison(folder: Path) -> dict:
    from junk import junk_documents

    result = {}
    for kind, texts in junk_documents().items():
        rows = [{"id": f"{kind}{i}", "text": t} for i, t in enumerate(texts)]
        _, theirs = datatrove(rows, folder)
        _, mine = ours(rows)
        result[kind] = {"datatrove_dropped": round(1 - sum(d["kept"] for d in theirs) / len(rows), 3),
                        "curation_dropped": round(sum(r is not None for r in mine) / len(rows), 3)}
    for who in ("datatrove_dropped", "curation_dropped"):
        result.setdefault("all", {})[who] = round(sum(v[who] for k, v in result.items() if k != "all") / 8, 3)
    return result


def prose_kept(folder: Path) -> dict:
    result = {}
    for name in ("en_wikitext2_valid_test.jsonl.gz", "en_gum_docs.jsonl.gz"):
        rows = [{"id": r["id"], "text": r["text"]} for r in read_jsonl(name)]
        _, theirs = datatrove(rows, folder)
        _, mine = ours(rows)
        result[name] = {"datatrove_kept": round(sum(d["kept"] for d in theirs) / len(rows), 3),
                        "curation_kept": round(sum(r is None for r in mine) / len(rows), 3)}
    return result


def kernels(rounds: int) -> dict:
    from conftest import DATA

    from curation.stages import text_rules_native as rules_native
    from curation.stages import text_rules

    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        rows += read_jsonl(path.name)
    batches = []
    for i in range(0, len(rows), 4096):
        chunk = rows[i:i + 4096]
        batches.append(pa.RecordBatch.from_pydict({
            "id": [r["id"] for r in chunk], "text": [r["text"] or "" for r in chunk],
            "lang": pa.array([r.get("lang") for r in chunk], pa.string()), DROP_REASON: pa.nulls(len(chunk), pa.string())}))
    mb = sum(len((r["text"] or "").encode()) for r in rows) / 1e6
    stages = {name: build_stage({"name": name}) for name in RULES}
    text_rules.unicode_flags(), text_rules.lower_ascii()  # once per process, not per batch
    seconds: dict[str, dict[str, list[float]]] = {name: {"compiled": [], "numpy": []} for name in RULES}
    for _ in range(rounds):
        for path in ("compiled", "numpy"):
            os.environ["CURATION_RULES_NATIVE"] = "1" if path == "compiled" else "0"
            rules_native.library.cache_clear()
            if path == "compiled" and rules_native.library() is None:
                sys.exit(f"{rules_native.library_path()} is not built: run scripts/build_kenlm.sh")
            for name, stage in stages.items():
                start = time.process_time()
                for batch in batches:
                    stage(batch)
                seconds[name][path].append(time.process_time() - start)
    report = {"docs": len(rows), "text_mb": round(mb, 2), "rounds": rounds, "clock": "process CPU time, one core",
              # every rule stage has a compiled kernel (tr_quality, tr_repetition, tr_c4, tr_fineweb); the
              # numpy column is the path they replaced, still the fallback
              "compiled_kernels": RULES, "cpu_s_per_mb": {}, "speedup": {}}
    for name in RULES:
        best = {path: min(values) for path, values in seconds[name].items()}
        report["cpu_s_per_mb"][name] = {path: round(value / mb, 4) for path, value in best.items()}
        report["speedup"][name] = round(best["numpy"] / best["compiled"], 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kernels", action="store_true", help="compiled against numpy rule kernels only")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.kernels:
        report = kernels(args.rounds)
        print(json.dumps(report, indent=2))
        (REPO / "bench" / "results" / "rules_kernels.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    if not BENCH_PYTHON.exists():
        sys.exit("run scripts/setup_bench.sh first")
    rows = english_documents(args.repeat)
    mb = sum(len(r["text"].encode()) for r in rows) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        dt_s, dt_decisions = datatrove(rows, Path(tmp))
        our_s, our_reasons = ours(rows)
        agreement = gum_agreement(Path(tmp))
        junk = junk_comparison(Path(tmp))
        prose = prose_kept(Path(tmp))
    report = {
        "docs": len(rows), "text_mb": round(mb, 2), "cores": 1,
        "datatrove_mb_s": round(mb / dt_s, 3), "curation_mb_s": round(mb / our_s, 3),
        "speedup_vs_datatrove": round(dt_s / our_s, 2),
        "kept": {"datatrove": sum(d["kept"] for d in dt_decisions) / len(rows),
                 "curation": sum(r is None for r in our_reasons) / len(rows)},
        "gum_agreement": {k: v for k, v in agreement.items() if k not in ("disagreements", "datatrove_decisions")},
        "junk_dropped": junk,
        "good_prose_kept": prose,
        "top_reasons": {"datatrove": Counter(d["reason"] for d in dt_decisions if d["reason"]).most_common(6),
                        "curation": Counter(r for r in our_reasons if r).most_common(6)},
    }
    print(json.dumps(report, indent=2))
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "rules.json").write_text(json.dumps(report, indent=2) + "\n")
    fixture = REPO / "tests" / "fixtures" / "datatrove_gum_disagreements.json"
    fixture.parent.mkdir(parents=True, exist_ok=True)
    fixture.write_text(json.dumps({"datatrove_version": "0.10.1", "datatrove_decisions": agreement["datatrove_decisions"],
                                   "disagreements": agreement["disagreements"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
