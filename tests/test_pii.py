"""`pii` on real text: planted values of every kind in English (GUM) and Chinese (MSRA news) documents,
look-alikes that fail their checks left alone, exact spans in annotate mode, and runs through the executor."""

from __future__ import annotations

import datetime
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from curation.stage import build_stage
from curation.stages import pii
from curation.stages.pii import PII, card_ok, cn_id_ok, ip_ok, luhn_ok, phone_ok

PROVINCES = sorted(pii.CN_PROVINCES)


def id_check_char(first17: str) -> str:
    return pii._ID_CHECK[sum(int(d) * w for d, w in zip(first17, pii._ID_WEIGHTS)) % 11]


def cn_id(rng: random.Random) -> str:
    born = datetime.date(1940, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 80))
    first17 = f"{rng.choice(PROVINCES)}{rng.randrange(10000):04d}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + id_check_char(first17)


def luhn_digit(body: str) -> str:
    return next(d for d in "0123456789" if luhn_ok(body + d))


def card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                 ("6011", 16), ("62", 19), ("3530", 16), ("36", 14), ("4", 13)])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    digits = body + luhn_digit(body)
    style = rng.choice(["plain", " ", "-"])
    if style == "plain" or length not in (15, 16):
        return digits
    groups = [digits[:4], digits[4:10], digits[10:]] if length == 15 else [digits[i:i + 4] for i in range(0, 16, 4)]
    return style.join(groups)


def phone(rng: random.Random) -> str:
    mobile = f"1{rng.choice('3456789')}{rng.randrange(10)}"
    a, b = f"{rng.randrange(10000):04d}", f"{rng.randrange(10000):04d}"
    return rng.choice([
        f"{mobile}{a}{b}", f"{mobile} {a} {b}", f"{mobile}-{a}-{b}", f"+86 {mobile} {a} {b}", f"+86{mobile}{a}{b}",
        f"+44 20 {rng.randrange(7000, 8000)} {rng.randrange(10000):04d}", f"+49 30 {rng.randrange(100000, 999999)}",
        f"({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(10000):04d}",
        f"{rng.randrange(200, 999)}-{rng.randrange(200, 999)}-{rng.randrange(10000):04d}",
    ])


def ip(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"2a00:1450:{rng.randrange(0x4000, 0x4fff):x}:{rng.randrange(0x100, 0xfff):x}::{rng.randrange(0x1000, 0xffff):x}"
    return f"{rng.choice([23, 45, 81, 104, 151, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def email(rng: random.Random) -> str:
    user = rng.choice(["li.wei", "j_smith", "anna+news", "zhang.san88", "m.dupont"])
    return f"{user}{rng.randrange(100)}@{rng.choice(['example.com', 'mail.qq.com', 'uni-bonn.de', '163.com'])}"


MAKERS = {"email": email, "ip": ip, "cn_id": cn_id, "card": card, "phone": phone}


def look_alikes(rng: random.Random) -> list[str]:
    """Strings shaped like PII that fail a check: each must come out unchanged."""
    out = []
    for _ in range(10):
        good = cn_id(rng)
        wrong = next(c for c in "0123456789X" if c != good[-1])
        out.append(good[:-1] + wrong)  # ID with a wrong check character
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        out.append(body + next(d for d in "0123456789" if not luhn_ok(body + d)))  # card failing Luhn
        digits = "".join(rng.choice("0123456789") for _ in range(18))
        if not cn_id_ok(digits):
            out.append(digits)  # a random 18-digit number
        digits = "".join(rng.choice("123456789") for _ in range(16))
        if not card_ok(digits):
            out.append(digits)  # a random 16-digit number
    out += ["version 1.2.3.4", "v10.0.19041.1", "1.2.3.4.5", "300.12.7.1", "192.168.1.20", "127.0.0.1",
            "2019-07-17", "12345678901", "1.1.2.1.", "std::vector", "logo@2x.png", "10.000.000", "09:30:15",
            "ISBN 978-3-16-148410-0", "id=4111111111111111"]
    return out


def plant(docs: list[str], values: list[str], template: str, rng: random.Random) -> list[str]:
    """Put each value into a document, after a random line break or at the end."""
    out = list(docs)
    for value in values:
        i = rng.randrange(len(out))
        lines = out[i].split("\n")
        at = rng.randrange(len(lines) + 1)
        lines.insert(at, template.format(value))
        out[i] = "\n".join(lines)
    return out


def batch_of(texts: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array([str(i) for i in range(len(texts))]), "text": pa.array(texts, pa.string()),
                            "drop_reason": pa.array([None] * len(texts), pa.string())})


def run_stage(texts: list[str], **options) -> tuple[pa.RecordBatch, PII]:
    stage = build_stage({"name": "pii", **options})
    stage.setup()
    return stage(batch_of(texts)), stage


@pytest.fixture(scope="module")
def corpus(data_dir):
    """English and Chinese documents with 40 values of every kind planted, plus look-alikes."""
    rng = random.Random(7)
    en = [r["text"] for r in read_jsonl("en_gum_docs.jsonl.gz", 60)]
    zh = [r["text"] for r in read_jsonl("zh_msra_news.jsonl.gz", 200)]
    planted = {kind: [make(rng) for _ in range(40)] for kind, make in MAKERS.items()}
    fakes = look_alikes(rng)
    values = [v for vs in planted.values() for v in vs]
    rng.shuffle(values)
    half = len(values) // 2
    docs = plant(en, values[:half], "Contact: {} please.", rng) + plant(zh, values[half:], "联系方式：{}，谢谢。", rng)
    docs = plant(docs, fakes, "Reference {} here.", rng)
    return {"base": en + zh, "docs": docs, "planted": planted, "fakes": fakes}


