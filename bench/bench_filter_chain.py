"""The whole English filter chain on a held-out evaluation set: which share of each kind of good prose it
keeps and of each kind of junk it drops, for the four rule stages alone and for rules + KenLM + classifier,
with the papers' settings (`before`) and with the settings that recognise technical text (`after`).

Every document comes from ../shared/data (nobody here wrote it) and goes to the tuning or the test half by
a hash of its id (`half`); models are trained and thresholds chosen on the tuning half only, and the test
half is what the floors (>= 95% of junk dropped, >= 90% of good prose kept) are read on.

Good prose: WikiText articles, GUM documents (per genre), UD EWT web documents (per genre), the CCNet-filtered
head of the Common Crawl sample, and technical prose: the sample's documentation pages (API references,
help pages, how-tos, a programming blog; listed in TECHNICAL by id or URL). The shared data has no manual
pages; its API reference pages are the closest. Junk: the kinds of tests/junk.py built from the same half's
prose (menus, keyword lists, tables, fragments, code, repeated lines, all-caps spam, cookie banners, word
salad) and junk cut from the sample's own pages (`web_junk`: a page's menu/footer lines, legal banners).
Beside them, not in the floors: `code_block:technical`, the technical pages with a block of real code pasted
in (`with_code_blocks`), and `short:` kinds (documents under 50 words).

    .venv/bin/python bench/bench_filter_chain.py [--tune-only]
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl  # noqa: E402
from junk import junk_documents, web_junk, word_salad  # noqa: E402
from test_rules_decisions import CHAIN_OPTIONS  # noqa: E402

from curation.stage import DROP_REASON, build_stage  # noqa: E402
from curation.stages.quality import ClassifierQuality, PerplexityQuality  # noqa: E402
from curation.stages.quality.models import KenlmTraining, train_classifier, train_kenlm  # noqa: E402

RULES = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]
# Documentation-like pages of web_commoncrawl_samples (picked by reading them: API references, help pages,
# how-tos, programming blog posts and questions with code); the CCNet head's pages are a kind of their own.
# 291-320 and 495-598 were added with the options for technical text: API reference pages (AdWords types,
# Javadoc-style Firebase and Java classes, a Cast SDK class), a number-conversion how-to, a cloud API
# overview and programming questions with code blocks. 252 and 594 (a ROS question with CMake and XML lines,
# a how-to for extracting RAR files) and the Common Crawl web-graph post (paths, formats, a command) were
# added with reference_page_copies, found by looking for API lines and technical words in the sample.
TECHNICAL_IDS = {f"dolma-cc2019-{n:04d}" for n in (159, 251, 271, 274, 310, 314, 317, 319, 321, 633,
                                                    291, 304, 312, 313, 315, 316, 318, 320, 495, 554, 598,
                                                    252, 594)}
TECHNICAL_URLS = ("https://maria-antoniak.github.io/2020/03/25/pip.html",
                  "https://maria-antoniak.github.io/2023/04/11/paperpile-to-zotero.html",
                  "https://maria-antoniak.github.io/2018/11/19/data-science-crash-course.html",
                  "https://maria-antoniak.github.io/2022/07/27/topic-modeling-for-the-people.html",
                  "https://commoncrawl.org/faq", "https://commoncrawl.org/ccbot",
                  "https://commoncrawl.org/blog/host-and-domain-level-web-graphs-september-october-november-"
                  "december-2023-and-february-march-2024")

# The settings compared. `before`: every stage at its paper's defaults. `after`: the chain's options
# (tests/test_rules_decisions.py pins their decisions, manifests/demo.yaml runs them; each documented
# where it is defined).
SETTINGS = {"before": {}, "after": CHAIN_OPTIONS}


def half(doc_id: str) -> str:
    """'tune' or 'test', by the first byte of the id's sha256: stable, and independent of file order."""
    return "tune" if hashlib.sha256(doc_id.encode()).digest()[0] % 2 == 0 else "test"


