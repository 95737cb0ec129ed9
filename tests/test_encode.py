"""Encoder: fastokens gives HF tokenizers' ids on all of ../shared/data, special tokens' text in a
document never becomes a control id (with either backend), and the fallback to tokenizers says why."""

from __future__ import annotations

import gzip
import json
import logging
import random
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from conftest import DATA
from curation.tokenizer import parity_sample
from curation.tokenizer.encode import EncodeError, Encoder, first_difference
from curation.tokenizer.shards import sha256_file
from curation.tokenizer.train import SPECIAL_TOKENS, train_tokenizer

BATCH_CHARS = 1 << 20  # about the executor's 1 MiB batches


def shared_documents() -> list[tuple[str, int, str]]:
    """(file, line, text) of every document of the nine files, empty ones included."""
    docs = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line, row in enumerate(handle, 1):
                docs.append((path.name, line, json.loads(row)["text"] or ""))
    return docs


@pytest.fixture(scope="module")
def documents() -> list[tuple[str, int, str]]:
    docs = shared_documents()
    assert len({name for name, _, _ in docs}) == 9, sorted({name for name, _, _ in docs})
    return docs


@pytest.fixture(scope="module")
def tokenizer_file(documents, tmp_path_factory):
    """A tokenizer trained on every 20th document of the shared data (all files)."""
    return train_tokenizer([text for _, _, text in documents[::20] if text], tmp_path_factory.mktemp("tok"),
                           vocab_size=8000)


def batches(texts: list[str]):
    start = 0
    while start < len(texts):
        stop, chars = start, 0
        while stop < len(texts) and (stop == start or chars + len(texts[stop]) <= BATCH_CHARS):
            chars += len(texts[stop])
            stop += 1
        yield start, texts[start:stop]
        start = stop


def test_fastokens_gives_the_ids_of_tokenizers_on_all_shared_data(tokenizer_file, documents):
    """Every document of the nine files, in the executor's batch size: fastokens' ids (and document
    lengths) are tokenizers' ids with special tokens split."""
    fast, slow = Encoder(tokenizer_file), Encoder(tokenizer_file, backend="tokenizers")
    assert (fast.backend, fast.fallback_reason) == ("fastokens", None)
    assert slow.backend == "tokenizers"
    texts = [text for _, _, text in documents]
    tokens = 0
    for start, batch in batches(texts):
        ours, theirs = fast.encode(batch), slow.encode(batch)
        why = first_difference(batch, ours, theirs)
        if why:
            name, line, _ = documents[start + (int(why.split()[1]) if why.startswith("text ") else 0)]
            pytest.fail(f"{name} line {line}: {why}")
        tokens += len(ours[0])
    assert tokens > 5_000_000  # all of it was encoded


