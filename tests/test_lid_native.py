"""The compiled lid predict (stages/lid_kernels.cc) against the pybind multilinePredict path it replaces:
the same labels and the same float32 scores, bit for bit, on every document of ../shared/data and on
hand-made edge cases, and the same stage output."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import DATA
from curation.stage import build_stage
from curation.stages import lid_native
from curation.stages.lid import LINE_BREAKS, LanguageID

pytestmark = pytest.mark.skipif(lid_native.library() is None,
                                reason="the compiled lid predict is not built (scripts/build_kenlm.sh) or CURATION_LID_NATIVE=0")

EDGES = [
    "", " ", "\t\n\r\v\f ", "\x00", "a\x00b", "\x00\x00 hello world",
    "__label__en", "__label__en this is english", "__label__xx", "__label__", "bonjour __label__fr le monde",
    "</s>", "the house </s> und das Haus ist rot", "</s></s> x", "<s>", "the", "The quick brown fox jumps over the lazy dog",
    "a" * 10_000, "x" * 10_000 + " the house is red", "é" * 3_000, "日本語のテキスト" * 400, "😀" * 2_500,
    "a" * 1_999 + "€uro and more words", "a" * 1_998 + "😀 words", "word " * 399 + "abcdé" + " more",
    "\x85", "a\x85b", "line one\u2028line two\u2029line three", "\r\nrow\vone\fthree\ttab",
    "Hello мир 世界 مرحبا שלום नमस्ते", "I love 🍕 pizza 😀😀 so much", "non\u00a0breaking\u3000spaces",
    "e\u0301 combining", "\ufeffbyte order mark", "ÀÉÎÕÜ ÇÑ ßẞ", "  leading and trailing  ",
]


def all_texts() -> list[str]:
    texts = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] or "" for line in handle]
    return texts


@pytest.fixture(scope="module")
def stage() -> LanguageID:
    stage = build_stage({"name": "lid"})
    stage.setup()
    assert stage._native is not None
    return stage


def pybind(stage: LanguageID, text: pa.Array, k: int, max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """The path the stage took before the compiled one: Arrow's one-line prefix, then pybind."""
    one_line = pc.replace_substring_regex(pc.utf8_slice_codeunits(text, 0, max_chars), LINE_BREAKS, " ")
    names, probs = stage._model.multilinePredict(one_line.to_pylist(), k, 0.0, "strict")
    labels = np.full((len(names), k), -1, np.int32)
    scores = np.zeros((len(names), k), np.float32)
    index = {label: i for i, label in enumerate(stage._native.labels)}
    for row, (n, p) in enumerate(zip(names, probs)):
        labels[row, :len(n)] = [index[label] for label in n]
        scores[row, :len(p)] = p
    return labels, scores


def assert_same(stage: LanguageID, text: pa.Array, k: int, max_chars: int = 2000) -> None:
    labels, scores = stage._native.predict(text, max_chars, k)
    expected_labels, expected_scores = pybind(stage, text, k, max_chars)
    bad = np.flatnonzero((labels != expected_labels).any(axis=1)
                         | (scores.view(np.uint32) != expected_scores.view(np.uint32)).any(axis=1))
    assert len(bad) == 0, f"{len(bad)} of {len(text)} documents differ, first {bad[:5]}: " \
                          f"{labels[bad[:5]]} {scores[bad[:5]]} vs {expected_labels[bad[:5]]} {expected_scores[bad[:5]]}"


def test_all_shared_documents_bit_identical(stage):
    """k=1 (the stage's call) on every document; k=2 (its runner-up call) on every document as well."""
    texts = pa.array(all_texts())
    assert len(texts) > 190_000
    assert_same(stage, texts, 1)
    assert_same(stage, texts, 2)


@pytest.mark.parametrize("max_chars", [1, 5, 2000])
def test_edge_cases_bit_identical(stage, max_chars):
    text = pa.array(EDGES)
    for k in (1, 2, 5):
        assert_same(stage, text, k, max_chars)
    if max_chars == 2000:
        labels, _ = stage._native.predict(text, max_chars, 1)
        assert (labels[[0, 1, 2, 3, 6, 8, 9]] == -1).all()  # no words, or only labels: no prediction ("und")


def test_sliced_large_and_null_arrays(stage):
    text = pa.array(EDGES + all_texts()[::997])
    assert_same(stage, text.slice(7, 150), 2)
    assert_same(stage, text.cast(pa.large_string()).slice(3), 1)
    # A null reads as "" (no label); the pybind path refuses it, and the reader fills nulls with "".
    labels, scores = stage._native.predict(pa.array([None, "the house is red", None]), 2000, 1)
    assert labels[0, 0] == labels[2, 0] == -1 and scores[0, 0] == 0 and labels[1, 0] >= 0


def test_word_cache_is_bounded_and_cleared(stage):
    """Many distinct words: the cache clears itself instead of growing, and answers stay the same."""
    words = [f"w{i:07d}x" for i in range(200_000)]
    text = pa.array([" ".join(words[i:i + 100]) for i in range(0, len(words), 100)] * 2)
    before = stage._native.cache_stats()
    assert_same(stage, text, 1)
    after = stage._native.cache_stats()
    assert after["clears"] > before["clears"] and after["entries"] <= 32_768


def test_stage_output_same_with_and_without_native(stage):
    texts = all_texts()[::20] + EDGES
    batch = pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(texts))], "text": texts,
                                        "drop_reason": pa.nulls(len(texts), pa.string())})
    compiled = stage(batch)
    native, stage._native = stage._native, None
    try:
        expected = stage(batch)
    finally:
        stage._native = native
    for name in ("lang", "lang_group", "drop_reason"):
        assert compiled.column(name).to_pylist() == expected.column(name).to_pylist()
    assert compiled.column("lang_score").to_numpy().view(np.uint32).tolist() == \
        expected.column("lang_score").to_numpy().view(np.uint32).tolist()


def test_types_other_than_string_are_refused(stage):
    """A string_view array has no int32 offsets: read as if it had, its views sent the kernel past the
    data buffer. The pybind path refuses such arrays too (utf8_slice_codeunits has no kernel for them)."""
    for text in (pa.array(["the house is red"], pa.string_view()), pa.array(["the house"]).dictionary_encode(),
                 pa.array([b"the house"])):
        with pytest.raises(ValueError, match="string"):
            stage._native.predict(text, 2000, 1)
    with pytest.raises(ValueError, match="k"):
        stage._native.predict(pa.array(["the house"]), 2000, 0)


CONCURRENT = """
import threading, numpy as np, pyarrow as pa
from curation.stage import build_stage
stage = build_stage({"name": "lid"}); stage.setup()
model = stage._native
words = [f"w{i:06d}é" for i in range(60_000)]
text = pa.array([" ".join(words[i:i + 60]) + " the house is red" for i in range(0, len(words), 60)])
expected = model.predict(text, 2000, 2)
same = []
def work():
    for _ in range(6):
        labels, probs = model.predict(text, 2000, 2)
        same.append(np.array_equal(labels, expected[0]) and np.array_equal(probs, expected[1]))
threads = [threading.Thread(target=work) for _ in range(2)]
for thread in threads: thread.start()
for thread in threads: thread.join()
assert all(same) and len(same) == 12, same
"""


def test_two_threads_on_one_model():
    """ctypes releases the GIL, and a handle has one word cache and one set of scratch vectors: two threads
    predicting on the same model at once corrupted the heap (abort or SIGSEGV; the pybind path held the
    GIL). In a subprocess, so that a crash fails this test instead of ending the run."""
    result = subprocess.run([sys.executable, "-c", CONCURRENT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
