"""Reading input shards as Arrow record batches, and writing Parquet outputs atomically.

Every batch the reader yields has `id` (string), `text` (string) and `drop_reason` (string, null)
plus the input's other columns. Bad input raises `InputError` with the file and the row or line.
Inputs and outputs are plain paths or URIs (`s3://bucket/in/*.jsonl.gz`): every file goes through
`curation.storage`, which also says how an output is published whole on a store without rename.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from curation import storage
from curation.config import InputConfig
from curation.errors import CurationError
from curation.shard import Shard  # re-exported: readers and stages name it from here
from curation.stage import DROP_REASON, ID, TEXT

EMPTY_TEXT_REASON = "empty_text"


class InputError(CurationError, ValueError):
    """Bad input: the message names the file and, where known, the row or line."""


class OutputError(CurationError, RuntimeError):
    """An output cannot be written (disk full, no permission): the message names the folder."""


def _source_of(path: str, config: InputConfig) -> str | None:
    if not config.sources:
        return None
    for name, patterns in config.sources.items():
        for pattern in patterns:
            full = storage.normalise(pattern) if storage.is_uri(pattern) else os.path.abspath(os.path.expanduser(pattern))
            if fnmatch.fnmatch(path, full) or fnmatch.fnmatch(path, os.path.join(full, "*")):
                return name
    raise InputError(f"{path} is in input.path but in none of input.sources ({', '.join(config.sources)})")


def shard_format(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    lower = path.lower()
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        return "parquet"
    if lower.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    raise InputError(f"{path}: cannot tell the format from the file name; set input.format (parquet or jsonl)")


def _shard_stem(path: str) -> str:
    name = storage.basename(path)
    for suffix in (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".json", ".ndjson", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


DATA_SUFFIXES = (".parquet", ".pq", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")


def list_shards(config: InputConfig) -> list[Shard]:
    """The input files, sorted by path: a stable corpus order independent of the file system."""
    paths: set[str] = set()
    sizes: dict[str, int] = {}  # from the listing of a store: no request per file
    for pattern in config.path:
        if storage.is_uri(pattern):
            if not storage.MAGIC.search(pattern) and storage.is_dir(pattern):
                found = [e for e in storage.list_files(pattern, recursive=False)
                         if e.relative.lower().endswith(DATA_SUFFIXES) and not e.relative.startswith(".")]
                if not found:
                    raise InputError(f"no Parquet or JSONL files in folder {pattern}")
            else:
                found = storage.glob(storage.normalise(pattern))
                if not found and not storage.MAGIC.search(pattern):
                    raise InputError(f"input file not found: {pattern}")
            for entry in found:
                paths.add(entry.location)
                sizes[entry.location] = entry.size
            continue
        if os.path.isdir(os.path.expanduser(pattern)):  # a folder: its data files (a run's OUT/kept, say)
            folder = os.path.expanduser(pattern)
            found = [os.path.join(folder, name) for name in os.listdir(folder)
                     if name.lower().endswith(DATA_SUFFIXES) and not name.startswith(".")]
            if not found:
                raise InputError(f"no Parquet or JSONL files in folder {pattern}")
            paths.update(os.path.abspath(p) for p in found)
            continue
        matches = glob.glob(os.path.expanduser(pattern), recursive=True)
        if not matches and not glob.has_magic(pattern):
            raise InputError(f"input file not found: {pattern}")
        paths.update(os.path.abspath(p) for p in matches if os.path.isfile(p))
    if not paths:
        raise InputError(f"no input files match {', '.join(config.path)}")
    ordered = sorted(paths)
    stems: dict[str, int] = {}
    shards = []
    for index, path in enumerate(ordered):
        stem = _shard_stem(path)
        # Same file name in two folders: suffix the later ones so outputs never collide.
        seen = stems.get(stem, 0)
        stems[stem] = seen + 1
        name = stem if seen == 0 else f"{stem}-{seen}"
        size = sizes[path] if path in sizes else os.path.getsize(path)
        shards.append(Shard(index, path, name, shard_format(path, config.format), size,
                            _source_of(path, config)))
    return shards


# --- reading ----------------------------------------------------------------------------------------


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _pointer_value(value: object, pointer: list[str]) -> object:
    for part in pointer:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _diagnose_jsonl(path: str, arrow_message: str) -> str:
    """Find the first bad line with the standard library, to name it exactly. Arrow's own message gives
    a row counted from the start of the block it was reading, not a line of the file: never passed on
    as a position."""
    # "Column(/genre) changed from string to number in row 12": a field whose type changes
    changed = re.search(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)", arrow_message)
    pointer = [part for part in changed.group(1).split("/") if part] if changed else None
    first_kind: tuple[str, int] | None = None
    try:
        with _open_lines(path) as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"{path}: line {number}: not valid UTF-8 (byte {exc.start} of the line)"
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"{path}: line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
                if not isinstance(value, dict):
                    return f"{path}: line {number}: a JSON {type(value).__name__}, expected an object"
                for key, item in value.items():
                    if isinstance(item, str):
                        try:
                            item.encode("utf-8")
                        except UnicodeEncodeError:
                            return f"{path}: line {number}: field {key!r} holds an invalid surrogate escape"
                if pointer is not None:
                    item = _pointer_value(value, pointer)
                    if item is not None:
                        kind = _json_kind(item)
                        if first_kind is None:
                            first_kind = (kind, number)
                        elif kind != first_kind[0]:
                            field = "/".join(pointer)
                            return (f"{path}: line {number}: field {field!r} is {kind} here but {first_kind[0]} on "
                                    f"line {first_kind[1]}: a column needs one type in every line (fix the data, "
                                    "or convert the field to strings)")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return f"{path}: cannot read: {exc} (truncated or corrupt file?)"
    # No line found to blame: Arrow's message without its block-relative row number.
    return f"{path}: {re.sub(r' in row [0-9]+', '', arrow_message)}"


def _open_lines(path: str):
    """A JSONL file (gzip or not) for line iteration, only to word an error message."""
    handle = storage.open_binary(path)
    return gzip.GzipFile(fileobj=handle, mode="rb") if path.lower().endswith(".gz") else handle


def _jsonl_line_of_row(path: str, row: int) -> int:
    """The 1-based line of the `row`-th record (0-based) of a JSONL file: blank lines hold no record.
    Only called to word an error message."""
    seen = -1
    try:
        with _open_lines(path) as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    seen += 1
                    if seen == row:
                        return number
    except (OSError, EOFError, gzip.BadGzipFile):
        pass
    return row + 1


def where(shard: "Shard", row: int) -> str:
    """A position as users count it: `line N` (1-based) in a JSONL file, `row N` (0-based) in Parquet."""
    if shard.format == "jsonl":
        return f"line {_jsonl_line_of_row(shard.path, row)}"
    return f"row {row}"


MAX_JSONL_BLOCK = 1 << 30  # a single JSON line up to 1 GiB
JSONL_BLOCK = 4 << 20


def _open_counted(path: str) -> tuple[pa.NativeFile, pa.NativeFile]:
    """(stream to read, the raw file under it): the raw file's position is how far a reader got in
    the file's own bytes, compressed or not (the progress bar counts input bytes)."""
    raw = pa.OSFile(path) if not storage.is_uri(path) else storage.open_input(path)
    if path.lower().endswith(".gz"):
        return pa.CompressedInputStream(raw, "gzip"), raw
    return raw, raw


