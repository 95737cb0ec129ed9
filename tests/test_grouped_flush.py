"""Data files committed inside a task are flushed to disk together (one syncfs), and always before a
marker or index that vouches for them (curation.storage.grouped_flush)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from curation import storage
from curation.io import AtomicParquetWriter


@pytest.fixture()
def calls(monkeypatch):
    """Every fsync and syncfs, in order, still done for real."""
    seen: list[str] = []
    real_fsync = os.fsync
    real_libc = storage._libc()

    def fsync(fd: int) -> None:
        seen.append("fsync")
        real_fsync(fd)

    class Libc:
        def syncfs(self, fd: int) -> int:
            seen.append("syncfs")
            return real_libc.syncfs(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage, "_libc", lambda: Libc())
    return seen


def write_parquet(path: Path) -> None:
    writer = AtomicParquetWriter(path)
    writer.write(pa.table({"x": [1, 2, 3]}))
    writer.commit()


def test_outside_a_task_each_file_is_fsynced(tmp_path: Path, calls: list[str]) -> None:
    write_parquet(tmp_path / "a.parquet")
    storage.write_json(tmp_path / "marker.json", {"done": True})
    assert calls == ["fsync", "fsync"]


def test_a_task_flushes_its_data_once_before_its_marker(tmp_path: Path, calls: list[str]) -> None:
    with storage.grouped_flush():
        for name in ("a", "b", "c"):
            write_parquet(tmp_path / f"{name}.parquet")
            assert (tmp_path / f"{name}.parquet").exists()  # published at once, flushed later
        assert calls == []
        storage.write_json(tmp_path / "marker.json", {"done": True})
        assert calls == ["syncfs", "fsync"]  # the data first, then the marker's own
        write_parquet(tmp_path / "d.parquet")
    assert calls == ["syncfs", "fsync", "syncfs"]  # and the rest when the task ends
    assert not list(tmp_path.glob(".*tmp-*"))


def test_a_failed_task_reports_nothing_and_flushes_nothing(tmp_path: Path, calls: list[str]) -> None:
    with pytest.raises(RuntimeError), storage.grouped_flush():
        write_parquet(tmp_path / "a.parquet")
        raise RuntimeError("the stage failed")
    assert calls == []
    write_parquet(tmp_path / "b.parquet")  # outside again: fsync per file
    assert calls == ["fsync"]


def test_without_syncfs_each_file_of_the_group_is_fsynced(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (seen.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(storage, "_libc", lambda: None)
    with storage.grouped_flush():
        write_parquet(tmp_path / "a.parquet")
        write_parquet(tmp_path / "b.parquet")
        (tmp_path / "b.parquet").unlink()  # a spill removed in the same task: nothing to flush
    assert seen == [str(tmp_path / "a.parquet")]


def test_nested_groups_flush_once_at_the_outer_end(tmp_path: Path, calls: list[str]) -> None:
    with storage.grouped_flush():
        with storage.grouped_flush():
            write_parquet(tmp_path / "a.parquet")
        assert calls == []
    assert calls == ["syncfs"]
