"""`decontaminate` on real text: evaluation items made from GUM (English) and MSRA news (Chinese) planted
verbatim, re-wrapped, with other punctuation and casing and in full-width forms into other documents; every
planted document found, no clean shared-data document hit; common n-grams; policies; errors; executors."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl, write_parquet
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from curation.stage import build_stage
from curation.stages.decontaminate import EvalFileError, _cut


def english_items(n: int = 30) -> list[dict]:
    """One item per GUM document: a sentence of 14-40 words as the question, another as an option."""
    items = []
    for row in read_jsonl("en_gum_docs.jsonl.gz", 80):
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", row["text"].replace("\n", " ")) if 14 <= len(s.split()) <= 40]
        if len(sentences) >= 2:
            items.append({"qid": f"gum-{len(items)}", "question": sentences[0],
                          "choices": ["yes", "no", sentences[1]], "answer": "C"})
        if len(items) == n:
            break
    return items


def chinese_items(n: int = 30) -> list[dict]:
    items = []
    for row in read_jsonl("zh_msra_news.jsonl.gz", n):
        text = row["text"]
        items.append({"qid": f"msra-{len(items)}", "question": text[100:150], "choices": ["对", "错", text[300:330]],
                      "answer": "A"})
    return items


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def variants(passage: str, chinese: bool) -> dict[str, str]:
    if chinese:
        return {
            "verbatim": passage,
            "rewrapped": "\n".join(passage[i:i + 9] for i in range(0, len(passage), 9)),
            "punctuation": passage.replace("，", ", ").replace("。", ". ").replace("、", ","),
            "full_width": passage.replace("，", ",") + " ",
        }
    words = passage.split()
    return {
        "verbatim": passage,
        "rewrapped": "\n".join(" ".join(words[i:i + 5]) for i in range(0, len(words), 5)),
        "punctuation": re.sub(r"[,.;:!?\"'()]", " - ", passage).upper(),
        "full_width": full_width(passage.lower()),
    }


def plant_into(host: str, passage: str) -> str:
    lines = host.split("\n")
    middle = len(lines) // 2
    return "\n".join(lines[:middle] + [passage] + lines[middle:])


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory, data_dir) -> dict:
    folder = tmp_path_factory.mktemp("eval")
    en, zh = english_items(), chinese_items()
    write_jsonl(folder / "en_bench.jsonl.gz", en, compress=True)
    write_parquet(folder / "zh_bench.parquet", zh)
    return {"folder": folder, "en": en, "zh": zh}


def benchmarks(eval_files) -> list[dict]:
    folder = eval_files["folder"]
    return [{"name": "gum_qa", "path": str(folder / "en_bench.jsonl.gz"), "fields": ["question", "choices"], "id_field": "qid"},
            {"name": "msra_qa", "path": str(folder / "zh_bench.parquet"), "fields": ["question", "choices"], "id_field": "qid"}]


def batch_of(texts: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array([str(i) for i in range(len(texts))]), "text": pa.array(texts, pa.string()),
                            "drop_reason": pa.array([None] * len(texts), pa.string())})


def stage_for(eval_files, **options):
    stage = build_stage({"name": "decontaminate", "benchmarks": benchmarks(eval_files), **options})
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def planted(eval_files) -> dict:
    """Hosts (WikiText articles, UD Chinese wiki rows) with one item passage each, in four forms."""
    en_hosts = [r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz", 120)]
    zh_hosts = [r["text"] for r in read_jsonl("zh_ud_gsdsimp_wiki.jsonl.gz", 300)]
    docs, labels = [], []
    k = 0
    for bench, items, hosts, chinese in (("gum_qa", eval_files["en"], en_hosts, False),
                                         ("msra_qa", eval_files["zh"], zh_hosts, True)):
        for item in items:
            passage = item["question"] if k % 2 else item["choices"][2]
            for form, text in variants(passage, chinese).items():
                docs.append(plant_into(hosts[k % len(hosts)], text))
                labels.append((f"{bench}:{item['qid']}", form))
                k += 1
    return {"docs": docs, "labels": labels}


def clean_documents() -> list[str]:
    """Shared text the items were not taken from (GUM and MSRA are where they come from)."""
    return [r["text"] for name in ("en_wikitext2_valid_test.jsonl.gz", "en_ud_ewt_web_docs.jsonl.gz",
                                   "web_commoncrawl_samples.jsonl.gz", "zh_ud_gsdsimp_wiki.jsonl.gz",
                                   "code_humanevalx_linux.jsonl.gz")
            for r in read_jsonl(name)] + [r["text"] for r in read_jsonl("zh_reviews.jsonl.gz", 20000)]


def test_recall_on_planted_items_in_every_form(eval_files, planted):
    stage = stage_for(eval_files, policy="annotate")
    out = stage(batch_of(planted["docs"]))
    found = out.column("contaminated_by").to_pylist()
    missed = [(label, form) for (label, form), got in zip(planted["labels"], found) if label not in got]
    assert not missed, f"recall {1 - len(missed) / len(found):.3f}; missed {missed[:6]}"
    assert out.column("text").to_pylist() == planted["docs"]
    assert stage.metrics["docs:gum_qa"] + stage.metrics["docs:msra_qa"] == len(planted["docs"])
    assert stage.metrics[f"item:{planted['labels'][0][0]}"] >= 4


def test_no_hits_on_clean_shared_documents(eval_files):
    stage = stage_for(eval_files)
    texts = clean_documents()
    out = stage(batch_of(texts))
    hit = [texts[i][:80] for i, r in enumerate(out.column("drop_reason").to_pylist()) if r]
    assert not hit, f"{len(hit)} of {len(texts)} clean documents flagged: {hit[:3]}"


def test_drop_reason_names_the_benchmark(eval_files, planted):
    stage = stage_for(eval_files)
    reasons = stage(batch_of(planted["docs"])).column("drop_reason").to_pylist()
    assert reasons == [f"decontaminated:{label.split(':')[0]}" for label, _ in planted["labels"]]


def test_cut_removes_the_passage_and_keeps_the_rest(eval_files):
    item = eval_files["en"][3]
    host = read_jsonl("en_wikitext2_valid_test.jsonl.gz", 5)[4]["text"]
    doc = plant_into(host, item["question"])
    short = "Quiz time. " + item["question"]
    stage = stage_for(eval_files, policy="cut")
    out = stage(batch_of([doc, short, host]))
    texts, reasons = out.column("text").to_pylist(), out.column("drop_reason").to_pylist()
    assert reasons == [None, "decontaminated:gum_qa", None]
    assert item["question"] not in texts[0] and len(texts[0]) > 0.8 * len(host)
    assert texts[2] == host
    assert stage.metrics["cut:gum_qa"] == 1 and stage.metrics["bytes_removed"] > len(item["question"])


def test_cut_pieces():
    text = "a" * 1000 + "LEAK" + "b" * 1000
    assert _cut(text, [(1000, 1004)], 200, 200) == ["a" * 800, "b" * 800]
    assert _cut(text, [(100, 104)], 200, 200) == [text[304:]], "nothing left before the cut"
    assert _cut(text, [(300, 304), (1000, 1004)], 200, 200) == ["a" * 296, "b" * 800], "the first piece (100) goes"
    assert _cut("x" * 300, [(0, 300)], 200, 200) == []


def test_common_and_stop_word_ngrams_do_not_contaminate(tmp_path, data_dir):
    """A template shared by many items and an all-function-word sentence hit nothing; the items' own text does."""
    template = "Read the question below carefully and choose the single best answer from the four options given"
    questions = [s for s in re.split(r"(?<=[.!?])\s+", read_jsonl("en_wikitext2_valid_test.jsonl.gz", 3)[2]["text"])
                 if len(s.split()) >= 14][:20]
    rows = [{"question": f"{template}: {q}"} for q in questions]
    rows.append({"question": "it is what it is and that is all there is to it for now and then some more of it"})
    write_jsonl(tmp_path / "templ.jsonl", rows)
    stage = build_stage({"name": "decontaminate", "benchmarks": [{"name": "templ", "path": str(tmp_path / "templ.jsonl"),
                                                                  "fields": ["question"]}]})
    stage.setup()
    docs = [f"Instructions: {template}. Good luck!", rows[-1]["question"].upper() + ".", f"Recall: {questions[5]}"]
    assert stage(batch_of(docs)).column("drop_reason").to_pylist() == [None, None, "decontaminated:templ"]


