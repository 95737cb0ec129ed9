"""The compiled batch scorer (curation/native/kenlm_scorer.cc, built by scripts/build_kenlm.sh): it must
read the text exactly as `lm_text.normalise` + `lm_text.lines` do and give the scores of `kenlm.Model`."""

from __future__ import annotations

import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, read_jsonl
from curation.stages.quality import native as kenlm_native
from curation.stages.model_files import ModelError
from curation.stages.quality.models import KenlmTraining, kenlm_binaries, train_kenlm
from curation.stages.quality import lm_text
from curation.stages.quality import PerplexityQuality


def python_normalised(text: pa.Array, cjk: bool) -> list[str]:
    """`lm_text`'s normalisation per document: tokens as KenLM splits them (ASCII white space), one
    space between tokens, non-blank lines joined by a newline."""
    lines, parent = lm_text.lines(lm_text.normalise(text, cjk))
    out: list[list[str]] = [[] for _ in range(len(text))]
    for line, row in zip(lines.to_pylist(), parent.to_pylist()):
        out[row].append(b" ".join(line.encode().split()).decode())
    return ["\n".join(doc) for doc in out]


def test_the_setup_builds_the_scorer():
    assert kenlm_native.library() is not None, f"{kenlm_native.library_path()} missing: scripts/build_kenlm.sh builds it"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.jsonl.gz")))
def test_normalisation_equals_python_on_all_shared_text(name):
    text = pa.array([r["text"] for r in read_jsonl(name)], pa.string())
    for cjk in (False, True):
        expected, got = python_normalised(text, cjk), kenlm_native.normalise(text, cjk)
        different = [i for i in range(len(text)) if expected[i] != got[i]]
        assert not different, (name, cjk, expected[different[0]][:300], got[different[0]][:300])


_ODD = list("aZ9 \t\n\r\x0b\x0c\x1c\x85\xa0\u3000\u2028\u200b<>/sunkK.,'-«»“”北京カ\u0130\u212a\u1e9e\u023a\ufeff")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(st.one_of(st.sampled_from(_ODD), st.characters(blacklist_categories=("Cs",))), max_size=40), max_size=6),
       st.booleans())
def test_normalisation_equals_python_on_any_text(texts, cjk):
    """Odd white space, case mappings that change the UTF-8 length, KenLM's symbols in any case."""
    text = pa.array(texts, pa.string())
    assert kenlm_native.normalise(text, cjk) == python_normalised(text, cjk)


@pytest.fixture(scope="module")
def english_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native")
    gold = [{"id": r["id"], "text": r["text"], "lang": "en"} for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz")]
    pq.write_table(pa.Table.from_pylist(gold), tmp / "gold.parquet")
    # 100 MB of sort memory, not the default 40% of RAM (2 s to allocate): the same model bytes
    train_kenlm(KenlmTraining(lang="en", inputs=[str(tmp / "gold.parquet")], out=tmp / "models", order=4,
                              memory="100M"))
    return tmp / "models"


def test_stage_scores_equal_the_kenlm_module(english_model):
    texts = [r["text"] for name in ("web_commoncrawl_samples.jsonl.gz", "en_ud_ewt_web_docs.jsonl.gz", "en_gum_docs.jsonl.gz")
             for r in read_jsonl(name)]
    texts += [r["text"] for r in read_jsonl("lid_lingua_75lang.jsonl.gz", 3000)] + ["", "\n \n", "<unk> <s>"]
    batch = pa.record_batch({"id": pa.array([str(i) for i in range(len(texts))]), "text": pa.array(texts),
                             "drop_reason": pa.nulls(len(texts), pa.string())})
    out = {}
    for scorer in ("python", "native"):
        stage = PerplexityQuality(model_dir=str(english_model), default_lang="en", scorer=scorer, paragraph_ppl=True)
        out[scorer] = stage(batch)
        assert ("python_scorer" in stage.metrics) == (scorer == "python")
    python, native = out["python"], out["native"]
    ppl_p, ppl_n = (b.column("ppl").to_numpy(zero_copy_only=False) for b in (python, native))
    assert np.array_equal(np.isnan(ppl_p), np.isnan(ppl_n)) and np.isnan(ppl_n[-3:]).all()  # no line: no score
    np.testing.assert_allclose(ppl_n, ppl_p, rtol=1e-9)  # the same float32 sums as the kenlm module
    np.testing.assert_allclose(native.column("lm_score").to_numpy(zero_copy_only=False),
                               python.column("lm_score").to_numpy(zero_copy_only=False), rtol=1e-9)
    assert native.column("quality_bucket").equals(python.column("quality_bucket"))
    for a, b in zip(python.column("paragraph_ppl").to_pylist(), native.column("paragraph_ppl").to_pylist()):
        assert (a is None) == (b is None) and (a is None or np.allclose(a, b, rtol=1e-9))


def test_trie_models_score_through_the_virtual_interface(tmp_path):
    """Binaries built as `trie` (smaller, slower) take KenLM's generic path: the same scores."""
    import kenlm

    lmplz, build_binary = kenlm_binaries()
    lines = lm_text.lines(lm_text.normalise(pa.array([r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz")])))[0]
    (tmp_path / "corpus.txt").write_text("\n".join(lines.to_pylist()) + "\n")
    with open(tmp_path / "corpus.txt", "rb") as source, open(tmp_path / "lm.arpa", "wb") as sink:
        # 100 MB of sort memory: lmplz's default, 80% of RAM, takes 4 s to allocate (the same ARPA file)
        subprocess.run([str(lmplz), "-o", "3", "--discount_fallback", "-S", "100M"], stdin=source, stdout=sink,
                       stderr=subprocess.DEVNULL, check=True)
    subprocess.run([str(build_binary), "trie", str(tmp_path / "lm.arpa"), str(tmp_path / "lm.trie")], capture_output=True, check=True)
    docs = pa.array([r["text"] for r in read_jsonl("en_ud_ewt_web_docs.jsonl.gz", 200)])
    logprob, _, _, per_line = kenlm_native.NativeScorer(tmp_path / "lm.trie").score(docs, cjk=False, per_line=True)
    model = kenlm.Model(str(tmp_path / "lm.trie"))
    reference_lines, parent = lm_text.lines(lm_text.normalise(docs))
    reference = np.array([model.score(s) for s in reference_lines.to_pylist()])
    np.testing.assert_allclose(per_line[0], reference, rtol=1e-6)
    np.testing.assert_array_equal(per_line[2], parent.to_numpy())
    np.testing.assert_allclose(logprob, np.bincount(parent.to_numpy(), weights=reference, minlength=len(docs)), rtol=1e-6)


def test_bad_model_files_name_the_file(tmp_path, english_model):
    (tmp_path / "junk.binary").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.binary"):
        kenlm_native.NativeScorer(tmp_path / "junk.binary")
    with pytest.raises(ValueError, match="missing.binary"):
        kenlm_native.NativeScorer(tmp_path / "missing.binary")
    with pytest.raises(ValueError, match="scorer must be"):
        PerplexityQuality(model_dir=str(english_model), scorer="fast")