def _read_jsonl(shard: Shard, config: InputConfig, position: "Counter[str] | None" = None) -> Iterator[pa.RecordBatch]:
    """Stream a JSONL shard in batches of about `block_bytes` of text. Arrow reads blocks of at least
    JSONL_BLOCK: it infers the columns' types from the first block, and a column null all through a
    small first block and a string later is an error. A line longer than the block (one huge
    document) makes Arrow's reader stop; the file is then reopened with a block large enough and the
    rows already given skipped."""
    block, given = max(config.block_bytes, JSONL_BLOCK), 0
    while True:
        try:
            stream, raw = _open_counted(shard.path)
            reader = pa_json.open_json(stream, read_options=pa_json.ReadOptions(block_size=block))
            seen = 0
            for batch in reader:
                if seen + batch.num_rows > given:
                    if position is not None:
                        position["position"] = raw.tell()
                    yield from _byte_slices(batch.slice(max(0, given - seen)), config.text_column, config.block_bytes)
                    given = seen + batch.num_rows
                seen += batch.num_rows
            return
        except pa.ArrowInvalid as exc:
            if "Empty JSON stream" in str(exc) and given == 0:
                return  # an empty file is an empty shard
            if "straddl" in str(exc) and block < MAX_JSONL_BLOCK:
                block = min(block * 4, MAX_JSONL_BLOCK)
                continue
            raise InputError(_diagnose_jsonl(shard.path, str(exc))) from None
        except storage.StorageError:
            raise  # the store, not the file: not a bad shard
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise InputError(_diagnose_jsonl(shard.path, str(exc))) from None