@pytest.mark.parametrize("problem, match", [
    ("missing", "not found"), ("field", "no row has the field"), ("json", "line 2: not valid JSON"),
    ("id", "line 1: no id field"), ("parquet_field", "no row has the field"),
])
def test_bad_evaluation_files_name_the_file(tmp_path, problem, match):
    path = tmp_path / ("eval.parquet" if problem == "parquet_field" else "eval.jsonl")
    if problem == "field":
        write_jsonl(path, [{"question": "q", "text": "t"}])
    elif problem == "json":
        path.write_text('{"question": "fine"}\n{"question": broken\n')
    elif problem == "id":
        write_jsonl(path, [{"question": "q"}])
    elif problem == "parquet_field":
        write_parquet(path, [{"question": "q"}])
    options = {"name": "decontaminate", "benchmarks": [{"name": "b", "path": str(path), "fields": ["question", "choices"]
                                                        if problem in ("field", "parquet_field") else ["question"],
                                                        **({"id_field": "qid"} if problem == "id" else {})}]}
    with pytest.raises(EvalFileError, match=match) as info:
        build_stage(options)
    assert str(path) in str(info.value)
    if problem in ("field", "parquet_field"):
        assert "'choices'" in str(info.value)


def test_config_errors():
    with pytest.raises(ValueError, match="at least one benchmark"):
        build_stage({"name": "decontaminate", "benchmarks": []})
    with pytest.raises(ValueError, match="policy"):
        build_stage({"name": "decontaminate", "policy": "erase", "benchmarks": [{"name": "b", "path": "x.jsonl", "fields": "q"}]})
    with pytest.raises(ValueError, match="unknown key"):
        build_stage({"name": "decontaminate", "benchmarks": [{"name": "b", "path": "x.jsonl", "field": "q"}]})