def spliced(texts: list[str], specials: list[str], seed: int = 0) -> list[str]:
    """Real documents with special tokens' text put in at random places: inside words, at the start
    and end, several in a row."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        pieces = list(text)
        for _ in range(rng.randint(1, 4)):
            pieces.insert(rng.randint(0, len(pieces)), rng.choice(specials) * rng.randint(1, 2))
        out.append("".join(pieces))
    out.append("".join(specials) + texts[0] + specials[-1])
    out.append(specials[0] + " " + specials[1] + "\n" + specials[2] + "\t" + specials[3])
    return out


def test_special_token_text_in_documents_is_text(tokenizer_file, documents):
    rng = random.Random(1)
    by_file: dict[str, list[str]] = {}
    for name, _, text in documents:
        if text:
            by_file.setdefault(name, []).append(text)
    real = [text for texts in by_file.values() for text in rng.sample(texts, min(40, len(texts)))]
    specials = list(SPECIAL_TOKENS)
    texts = spliced(real, specials)
    plain = Tokenizer.from_file(str(tokenizer_file))
    control = [plain.token_to_id(t) for t in specials]
    # the hazard is real: tokenizers' default makes the text a control id
    assert set(control) <= set(plain.encode(texts[-1], add_special_tokens=False).ids)
    split = Tokenizer.from_file(str(tokenizer_file))
    split.encode_special_tokens = True
    expected = [e.ids for e in split.encode_batch(texts, add_special_tokens=False)]
    for encoder in (Encoder(tokenizer_file), Encoder(tokenizer_file, backend="tokenizers")):
        values, offsets = encoder.encode(texts)
        assert not np.isin(values, control).any(), encoder.backend
        assert sorted(encoder.control_ids.tolist()) == sorted(control)
        for i, text in enumerate(texts):
            ids = values[offsets[i]:offsets[i + 1]]
            assert ids.tolist() == expected[i], (encoder.backend, text[:80])
            assert encoder.decode(ids) == text, (encoder.backend, text[:80])


def test_the_parity_sample_covers_what_it_says(tokenizer_file):
    texts = parity_sample.documents(SPECIAL_TOKENS)
    joined = "".join(texts)
    for needle in ("中", "カ", "ひ", "щ", "ع", "न", "👨‍👩‍👧‍👦", "\r\n", "\t", "\u3000", "\x00", "123456789", *SPECIAL_TOKENS):
        assert needle in joined, needle
    encoder = Encoder(tokenizer_file)
    values, offsets = encoder.encode(texts)
    assert [encoder.decode(values[offsets[i]:offsets[i + 1]]) for i in range(len(texts))] == texts
    assert not np.isin(values, encoder.control_ids).any()


def test_encoder_attributes(tokenizer_file):
    encoder = Encoder(tokenizer_file, "auto")
    assert encoder.sha256 == sha256_file(tokenizer_file)
    assert encoder.dtype == np.uint16 and encoder.vocab_size == 8000
    assert (encoder.sep_id, encoder.pad_id) == (3, 2)
    values, offsets = encoder.encode([])
    assert len(values) == 0 and offsets.tolist() == [0]
    values, offsets = encoder.encode(["", None, "a"])
    assert offsets[:3].tolist() == [0, 0, 0] and offsets[3] > 0
    with pytest.raises(EncodeError, match="backend"):
        Encoder(tokenizer_file, backend="fast")


def test_falls_back_when_fastokens_differs(tokenizer_file, monkeypatch, caplog):
    import fastokens

    real = fastokens.Tokenizer

    class OffByOne:
        """fastokens with one id changed in the 20th text of every batch."""

        def __init__(self, inner):
            self.inner, self.vocab_size = inner, inner.vocab_size

        @staticmethod
        def from_json_str(text):
            return OffByOne(real.from_json_str(text))

        def encode_batch_flat(self, texts, **kwargs):
            ids, offsets = self.inner.encode_batch_flat(texts, **kwargs)
            ids = bytearray(ids)
            at = int(np.frombuffer(offsets, np.uint64)[20]) * 4
            ids[at] ^= 1
            return bytes(ids), offsets

    monkeypatch.setattr(fastokens, "Tokenizer", OffByOne)
    with caplog.at_level(logging.WARNING, logger="curation.tokenizer.encode"):
        encoder = Encoder(tokenizer_file)
    assert encoder.backend == "tokenizers"
    assert "different ids" in encoder.fallback_reason and "text 20" in encoder.fallback_reason
    assert encoder.fallback_reason in caplog.text
    assert encoder.encode(["still works"])[1][-1] > 0


def test_falls_back_when_fastokens_is_missing_or_fails(tokenizer_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastokens", None)
    encoder = Encoder(tokenizer_file)
    assert encoder.backend == "tokenizers" and "not installed" in encoder.fallback_reason
    monkeypatch.undo()

    import fastokens

    class Broken:
        vocab_size = 8000

        @staticmethod
        def from_json_str(text):
            return Broken()

        def encode_batch_flat(self, texts, **kwargs):
            raise RuntimeError("boom")

    monkeypatch.setattr(fastokens, "Tokenizer", Broken)
    encoder = Encoder(tokenizer_file)
    assert encoder.backend == "tokenizers" and "RuntimeError: boom" in encoder.fallback_reason


def bpe_file(path, merges_spell_sep: bool, pre_tokenizer=None):
    """A tiny byte-level BPE with the four special tokens, whose merges spell `<|sep|>` or not."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *sorted(alphabet)])}
    merges = []
    if merges_spell_sep:
        for left, right in (("<", "|"), ("<|", "s"), ("<|s", "e"), ("<|se", "p"), ("<|sep", "|"), ("<|sep|", ">")):
            merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.save(str(path))
    return path


