"""Megatron export: read back with megatron-core's IndexedDataset, every kept document exactly one
Megatron document, whole, equal to its text encoded directly; special tokens' literal text in
documents never yields a separator inside a document."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl
from curation.cli import main as cli_main
from curation.tokenizer.encode import Encoder
from pack_helpers import pack, packed_documents, small_tokenizer, write_inputs

pytest.importorskip("megatron.core")
from megatron.core.datasets.indexed_dataset import IndexedDataset  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return small_tokenizer(tmp_path_factory.mktemp("tok"))


def _export(packed: Path, out: Path) -> dict[str, list[tuple[int, ...]]]:
    assert cli_main(["export", str(packed), "--format", "megatron", "--out", str(out)]) == 0
    summary = json.loads((packed / "pack.json").read_text())
    documents = {}
    for source in summary["sources"]:
        dataset = IndexedDataset(str(out / source))
        assert dataset.index.dtype == np.uint16
        documents[source] = [tuple(dataset[i].tolist()) for i in range(len(dataset))]
        assert len(dataset.document_indices) == len(dataset) + 1
    return documents


def _expected(encoder: Encoder, docs: dict[str, str]) -> Counter:
    values, offsets = encoder.encode(list(docs.values()))
    return Counter(tuple(values[offsets[i]:offsets[i + 1]].tolist()) + (encoder.sep_id,) for i in range(len(docs)))


@pytest.mark.parametrize("strategy", ["concat", "bestfit"])
def test_megatron_documents_are_the_kept_documents_whole(tokenizer, tmp_path, strategy):
    """Four input shards, seq_len 128: with concat the last document of each shard is cut between the
    shard and `_tail`; it must still come out as one Megatron document (before the fix: two, the first
    without its separator)."""
    docs = write_inputs(tmp_path / "in")
    packed = tmp_path / "packed"
    assert pack(tokenizer, packed, tmp_path / "in", "--seq-len", "128", "--strategy", strategy) == 0
    if strategy == "concat":
        tail = json.loads((packed / "default" / "_tail.json").read_text())
        assert len(tail["continues"]) >= 3  # the case under test occurs (one per shard ending mid-document)
    exported = _export(packed, tmp_path / "megatron")
    assert list(exported) == ["default"]
    encoder = Encoder(tokenizer)
    got = exported["default"]
    assert len(got) == len(docs)
    assert Counter(got) == _expected(encoder, docs)
    assert all(doc.count(encoder.sep_id) == 1 and doc[-1] == encoder.sep_id for doc in got)


SPECIALS = ("<|sep|>", "<|pad|>", "<|bos|>", "<|eos|>")


def _special_docs(tmp_path: Path) -> dict[str, str]:
    """Real documents with every special token's literal text spliced in: at the start, the middle,
    the end, and glued to words."""
    rows = read_jsonl("en_gum_docs.jsonl.gz", 12) + read_jsonl("zh_msra_news.jsonl.gz", 12) + \
        read_jsonl("code_humanevalx_linux.jsonl.gz", 12)
    docs = {}
    for i, row in enumerate(r for r in rows if r["text"]):
        text, special = row["text"], SPECIALS[i % len(SPECIALS)]
        middle = len(text) // 2
        docs[f"s{i}"] = f"{special}{text[:middle]}{special}{''.join(SPECIALS)}x{text[middle:]} see{special}"
    pq.write_table(pa.Table.from_pylist([{"id": k, "text": v} for k, v in docs.items()]), tmp_path / "specials.parquet")
    return docs


def test_special_token_text_never_yields_a_separator_inside_a_document(tokenizer, tmp_path):
    """The packing half of issue 18 item 2 (the encoder half is tokenizer/encode.py): documents holding
    <|sep|> <|pad|> <|bos|> <|eos|> as text pack and export with the separator only at their ends."""
    encoder = Encoder(tokenizer)
    docs = _special_docs(tmp_path)
    packed = tmp_path / "packed"
    assert pack(tokenizer, packed, tmp_path / "specials.parquet", "--seq-len", "64") == 0
    summary = json.loads((packed / "pack.json").read_text())
    controls = {encoder.tokenizer.token_to_id(t) for t in SPECIALS}
    # packed shards: the separator only at document ends, no other control id, and each document's
    # tokens decode back to its text
    stored = packed_documents(packed, summary)
    assert set(stored) == set(docs)
    for doc_id, tokens in stored.items():
        assert tokens[-1] == encoder.sep_id
        assert not controls & set(tokens[:-1].tolist()), doc_id
        assert encoder.decode(tokens[:-1]) == docs[doc_id]
    # the Megatron export: one document each, the separator only at its end
    exported = _export(packed, tmp_path / "megatron")["default"]
    assert Counter(exported) == _expected(encoder, docs)
    for doc in exported:
        assert not controls & set(doc[:-1]) and doc[-1] == encoder.sep_id
