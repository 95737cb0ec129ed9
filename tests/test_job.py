"""The main job end to end on a slice of every ../shared/data file: quality models trained when missing,
curation, tokenizer, packing per source, two-phase manifest, report. The outputs are byte-identical
on the in-process executor, a single-node Ray instance and a two-node Ray cluster; the report renders
in headless Chromium with its plots."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import DATA, read_jsonl, write_jsonl
from curation.cli import main as cli_main

FILES = {"web": ["web_commoncrawl_samples"], "wiki": ["en_wikitext2_valid_test", "zh_ud_gsdsimp_wiki"],
         "prose": ["en_gum_docs", "en_ud_ewt_web_docs"], "news": ["zh_msra_news"], "reviews": ["zh_reviews"],
         "code": ["code_humanevalx_linux"], "multilingual": ["lid_lingua_75lang"]}


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job_in")
    for names in FILES.values():
        for name in names:
            rows = read_jsonl(f"{name}.jsonl.gz", 400 if name != "zh_reviews" else 1500)
            write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


def job_config(inputs: Path, out: Path, models: Path, executor: dict) -> dict:
    # the gold files are inputs too (all their documents: under 400 each), as in the demo: the report
    # plots their documents apart from the text the model judges
    gold_en = [str(inputs / "en_wikitext2_valid_test.jsonl"), str(inputs / "en_gum_docs.jsonl")]
    return {
        "input": {"sources": {s: [str(inputs / f"{n}.jsonl") for n in names] for s, names in FILES.items()},
                  "empty_text": "drop"},
        "output": {"path": str(out)},
        "executor": executor,
        "quality_models": {"dir": str(models), "kenlm": {"en": gold_en},
                           "classifier": {"en": {"gold": gold_en, "negative": [str(DATA / "web_commoncrawl_samples.jsonl.gz")]}}},
        "stages": [{"name": "lid", "source_languages": {"code": "code"}},
                   {"name": "gopher_quality", "languages": ["en", "zh"]}, {"name": "c4", "languages": ["en", "zh"]},
                   {"name": "quality", "model_dir": str(models), "drop_buckets": ["tail"]},
                   {"name": "quality_classifier", "model_dir": str(models)},
                   {"name": "exact_dedup", "partitions": 4}, {"name": "paragraph_dedup", "partitions": 4},
                   {"name": "minhash_dedup", "partitions": 4}],
        "tokenizer": {"vocab_size": 2000, "budget_mb": 2, "holdout_fraction": 0.05, "shares": {"en": 0.4, "zh": 0.3, "code": 0.1, "other": 0.2}},
        "pack": {"seq_len": 256},
        "phases": {"sources": {s: {"max_epochs": 4} for s in FILES},
                   "phases": [{"name": "one", "tokens": 60_000, "seed": 1,
                               "weights": {"web": 0.4, "multilingual": 0.3, "reviews": 0.1, "news": 0.1, "wiki": 0.05, "prose": 0.03, "code": 0.02}},
                              {"name": "two", "tokens": 40_000, "seed": 2,
                               "weights": {"web": 0.1, "multilingual": 0.1, "reviews": 0.05, "news": 0.15, "wiki": 0.3, "prose": 0.15, "code": 0.15}}]},
        "report": True,
    }


def digest(out: Path) -> dict[str, str]:
    """sha256 of every output that must not depend on the executor."""
    found = {}
    for part in ("kept", "rejected", "packed"):
        for path in sorted((out / part).rglob("*")):
            if path.is_file() and "_state" not in path.parts and path.suffix in (".parquet", ".bin"):
                found[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    found["tokenizer.json"] = hashlib.sha256((out / "tokenizer" / "tokenizer.json").read_bytes()).hexdigest()
    found["manifest.json"] = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    return found


def _run(config: dict, folder: Path) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["run", str(path), "--no-progress"]) == 0
    return Path(config["output"]["path"])


@pytest.fixture(scope="module")
def local_job(job_inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("job_local")
    models = tmp_path_factory.mktemp("models")
    return _run(job_config(job_inputs, folder / "out", models, {"kind": "local"}), folder), models


def test_job_leaves_every_output(local_job):
    out, models = local_job
    assert (models / "quality.json").exists()
    for name in ("kept", "rejected", "packed/pack.json", "tokenizer/tokenizer.json", "manifest.json", "report.html",
                 "job.json", "phases.yaml"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["name"] for p in manifest["phases"]] == ["one", "two"]
    assert set(manifest["sources"]) == set(FILES)
    kept = __import__("pyarrow.dataset", fromlist=["dataset"]).dataset(str(out / "kept")).to_table(columns=["dataset", "lang"])
    codes = kept.filter(__import__("pyarrow.compute", fromlist=["equal"]).equal(kept.column("dataset"), "code"))
    assert codes.num_rows > 100 and set(codes.column("lang").to_pylist()) == {"code"}  # code survives the prose rules
    steps = json.loads((out / "job.json").read_text())["steps"]
    assert {"curation", "tokenizer", "pack", "manifest", "report"} <= set(steps)
    # every file of a finished job is one curation recognises as its own: --overwrite may remove it
    from curation.output_folder import foreign_files

    assert foreign_files(out) == []


def test_rerun_resumes_without_redoing(local_job, job_inputs, tmp_path):
    out, models = local_job
    before = digest(out)
    config = job_config(job_inputs, out, models, {"kind": "local"})
    _run(config, tmp_path)
    assert digest(out) == before


def test_same_output_on_ray_and_on_a_two_node_cluster(local_job, job_inputs, tmp_path, ray_instance):
    out, models = local_job
    expected = digest(out)
    ray_out = _run(job_config(job_inputs, tmp_path / "ray", models, {"kind": "ray"}), tmp_path)
    assert digest(ray_out) == expected
    ray_instance.shutdown()
    try:
        config = job_config(job_inputs, tmp_path / "cluster", models, {"kind": "ray"})
        (tmp_path / "cluster_job.yaml").write_text(yaml.safe_dump(config))
        script = (
            "import sys, ray\n"
            "from ray.cluster_utils import Cluster\n"
            "from curation.cli import main\n"
            "cluster = Cluster(initialize_head=True, head_node_args={'num_cpus': 1})\n"
            "cluster.add_node(num_cpus=1)\n"
            "cluster.wait_for_nodes()\n"
            "code = main(['run', sys.argv[1], '--address', cluster.address, '--no-progress'])\n"
            "print('nodes', len([n for n in ray.nodes() if n['Alive']]))\n"
            "ray.shutdown(); cluster.shutdown(); sys.exit(code)\n")
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cluster_job.yaml")], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "nodes 2" in result.stdout
        assert digest(tmp_path / "cluster") == expected
    finally:
        ray_instance.init(address="local", num_cpus=2, include_dashboard=True, object_store_memory=256 * 1024 * 1024,
                          logging_level="ERROR")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed for the report test: scripts/setup.sh installs Debian's chromium")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(local_job, tmp_path):
    out, _ = local_job
    report = out / "report.html"
    html_text = report.read_text()
    # self-contained: nothing loaded from anywhere (SVG namespaces are names, not fetches)
    for needle in ('src="http', "src='http", 'href="http', "url(http", "<script", "<link", "@import"):
        assert needle not in html_text, needle
    chromium = _chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    for title in ("Funnel", "Drop reasons", "Languages", "Perplexity", "Dedup clusters", "Tokens", "Tokenizer", "Run times"):
        assert f"<h2>{title}" in rendered, title
    assert rendered.count("<svg") >= 9
    for text in ("tokens per phase and source", "perplexity, en", "bytes per token", "documents dropped, by reason"):
        assert text in rendered, text
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1200,3000", report.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    image = Image.open(shot).convert("L")
    colours = len(set(image.getdata()))
    assert colours > 50  # plots drawn, not a blank page


def test_tokenizer_is_evaluated_on_documents_it_never_sampled(local_job):
    """The held-out slice (by a hash of the id) is never in the training sample, and eval.json measures
    bytes per token on it, beside the same measure on the text the sample came from."""
    from curation.tokenizer.sample import SampleSpec, balanced_sample, held_out

    out, _ = local_job
    meta = json.loads((out / "tokenizer" / "tokenizer_meta.json").read_text())
    spec = SampleSpec(**meta["sample"])
    assert spec.holdout_fraction == 0.05
    kept = [str(out / "kept")]
    held = {row["id"]: row["text"] for batch in held_out(kept, spec, ("id",)) for row in batch.to_pylist()}
    sampled_ids = set(balanced_sample(kept, spec, column="id"))
    sampled_texts = set(balanced_sample(kept, spec))
    assert len(held) > 50 and len(sampled_ids) > 500
    assert not sampled_ids & set(held)
    assert not sampled_texts & set(held.values())
    evaluation = json.loads((out / "tokenizer" / "eval.json").read_text())
    assert evaluation["held_out"]["docs"] == len(held)
    assert evaluation["held_out"]["bytes"] == sum(len(t.encode("utf-8")) for t in held.values())
    assert {"en", "zh"} <= set(evaluation["groups"])
    for group, row in evaluation["groups"].items():
        assert 0 < row["docs"] and row["bytes"] <= evaluation["held_out"]["max_bytes_per_group"], group
        assert 1.0 < row["bytes_per_token"] < 8.0, (group, row)


def test_report_labels_do_not_overlap(local_job, tmp_path):
    """Every SVG label of the real report, laid out by headless Chromium: no two touch."""
    from test_report import label_overlaps

    out, _ = local_job
    found = label_overlaps(out / "report.html", tmp_path)
    assert found["measured"] > 200, found["measured"]  # the check saw the plots' labels
    assert found["overlaps"] == [], found["overlaps"][:20]


def test_report_says_what_trained_the_models_and_what_was_held_out(local_job):
    out, models = local_job
    page = (out / "report.html").read_text()
    entry = json.loads((models / "quality.json").read_text())["kenlm"]["en"]
    # 299 English gold documents: every 5th held out gives at least 50 for the cut-offs
    assert entry["cutoff_sample_docs"] >= 50 and entry["holdout_every"] == 5
    assert f"en: cut-offs from {entry['cutoff_sample_docs']} held-out gold documents" in page
    assert "gold sources: trained the model, or held out for" in page  # plotted apart from the web
    assert "e+0" not in page  # no 1.941e+05
    held = json.loads((out / "tokenizer" / "eval.json").read_text())["held_out"]
    assert f"{held['docs']:,} documents" in page


GOOD_SECTIONS = {"quality_models": {"dir": "models", "kenlm": {"en": ["gold.jsonl"]}},
                 "tokenizer": {"vocab_size": 2000, "budget_mb": 2}, "pack": {"seq_len": 256},
                 "phases": {"sources": {"web": {}}, "phases": [{"name": "one", "tokens": 1000, "weights": {"web": 1.0}}]},
                 "report": True}


@pytest.mark.parametrize("section, value, message", [
    ("quality_models", {"dir": "models", "kenlm": {"en": "gold.jsonl"}},
     r"'quality_models': option 'kenlm' must be a mapping of a string to a list of strings, got a mapping"),
    ("quality_models", {"dir": "models", "classifier": {"en": {"gold": ["g"], "negatives": ["w"]}}},
     r"'quality_models.classifier.en': unknown key\(s\) negatives; allowed: gold, negative"),
    ("quality_models", {"kenlm": {}}, r"'quality_models': dir required"),
    ("tokenizer", {"vocab_size": 2000, "budget": 2}, r"'tokenizer': unknown key\(s\) budget; allowed: vocab_size, budget_mb"),
    ("tokenizer", {"budget_mb": "40"}, r"'tokenizer': option 'budget_mb' must be a number, got the string '40'"),
    ("tokenizer", {"vocab_size": 100}, r"'tokenizer': vocab_size 100 is under the byte alphabet"),
    ("tokenizer", {"holdout_fraction": 0.7}, r"'tokenizer': holdout_fraction must be in \[0, 0.5\)"),
    ("pack", {"seq_len": 256, "stride": 2}, r"'pack': unknown key\(s\) stride; allowed: seq_len, strategy, window, dtype"),
    ("pack", {"strategy": "greedy"}, r"'pack': strategy must be one of"),
    ("pack", [256], r"'pack' must be a mapping, got list"),
    ("phases", {**GOOD_SECTIONS["phases"], "sources": {"web": {"max_epoch": 2}}},
     r"'phases.sources.web': unknown key\(s\) max_epoch; allowed: path, max_epochs"),
    ("phases", {**GOOD_SECTIONS["phases"], "phases": [{"name": "one", "tokens": "1M", "weights": {"web": 1.0}}]},
     r"'phases.phases\[0\]': option 'tokens' must be an integer, got the string '1M'"),
    ("phases", {"sources": {"web": {}}}, r"'phases': phases required"),
    ("report", "yes", r"'report' must be true or false, got 'yes'"),
])
def test_a_bad_job_section_is_named_with_the_file_and_key(tmp_path, capsys, section, value, message):
    config = {"input": {"path": str(tmp_path / "in.jsonl")}, "output": {"path": str(tmp_path / "out")},
              "stages": [{"name": "noop"}], **GOOD_SECTIONS, section: value}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["run", str(path), "--no-progress"]) == 2  # a config error, before any work
    error = capsys.readouterr().err
    assert error.startswith(f"curation: error: {path}: ") and "Traceback" not in error
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()


def test_job_sections_depend_on_each_other(tmp_path):
    from curation.job import load_job

    config = {"input": {"path": "in.jsonl"}, "output": {"path": "out"}, "stages": [], **GOOD_SECTIONS}
    del config["pack"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"`phases` needs a `pack` section"):
        load_job(path)
    config["pack"], config["tokenizer"] = {}, None  # an empty section: every default
    path.write_text(yaml.safe_dump(config))
    job = load_job(path)
    assert job.sections.tokenizer.vocab_size == 65_536 and job.sections.tokenizer.shares == {"en": 0.5, "zh": 0.3, "other": 0.2}
    assert job.sections.pack.seq_len == 2048 and job.sections.pack.strategy == "concat"
