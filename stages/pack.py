"""`pack`: tokenized documents into fixed-length sequences, per source, as memory-mappable shards.

A global stage, because a source's stream runs across input shards:

1. `keys` (in the stage workers, in parallel over input shards): the token ids of every live document
   (the `tokens` column a `tokenize` stage wrote, or encoded here with the configured tokenizer), its
   id and its source, spilled to Parquet.
2. `aggregate`: one Ray task per input shard packs that shard's documents per source and writes
   `OUT/<source>/<shard>.{bin,index.parquet,json}` (tokenizer/shards.py); with `concat` the tokens after
   a shard's last full sequence are its *tail*, and one task per source then packs the tails of all
   its shards in corpus order into `OUT/<source>/_tail.*` (the very last partial sequence of a source
   is padded: the only padding `concat` writes). Last, `OUT/pack.json` lists every shard (written
   last: its presence means the packing is complete).
3. `apply`: nothing (rows pass unchanged).

The source of a document: the first `sources` entry whose shard-name patterns match its input shard,
else the value of `source_column` (the input's `dataset` column, say), else `default_source`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.io import AtomicParquetWriter, write_json_atomic
from curation.stage import ID, TEXT, AggregateContext, BatchPosition, GlobalStage, live_mask, register_stage
from curation.tokenizer import pack as packing
from curation.tokenizer.encode import Encoder, from_list_array
from curation.tokenizer.shards import list_shard_names, read_meta, write_shard

TAIL = "_tail"
SUMMARY = "pack.json"
_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def safe_source(name: str) -> str:
    """A source name usable as a folder name."""
    cleaned = _SAFE.sub("_", str(name)).strip("._") or "default"
    return cleaned


@dataclasses.dataclass(frozen=True)
class PackParams:
    """What the aggregate tasks need (plain data: it travels to Ray tasks)."""

    out: str
    work: str
    seq_len: int
    strategy: str
    window: int
    dtype: str
    sep_id: int
    pad_id: int
    tokenizer_sha256: str


def _read_keys(path: str) -> pa.Table:
    return pq.read_table(path)


def _pack_shard(args: tuple[str, str, PackParams]) -> dict[str, Any]:
    """Aggregate task: pack one input shard's documents, source by source."""
    keys_path, shard_name, p = args
    table = _read_keys(keys_path)
    results: dict[str, Any] = {}
    if table.num_rows == 0:
        return results
    sources = table.column("source").to_numpy(zero_copy_only=False)
    dtype = np.dtype(p.dtype)
    for source in sorted(set(sources.tolist())):
        rows = np.flatnonzero(sources == source)
        part = table.take(pa.array(rows))
        values, offsets = from_list_array(part.column("tokens"))
        flat, offsets = packing.with_separators((values.astype(dtype, copy=False), offsets), p.sep_id, dtype)
        ids = part.column("id").to_numpy(zero_copy_only=False)
        folder = os.path.join(p.out, source)
        if p.strategy == "concat":
            packed, used = packing.pack_concat(flat, offsets, p.seq_len)
            # the tail: documents (or the rest of one) after the last full sequence
            first = int(np.searchsorted(offsets, used, side="right") - 1)
            tail_offsets = np.append(np.maximum(offsets[first:-1], used), offsets[-1]) - used
            tail = pa.table({"id": pa.array(ids[first:len(offsets) - 1], pa.string()),
                             "start": pa.array(tail_offsets[:-1] + used - offsets[first:-1], pa.int64()),
                             "tokens": pa.LargeListArray.from_arrays(pa.array(tail_offsets, pa.int64()),
                                                                     pa.array(flat[used:]))})
            writer = AtomicParquetWriter(os.path.join(p.work, "tails", source, f"{shard_name}.parquet"))
            writer.write(tail)
            writer.commit(tail.schema)
        else:
            packed = packing.pack_bestfit(flat, offsets, p.seq_len, p.pad_id, p.window)
        meta = write_shard(folder, shard_name, packed, ids, source=source, seq_len=p.seq_len, strategy=p.strategy,
                           sep_id=p.sep_id, pad_id=p.pad_id, tokenizer_sha256=p.tokenizer_sha256,
                           extra={"input_documents": int(len(rows))})
        results[source] = {"sequences": meta["sequences"], "documents": int(len(rows))}
    return results


