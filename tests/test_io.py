"""Reading shards: canonical columns, derived ids, and bad input named by file and row or line."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_jsonl, write_jsonl, write_parquet
from curation.config import InputConfig
from curation.io import AtomicParquetWriter, InputError, list_shards, read_shard


def read_all(path, **options):
    config = InputConfig(path=(str(path),), **options)
    (shard,) = list_shards(config)
    return pa.Table.from_batches(list(read_shard(shard, config)))


def test_jsonl_gz_and_parquet_read_the_same(tmp_path, data_dir):
    rows = read_jsonl("zh_msra_news.jsonl.gz", 50)
    a = read_all(write_jsonl(tmp_path / "a.jsonl.gz", rows, compress=True))
    b = read_all(write_parquet(tmp_path / "b.parquet", rows), batch_rows=7)
    assert a.column_names[:3] == ["id", "text", "drop_reason"]
    assert a.column("text").to_pylist() == [r["text"] for r in rows] == b.column("text").to_pylist()
    assert a.column("id").to_pylist() == b.column("id").to_pylist()


def test_a_line_longer_than_the_jsonl_block_is_read_once(tmp_path):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 40)
    huge = {"id": "huge", "text": "\n".join(r["text"] for r in rows) * 8}  # about 1.5 MB on one line
    rows = rows[:30] + [huge] + rows[30:]
    table = read_all(write_jsonl(tmp_path / "x.jsonl", rows), block_bytes=64 << 10)
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.column("text").to_pylist()[30] == huge["text"]


def test_ids_are_derived_when_missing(tmp_path):
    rows = [{"content": t} for t in ["one doc", "two doc", "three doc"]]
    table = read_all(write_jsonl(tmp_path / "noid.jsonl", rows), text_column="content", id_column=None)
    assert table.column("id").to_pylist() == ["noid:0", "noid:1", "noid:2"]
    assert table.column("text").to_pylist() == ["one doc", "two doc", "three doc"]


def test_integer_ids_become_strings(tmp_path):
    table = read_all(write_jsonl(tmp_path / "x.jsonl", [{"id": 7, "text": "a"}, {"id": 8, "text": "b"}]))
    assert table.column("id").to_pylist() == ["7", "8"]


@pytest.mark.parametrize("content, message", [
    (b'{"text": "fine"}\n{"text": nope}\n', r"x.jsonl: line 2: not valid JSON"),
    (b'{"text": "fine"}\n\n{"text": "\xff\xfe"}\n', r"x.jsonl: line 3: not valid UTF-8"),
    (b'{"text": "fine"}\n[1, 2]\n', r"x.jsonl: line 2: a JSON list, expected an object"),
    (b'{"text": "fine"}\n{"text": "\\ud800"}\n', r"x.jsonl: line 2: field 'text' holds an invalid surrogate"),
    (b'{"body": "no text column"}\n', r"x.jsonl: no text column 'text' \(columns: body\)"),
    (b'{"text": 5}\n', r"x.jsonl: text column 'text' has type int64"),
    (b'{"text": "a"}\n{"text": ""}\n', r"x.jsonl: line 2: text is null or empty"),
    (b'{"text": "a"}\n\n\n{"text": null}\n', r"x.jsonl: line 4: text is null or empty"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    (tmp_path / "x.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_all(tmp_path / "x.jsonl", empty_text="error")


def test_empty_text_is_dropped_with_a_reason_by_default(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"text": "a"}\n{"text": ""}\n{"text": null}\n')
    table = read_all(tmp_path / "x.jsonl")
    assert table.column("drop_reason").to_pylist() == [None, "empty_text", "empty_text"]


def test_truncated_gzip(tmp_path, data_dir):
    whole = (data_dir / "en_gum_docs.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.jsonl.gz"):
        read_all(tmp_path / "cut.jsonl.gz")


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_parquet(tmp_path, damage):
    path = write_parquet(tmp_path / "x.parquet", read_jsonl("en_gum_docs.jsonl.gz", 30))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3: len(data) // 3 + 200] = b"\x00" * 200
        data[-12:-8] = b"\xff\xff\xff\x7f"  # footer length points nowhere
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"x.parquet: cannot read Parquet"):
        read_all(path)


def test_parquet_with_invalid_utf8_is_refused(tmp_path):
    # Parquet does not check UTF-8; a binary column cast unsafely to string can carry bad bytes.
    bad = pa.array([b"fine", b"\xff\xfe bad"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": bad}), tmp_path / "x.parquet")
    with pytest.raises(InputError, match=r"x.parquet: row 1: text is not valid UTF-8"):
        read_all(tmp_path / "x.parquet")


def test_atomic_writer_leaves_nothing_on_abort(tmp_path):
    writer = AtomicParquetWriter(tmp_path / "out.parquet")
    writer.write(pa.record_batch({"a": [1, 2]}))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    writer = AtomicParquetWriter(tmp_path / "out.parquet")
    writer.write(pa.record_batch({"a": [1, 2]}))
    assert not (tmp_path / "out.parquet").exists()  # not visible before commit
    writer.commit()
    assert pq.read_table(tmp_path / "out.parquet").column("a").to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_missing_input_is_named(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        list_shards(InputConfig(path=(str(tmp_path / "nope.jsonl"),)))
    with pytest.raises(InputError, match="no input files match"):
        list_shards(InputConfig(path=(str(tmp_path / "*.jsonl"),)))


def test_a_folder_input_means_its_data_files(tmp_path):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 6)
    write_parquet(tmp_path / "b.parquet", rows[3:])
    write_jsonl(tmp_path / "a.jsonl", rows[:3])
    (tmp_path / "notes.txt").write_text("not data")
    shards = list_shards(InputConfig(path=(str(tmp_path),)))
    assert [s.name for s in shards] == ["a", "b"]
    with pytest.raises(InputError, match="no Parquet or JSONL files"):
        (tmp_path / "empty").mkdir()
        list_shards(InputConfig(path=(str(tmp_path / "empty"),)))


def test_our_parquet_has_page_checksums_and_a_damaged_page_is_refused(tmp_path):
    rows = read_jsonl("en_gum_docs.jsonl.gz", 20)
    writer = AtomicParquetWriter(tmp_path / "out.parquet", compression="none")
    writer.write(pa.Table.from_pylist(rows))
    writer.commit()
    raw = bytearray((tmp_path / "out.parquet").read_bytes())
    at = raw.find(rows[5]["text"][:40].encode())  # inside a data page
    assert at > 0
    raw[at] ^= 0x20  # one letter's case: the file stays well-formed, only the checksum can tell
    (tmp_path / "out.parquet").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="out.parquet"):
        read_all(tmp_path / "out.parquet")


def test_parquet_batches_are_cut_by_text_bytes(tmp_path, data_dir):
    from curation.config import InputConfig
    from curation.io import list_shards, read_shard

    rows = read_jsonl("en_wikitext2_valid_test.jsonl.gz", 60)  # long articles (about 20 KB each)
    write_parquet(tmp_path / "wiki.parquet", rows)
    config = InputConfig(path=(str(tmp_path / "wiki.parquet"),), block_bytes=64 * 1024)
    batches = list(read_shard(list_shards(config)[0], config))
    assert len(batches) > 5 and sum(b.num_rows for b in batches) == 60
    for batch in batches:
        assert batch.num_rows == 1 or batch.column("text").nbytes <= 64 * 1024 + 4 * batch.num_rows + 4
    assert [t for b in batches for t in b.column("text").to_pylist()] == [r["text"] for r in rows]


def test_input_sources_tag_every_row(tmp_path, data_dir):
    from curation.config import pipeline_from_dict
    from curation.io import InputError, list_shards, read_shard

    write_jsonl(tmp_path / "a.jsonl", read_jsonl("en_gum_docs.jsonl.gz", 5))
    write_jsonl(tmp_path / "b.jsonl", read_jsonl("zh_msra_news.jsonl.gz", 5))
    config = pipeline_from_dict({"input": {"sources": {"prose": str(tmp_path / "a.jsonl"), "news": [str(tmp_path / "b*.jsonl")]}},
                                 "output": {"path": "o"}}).input
    shards = list_shards(config)
    got = {s.name: {v for b in read_shard(s, config) for v in b.column("dataset").to_pylist()} for s in shards}
    assert got == {"a": {"prose"}, "b": {"news"}}
    stray = pipeline_from_dict({"input": {"path": str(tmp_path / "*.jsonl"), "sources": {"prose": str(tmp_path / "a.jsonl")}},
                                "output": {"path": "o"}}).input
    with pytest.raises(InputError, match="in none of input.sources"):
        list_shards(stray)
