"""Fuzzing (hypothesis) of what reads untrusted input: the readers, the rule stages, the LM normaliser.

Every case must end in rows that are kept or dropped with a reason, or in an InputError that names the
file: never another exception (which on Ray would be a crashed worker)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import read_jsonl
from curation.config import InputConfig
from curation.io import InputError, list_shards, read_shard
from curation.stage import build_stage
from curation.stages.quality import lm_text

# Text as crawls deliver it: any code point but surrogates, NUL and control characters included.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=400)
DOCS = st.lists(TEXT, min_size=1, max_size=20)
RULES = [build_stage({"name": name}) for name in ("gopher_quality", "gopher_repetition", "c4", "fineweb")]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def batch_of(texts: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array([str(i) for i in range(len(texts))]), "text": pa.array(texts, pa.string()),
                            "drop_reason": pa.nulls(len(texts), pa.string()),
                            "lang": pa.array(["en", "zh"] * (len(texts) // 2) + ["en"] * (len(texts) % 2))})


@FUZZ
@given(DOCS)
def test_rule_stages_keep_or_drop_every_row_with_a_reason(texts):
    for stage in RULES:
        out = stage(batch_of(texts))
        assert out.num_rows == len(texts)
        reasons = [r for r in out.column("drop_reason").to_pylist() if r is not None]
        assert all(r.startswith(stage.name) for r in reasons), reasons
        out.validate(full=True)


@FUZZ
@given(DOCS, st.booleans(), st.booleans())
def test_lm_normaliser_gives_valid_text_and_lines(texts, cjk, lower):
    normalised = lm_text.normalise(pa.array(texts, pa.string()), cjk=cjk, lower=lower)
    normalised.validate(full=True)
    assert len(normalised) == len(texts)
    lines, parent = lm_text.lines(normalised)
    counts = lm_text.token_counts(lines)
    ascii_tokens = [len([t for t in re.split(r"[ \t\r\n\x0b\x0c]+", line) if t]) for line in lines.to_pylist()]
    assert counts.tolist() == ascii_tokens
    assert all(0 <= p < len(texts) for p in parent.to_pylist())


def _read(path: Path, **options) -> int:
    config = InputConfig(path=(str(path),), **options)
    return sum(batch.num_rows for shard in list_shards(config) for batch in read_shard(shard, config))


@FUZZ
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=12))
def test_jsonl_reader_on_arbitrary_bytes(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jsonl"
        path.write_bytes(b"\n".join(lines))
        try:
            _read(path, empty_text="drop")
        except InputError as exc:
            assert str(path) in str(exc)


REAL = read_jsonl("en_gum_docs.jsonl.gz", 30)


@FUZZ
@given(st.data())
def test_parquet_reader_on_damaged_files(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.parquet"
        pq.write_table(pa.Table.from_pylist(REAL), path)
        raw = bytearray(path.read_bytes())
        how = data.draw(st.sampled_from(["flip", "truncate", "zero_block"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif how == "truncate":
            raw = raw[:at]
        else:
            raw[at:at + 64] = bytes(min(64, len(raw) - at))
        path.write_bytes(bytes(raw))
        try:
            rows = _read(path)
            assert rows <= len(REAL)
        except InputError as exc:
            assert str(path) in str(exc)