def _pack_tails(args: tuple[str, list[str], PackParams]) -> dict[str, Any]:
    """Aggregate task (concat): the tails of a source's shards, in corpus order, packed as `_tail`."""
    source, shard_names, p = args
    dtype = np.dtype(p.dtype)
    tables = []
    for name in shard_names:
        path = os.path.join(p.work, "tails", source, f"{name}.parquet")
        if os.path.exists(path):
            tables.append(pq.read_table(path))
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    values, offsets = from_list_array(table.column("tokens"))
    flat = values.astype(dtype, copy=False)
    starts = table.column("start").to_numpy()
    # A tail row is a document or the end of one: packed as documents whose first token sits `start`
    # tokens into the original (separator already in place).
    packed, used = packing.pack_concat(flat, offsets, p.seq_len)
    packed.seg_doc_offset = packed.seg_doc_offset + starts[packed.seg_doc]
    first = int(np.searchsorted(offsets, used, side="right") - 1) if len(flat) else 0
    rest = packing.empty(p.seq_len, dtype)
    if used < len(flat):
        rest_offsets = np.append(np.maximum(offsets[first:-1], used), offsets[-1]) - used
        rest = packing.pad_last(flat[used:], rest_offsets, p.seq_len, p.pad_id, doc_base=first,
                                first_doc_offset=used - int(offsets[first]))
        rest.seg_doc_offset = rest.seg_doc_offset + starts[rest.seg_doc]
    packed = packing.concat_packed([packed, rest], p.seq_len, dtype)
    ids = table.column("id").to_numpy(zero_copy_only=False)
    meta = write_shard(os.path.join(p.out, source), TAIL, packed, ids, source=source, seq_len=p.seq_len,
                       strategy=p.strategy, sep_id=p.sep_id, pad_id=p.pad_id, tokenizer_sha256=p.tokenizer_sha256)
    return {"sequences": meta["sequences"], "padding_tokens": meta["padding_tokens"]}


def summarise(out: str | Path) -> dict[str, Any]:
    """`pack.json`: every complete shard of every source folder, with totals (what the manifest reads)."""
    out = Path(out)
    sources: dict[str, Any] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        names = list_shard_names(folder)
        if not names:
            continue
        metas = [read_meta(folder, n) for n in names]
        keys = ("sequences", "tokens", "document_tokens", "padding_tokens", "split_documents", "segments")
        sources[folder.name] = {
            "shards": [{"name": m["name"], "sequences": m["sequences"], "tokens": m["tokens"], "bin_sha256": m["bin_sha256"],
                        "index_sha256": m["index_sha256"]} for m in metas],
            **{k: int(sum(m[k] for m in metas)) for k in keys},
            "documents": int(sum(m.get("input_documents", 0) for m in metas)),
        }
    first = None
    for folder in sources:
        first = read_meta(out / folder, sources[folder]["shards"][0]["name"])
        break
    return {"format": "curation-pack", "version": 1, "sources": sources,
            **({k: first[k] for k in ("seq_len", "dtype", "strategy", "sep_id", "pad_id", "tokenizer_sha256")} if first else {})}