def _byte_slices(batch: pa.RecordBatch, column: str, limit: int) -> Iterator[pa.RecordBatch]:
    """Cut a batch so that each piece holds about `limit` bytes of text (at least one row): the
    vectorised stages' working memory grows with the text of a batch, not with its rows."""
    if column not in batch.schema.names or batch.num_rows <= 1:
        yield batch
        return
    text = batch.column(column)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)) or text.nbytes <= limit:
        yield batch
        return
    sizes = pc.fill_null(pc.binary_length(text), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(sizes)
    start = 0
    while start < batch.num_rows:
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + limit, side="right")))
        yield batch.slice(start, stop - start)
        start = stop


def _read_parquet(shard: Shard, config: InputConfig, position: "Counter[str] | None" = None) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(storage.parquet_source(shard.path), page_checksum_verification=True)  # pages with a CRC are checked
        rows, total = 0, max(parquet.metadata.num_rows, 1)
        for batch in parquet.iter_batches(batch_size=config.batch_rows):
            rows += batch.num_rows
            if position is not None:  # the file's bytes in proportion to its rows read
                position["position"] = shard.size * rows // total
            yield from _byte_slices(batch, config.text_column, config.block_bytes)
    except storage.StorageError:
        raise  # the store, not the file: not a bad shard
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read Parquet: {exc} (truncated or corrupt file?)") from None


def _first_invalid_utf8(text: pa.Array) -> int:
    for index, value in enumerate(text.view(pa.binary()).to_pylist()):
        try:
            if value is not None:
                value.decode("utf-8")
        except UnicodeDecodeError:
            return index
    return 0


