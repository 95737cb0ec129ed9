"""Language ID on real text: lid.176 with thresholds, on the 75-language set and the corpus files."""

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl
from curation.stages.model_files import ModelError, lid_model_path
from curation.stage import DROP_REASON, build_stage


def as_batch(texts):
    return pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                       DROP_REASON: pa.nulls(len(texts), pa.string())})


@pytest.fixture(scope="module")
def lid():
    stage = build_stage({"name": "lid"})
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def doc3():
    rows = [r for r in read_jsonl("lid_lingua_75lang.jsonl.gz") if r["unit"] == "doc3"]
    return [r["text"] for r in rows], np.array([r["lang"] for r in rows])


def precision_recall(pred, gold, lang):
    tp = ((pred == lang) & (gold == lang)).sum()
    return tp / max((pred == lang).sum(), 1), tp / max((gold == lang).sum(), 1)


def test_en_and_zh_precision_recall_on_75_languages(lid, doc3):
    texts, gold = doc3
    out = lid(as_batch(texts))
    pred = np.array(out.column("lang").to_pylist())
    for lang in ("en", "zh"):
        precision, recall = precision_recall(pred, gold, lang)
        assert precision >= 0.99 and recall >= 0.99, (lang, precision, recall)
    # Raw fastText, for contrast: its English precision is low because it calls unknown languages English.
    raw, _ = lid.predict(pa.array(texts))
    raw_precision, _ = precision_recall(np.array(raw), gold, "en")
    assert raw_precision < 0.5
    # Unknown languages come out as "und", not as English.
    for lang in ("xh", "zu", "sn"):
        assert (pred[gold == lang] == "en").mean() < 0.02
        assert (pred[gold == lang] == "und").mean() > 0.5


def test_accuracy_not_below_raw_fasttext(lid, doc3):
    texts, gold = doc3
    raw, _ = lid.predict(pa.array(texts))
    raw = np.array(raw)
    pred = np.array(lid(as_batch(texts)).column("lang").to_pylist())
    labels = {label[9:] for label in lid._model.getLabels("__label__")[0]}
    # "und" is the right answer for a language the model does not know (Norwegian is "no" in lid.176).
    target = np.where(np.isin(gold, list(labels | {"nb"})), gold, "und")
    target = np.where(target == "nb", "no", target)
    assert (pred == target).mean() >= (raw == target).mean()


def test_whole_document_is_classified_not_only_first_line(lid):
    english = " ".join(r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 2))[:1500]
    text = "第一行\n" + english  # a short Chinese first line, then English
    out = lid(as_batch([text]))
    assert out.column("lang").to_pylist() == ["en"]


def test_routes_and_keep_languages(data_dir):
    stage = build_stage({"name": "lid", "keep_languages": ["en", "zh"], "routes": {"en": ["en"], "cjk": ["zh", "ja"]}})
    stage.setup()
    texts = [read_jsonl("zh_msra_news.jsonl.gz", 1)[0]["text"], read_jsonl("en_gum_docs.jsonl.gz", 1)[0]["text"],
             "Ceci est un texte en français, écrit pour vérifier la détection de la langue."]
    out = stage(as_batch(texts))
    assert out.column("lang").to_pylist() == ["zh", "en", "fr"]
    assert out.column("lang_group").to_pylist() == ["cjk", "en", "other"]
    assert out.column(DROP_REASON).to_pylist() == [None, None, "lang"]
    assert all(0 <= s <= 1 for s in out.column("lang_score").to_pylist())


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x02", "\ud7ff" * 3, "x" * 5_000_000])
def test_odd_input_does_not_crash(lid, text):
    out = lid(as_batch([text]))
    assert out.column("lang").to_pylist()[0] is not None


def test_model_files_are_checked(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a fastText model"):
        lid_model_path(str(bad))
    with pytest.raises(ModelError, match="does not exist"):
        lid_model_path(str(tmp_path / "missing.ftz"))
