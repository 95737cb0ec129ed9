"""Model-based quality: KenLM trained by our own lmplz build, the fastText classifier, both stages."""

from __future__ import annotations

import random
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl
from junk import junk_documents, word_salad
from curation.cli import main as cli_main
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from curation.stages.model_files import ModelError
from curation.stages.quality.models import KenlmTraining, TrainError, kenlm_binaries, train_classifier, train_kenlm
from curation.stages.quality import ClassifierQuality, PerplexityQuality


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of `positive` scoring higher than `negative` (Mann-Whitney U)."""
    ranks = np.concatenate([positive, negative]).argsort().argsort() + 1.0
    return float((ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def rank(x: np.ndarray) -> np.ndarray:
    return x.argsort().argsort() / len(x)


def batch_of(texts: list[str], lang: str | None = None) -> pa.RecordBatch:
    columns = {"id": pa.array([str(i) for i in range(len(texts))]), "text": pa.array(texts),
               "drop_reason": pa.array([None] * len(texts), pa.string())}
    if lang:
        columns["lang"] = pa.array([lang] * len(texts))
    return pa.record_batch(columns)


# lmplz's sort memory for the small models trained here: its default (80%, the library's 40% of RAM)
# takes 2-4 s to allocate before a tiny corpus; the model files are the same bytes with 100 MB.
LMPLZ_MEMORY = "100M"

@pytest.fixture(scope="module")
def english(tmp_path_factory):
    """Models trained on half of WikiText and GUM; the other half is the held-out prose, and the junk
    is built from the held-out half too, so no junk sentence was seen in training."""
    tmp = tmp_path_factory.mktemp("quality_en")
    wikitext, gum = read_jsonl("en_wikitext2_valid_test.jsonl.gz"), read_jsonl("en_gum_docs.jsonl.gz")
    gold = [{"id": r["id"], "text": r["text"], "lang": "en"} for r in wikitext[0::2] + gum[0::2]]
    pq.write_table(pa.Table.from_pylist(gold), tmp / "gold.parquet")
    models = tmp / "models"
    train_kenlm(KenlmTraining(lang="en", inputs=[str(tmp / "gold.parquet")], out=models, memory=LMPLZ_MEMORY))
    train_classifier("en", [str(tmp / "gold.parquet")], [str(_data("web_commoncrawl_samples.jsonl.gz"))], models)
    held_out = [r["text"] for r in wikitext[1::2] + gum[1::2]]
    junk = junk_documents(prose=held_out)
    junk["word_salad"] = word_salad(prose=held_out)
    return {"models": models, "held_out": held_out, "junk": junk, "gold": tmp / "gold.parquet"}


def _data(name):
    from conftest import DATA

    return DATA / name


def scores(models, texts):
    perplexity = PerplexityQuality(model_dir=str(models), default_lang="en")
    classifier = ClassifierQuality(model_dir=str(models), default_lang="en")
    batch = classifier(perplexity(batch_of(texts)))
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in ("ppl", "lm_score", "quality_score")}


def test_kenlm_binaries_come_from_our_build():
    lmplz, build_binary = kenlm_binaries()
    help_text = subprocess.run([str(lmplz), "--help"], capture_output=True, text=True).stderr
    assert "modified Kneser-Ney" in help_text
    assert build_binary.exists()


def test_lm_score_separates_held_out_prose_from_junk(english):
    prose = scores(english["models"], english["held_out"])
    junk_texts = [t for texts in english["junk"].values() for t in texts]
    junk = scores(english["models"], junk_texts)
    lm_auc = auc(prose["lm_score"], junk["lm_score"])
    ppl_auc = auc(-prose["ppl"], -junk["ppl"])
    assert lm_auc >= 0.80, (lm_auc, ppl_auc)
    # Fluent junk made of gold sentences (repeated lines, all caps once lower-cased) is the rules' job;
    # junk the model must see: word salad, keyword lists, fragments, menus, tables, code, banners.
    for kind in ("word_salad", "keywords", "fragments", "menu", "table", "code", "cookie_banner"):
        kind_scores = scores(english["models"], english["junk"][kind])
        assert auc(prose["lm_score"], kind_scores["lm_score"]) >= 0.9, kind


def test_classifier_with_perplexity_reaches_090(english):
    prose = scores(english["models"], english["held_out"])
    junk = scores(english["models"], [t for texts in english["junk"].values() for t in texts])
    assert auc(prose["quality_score"], junk["quality_score"]) >= 0.65
    both_lm = np.concatenate([prose["lm_score"], junk["lm_score"]])
    both_clf = np.concatenate([prose["quality_score"], junk["quality_score"]])
    combined = np.minimum(rank(both_lm), rank(both_clf))  # a document is good when both models say so
    n = len(english["held_out"])
    assert auc(combined[:n], combined[n:]) >= 0.90
    assert ((prose["quality_score"] >= 0) & (prose["quality_score"] <= 1)).all()


def test_chinese_character_model(tmp_path):
    news = read_jsonl("zh_msra_news.jsonl.gz")
    gold = [{"id": r["id"], "text": r["text"], "lang": "zh"} for r in news[0::2][:1200]]
    write_jsonl(tmp_path / "gold.jsonl", gold)
    entry = train_kenlm(KenlmTraining(lang="zh", inputs=[str(tmp_path / "gold.jsonl")], out=tmp_path / "m",
                                      memory=LMPLZ_MEMORY))
    assert entry["cjk_characters"]
    held_out = [r["text"] for r in news[1::2][:200]]
    rng = random.Random(3)
    salad = ["".join(rng.sample(t, len(t))) for t in held_out[:60]]  # the same characters, shuffled
    fragments = ["\n".join(t[i:i + rng.randint(2, 5)] for i in range(0, 300, 17)) for t in held_out[60:120]]
    stage = PerplexityQuality(model_dir=str(tmp_path / "m"))
    prose = stage(batch_of(held_out, "zh")).column("lm_score").to_numpy(zero_copy_only=False)
    for junk in (salad, fragments):
        assert auc(prose, stage(batch_of(junk, "zh")).column("lm_score").to_numpy(zero_copy_only=False)) >= 0.9


def test_both_scorers_in_one_pipeline(tmp_path, english):
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(english["held_out"][:30])]
    rows += [{"id": f"j{i}", "text": t} for i, t in enumerate(english["junk"]["word_salad"][:10])]
    rows += [{"id": f"z{i}", "text": r["text"]} for i, r in enumerate(read_jsonl("zh_msra_news.jsonl.gz", 10))]
    write_jsonl(tmp_path / "in.jsonl", rows)
    raw = {"input": {"path": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")},
           "executor": {"kind": "local"},
           "stages": [{"name": "lid"},
                      {"name": "quality", "model_dir": str(english["models"]), "drop_buckets": ["tail"],
                       "paragraph_ppl": True},
                      {"name": "quality_classifier", "model_dir": str(english["models"])}]}
    stats = run_pipeline(pipeline_from_dict(raw), RunOptions(progress=False))
    rejected = pq.read_table(next((tmp_path / "out" / "rejected").glob("*.parquet"))).to_pylist()
    kept = pq.read_table(next((tmp_path / "out" / "kept").glob("*.parquet"))).to_pylist()
    salad_rejected = [r for r in rejected if r["id"].startswith("j")]
    assert len(salad_rejected) == 10 and {r["drop_reason"] for r in salad_rejected} == {"quality:ppl"}
    chinese = [r for r in kept if r["id"].startswith("z")]
    assert len(chinese) == 10 and all(r["ppl"] is None and r["quality_score"] is None for r in chinese)
    english_kept = [r for r in kept if r["id"].startswith("p")]
    assert english_kept and all(r["quality_bucket"] in ("head", "middle") for r in english_kept)
    assert all(0 <= r["quality_score"] <= 1 and r["paragraph_ppl"] for r in english_kept)
    metrics = next(s for s in stats["stages"] if s["name"] == "quality")["metrics"]
    assert metrics["unscored_zh"] == 10 and metrics["scored_en"] == 40


def test_train_lm_command_and_bad_inputs(tmp_path, english, capsys):
    out = tmp_path / "m"
    assert cli_main(["train-lm", "--lang", "en", "--order", "3", "--out", str(out), str(english["gold"])]) == 0
    assert (out / "en.kenlm.binary").exists() and (out / "quality.json").exists()
    # a language with no gold rows (the input's `lang` column says en)
    assert cli_main(["train-lm", "--lang", "fr", "--out", str(out), str(english["gold"])]) == 1
    assert "no gold text for language 'fr'" in capsys.readouterr().err
    # an empty gold corpus
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TrainError, match="no gold text"):
        train_kenlm(KenlmTraining(lang="en", inputs=[str(tmp_path / "empty.jsonl")], out=out))
    # a classifier without negatives
    assert cli_main(["train-lm", "--kind", "classifier", "--lang", "en", "--out", str(out), str(english["gold"])]) == 2


def test_model_errors_say_what_to_do(tmp_path, english):
    with pytest.raises(ModelError, match="train them with `curation train-lm"):
        PerplexityQuality(model_dir=str(tmp_path / "nothing")).setup()
    broken = tmp_path / "broken"
    shutil.copytree(english["models"], broken)
    (broken / "en.kenlm.binary").unlink()
    with pytest.raises(ModelError, match="is missing"):
        PerplexityQuality(model_dir=str(broken)).setup()
    # an ARPA file where the binary should be
    lmplz, _ = kenlm_binaries()
    with open(english["gold"].parent / "tiny.txt", "w") as handle:
        handle.write("the cat sat on the mat\nthe dog sat on the log\n" * 50)
    with open(english["gold"].parent / "tiny.txt", "rb") as source, open(broken / "en.kenlm.binary", "wb") as sink:
        subprocess.run([str(lmplz), "-o", "2", "--discount_fallback", "-S", LMPLZ_MEMORY], stdin=source, stdout=sink,
                       stderr=subprocess.DEVNULL, check=True)
    with pytest.raises(ModelError, match="is an ARPA file"):
        PerplexityQuality(model_dir=str(broken)).setup()
    # a model file changed after training (here: the classifier replaced by another fastText file)
    tampered = tmp_path / "tampered"
    shutil.copytree(english["models"], tampered)
    from curation.stages.model_files import lid_model_path

    shutil.copy(lid_model_path(), tampered / "en.classifier.bin")
    with pytest.raises(ModelError, match="does not match the sha256"):
        ClassifierQuality(model_dir=str(tampered)).setup()
    (tampered / "en.classifier.bin").write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a fastText model"):
        ClassifierQuality(model_dir=str(tampered)).setup()
    with pytest.raises(ModelError, match="no quality classifier"):
        only_lm = tmp_path / "only_lm"
        train_kenlm(KenlmTraining(lang="en", inputs=[str(english["gold"])], out=only_lm, order=3, memory=LMPLZ_MEMORY))
        ClassifierQuality(model_dir=str(only_lm)).setup()