def _normalise(batch: pa.RecordBatch, shard: Shard, config: InputConfig, row_offset: int) -> pa.RecordBatch:
    """Canonical columns: `id` and `text` as strings, then `drop_reason`; the input's others follow."""
    names = batch.schema.names
    if config.text_column not in names:
        raise InputError(f"{shard.path}: no text column {config.text_column!r} (columns: {', '.join(names)})")
    text = batch.column(config.text_column)
    if pa.types.is_null(text.type):
        text = text.cast(pa.string())
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise InputError(f"{shard.path}: text column {config.text_column!r} has type {text.type}, expected string")
    try:
        text.validate(full=True)  # catches invalid UTF-8, which neither reader checks
    except pa.ArrowInvalid:
        if shard.format == "jsonl":
            raise InputError(_diagnose_jsonl(shard.path, "invalid UTF-8 in the text column")) from None
        row = row_offset + _first_invalid_utf8(text)
        raise InputError(f"{shard.path}: {where(shard, row)}: text is not valid UTF-8") from None
    if pa.types.is_large_string(text.type):
        text = text.cast(pa.string())

    if config.id_column and config.id_column in names:
        ids = batch.column(config.id_column)
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)
                or pa.types.is_null(ids.type)):
            raise InputError(f"{shard.path}: id column {config.id_column!r} has type {ids.type}; an id is a string or "
                             "an integer (set input.id_column to another column, or to '' to number the rows)")
        if not pa.types.is_string(ids.type):
            ids = ids.cast(pa.string())
        if ids.null_count:
            row = row_offset + pc.index(pc.is_null(ids), True).as_py()
            raise InputError(f"{shard.path}: {where(shard, row)}: id column {config.id_column!r} is null")
        try:
            ids.validate(full=True)  # invalid UTF-8 (a damaged or unsafely cast Parquet column)
        except pa.ArrowInvalid:
            row = row_offset + _first_invalid_utf8(ids)
            raise InputError(f"{shard.path}: {where(shard, row)}: id is not valid UTF-8") from None
    else:
        ids = pa.array([f"{shard.name}:{row_offset + i}" for i in range(batch.num_rows)], pa.string())

    empty = pc.or_(pc.is_null(text), pc.equal(pc.utf8_length(pc.fill_null(text, "")), 0))
    reasons = pa.nulls(batch.num_rows, pa.string())
    n_empty = pc.sum(empty).as_py() or 0
    if n_empty:
        if config.empty_text == "error":
            row = row_offset + pc.index(empty, True).as_py()
            raise InputError(
                f"{shard.path}: {where(shard, row)}: text is null or empty ({n_empty} such rows in this batch); "
                "set input.empty_text: drop to reject them instead"
            )
        reasons = pc.if_else(empty, pa.scalar(EMPTY_TEXT_REASON, pa.string()), reasons)
        text = pc.fill_null(text, "")

    skip = {config.text_column, DROP_REASON, TEXT, ID}
    if config.id_column:
        skip.add(config.id_column)
    if shard.source is not None:
        skip.add(config.source_column)
    others = [(name, batch.column(name)) for name in names if name not in skip]
    if shard.source is not None:
        others.append((config.source_column, pa.array([shard.source] * batch.num_rows, pa.string())))
    columns = [ids, text, reasons] + [col for _, col in others]
    fields = [pa.field(ID, pa.string()), pa.field(TEXT, pa.string()), pa.field(DROP_REASON, pa.string())]
    fields += [batch.schema.field(name) if name in batch.schema.names and not (shard.source is not None and name == config.source_column)
               else pa.field(name, pa.string()) for name, _ in others]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


class DuplicateIds:
    """Ids seen so far in one shard, as 64-bit hashes (8 bytes a document: a shard of 10 M documents
    holds 80 MB here at most) in sorted runs merged as they grow (log-many runs, so a shard costs
    O(n log n), not a merge per batch); a repeat is renamed `<id>#<row>` (and counted) or is an error,
    by input.duplicate_ids. A hash collision between two different ids (about 1 in 10^7 for 10^6 ids)
    renames an id that was unique: counted like a duplicate, never a loss."""

    def __init__(self, shard: Shard, policy: str) -> None:
        self.shard, self.policy = shard, policy
        self.runs: list[np.ndarray] = []  # sorted, sizes decreasing
        self.renamed = 0

    def _seen(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), bool)
        for run in self.runs:
            position = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[position] == hashes
        return found

    def _add(self, hashes: np.ndarray) -> None:
        self.runs.append(np.unique(hashes))
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop()
            self.runs[-1] = np.union1d(self.runs[-1], last)

    def check(self, batch: pa.RecordBatch, row_offset: int) -> pa.RecordBatch:
        import pandas as pd  # pandas (40 MB) only in processes that read input, not the driver

        ids = batch.column(ID).to_numpy(zero_copy_only=False).astype(object)
        hashes = pd.util.hash_array(ids, categorize=False)  # ids are valid UTF-8 here (_normalise checks)
        order = np.argsort(hashes, kind="stable")
        repeats = np.zeros(len(ids), bool)
        repeats[order[1:]] = hashes[order[1:]] == hashes[order[:-1]]  # later rows of an id repeated in the batch
        repeats |= self._seen(hashes)
        self._add(hashes)
        if not repeats.any():
            return batch
        rows = np.flatnonzero(repeats)
        if self.policy == "error":
            first = int(rows[0])
            raise InputError(f"{self.shard.path}: {where(self.shard, row_offset + first)}: id {ids[first]!r} was "
                             "already used by an earlier document of this file; ids must be unique (or set "
                             "input.duplicate_ids: rename to make repeats unique)")
        for index in rows:
            ids[index] = f"{ids[index]}#{row_offset + int(index)}"
        self.renamed += len(rows)
        return batch.set_column(batch.schema.get_field_index(ID), ID, pa.array(ids, pa.string()))


