"""Tokenize and pack: packing invariants, round trip on a slice of every ../shared/data file (every
source, documents split over sequences, empty ones), determinism, Megatron export, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DATA, read_jsonl, write_jsonl
from curation.cli import main as cli_main
from curation.tokenizer import packing
from curation.tokenizer.encode import EncodeError, Encoder
from curation.tokenizer.shards import ShardError, open_shard
from curation.tokenizer.train import train_tokenizer

SEP, PAD = 3, 2


def _docs(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, 60000, n).astype(np.uint16) for n in lengths]


def _check_packed(packed: packing.Packed, flat: np.ndarray, offsets: np.ndarray, seq_len: int) -> None:
    """Every segment holds its document's tokens at its offset; segments of a sequence are contiguous
    from position 0 and end before the padding; no segment crosses a sequence."""
    covered = np.zeros(len(flat), np.int64)
    for s, pos, length, doc, off in zip(packed.seg_seq, packed.seg_pos, packed.seg_len, packed.seg_doc, packed.seg_doc_offset):
        assert 0 <= pos and pos + length <= seq_len
        start = offsets[doc] + off
        assert off + length <= offsets[doc + 1] - offsets[doc]
        np.testing.assert_array_equal(packed.tokens[s, pos:pos + length], flat[start:start + length])
        covered[start:start + length] += 1
    for s in range(packed.sequences):
        rows = np.flatnonzero(packed.seg_seq == s)
        ends = packed.seg_pos[rows] + packed.seg_len[rows]
        assert packed.seg_pos[rows][0] == 0 and np.all(packed.seg_pos[rows][1:] == ends[:-1])
        assert np.all(packed.tokens[s, ends[-1]:] == PAD)
    return covered


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=40), st.integers(2, 128), st.integers(1, 8))
def test_packing_invariants(lengths, seq_len, window):
    flat, offsets = packing.with_separators(_docs(lengths), SEP)
    assert len(flat) == sum(lengths) + len(lengths)
    assert np.all(flat[offsets[1:] - 1] == SEP)

    packed, used = packing.pack_concat(flat, offsets, seq_len)
    assert packed.padding == 0 and used == packed.sequences * seq_len and len(flat) - used < seq_len
    covered = _check_packed(packed, flat, offsets, seq_len)
    assert np.all(covered[:used] == 1) and np.all(covered[used:] == 0)
    np.testing.assert_array_equal(packed.tokens.reshape(-1), flat[:used])  # concat keeps the order

    first = int(np.searchsorted(offsets, used, side="right") - 1)
    tail_offsets = np.append(np.maximum(offsets[first:-1], used), offsets[-1]) - used
    last = packing.pad_last(flat[used:], tail_offsets, seq_len, PAD, doc_base=first, first_doc_offset=used - offsets[first])
    both = packing.concat_packed([packed, last], seq_len, flat.dtype)
    covered = _check_packed(both, flat, offsets, seq_len)
    assert np.all(covered == 1), "concat loses no token"
    assert both.padding == (both.sequences * seq_len - len(flat))

    best = packing.pack_bestfit(flat, offsets, seq_len, PAD, window)
    covered = _check_packed(best, flat, offsets, seq_len)
    assert np.all(covered == 1)
    assert best.padding == best.sequences * seq_len - len(flat)
    # documents that fit are never split
    for doc, n in enumerate(np.diff(offsets)):
        if n <= seq_len:
            assert np.count_nonzero(best.seg_doc == doc) == 1


def test_bestfit_pads_less_with_a_wider_window():
    rng = np.random.default_rng(1)
    flat, offsets = packing.with_separators(_docs(rng.integers(20, 900, 3000).tolist()), SEP)
    narrow = packing.pack_bestfit(flat, offsets, 1024, PAD, window=1)
    wide = packing.pack_bestfit(flat, offsets, 1024, PAD, window=64)
    assert wide.padding < narrow.padding / 3
    assert wide.padding / wide.tokens.size < 0.05


# --- end to end on real text ------------------------------------------------------------------------

SOURCES = {"web": "web_*", "wiki": "en_wikitext*,zh_ud*", "news": "zh_msra*", "prose": "en_gum*,en_ud*",
           "code": "code_*", "reviews": "zh_reviews*", "multilingual": "lid_*"}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    # 1,000 documents of each of four scripts' files: 2.9 M characters train in 6 s (3,000 of each took
    # 22 s); no test here depends on how well the vocabulary compresses
    out = tmp_path_factory.mktemp("tok")
    texts = [r["text"] for name in ("en_gum_docs.jsonl.gz", "zh_msra_news.jsonl.gz", "code_humanevalx_linux.jsonl.gz",
                                    "lid_lingua_75lang.jsonl.gz") for r in read_jsonl(name, 1000) if r["text"]]
    return train_tokenizer(texts, out, vocab_size=3000)


SLICE_BYTES = 1_000_000


@pytest.fixture(scope="module")
def pack_inputs(tmp_path_factory) -> Path:
    """Every ../shared/data file under its own name, cut to about SLICE_BYTES of text: every k-th document
    (k from the file's size, so the 75 languages and the reviews are spread through), and every empty
    one. 6.6 MB of the 56 MB: the round trip re-encodes all of it with HF tokenizers, which took a minute
    on the whole; that fastokens gives HF's ids on all of the data is tests/test_encode.py's check."""
    folder = tmp_path_factory.mktemp("pack_in")
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        step = -(-sum(len(r["text"].encode("utf-8")) for r in rows) // SLICE_BYTES)
        write_jsonl(folder / path.name, [r for i, r in enumerate(rows) if i % step == 0 or not r["text"]], compress=True)
    return folder


def _all_docs(folder: Path) -> dict[str, str]:
    docs = {}
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if row["text"]:
                    docs[row["id"]] = row["text"]
    return docs


def _pack(tokenizer_file, inputs, out, *extra, executor="local"):
    args = ["pack", "--tokenizer", str(tokenizer_file), "--out", str(out), "--executor", executor, "--seq-len", "512"]
    for name, patterns in SOURCES.items():
        args += ["--source", f"{name}={patterns}"]
    return cli_main([*args, *extra, str(inputs / "*.jsonl.gz")])


@pytest.fixture(scope="module")
def packed_concat(tokenizer_file, pack_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    assert _pack(tokenizer_file, pack_inputs, out) == 0
    return out


def _documents_from_index(folder: Path, summary: dict) -> tuple[dict[str, list], int, int]:
    """doc id -> [(doc_offset, tokens)], stored non-pad tokens, padding (from the shards)."""
    pieces: dict[str, list] = {}
    stored = padding = 0
    for source, entry in summary["sources"].items():
        for shard_entry in entry["shards"]:
            shard = open_shard(folder / source, shard_entry["name"], verify=True)
            padding += shard.meta["padding_tokens"]
            ids = shard.doc_ids.to_pylist()
            for s in range(shard.sequences):
                for k in range(shard.seg_ptr[s], shard.seg_ptr[s + 1]):
                    pos, length = int(shard.seg_pos[k]), int(shard.seg_len[k])
                    pieces.setdefault(ids[k], []).append((int(shard.seg_doc_offset[k]), shard.tokens[s, pos:pos + length]))
                    stored += length
    return pieces, stored, padding


def test_round_trip_every_document(packed_concat, tokenizer_file, pack_inputs):
    summary = json.loads((packed_concat / "pack.json").read_text())
    assert set(summary["sources"]) == set(SOURCES)
    assert summary["dtype"] == "uint16" and summary["seq_len"] == 512 and summary["strategy"] == "concat"
    encoder = Encoder(tokenizer_file)
    pieces, stored, padding = _documents_from_index(packed_concat, summary)
    docs = _all_docs(pack_inputs)
    assert len(docs) > 10_000  # every file gave documents (11,973)
    assert set(pieces) == set(docs)
    bad = []
    total_tokens = 0
    for doc_id, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        tokens = np.concatenate([t for _, t in parts])
        assert [p[0] for p in parts] == list(np.cumsum([0] + [len(t) for _, t in parts[:-1]]))  # contiguous
        assert tokens[-1] == encoder.sep_id
        total_tokens += len(tokens) - 1
        if encoder.decode(tokens[:-1]) != docs[doc_id]:
            bad.append(doc_id)
    assert not bad, bad[:5]
    # concat loses no token: tokens in (plus one separator per document) equal tokens stored
    expected = sum(len(v) for v in encoder.tokenizer.encode_batch_fast(list(docs.values()), add_special_tokens=False)) \
        if hasattr(encoder.tokenizer, "encode_batch_fast") else None
    assert total_tokens == expected
    assert stored == total_tokens + len(docs)
    # concat pads only the last sequence of each source
    assert padding < 512 * len(SOURCES)


def test_pack_twice_same_bytes_and_ray_equals_local(packed_concat, tokenizer_file, pack_inputs, tmp_path, ray_instance):
    again = tmp_path / "again"
    assert _pack(tokenizer_file, pack_inputs, again, executor="ray") == 0
    files = sorted(p.relative_to(packed_concat) for p in packed_concat.rglob("*") if p.is_file() and
                   p.parent.name != "_state" and p.name != "stats.json" and p.name != "pack.json" and "_state" not in p.parts)
    assert files
    for rel in files:
        assert (again / rel).read_bytes() == (packed_concat / rel).read_bytes(), rel
    # a rerun skips the finished work and changes nothing
    before = {rel: (again / rel).stat().st_mtime_ns for rel in files}
    assert _pack(tokenizer_file, pack_inputs, again, executor="ray") == 0
    assert before == {rel: (again / rel).stat().st_mtime_ns for rel in files}


def test_bestfit_keeps_documents_whole(tokenizer_file, pack_inputs, tmp_path):
    out = tmp_path / "bestfit"
    assert _pack(tokenizer_file, pack_inputs, out, "--strategy", "bestfit") == 0
    summary = json.loads((out / "pack.json").read_text())
    pieces, stored, padding = _documents_from_index(out, summary)
    encoder = Encoder(tokenizer_file)
    docs = _all_docs(pack_inputs)
    whole = 0
    for doc_id, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        tokens = np.concatenate([t for _, t in parts])
        assert encoder.decode(tokens[:-1]) == docs[doc_id]
        whole += len(tokens) <= 512 and len(parts) == 1
    short = sum(1 for parts in pieces.values() if sum(len(t) for _, t in parts) <= 512)
    assert whole == short  # every document that fits a sequence is in one piece
    total = sum(e["tokens"] for e in summary["sources"].values())
    assert padding == total - stored and padding / total < 0.1


def test_megatron_export_reads_back(packed_concat, tmp_path):
    pytest.importorskip("megatron.core")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out = tmp_path / "megatron"
    assert cli_main(["export", str(packed_concat), "--format", "megatron", "--out", str(out)]) == 0
    summary = json.loads((packed_concat / "pack.json").read_text())
    for source, entry in summary["sources"].items():
        dataset = IndexedDataset(str(out / source))
        assert dataset.index.dtype == np.uint16
        total = sum(len(dataset[i]) for i in range(len(dataset)))
        assert total == entry["document_tokens"]
        assert (out / f"{source}.bin").stat().st_size == 2 * total


def test_bad_input(tokenizer_file, tmp_path, capsys):
    data = str(DATA / "en_gum_docs.jsonl.gz")
    bad = tmp_path / "bad.json"
    bad.write_text("{not a tokenizer")
    assert cli_main(["pack", "--tokenizer", str(bad), "--out", str(tmp_path / "o1"), "--executor", "local", data]) == 1
    assert "not a tokenizer.json" in capsys.readouterr().err
    with pytest.raises(EncodeError, match="does not exist"):
        Encoder(tmp_path / "missing.json")
    # 10,000 documents of 75 languages fill all 70,000 entries (in 3.5 s; 20,000 took 10 s)
    big = train_tokenizer([r["text"] for r in read_jsonl("lid_lingua_75lang.jsonl.gz", 10000)], tmp_path / "big",
                          vocab_size=70_000, uint16=False, min_frequency=1)
    assert Encoder(big, "auto").vocab_size > 65536
    with pytest.raises(EncodeError, match="does not fit uint16"):
        Encoder(big)
    assert Encoder(big, "auto").dtype == np.uint32
    assert cli_main(["pack", "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "o2"), "--seq-len", "1",
                     "--executor", "local", data]) == 2
    assert "seq_len must be at least 2" in capsys.readouterr().err
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["hello"]}), no_text)
    assert cli_main(["pack", "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "o3"), "--executor", "local",
                     str(no_text)]) == 1
    assert "no text column 'text'" in capsys.readouterr().err


def test_tampered_shard_is_refused(packed_concat, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packed_concat / "web", copy)
    name = next(p.name[:-4] for p in copy.glob("*.bin"))
    raw = bytearray((copy / f"{name}.bin").read_bytes())
    raw[100] ^= 0xFF
    (copy / f"{name}.bin").write_bytes(bytes(raw))
    open_shard(copy, name)  # structure is fine...
    with pytest.raises(ShardError, match="sha256"):
        open_shard(copy, name, verify=True)  # ...the checksum is not


def test_sources_mixed_inside_one_shard(tokenizer_file, tmp_path):
    """Sources taken from a column: documents of several sources in one batch are packed apart, each
    round trip exact."""
    rows = [{"id": f"g{i}", "text": r["text"], "dataset": "prose"} for i, r in enumerate(read_jsonl("en_gum_docs.jsonl.gz", 40))]
    rows += [{"id": f"m{i}", "text": r["text"], "dataset": "news"} for i, r in enumerate(read_jsonl("zh_msra_news.jsonl.gz", 40))]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mixed.parquet")
    out = tmp_path / "packed"
    assert cli_main(["pack", "--tokenizer", str(tokenizer_file), "--out", str(out), "--executor", "local",
                     "--seq-len", "256", str(tmp_path / "mixed.parquet")]) == 0
    summary = json.loads((out / "pack.json").read_text())
    assert set(summary["sources"]) == {"prose", "news"}
    pieces, _, _ = _documents_from_index(out, summary)
    encoder = Encoder(tokenizer_file)
    texts = {r["id"]: (r["text"], r["dataset"]) for r in rows}
    assert set(pieces) == set(texts)
    for doc_id, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        assert encoder.decode(np.concatenate([t for _, t in parts])[:-1]) == texts[doc_id][0]
    for source in ("prose", "news"):
        ids = set()
        for shard in summary["sources"][source]["shards"]:
            ids |= set(open_shard(out / source, shard["name"]).doc_ids.to_pylist())
        assert {texts[i][1] for i in ids} == {source}


def test_encoding_in_pieces_equals_one_call(tokenizer_file, monkeypatch):
    """Encoder.encode works in pieces of text (bounded memory): the ids are those of one batch call,
    whatever the piece size, with documents longer than a piece and empty ones."""
    from curation.tokenizer import encode as encode_module

    encoder = Encoder(tokenizer_file)
    texts = [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 40)] + ["", "x"] + \
        [r["text"] for r in read_jsonl("zh_msra_news.jsonl.gz", 40)]
    expected = encoder.tokenizer.encode_batch(texts, add_special_tokens=False)
    for chunk in (1, 5_000, 10**9):
        monkeypatch.setattr(encode_module, "ENCODE_CHUNK_CHARS", chunk)
        values, offsets = encoder.encode(pa.array(texts))
        assert [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))] == [e.ids for e in expected]
