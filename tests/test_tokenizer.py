"""Tokenizer: language-balanced sampling, byte-level BPE training, lossless round trip, evaluation."""

from __future__ import annotations

import gzip
import json
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from conftest import DATA, read_jsonl
from curation.cli import main as cli_main
from curation.tokenizer.sample import SampleError, SampleSpec, balanced_sample, group_bytes
from curation.tokenizer.train import (SPECIAL_TOKENS, CountOptions, TokenizerError, check_vocab_size, train_from_shards,
                                       train_tokenizer)

GROUP_OF = {"en": "en", "zh": "zh", "python": "code", "cpp": "code", "java": "code", "js": "code", "go": "code"}


def shared_rows() -> list[dict]:
    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if row["text"]:
                    rows.append({"id": row["id"], "text": row["text"],
                                 "lang_group": GROUP_OF.get(row.get("lang") or "", "other")})
    return rows


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """All of ../shared/data as curated Parquet shards with a lang_group column (every 10th row held out)."""
    folder = tmp_path_factory.mktemp("curated")
    rows = shared_rows()
    train, held = [r for i, r in enumerate(rows) if i % 10], rows[::10]
    for k in range(3):
        pq.write_table(pa.Table.from_pylist(train[k::3]), folder / f"part{k}.parquet")
    pq.write_table(pa.Table.from_pylist(held), folder / "held_out.parquet")
    return {"train": [str(folder / f"part{k}.parquet") for k in range(3)], "held": [str(folder / "held_out.parquet")],
            "rows": rows, "folder": folder}


COUNTS_SPEC = SampleSpec(shares={"en": 0.4, "zh": 0.3, "code": 0.1, "other": 0.2}, budget_bytes=6_000_000, seed=3)
COUNTS_OPTIONS = CountOptions(min_count=2, max_words=300_000, feed_items=3_000_000)


@pytest.fixture(scope="module")
def trained(curated, tmp_path_factory, ray_instance):
    """The default method (pre-token counts in Ray tasks) on a 6 MB sample. One tokenizer for the round
    trip, transformers, and the counts test's Ray side: each training takes 15-20 s on 2 cores."""
    from curation.config import ExecutorConfig
    from curation.executor import make_backend

    with make_backend(ExecutorConfig(kind="ray")) as backend:
        return train_from_shards(curated["train"], tmp_path_factory.mktemp("tok"), COUNTS_SPEC, vocab_size=6000,
                                 backend=backend, options=COUNTS_OPTIONS)


def test_sample_follows_the_shares_and_is_deterministic(curated):
    spec = SampleSpec(shares={"en": 0.5, "zh": 0.3, "code": 0.1, "other": 0.1}, budget_bytes=4_000_000, seed=7)
    totals = group_bytes(curated["train"], spec)
    first = list(balanced_sample(curated["train"], spec, totals))
    assert first == list(balanced_sample(curated["train"], spec, totals))
    assert first != list(balanced_sample(curated["train"], SampleSpec(**{**spec.__dict__, "seed": 8}), totals))
    by_text = {r["text"]: r["lang_group"] for r in curated["rows"]}
    got = {g: 0 for g in spec.shares}
    for text in first:
        got[by_text[text]] += len(text.encode())
    for group, share in spec.shares.items():
        quota = min(share * spec.budget_bytes, totals[group])
        assert abs(got[group] - quota) <= 0.2 * quota, (group, got[group], quota)


def test_sample_errors(curated, tmp_path):
    with pytest.raises(SampleError, match="no text for group"):
        list(balanced_sample(curated["train"], SampleSpec(shares={"en": 0.5, "klingon": 0.5}, budget_bytes=1000)))
    with pytest.raises(SampleError, match="shares"):
        SampleSpec(shares={}, budget_bytes=10)


def test_vocab_size_limits():
    with pytest.raises(TokenizerError, match="byte alphabet"):
        check_vocab_size(200)
    with pytest.raises(TokenizerError, match="uint16"):
        check_vocab_size(70_000)
    check_vocab_size(70_000, uint16=False)


def test_round_trip_on_all_shared_data(trained, curated):
    tokenizer = Tokenizer.from_file(str(trained))
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tokenizer.get_vocab_size() <= 65536
    texts = [r["text"] for r in curated["rows"]]
    bad, largest = [], 0
    for start in range(0, len(texts), 5000):
        chunk = texts[start:start + 5000]
        ids = [e.ids for e in tokenizer.encode_batch(chunk)]
        largest = max(largest, max(max(i, default=0) for i in ids))
        decoded = tokenizer.decode_batch(ids, skip_special_tokens=False)
        bad += [t for t, d in zip(chunk, decoded) if t != d]
    assert not bad, bad[:3]
    assert largest < 65536  # every id of all the text, not only of the first 2,000 documents


def test_loads_in_transformers(trained):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(trained))
    text = "Homarus gammarus 2023: 当希望工程救助的百万儿童 def f(x):\n    return x"
    assert fast(text)["input_ids"] == Tokenizer.from_file(str(trained)).encode(text).ids
    assert fast.decode(fast(text)["input_ids"]) == text