@register_stage("pack")
class Pack(GlobalStage):
    """Tokenize (unless a tokens column exists) and pack documents into fixed-length sequences per source."""

    needs_apply = False  # rows pass unchanged: as the last stage it adds no pass over the documents

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        tokenizer: str  # tokenizer.json (curation train-tokenizer)
        seq_len: int = 2048
        strategy: str = "concat"  # or "bestfit"
        window: int = 64  # bestfit: open bins
        out: str | None = None  # folder of the packed shards (default: the run's output folder)
        dtype: str = "uint16"  # "uint32" or "auto" for vocabularies over 65,536
        tokens_column: str = "tokens"  # used when present (a `tokenize` stage); encoded here otherwise
        source_column: str | None = "dataset"
        sources: dict[str, tuple[str, ...]] | None = None  # source -> input shard name patterns
        default_source: str = "default"

        def __post_init__(self) -> None:
            if self.seq_len < 2:
                raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
            if self.strategy not in packing.STRATEGIES:
                raise ValueError(f"strategy must be one of {packing.STRATEGIES}, got {self.strategy!r}")
            if self.window < 1:
                raise ValueError("window must be at least 1")
            if self.sources is not None:
                object.__setattr__(self, "sources", {safe_source(k): tuple([v] if isinstance(v, str) else v)
                                                     for k, v in self.sources.items()})

    def setup(self) -> None:
        self._encoder = Encoder(self.config.tokenizer, self.config.dtype)

    def _source_of(self, batch: pa.RecordBatch, position: BatchPosition, rows: pa.Array) -> pa.Array:
        c = self.config
        if c.sources:
            for source, patterns in c.sources.items():
                if any(fnmatch.fnmatchcase(position.shard_name, pattern) for pattern in patterns):
                    return pa.array([source] * len(rows), pa.string())
        if c.source_column and c.source_column in batch.schema.names:
            values = pc.fill_null(pc.take(batch.column(c.source_column), rows).cast(pa.string()), c.default_source)
            return pa.array([safe_source(v) for v in values.to_pylist()], pa.string())
        return pa.array([safe_source(c.default_source)] * len(rows), pa.string())

    def keys(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.Table | None:
        if not hasattr(self, "_encoder"):
            self.setup()
        rows = pc.indices_nonzero(live_mask(batch))
        if len(rows) == 0:
            return None
        if self.config.tokens_column in batch.schema.names:
            tokens = pc.take(batch.column(self.config.tokens_column), rows)
            tokens = tokens.cast(pa.large_list(pa.from_numpy_dtype(self._encoder.dtype)))
        else:
            values, offsets = self._encoder.encode(pc.take(batch.column(TEXT), rows))
            tokens = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values))
        n_tokens = int(pc.sum(pc.list_value_length(tokens)).as_py() or 0)
        self.metrics["tokens"] += n_tokens
        self.metrics["documents"] += len(rows)
        return pa.table({"id": pc.take(batch.column(ID), rows), "source": self._source_of(batch, position, rows),
                         "tokens": tokens})

    def _params(self, ctx: AggregateContext) -> PackParams:
        if not hasattr(self, "_encoder"):
            self.setup()
        out = self.config.out or ctx.output_dir
        if out is None:
            raise ValueError("pack: set `out` (the folder for the packed shards)")
        return PackParams(out=str(out), work=ctx.work_dir, seq_len=self.config.seq_len, strategy=self.config.strategy,
                          window=self.config.window, dtype=self._encoder.dtype.name, sep_id=self._encoder.sep_id,
                          pad_id=self._encoder.pad_id, tokenizer_sha256=self._encoder.sha256)

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        p = self._params(ctx)
        names = [Path(path).name[:-len(".parquet")] for path in ctx.keys_paths]
        results = ctx.map(_pack_shard, [(path, name, p) for path, name in zip(ctx.keys_paths, names)])
        sources = sorted({s for r in results for s in r})
        if p.strategy == "concat":
            ctx.map(_pack_tails, [(source, names, p) for source in sources])
        summary = summarise(p.out)
        summary["tokenizer"] = os.path.abspath(self.config.tokenizer)
        write_json_atomic(Path(p.out) / SUMMARY, summary)
        return {"out": p.out, **{f"{s}_sequences": v["sequences"] for s, v in summary["sources"].items()},
                **{f"{s}_padding_tokens": v["padding_tokens"] for s, v in summary["sources"].items()},
                **{f"{s}_split_documents": v["split_documents"] for s, v in summary["sources"].items()}}

    def prepare(self, work_dir: str, shard_index: int) -> None:
        pass

    def apply(self, batch: pa.RecordBatch, position: BatchPosition) -> pa.RecordBatch:
        return batch


def load_summary(out: str | Path) -> dict[str, Any]:
    path = Path(out) / SUMMARY
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {out} is not a finished `curation pack` output") from None
