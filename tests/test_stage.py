import pyarrow as pa
import pytest

from curation.stage import DROP_REASON, build_stage, drop_rows, live_mask, registered_stages, text_bytes


def batch(texts, reasons=None):
    return pa.RecordBatch.from_pydict({
        "id": [str(i) for i in range(len(texts))],
        "text": texts,
        DROP_REASON: pa.array(reasons or [None] * len(texts), pa.string()),
    })


def test_builtin_stages_register():
    stages = registered_stages()
    assert {"noop", "length_filter", "exact_dedup"} <= set(stages)


def test_first_drop_reason_wins():
    b = batch(["a", "bb", "ccc"], [None, "earlier", None])
    b = drop_rows(b, pa.array([True, True, False]), "later")
    assert b.column(DROP_REASON).to_pylist() == ["later", "earlier", None]
    assert live_mask(b).to_pylist() == [False, False, True]


def test_null_mask_keeps_row():
    b = drop_rows(batch(["a", "b"]), pa.array([None, True]), "r")
    assert b.column(DROP_REASON).to_pylist() == [None, "r"]


def test_length_filter_on_real_sentences():
    stage = build_stage({"name": "length_filter", "min_chars": 10, "max_chars": 40})
    b = stage(batch(["Too short", "The cat sat on the mat.", "这是一个足够长的中文句子吗？是的，它是。", "x" * 41]))
    assert b.column(DROP_REASON).to_pylist() == ["length:too_short", None, None, "length:too_long"]
    assert text_bytes(b, live_mask(b)) == len("The cat sat on the mat.".encode()) + len("这是一个足够长的中文句子吗？是的，它是。".encode())


def test_unknown_stage_and_option_errors():
    with pytest.raises(ValueError, match="unknown stage 'nope'; known stages: "):
        build_stage({"name": "nope"})
    with pytest.raises(ValueError, match="unknown option.*min_char.*it takes: max_chars, min_chars"):
        build_stage({"name": "length_filter", "min_char": 3})
    with pytest.raises(ValueError, match="min_chars <= max_chars"):
        build_stage({"name": "length_filter", "min_chars": 5, "max_chars": 2})


def test_stages_are_packaged_under_curation():
    import curation.stages
    import curation.tokenizer

    assert curation.stages.__name__ == "curation.stages"
    with pytest.raises(ImportError):
        import stages  # noqa: F401  (must not exist as a top-level package)