def write_shards(folder: Path, planted: dict) -> int:
    folder.mkdir()
    write_jsonl(folder / "planted.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(planted["docs"])])
    clean = read_jsonl("en_ud_ewt_web_docs.jsonl.gz") + read_jsonl("zh_reviews.jsonl.gz", 1000)
    write_jsonl(folder / "clean.jsonl", clean)
    return len(clean)


def run(folder: Path, out: Path, kind: str, stages: list[dict]) -> dict:
    return run_pipeline(pipeline_from_dict({"input": {"path": [str(folder / "*")]}, "output": {"path": str(out)},
                                            "executor": {"kind": kind}, "stages": stages}), RunOptions(progress=False))


def test_through_the_local_executor(tmp_path, eval_files, planted):
    n_clean = write_shards(tmp_path / "in", planted)
    stats = run(tmp_path / "in", tmp_path / "out", "local",
                [{"name": "decontaminate", "benchmarks": benchmarks(eval_files)}])
    metrics = stats["stages"][0]["metrics"]
    assert metrics["docs:gum_qa"] + metrics["docs:msra_qa"] == len(planted["docs"])
    rejected = pq.read_table(tmp_path / "out" / "rejected")
    assert sorted(rejected.column("id").to_pylist()) == sorted(f"p{i}" for i in range(len(planted["docs"])))
    assert pq.read_table(tmp_path / "out" / "kept").num_rows == n_clean


def test_both_stages_on_ray(tmp_path, eval_files, planted, ray_instance):
    n_clean = write_shards(tmp_path / "in", planted)
    stats = run(tmp_path / "in", tmp_path / "out", "ray",
                [{"name": "pii"}, {"name": "decontaminate", "benchmarks": benchmarks(eval_files), "policy": "annotate"}])
    assert stats["executor"]["kind"] == "ray"
    kept = pq.read_table(tmp_path / "out" / "kept")
    assert kept.num_rows == n_clean + len(planted["docs"])
    by_id = dict(zip(kept.column("id").to_pylist(), kept.column("contaminated_by").to_pylist()))
    assert all(label in by_id[f"p{i}"] for i, (label, _) in enumerate(planted["labels"]))
    assert stats["stages"][0]["metrics"]["found:phone"] > 0


def test_both_tokenisers_give_the_same_tokens(data_dir):
    """Detection splits at separators; `cut` cuts tokens out with their offsets: same tokens either way."""
    from curation.stages.ngram_index import tokenize
    from curation.stages.regex_spans import sanitize

    texts = [r["text"] for name in ("web_commoncrawl_samples.jsonl.gz", "lid_lingua_75lang.jsonl.gz",
                                    "zh_reviews.jsonl.gz", "code_humanevalx_linux.jsonl.gz")
             for r in read_jsonl(name, 800)] + ["ＡＢＣ１２ ﬁne ①② 中\u0301文 café\u0301 データ", ""]
    text = sanitize(pa.array(texts))
    fast, exact = tokenize(text), tokenize(text, offsets=True)
    assert (fast.hashes == exact.hashes).all() and (fast.row_offsets == exact.row_offsets).all()
    assert (fast.cjk == exact.cjk).all() and len(fast) > 100_000
    # offsets point at the token in the original text
    for t in range(0, len(exact), 997):
        original = texts[exact.parent[t]][exact.start[t]:exact.end[t]]
        assert original and exact.normalised[t].as_py() in (original.lower(), __import__("unicodedata").normalize("NFKC", original).lower())