def test_a_tokenizer_whose_merges_spell_a_special_token_is_refused(tmp_path):
    """Splitting special tokens is not enough when BPE can spell one from plain text: encode says so."""
    path = bpe_file(tmp_path / "tokenizer.json", merges_spell_sep=True)
    for backend in ("auto", "tokenizers"):
        encoder = Encoder(path, backend=backend)
        assert encoder.encode(["plain text"])[1][-1] == 10
        with pytest.raises(EncodeError, match=r"document 1 of the batch encodes to control id 3 \('<\|sep\|>'\)"):
            encoder.encode(["fine", "a<|sep|>b"])
    assert Encoder(bpe_file(tmp_path / "ok.json", merges_spell_sep=False)).encode(["a<|sep|>b"])[1][-1] == 9


def test_falls_back_on_a_component_fastokens_lacks(tmp_path):
    path = bpe_file(tmp_path / "tokenizer.json", merges_spell_sep=False,
                    pre_tokenizer=pre_tokenizers.Sequence([pre_tokenizers.UnicodeScripts(),
                                                           pre_tokenizers.ByteLevel(add_prefix_space=False)]))
    encoder = Encoder(path)
    assert encoder.backend == "tokenizers" and "cannot load" in encoder.fallback_reason, encoder.fallback_reason
    assert encoder.decode(encoder.encode(["中文 and <|pad|>"])[0]) == "中文 and <|pad|>"


def test_encoding_in_pieces_equals_one_call(tokenizer_file, documents, monkeypatch):
    """Both backends encode in pieces (bounded memory): the ids are the same whatever the piece size,
    with documents longer than a piece and empty ones."""
    from curation.tokenizer import encode as encode_module

    texts = [text for _, _, text in documents[::1500]] + ["", "x"] + [max((t for _, _, t in documents), key=len)]
    assert max(len(t) for t in texts) > 5_000
    for backend in ("auto", "tokenizers"):
        encoder = Encoder(tokenizer_file, backend=backend)
        whole = encoder.encode(texts)
        for chunk in (1, 5_000):
            monkeypatch.setattr(encode_module, "ENCODE_CHUNK_CHARS", chunk)
            monkeypatch.setattr(encode_module, "FAST_CHUNK_CHARS", chunk)
            assert first_difference(texts, encoder.encode(texts), whole) is None, (backend, chunk)
        monkeypatch.undo()


def test_fastokens_holds_no_hf_tokenizer_and_is_renewed_with_the_same_ids(tokenizer_file, documents, monkeypatch):
    """With fastokens the HF tokenizer is freed after the parity check (loaded again only when asked
    for), and the fastokens tokenizer built again every FAST_RENEW_CHARS characters gives the same ids."""
    from curation.tokenizer import encode as encode_module

    encoder = Encoder(tokenizer_file)
    assert encoder.backend == "fastokens" and encoder._hf is None
    texts = [text for _, _, text in documents[::300]]
    whole = encoder.encode(texts)
    monkeypatch.setattr(encode_module, "FAST_RENEW_CHARS", 10_000)
    monkeypatch.setattr(encode_module, "FAST_CHUNK_CHARS", 5_000)
    first = encoder._fast
    assert first_difference(texts, encoder.encode(texts), whole) is None
    assert encoder._fast is not first
    assert encoder._hf is None  # encoding never needed it
    assert encoder.decode(whole[0][:whole[1][1]]) == texts[0] and encoder._hf is not None
    assert Encoder(tokenizer_file, backend="tokenizers")._hf is not None