def test_checks_on_their_own():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert card_ok("4111 1111 1111 1111") and card_ok("378282246310005") and card_ok("3782-822463-10005")
    assert not card_ok("4111 11111 111 1111"), "irregular groups"
    assert not card_ok("9111111111111119"), "no issuer starts with 9"
    assert not card_ok("4111111111111111", before="/"), "an id in a URL path"
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")
    assert not cn_id_ok("110105194902300024"), "30 February"
    assert not cn_id_ok("990105194912310020".replace("0020", "002" + id_check_char("99010519491231002"))), "province 99"
    assert ip_ok("8.26.56.26") and not ip_ok("8.8.4.4") and not ip_ok("192.168.0.1") and ip_ok("192.168.0.1", keep_non_public=False)
    assert not ip_ok("1.2.3.4", before="version ") and not ip_ok("1.2.3.4", after=".5") and not ip_ok("1.2.3.4")
    assert not ip_ok("1::2"), "a Python slice"
    assert phone_ok("+86 138 1234 5678") and phone_ok("13812345678") and phone_ok("(212) 555-0143")
    assert not phone_ok("13812345678", before="9"), "inside a longer number"


def test_planted_values_replaced_look_alikes_kept(corpus):
    base, _ = run_stage(corpus["base"])
    out, stage = run_stage(corpus["docs"])
    text = "\n".join(out.column("text").to_pylist())
    for kind, values in corpus["planted"].items():
        missed = [v for v in values if v in text]
        assert not missed, f"{kind}: planted values not replaced (recall {1 - len(missed) / len(values):.2f}): {missed[:5]}"
    kept = [f for f in corpus["fakes"] if f not in text]
    assert not kept, f"look-alikes replaced: {kept}"
    # Precision: beyond what the real text already held (the GUM guides list real phone numbers), the
    # stage found exactly the planted values, kind by kind.
    base_stage = build_stage({"name": "pii"})
    base_stage.setup()
    base_stage(batch_of(corpus["base"]))
    for kind, values in corpus["planted"].items():
        extra = stage.metrics[f"found:{kind}"] - base_stage.metrics[f"found:{kind}"]
        assert extra == len(values), f"{kind}: {extra} finds for {len(values)} planted"
        assert text.count(pii.DEFAULT_PLACEHOLDERS[kind]) >= len(values)
    assert stage.metrics["rejected:card"] > 0 and stage.metrics["rejected:cn_id"] > 0


def test_annotate_gives_exact_spans_and_keeps_text(corpus):
    out, stage = run_stage(corpus["docs"], mode="annotate")
    assert out.column("text").to_pylist() == corpus["docs"]
    found = {}
    for text, spans in zip(corpus["docs"], out.column("pii").to_pylist()):
        for span in spans:
            found.setdefault(span["kind"], set()).add(text[span["start"]:span["end"]])
    for kind, values in corpus["planted"].items():
        assert set(values) <= found.get(kind, set()), f"{kind}: spans differ from the planted values"
    assert not set(corpus["fakes"]) & set().union(*found.values())


def test_placeholders_kinds_and_dropped_rows():
    texts = ["mail a.b@example.org, card 4111-1111-1111-1111, id 11010519491231002X.", "call 138 1234 5678"]
    out, _ = run_stage(texts, kinds=["email", "cn_id"], placeholders={"email": "[email]"})
    assert out.column("text").to_pylist() == ["mail [email], card 4111-1111-1111-1111, id <CN_ID>.", "call 138 1234 5678"]
    stage = build_stage({"name": "pii"})
    stage.setup()
    batch = batch_of(texts)
    batch = batch.set_column(2, "drop_reason", pa.array(["earlier", None], pa.string()))
    assert stage(batch).column("text").to_pylist() == [texts[0], "call <PHONE>"], "dropped rows are left alone"
    with pytest.raises(ValueError, match="unknown PII kind"):
        build_stage({"name": "pii", "kinds": ["ssn"]})
    with pytest.raises(ValueError, match="mode"):
        build_stage({"name": "pii", "mode": "mask"})


def test_few_finds_on_clean_shared_text(data_dir):
    """Wikipedia articles and Chinese news hold no personal data: any find there is a false positive."""
    texts = [r["text"] for r in read_jsonl("en_wikitext2_valid_test.jsonl.gz")] + \
            [r["text"] for r in read_jsonl("zh_msra_news.jsonl.gz")]
    _, stage = run_stage(texts)
    assert sum(v for k, v in stage.metrics.items() if k.startswith("found:")) == 0, dict(stage.metrics)


def test_through_the_local_executor(tmp_path, data_dir):
    rows = read_jsonl("zh_reviews.jsonl.gz", 3000) + read_jsonl("en_ud_ewt_web_docs.jsonl.gz")
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "mixed.jsonl", rows)
    stats = run_pipeline(pipeline_from_dict({
        "input": {"path": [str(tmp_path / "in" / "*")]}, "output": {"path": str(tmp_path / "out")},
        "executor": {"kind": "local"}, "stages": [{"name": "pii"}]}), RunOptions(progress=False))
    metrics = stats["stages"][0]["metrics"]
    assert metrics["found:phone"] > 10 and metrics["found:email"] > 0, metrics
    kept = pq.read_table(tmp_path / "out" / "kept").column("text").to_pylist()
    assert len(kept) == len(rows)
    assert sum(t.count("<PHONE>") for t in kept) == metrics["found:phone"]
