"""One schema for every kept (and every rejected) file of a run, so that tools reading the folder as one
table (polars' `read_parquet("kept/*.parquet")`, HF `datasets`, DuckDB, pyarrow.dataset) see one table.

Shards from different sources carry different pass-through columns (`genre` in one, `task_id` in
another), and a column can be int in one shard and string in another. After the last pass the run
takes the union of the files' schemas (columns in first-seen order over the corpus order; a column
missing from a file becomes nulls; types that cannot be promoted into each other become strings) and
rewrites each file that differs, atomically (through `curation.storage`: temporary file then rename on
disk, one upload to the same key on an object store), streaming batch by batch.
A file's bytes then depend only on its rows and the union, so a rerun or a resumed run writes the same
bytes; the step's marker (`_state/one_schema.json`) is written last, and a rerun redoes only files
that do not match yet.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.io import write_json_atomic

DROPPED_METADATA = (b"pandas",)  # describes the columns of a pandas frame: wrong once columns are added


def _field_union(fields: list[pa.Field]) -> pa.Field:
    typed = [f for f in fields if not pa.types.is_null(f.type)]
    if not typed:
        return pa.field(fields[0].name, pa.null(), nullable=True, metadata=fields[0].metadata)
    if all(f.type == typed[0].type for f in typed):
        chosen = typed[0].type
    else:
        try:
            chosen = pa.unify_schemas([pa.schema([f.with_nullable(True)]) for f in typed],
                                      promote_options="permissive").field(0).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            chosen = pa.string()  # e.g. int in one shard and string in another: strings hold both
    return pa.field(typed[0].name, chosen, nullable=True, metadata=typed[0].metadata)


def union_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """The union of `schemas`, in corpus order (first-seen column order)."""
    order: list[str] = []
    fields: dict[str, list[pa.Field]] = {}
    metadata: dict[bytes, bytes] = {}
    for schema in schemas:
        for field in schema:
            if field.name not in fields:
                order.append(field.name)
                fields[field.name] = []
            fields[field.name].append(field)
        for key, value in (schema.metadata or {}).items():
            if key not in DROPPED_METADATA:
                metadata.setdefault(key, value)
    return pa.schema([_field_union(fields[name]) for name in order], metadata=metadata or None)


def schema_digest(schema: pa.Schema) -> str:
    return hashlib.sha256(schema.serialize().to_pybytes()).hexdigest()


def _conform_column(column: pa.Array, target: pa.DataType) -> pa.Array:
    if column.type == target:
        return column
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # a list or struct where another shard has strings: its JSON text
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str)
                         for v in column.to_pylist()], target)


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, field.type))
        else:
            columns.append(_conform_column(batch.column(index), field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def conform_file(item: tuple[str, pa.Schema, str]) -> bool:
    """Rewrite one Parquet file to `schema` (item: path, schema, compression) unless it has it already;
    returns whether it was rewritten. Runs in a worker."""
    path, schema, compression = item
    parquet = pq.ParquetFile(storage.parquet_source(path))
    if parquet.schema_arrow == schema:
        return False
    pending = storage.Pending(path)
    try:
        with pq.ParquetWriter(pending.local_path, schema, compression=compression, write_page_checksum=True) as writer:
            for batch in parquet.iter_batches(batch_size=4096):
                writer.write_batch(conform_batch(batch, schema))
        parquet.close()
        pending.commit()
    finally:
        pending.abort()  # nothing left when committed
    return True


def publish_one_schema(folders: list[str | Path], marker: str | Path, compression: str, map_fn: Any) -> dict[str, int]:
    """Give every file in each folder (kept/, rejected/) its folder's union schema; `map_fn(fn, items)`
    runs the rewrites on the executor's workers. Returns counts for stats."""
    if storage.exists(marker):
        return storage.read_json(marker)["files"]
    counts: dict[str, int] = {}
    for folder in folders:
        paths = [e.location for e in storage.list_files(folder, recursive=False)
                 if e.relative.endswith(".parquet") and not storage.TMP_NAME.match(e.relative)]
        if not paths:
            continue
        schema = union_schema([pq.read_schema(storage.parquet_source(p)) for p in paths])
        rewritten = map_fn(conform_file, [(p, schema, compression) for p in paths])
        name = storage.basename(folder)
        counts[name] = len(paths)
        counts[f"{name}_rewritten"] = sum(bool(r) for r in rewritten)
    write_json_atomic(marker, {"files": counts})
    return counts
