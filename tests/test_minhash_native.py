"""The compiled MinHash signature kernel (stages/minhash_kernels.cc) against the numpy path it replaces:
the same signature bytes on real shared text in several scripts, code and edge cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conftest import read_jsonl
from curation.stage import build_stage
from curation.stages import minhash_dedup, minhash_native

pytestmark = pytest.mark.skipif(minhash_native.library() is None,
                                reason="the compiled MinHash kernel is not built (scripts/build_kenlm.sh)")

FILES = ["web_commoncrawl_samples.jsonl.gz", "zh_msra_news.jsonl.gz", "code_humanevalx_linux.jsonl.gz",
         "lid_lingua_75lang.jsonl.gz"]
EDGES = ["", " ", "a", "a b", "one two three four five", "one two three four five six", "的的的", "\x00 \x00"]


def numpy_signatures(monkeypatch, stage, text, langs):
    with monkeypatch.context() as patch:
        patch.setattr(minhash_native, "signatures_into", lambda *args: False)
        return stage.signatures(text, langs)


@pytest.mark.parametrize("name", FILES)
def test_kernel_gives_numpy_signatures_on_real_text(monkeypatch, name: str) -> None:
    rows = read_jsonl(name)[:1500]
    text = pa.array([r["text"] or "" for r in rows] + EDGES)
    langs = pa.array([r.get("lang") or "en" for r in rows] + ["en"] * len(EDGES))
    for options in ({}, {"ngram": 3, "num_perm": 200, "seed": 7}):
        stage = build_stage({"name": "minhash_dedup", **options})
        compiled = stage.signatures(text, langs)
        expected = numpy_signatures(monkeypatch, stage, text, langs)
        assert compiled.dtype == expected.dtype == np.uint32
        assert compiled.shape == expected.shape == (len(text), stage.config.num_perm)
        np.testing.assert_array_equal(compiled, expected)
        assert (expected[-len(EDGES)] == np.iinfo(np.uint32).max).all()  # no words: the max value stays


def test_kernel_refuses_a_document_index_outside_the_batch() -> None:
    a, b = minhash_dedup.permutations(16, 1)
    out = np.full((2, 16), np.iinfo(np.uint32).max, np.uint32)
    with pytest.raises(ValueError, match="outside the batch"):
        minhash_native.signatures_into(out, np.array([1, 2], np.uint32), np.array([0, 2]), a, b)