def read_shard(shard: Shard, config: InputConfig, counts: "Counter[str] | None" = None) -> Iterator[pa.RecordBatch]:
    """Stream a shard as normalised record batches; memory holds one batch, not the file. `counts`
    gets `renamed_ids` (duplicate ids made unique) and `position` (bytes of the file read so far)."""
    source = _read_parquet(shard, config, counts) if shard.format == "parquet" else _read_jsonl(shard, config, counts)
    duplicates = DuplicateIds(shard, config.duplicate_ids) if config.id_column else None
    row_offset = 0
    for batch in source:
        if batch.num_rows == 0:
            continue
        try:
            batch = _normalise(batch, shard, config, row_offset)
        except pa.ArrowException as exc:  # a type no check above foresaw: still a clear message
            raise InputError(f"{shard.path}: rows from {where(shard, row_offset)}: cannot read as documents: {exc}") from None
        if duplicates is not None:
            batch = duplicates.check(batch, row_offset)
            if counts is not None and duplicates.renamed:
                counts["renamed_ids"] += duplicates.renamed
                duplicates.renamed = 0
        yield batch
        row_offset += batch.num_rows


def read_parquet_batches(path: str, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Our own intermediate files: trusted format, streamed."""
    parquet = pq.ParquetFile(storage.parquet_source(path), page_checksum_verification=True)
    yield from parquet.iter_batches(batch_size=batch_rows)


# --- writing ----------------------------------------------------------------------------------------


class AtomicParquetWriter:
    """Writes a Parquet file that appears under its name whole at `commit()`, or never (`abort()`).

    On local disk it is written under a temporary name and renamed into place; on an object store it
    is spooled locally and uploaded to the final key at commit (`curation.storage.Pending`). A crash
    before commit leaves only a `.tmp-*` file, which a rerun ignores and removes; readers never see a
    half-written shard under its final name. Batches after the first are cast to the first batch's
    schema, so a file has one schema.
    """

    def __init__(self, path: str | Path, compression: str = "zstd", schema: pa.Schema | None = None) -> None:
        self.path = path if storage.is_uri(path) else Path(path)
        self._pending = storage.Pending(path, deferrable=True)  # data: flushed with its task (storage.grouped_flush)
        self.tmp_path = self._pending.local_path
        self.compression = compression
        self.schema = schema
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def _open(self, schema: pa.Schema) -> None:
        self.schema = schema
        # CRC per page: a shard damaged or tampered with after it was written is refused when read back
        self._writer = pq.ParquetWriter(self.tmp_path, schema, compression=self.compression, write_page_checksum=True)

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if self._writer is None:
            self._open(self.schema or data.schema)
        if data.schema != self.schema:
            data = _conform(data, self.schema, self.path)
        if data.num_rows:
            table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
            self._writer.write_table(table)
            self.rows += data.num_rows

    def commit(self, fallback_schema: pa.Schema | None = None) -> Path:
        if self._writer is None:
            self._open(self.schema or fallback_schema or pa.schema([]))
        self._writer.close()
        self._pending.commit()
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the file is discarded either way
                pass
        self._pending.abort()


def _conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema, path: Path) -> pa.RecordBatch | pa.Table:
    if data.schema.names != schema.names:
        raise RuntimeError(
            f"{path}: a batch has columns {data.schema.names} but the file has {schema.names}; "
            "a stage must add the same columns to every batch"
        )
    try:
        return data.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RuntimeError(f"{path}: a batch's types differ from the file's and cannot be cast: {exc}") from exc


def write_json_atomic(path: str | Path, data: object) -> None:
    """JSON published whole (temporary file and rename on disk, one upload on a store)."""
    storage.write_json(path, data)