def test_cli_train_and_eval(curated, tmp_path, capsys):
    out = tmp_path / "tok"
    assert cli_main(["train-tokenizer", "--out", str(out), "--vocab-size", "3000", "--budget-mb", "2",
                     "--shares", "en=0.5,zh=0.3,other=0.2", *curated["train"]]) == 0
    assert (out / "tokenizer.json").exists()
    capsys.readouterr()
    assert cli_main(["eval-tokenizer", str(out / "tokenizer.json"), *curated["held"], "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["groups"]) == {"en", "zh", "other"}
    for row in report["groups"].values():
        assert row["bytes_per_token"] > 1 and row["plain_byte_level_bpe_bytes_per_token"] > 1
    assert cli_main(["train-tokenizer", "--out", str(out), "--vocab-size", "100", *curated["train"]]) == 1


def test_counts_training_matches_the_plain_trainer(curated, trained, tmp_path):
    """Training from pruned pre-token counts (Ray tasks: the `trained` fixture) compresses held-out text
    as well as train_from_iterator on the same sample, and gives the same file on Ray and in process."""
    from curation.config import ExecutorConfig
    from curation.executor import make_backend
    from curation.tokenizer.evaluate import bytes_per_token, held_out_groups

    spec, options, on_ray = COUNTS_SPEC, COUNTS_OPTIONS, trained
    with make_backend(ExecutorConfig(kind="local")) as backend:
        local = train_from_shards(curated["train"], tmp_path / "local", spec, vocab_size=6000, backend=backend, options=options)
    assert on_ray.read_bytes() == local.read_bytes()
    stream = train_from_shards(curated["train"], tmp_path / "stream", spec, vocab_size=6000, method="stream")
    meta = json.loads((on_ray.parent / "tokenizer_meta.json").read_text())
    assert meta["method"] == "counts" and meta["counts"]["kept_pretokens"] < meta["counts"]["distinct_pretokens"]
    groups = held_out_groups(curated["held"], spec)
    for group in ("en", "zh", "code"):
        ours, _ = bytes_per_token(Tokenizer.from_file(str(on_ray)), groups[group])
        plain, _ = bytes_per_token(Tokenizer.from_file(str(stream)), groups[group])
        assert ours >= 0.98 * plain, (group, ours, plain)


def test_counting_splits_like_the_tokenizer(curated):
    """The counting pass splits with the `regex` module; it must give exactly the pre-tokens of
    tokenizers' own Split (before the byte-level mapping) on every kind of text."""
    import regex
    from tokenizers import Regex, pre_tokenizers

    from curation.tokenizer.train import PRE_TOKENIZER_PATTERN

    split = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
    ours = regex.compile(PRE_TOKENIZER_PATTERN)
    texts = [r["text"] for r in curated["rows"][::40]] + ["  spaces\t\ttabs\r\n\n  2024年12月 3.14159 don't ÉCOLE", "x" * 5000]
    for text in texts:
        assert ours.findall(text) == [piece for piece, _ in split.pre_tokenize_str(text)], text[:80]


def train_small(out, umask: int):
    texts = [r["text"] for name in ("en_gum_docs.jsonl.gz", "zh_msra_news.jsonl.gz", "code_humanevalx_linux.jsonl.gz")
             for r in read_jsonl(name, 200) if r["text"]]
    old = os.umask(umask)
    try:
        return train_tokenizer(texts, out, vocab_size=1000)
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A small tokenizer folder written under umask 027."""
    return train_small(tmp_path_factory.mktemp("published"), 0o027)


PUBLISHED = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "tokenizer_meta.json"]


def test_published_files_get_the_umask_mode(published, tmp_path):
    """The files are published with 0666 less the umask (a temporary file's 0600 kept other users of a
    shared tokenizer out), and no temporary file is left."""
    assert sorted(p.name for p in published.parent.iterdir()) == PUBLISHED
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in published.parent.iterdir()} == dict.fromkeys(PUBLISHED, 0o640)
    again = train_small(tmp_path / "tok", 0o002).parent
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in again.iterdir()} == dict.fromkeys(PUBLISHED, 0o664)


def test_transformers_sees_the_special_tokens(published):
    """AutoTokenizer on the folder knows bos/eos/pad/sep, pads a batch with <|pad|>, and encodes and
    decodes as the Encoder does, special tokens' text included."""
    from transformers import AutoTokenizer

    from curation.tokenizer.encode import Encoder

    tok = AutoTokenizer.from_pretrained(published.parent)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.sep_token) == SPECIAL_TOKENS
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2, 3)
    batch = tok(["a", "longer text"], padding=True)
    short, long_ = batch["input_ids"]
    assert len(short) == len(long_) > 1 and batch["attention_mask"][1] == [1] * len(long_)
    kept = sum(batch["attention_mask"][0])
    assert kept >= 1 and short[kept:] == [tok.pad_token_id] * (len(short) - kept)
    encoder = Encoder(published)
    texts = [r["text"] for r in read_jsonl("en_ud_ewt_web_docs.jsonl.gz", 20)]
    texts = [t[:50] + "<|sep|>" + t[50:] + " <|pad|><|eos|>" for t in texts] + ["Hello , world .  x", "中文<|bos|>"]
    values, offsets = encoder.encode(texts)
    for i, text in enumerate(texts):
        ids = tok(text)["input_ids"]
        assert ids == values[offsets[i]:offsets[i + 1]].tolist(), text
        assert tok.decode(ids) == text