def evaluation_set(which: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(good prose by kind, junk by kind) of one half."""
    def mine(rows):
        return [r for r in rows if r["text"] and half(r["id"]) == which]

    wikitext, gum = mine(read_jsonl("en_wikitext2_valid_test.jsonl.gz")), mine(read_jsonl("en_gum_docs.jsonl.gz"))
    ewt, web = mine(read_jsonl("en_ud_ewt_web_docs.jsonl.gz")), mine(read_jsonl("web_commoncrawl_samples.jsonl.gz"))
    good: dict[str, list[str]] = {"wikitext": [r["text"] for r in wikitext]}
    for r in gum:
        good.setdefault(f"gum:{r['genre']}", []).append(r["text"])
    for r in ewt:
        good.setdefault(f"ud_ewt:{r['genre']}", []).append(r["text"])
    good["ccnet_head"] = [r["text"] for r in web if r["subset"] == "ccnet_head"]
    technical = [r for r in web if r["id"] in TECHNICAL_IDS or r.get("url") in TECHNICAL_URLS]
    good["technical"] = [r["text"] for r in technical]
    prose = [r["text"] for r in wikitext + gum]
    junk = junk_documents(seed=0 if which == "tune" else 1, prose=prose)
    junk["word_salad"] = word_salad(seed=0 if which == "tune" else 1, prose=prose)
    technical_ids = {r["id"] for r in technical}
    junk.update(web_junk([r for r in web if r["subset"] != "ccnet_head" and r["id"] not in technical_ids]))
    good["code_block:technical"] = with_code_blocks(good["technical"], which)
    for kind in list(good):
        short = [t for t in good[kind] if len(t.split()) < MIN_WORDS]
        good[kind] = [t for t in good[kind] if len(t.split()) >= MIN_WORDS]
        if short:
            good[f"short:{kind.split(':')[0]}"] = good.get(f"short:{kind.split(':')[0]}", []) + short
    return good, junk


def with_code_blocks(pages: list[str], which: str, max_lines: int = 15) -> list[str]:
    """Each page with a code block after its second paragraph (or line): the first `max_lines` lines of a
    program of the same half of code_humanevalx_linux (C, C++, Java, JavaScript, Go, Rust; its leading
    comment left out), as a how-to or a question shows code. Made from real text, as the junk kinds are;
    the shared data has too few real pages of prose with a code block to measure on (one on the tuning half,
    in Russian), so the kind is reported beside the others and not in the floors."""
    rng = random.Random(0 if which == "tune" else 1)
    blocks = []
    for r in read_jsonl("code_humanevalx_linux.jsonl.gz"):
        if r["lang"] in ("c", "cpp", "java", "js", "go", "rust") and half(r["id"]) == which:
            code = r["text"].strip()
            if code.startswith("/*") and "*/" in code:
                code = code[code.index("*/") + 2:].strip()
            blocks.append("\n".join(code.split("\n")[:max_lines]))
    made = []
    for page in pages:
        parts = page.split("\n\n") if page.count("\n\n") >= 3 else page.split("\n")
        k = min(2, len(parts) - 1)
        made.append("\n\n".join(parts[:k] + [rng.choice(blocks)] + parts[k:]))
    return made


def batch_of(texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                       "lang": ["en"] * len(texts), DROP_REASON: pa.nulls(len(texts), pa.string())})


def rule_reasons(texts: list[str], settings: dict) -> list[str | None]:
    batch = batch_of(texts)
    for name in RULES:
        stage = build_stage({"name": name, **settings.get(name, {})})
        stage.setup()
        batch = stage(batch)
    return batch.column(DROP_REASON).to_pylist(), batch


def train_models(tune_good: dict[str, list[str]], tune_web: list[str], out: Path) -> Path:
    """KenLM and the classifier on the tuning half: gold is its WikiText and GUM, negatives its raw web."""
    gold = [{"id": str(i), "text": t, "lang": "en"} for i, t in
            enumerate(tune_good["wikitext"] + [t for k, v in tune_good.items() if k.startswith("gum:") for t in v])]
    pq.write_table(pa.Table.from_pylist(gold), out / "gold.parquet")
    pq.write_table(pa.Table.from_pylist([{"text": t} for t in tune_web]), out / "web.parquet")
    models = out / "models"
    train_kenlm(KenlmTraining(lang="en", inputs=[str(out / "gold.parquet")], out=models))
    train_classifier("en", [str(out / "gold.parquet")], [str(out / "web.parquet")], models)
    return models


def scores(batch: pa.RecordBatch, models: Path) -> tuple[np.ndarray, np.ndarray]:
    """lm_score and classifier score of every row (the rules' rewritten text, as the chain would see it)."""
    live = batch.set_column(batch.schema.get_field_index(DROP_REASON), DROP_REASON,
                            pa.nulls(batch.num_rows, pa.string()))
    lm = PerplexityQuality(model_dir=str(models))
    clf = ClassifierQuality(model_dir=str(models))
    lm.setup()
    clf.setup()
    out = clf(lm(live))
    return (out.column("lm_score").to_numpy(zero_copy_only=False).astype(float),
            out.column("quality_score").to_numpy(zero_copy_only=False).astype(float))


def evaluate(good, junk, settings, models, thresholds=None) -> dict:
    """Per kind: documents, kept share (good) or dropped share (junk) by the rules alone and by each chain,
    and the rules' drop reasons. All kinds run as one batch (the stages decide per document)."""
    kinds = [("good", k, v) for k, v in good.items() if v] + [("junk", k, v) for k, v in junk.items() if v]
    texts = [t for _, _, v in kinds for t in v]
    reasons, batch = rule_reasons(texts, settings)
    lm_all, clf_all = scores(batch, models)
    collected, start = {}, 0
    for side, kind, v in kinds:
        part = slice(start, start + len(v))
        start += len(v)
        collected[(side, kind)] = (np.array([r is not None for r in reasons[part]]), lm_all[part], clf_all[part],
                                   Counter(r for r in reasons[part] if r))
    if thresholds is None:
        thresholds = choose_thresholds(collected)
    report = {"good": {}, "junk": {}}
    for (side, kind), (rules_drop, lm_score, clf_score, why) in collected.items():
        share = (lambda d: 1 - d.mean()) if side == "good" else (lambda d: d.mean())
        row = {"docs": len(rules_drop), "rules": round(float(share(rules_drop)), 3)}
        for chain, keys in CHAINS.items():
            row[chain] = round(float(share(rules_drop | model_drop(lm_score, clf_score, {k: thresholds[k] for k in keys}))), 3)
        row["rule_reasons"] = dict(why.most_common())
        report[side][kind] = row
    for side in ("good", "junk"):
        # the floors are read on documents of at least MIN_WORDS words: shorter ones are reported as
        # their own kinds (`short:`), since every rule set here drops them by design (Gopher's 50 words);
        # `code_block:` pages are made (with_code_blocks), reported beside the real ones
        rows = [v for k, v in report[side].items() if not k.startswith(NOT_IN_FLOORS)]
        n = sum(v["docs"] for v in rows)
        total = {"docs": n}
        for column in ["rules", *CHAINS]:
            total[column] = round(sum(v[column] * v["docs"] for v in rows) / n, 3)
            total[column + "_mean_of_kinds"] = round(float(np.mean([v[column] for v in rows])), 3)
        report[side]["ALL"] = total
    report["thresholds"] = thresholds
    return report


CHAINS = {"rules+kenlm": ("min_lm_score",), "rules+kenlm+classifier": ("min_lm_score", "min_score")}
MIN_WORDS = 50
NOT_IN_FLOORS = ("short:", "code_block:")
LOSS = 0.01  # share of the rules-kept good tuning documents each model may lose (chosen: the junk floor still holds)


def model_drop(lm_score, clf_score, thresholds) -> np.ndarray:
    drop = np.zeros(len(lm_score), dtype=bool)
    if thresholds.get("min_lm_score") is not None:
        drop |= np.nan_to_num(lm_score, nan=np.inf) < thresholds["min_lm_score"]
    if thresholds.get("min_score") is not None:
        drop |= np.nan_to_num(clf_score, nan=1.0) < thresholds["min_score"]
    return drop


def choose_thresholds(collected) -> dict:
    """On the tuning half: the lm_score and classifier cut-offs that each lose LOSS (1%) of the good documents
    (of at least MIN_WORDS words) the rules keep, so the models only add what the rules miss."""
    kept = [(s[~d], c[~d]) for (side, kind), (d, s, c, _) in collected.items()
            if side == "good" and not kind.startswith(NOT_IN_FLOORS)]
    lm = np.concatenate([s for s, _ in kept])
    clf = np.concatenate([c for _, c in kept])
    return {"min_lm_score": round(float(np.nanquantile(lm, LOSS)), 3),
            "min_score": round(float(np.nanquantile(clf, LOSS)), 4)}


def main(tune_only: bool) -> None:
    """Both halves, written to bench/results/filter_chain.json; with --tune-only the tuning half alone,
    printed (for choosing options without reading the test half)."""
    report = {}
    with tempfile.TemporaryDirectory() as name:
        tune_good, tune_junk = evaluation_set("tune")
        test_good, test_junk = evaluation_set("test") if not tune_only else ({}, {})
        tune_web = [r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz")
                    if r["text"] and r["subset"] == "cc_raw" and half(r["id"]) == "tune" and r["id"] not in TECHNICAL_IDS]
        models = train_models(tune_good, tune_web, Path(name))
        for label, settings in SETTINGS.items():
            tuned = evaluate(tune_good, tune_junk, settings, models)
            report[label] = {"settings": settings, "tune": tuned}
            if not tune_only:
                report[label]["test"] = evaluate(test_good, test_junk, settings, models, tuned["thresholds"])
    for label, r in report.items():
        for which in ("tune", "test")[:1 if tune_only else 2]:
            print(label, which, "good", r[which]["good"]["ALL"], "\n  junk", r[which]["junk"]["ALL"])
            if tune_only:
                for side in ("good", "junk"):
                    for kind, row in r[which][side].items():
                        print("   ", side, kind, {k: v for k, v in row.items() if k != "rule_reasons"})
    if not tune_only:
        (REPO / "bench" / "results" / "filter_chain.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main(tune_only="--tune-only" in sys.argv)
