"""`pack` on what it is given: a `tokens` column is used only when it says our tokenizer produced it
(else the text is encoded again), a tokens column of a wrong type or with bad ids is a clear error
naming the shard and row, and every option is checked (type and range) when the stage is built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from curation.stage import build_stage
from curation.stages.pack import Pack
from curation.stages.tokenize import TOKENIZER_SHA256, tokens_provenance
from curation.tokenizer.encode import Encoder
from pack_helpers import pack, packed_documents, small_tokenizer, write_inputs

SMALL = {"a_gum": ("en_gum_docs.jsonl.gz", 30), "b_msra": ("zh_msra_news.jsonl.gz", 40)}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[Path, Path]:
    """Two different vocabularies trained on the same real text: A (2,000 ids) and B (1,200 ids)."""
    return (small_tokenizer(tmp_path_factory.mktemp("tok_a"), 2000),
            small_tokenizer(tmp_path_factory.mktemp("tok_b"), 1200, docs=200))


def _pack_stats(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    stages = stats["stages"]
    return next(s for s in (stages.values() if isinstance(stages, dict) else stages) if s["name"] == "pack")["metrics"]


def _assert_packed_with(out: Path, docs: dict[str, str], encoder: Encoder) -> None:
    summary = json.loads((out / "pack.json").read_text())
    assert summary["tokenizer_sha256"] == encoder.sha256
    stored = packed_documents(out, summary)
    assert set(stored) == set(docs)
    values, offsets = encoder.encode(list(docs.values()))
    for i, doc_id in enumerate(docs):
        assert stored[doc_id][:-1].tolist() == values[offsets[i]:offsets[i + 1]].tolist(), doc_id


def test_tokens_of_another_tokenizer_are_not_packed_under_this_ones_name(tokenizers, tmp_path):
    a, b = tokenizers
    docs = write_inputs(tmp_path / "in", SMALL)
    run = tmp_path / "run"
    # tokenize with A, then a global stage: the column crosses an intermediate file and the kept writer
    run_pipeline(pipeline_from_dict({"input": {"path": [str(tmp_path / "in" / "*")]}, "output": {"path": str(run)},
                                     "executor": {"kind": "local"},
                                     "stages": [{"name": "tokenize", "tokenizer": str(a)}, {"name": "exact_dedup"}]}),
                 RunOptions(progress=False))
    kept = sorted((run / "kept").glob("*.parquet"))
    assert kept
    kept_docs = {}
    for path in kept:
        field = pq.read_schema(path).field("tokens")
        assert tokens_provenance(field) == Encoder(a).sha256, path  # the sha256 reaches the Parquet file
        table = pq.read_table(path, columns=["id", "text"])
        kept_docs.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    assert len(kept_docs) > 50 and set(kept_docs) <= set(docs)

    # packed with B: A's ids must not be packed as B's; the text is encoded with B
    with_b = tmp_path / "with_b"
    assert pack(b, with_b, run / "kept") == 0
    _assert_packed_with(with_b, kept_docs, Encoder(b))
    assert _pack_stats(with_b)["documents_reencoded"] == len(kept_docs)

    # packed with A: the column is used as it is
    with_a = tmp_path / "with_a"
    assert pack(a, with_a, run / "kept") == 0
    _assert_packed_with(with_a, kept_docs, Encoder(a))
    assert _pack_stats(with_a).get("documents_reencoded", 0) == 0


def _with_tokens(tmp_path: Path, values: pa.Array, sha256: str | None) -> tuple[Path, dict[str, str]]:
    docs = write_inputs(tmp_path / "src", {"a_gum": ("en_gum_docs.jsonl.gz", 12)})
    table = pq.read_table(tmp_path / "src" / "a_gum.parquet")
    field = pa.field("tokens", values.type, metadata={TOKENIZER_SHA256: sha256.encode()} if sha256 else None)
    path = tmp_path / "gum_tokens.parquet"
    pq.write_table(table.append_column(field, values), path)
    return path, docs


def test_a_tokens_column_of_unknown_provenance_is_encoded_again(tokenizers, tmp_path):
    """An input's own `tokens` column (here a count, an int): before, an ArrowNotImplementedError
    traceback; now the text is encoded and the column left alone."""
    a, _ = tokenizers
    path, docs = _with_tokens(tmp_path, pa.array(np.arange(12, dtype=np.int64)), None)
    out = tmp_path / "packed"
    assert pack(a, out, path) == 0
    _assert_packed_with(out, docs, Encoder(a))
    assert _pack_stats(out)["documents_reencoded"] == 12


@pytest.mark.parametrize("values, message", [
    (pa.array(np.arange(12, dtype=np.int64)), "column 'tokens' has type int64"),
    (pa.array([f"{i}" for i in range(12)]), "column 'tokens' has type string"),
    (pa.array([["a", "b"]] * 12, pa.list_(pa.string())), "column 'tokens' has type list<"),
    (pa.array([[1, 2]] * 5 + [None] + [[1]] * 6, pa.list_(pa.int32())), "row 5: column 'tokens' is null"),
    (pa.array([[1, 2]] * 7 + [[3, 99_999]] + [[1]] * 4, pa.list_(pa.int64())), "row 7: column 'tokens' holds id 99999"),
    (pa.array([[1, 2]] * 3 + [[-4]] + [[1]] * 8, pa.list_(pa.int64())), "row 3: column 'tokens' holds id -4"),
])
def test_a_bad_tokens_column_is_a_clear_error(tokenizers, tmp_path, capsys, values, message):
    """A column that says our tokenizer made it but is not a list of ids in its vocabulary: an error
    naming the input shard and the row, exit status 1, no traceback."""
    a, _ = tokenizers
    path, _ = _with_tokens(tmp_path, values, Encoder(a).sha256)
    assert pack(a, tmp_path / "packed", path) == 1
    err = capsys.readouterr().err
    assert "input shard 'gum_tokens'" in err and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("option, value, message", [
    ("seq_len", 100.5, "seq_len must be at least 2 and at most 1,048,576"),
    ("seq_len", 10**9, "seq_len must be at least 2 and at most 1,048,576"),
    ("seq_len", "512", "got '512' (str)"),
    ("seq_len", True, "got True (bool)"),
    ("seq_len", 1, "seq_len must be at least 2"),
    ("window", 0, "window (bestfit's open bins) must be a whole number from 1 to 4096"),
    ("window", 10**6, "from 1 to 4096, got 1000000"),
    ("window", 2.5, "got 2.5 (float)"),
    ("dtype", "int8", "dtype must be one of ('uint16', 'uint32', 'auto'), got 'int8'"),
    ("dtype", 16, "got 16"),
    ("strategy", "greedy", "strategy must be one of ('concat', 'bestfit'), got 'greedy'"),
    ("strategy", ["concat"], "got ['concat']"),
    ("tokens_column", 3, "tokens_column must be a non-empty string or null"),
])
def test_options_are_checked_when_the_stage_is_built(tokenizers, option, value, message):
    """The config checks type and range itself (a Config built in code); built from YAML options, the
    generic type check of curation/option_types.py may name a wrong type first: either way a ValueError
    naming the option, before any work."""
    with pytest.raises(ValueError) as error:
        Pack.Config(tokenizer=str(tokenizers[0]), **{option: value})
    assert message in str(error.value)
    with pytest.raises(ValueError, match="stage 'pack'") as error:
        build_stage({"name": "pack", "tokenizer": str(tokenizers[0]), option: value})
    assert option in str(error.value)


def test_a_source_is_an_input_property(tokenizers, tmp_path, capsys):
    """A document's source is decided where its file is read (input.sources); pack has no file patterns
    of its own, and `--source` patterns that leave an input file out name it before any work."""
    with pytest.raises(ValueError, match="sources"):
        build_stage({"name": "pack", "tokenizer": str(tokenizers[0]), "sources": {"web": ["web_*"]}})
    write_inputs(tmp_path / "in", {"a_gum": ("en_gum_docs.jsonl.gz", 5), "b_web": ("web_commoncrawl_samples.jsonl.gz", 5)})
    assert pack(tokenizers[0], tmp_path / "packed", tmp_path / "in", "--source", "prose=a_*") == 2
    err = capsys.readouterr().err
    assert "b_web" in err and "matches no --source" in err and "Traceback" not in err
    assert not (tmp_path / "packed").exists() or not list((tmp_path / "packed").rglob("*.bin"))
    assert pack(tokenizers[0], tmp_path / "packed", tmp_path / "in", "--source", "prose=a_*", "--source", "web=b_*") == 0
    assert set(json.loads((tmp_path / "packed" / "pack.json").read_text())["sources"]) == {"prose", "web"}


def test_seq_len_out_of_range_from_the_command_line(tokenizers, tmp_path, capsys):
    """`--seq-len 1000000000` used to write a 2 GB padded tail for a few documents."""
    write_inputs(tmp_path / "in", {"a_gum": ("en_gum_docs.jsonl.gz", 5)})
    assert pack(tokenizers[0], tmp_path / "packed", tmp_path / "in", "--seq-len", "1000000000") == 2
    assert "seq_len must be at least 2 and at most 1,048,576 tokens" in capsys.readouterr().err
    assert not list((tmp_path / "packed").rglob("*.bin"))
