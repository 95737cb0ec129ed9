"""`lid` English evidence: English recall without giving up precision on languages lid.176 lacks.

Measured on the held-out (`test`) half of tests/lid_eval_set.py; the cut-offs were chosen on `tune`.
"""

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl
from curation.stage import DROP_REASON, build_stage
from curation.stages.lid_rules import english_evidence
from lid_eval_set import UNKNOWN_LINGUA, evaluation_rows


def as_batch(texts):
    return pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                       DROP_REASON: pa.nulls(len(texts), pa.string())})


@pytest.fixture(scope="module")
def held_out():
    rows = [r for r in evaluation_rows() if r["split"] == "test" and r["group"] != "lingua_sentence"]
    return [r["text"] for r in rows], np.array([r["gold"] for r in rows])


def english_precision_recall(stage, texts, gold):
    pred = np.array(stage(as_batch(texts)).column("lang").to_pylist())
    tp = ((pred == "en") & (gold == "en")).sum()
    return tp / max((pred == "en").sum(), 1), tp / (gold == "en").sum()


def test_evaluation_languages_are_unknown_to_the_model_and_split_is_stable():
    stage = build_stage({"name": "lid"})
    stage.setup()
    labels = {label[9:] for label in stage._model.getLabels("__label__")[0]}
    assert not set(UNKNOWN_LINGUA) & labels and not {"ami", "nan"} & labels
    rows = evaluation_rows()
    assert evaluation_rows()[-1]["split"] == rows[-1]["split"]
    web = [r for r in rows if r["group"] == "web" and r["gold"] == "en"]
    assert len(web) == 92  # 20 CCNet head + 10 `lang: en` + 37 WARC pages + 25 read by hand
    for split in ("tune", "test"):
        english = sum(r["gold"] == "en" and r["split"] == split for r in rows)
        assert 300 < english < 400, (split, english)


def test_english_recall_and_unknown_language_precision_on_held_out(held_out):
    texts, gold = held_out
    stage = build_stage({"name": "lid"})
    stage.setup()
    precision, recall = english_precision_recall(stage, texts, gold)
    assert precision >= 0.99 and recall >= 0.99, (precision, recall)
    # The threshold alone (issue 24 item 7) loses about 5% of this English: what the evidence wins back.
    threshold_only = build_stage({"name": "lid", "en_evidence": False})
    threshold_only.setup()
    _, recall_before = english_precision_recall(threshold_only, texts, gold)
    assert recall_before < 0.97
    # Raw fastText keeps all the English and calls more than half of the unknown-language documents English.
    raw = np.array(stage.predict(pa.array(texts))[0])
    assert (raw[gold == "en"] == "en").all()
    assert ((raw == "en") & (gold != "en")).sum() > (gold == "en").sum()


def test_evidence_separates_english_from_bantu_text():
    english = [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 20)]
    lingua = read_jsonl("lid_lingua_75lang.jsonl.gz")
    bantu = [r["text"] for r in lingua if r["unit"] == "doc3" and r["lang"] in ("zu", "xh", "sn")][:60]
    stop_en, vowel_en = english_evidence(pa.array(english))
    stop_bantu, vowel_bantu = english_evidence(pa.array(bantu))
    assert stop_en.min() > 0.15 and vowel_en.max() < 0.45
    assert np.median(stop_bantu) < 0.02 and np.median(vowel_bantu) > 0.85
    empty_stop, empty_vowel = english_evidence(pa.array(["", "123 456", None], pa.string()))
    assert (empty_stop == 0).all() and (empty_vowel == 0).all()


def test_english_kept_only_for_english_predictions_under_threshold():
    # An English API reference line-up from the web samples that lid.176 scores under 0.7.
    page = next(r["text"] for r in read_jsonl("web_commoncrawl_samples.jsonl.gz") if r["id"] == "dolma-cc2019-0316")
    zulu = next(r["text"] for r in read_jsonl("lid_lingua_75lang.jsonl.gz") if r["lang"] == "zu" and r["unit"] == "doc3")
    stage = build_stage({"name": "lid"})
    stage.setup()
    langs, scores = stage.predict(pa.array([page]))
    assert langs == ["en"] and scores[0] < 0.7
    out = stage(as_batch([page, zulu]))
    assert out.column("lang").to_pylist() == ["en", "und"]
    assert out.column("lang_group").to_pylist() == ["en", "other"]
    off = build_stage({"name": "lid", "en_evidence": False})
    off.setup()
    assert off(as_batch([page])).column("lang").to_pylist() == ["und"]
