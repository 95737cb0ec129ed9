"""`pack`: tokenized documents into fixed-length sequences, per source, as memory-mappable shards.

A sink (`curation.sink`): the pipeline's rows go out as token shards, beside or instead of the kept
and rejected Parquet (`output.documents: false`). A source's stream runs across input shards, so:

1. `open(shard)` then `write(batch)` (in the workers, in parallel over input shards, streaming): each
   batch's live documents are tokenized (or taken from the `tokens` column a `tokenize` stage wrote with
   this same tokenizer, its sha256 recorded in the column's field; any other tokens column is ignored
   and the text encoded) and packed per source as they come, full sequences going straight to
   `OUT/<source>/<shard>.bin`. `commit()` writes each source's index and metadata (tokenizer/shards.py)
   and, with `concat`, spills the shard's *tail* (what is left after its last full sequence, under
   `seq_len` tokens per source) under the sink's work folder. `bestfit` packs a source's documents of
   the shard at `commit()` (its window needs them). `abort()` publishes nothing.
2. `finish` (the driver: the tails are small): per source, the tails of all shards in corpus order
   are packed into `OUT/<source>/_tail.*`, whose last sequence is padded (the only padding `concat`
   writes); its metadata's `continues` names the input shard of each document it finishes. Last,
   `OUT/pack.json` lists every shard (written last: the packing is complete).

The source of a document is decided once, where it is read (`curation/io.py`): `input.sources` names
the source of each input file and writes it into `source_column` (or the data carries that column
already); pack reads that column, and a document without one goes to `default_source`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.io import AtomicParquetWriter, InputError, Shard, write_json_atomic
from curation.sink import FinishContext, Sink, SinkContext, SinkWriter
from curation.stage import ID, TEXT, BatchPosition, live_mask, register_stage
from curation.tokenizer import packing
from curation.tokenizer.packed_folder import SUMMARY, TAIL
from curation.tokenizer.encode import Encoder, from_list_array
from curation.stages.tokenize import tokens_provenance
from curation.tokenizer.shards import ShardWriter, list_shard_names, read_meta, write_shard

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def safe_source(name: str) -> str:
    """A source name usable as a folder name."""
    cleaned = _SAFE.sub("_", str(name)).strip("._") or "default"
    return cleaned


@dataclasses.dataclass(frozen=True)
class PackParams:
    """What packing a shard or the tails needs (plain data)."""

    out: str
    seq_len: int
    strategy: str
    window: int
    dtype: str
    sep_id: int
    pad_id: int
    tokenizer_sha256: str


def _documents_of(values: np.ndarray, offsets: np.ndarray, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of the picked documents only (all of them: the arrays unchanged)."""
    if len(picked) == len(offsets) - 1:
        return values, offsets
    sub_offsets = np.concatenate([[0], np.cumsum(np.diff(offsets)[picked])])
    return np.concatenate([values[offsets[i]:offsets[i + 1]] for i in picked.tolist()]), sub_offsets


class _SourcePacker:
    """One source's documents of the input shard being processed, packed as they arrive."""

    def __init__(self, p: PackParams, source: str, shard_name: str) -> None:
        self.p = p
        self.dtype = np.dtype(p.dtype)
        self.writer = ShardWriter(os.path.join(p.out, source), shard_name, source=source, seq_len=p.seq_len,
                                  strategy=p.strategy, sep_id=p.sep_id, pad_id=p.pad_id, tokenizer_sha256=p.tokenizer_sha256)
        self.ids: list[str] = []  # every document of this source in the shard, in order
        self.carry = np.zeros(0, self.dtype)  # concat: tokens after the last full sequence
        self.carry_offsets = np.zeros(1, np.int64)  # their documents' starts (the first may be a rest)
        self.carry_first = 0  # offset of the carry's first token inside its document
        self.carry_base = 0  # document number of the carry's first document
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []  # bestfit: documents until the shard ends

    def _segment_ids(self, packed: packing.Packed) -> pa.Array:
        return pa.array([self.ids[i] for i in packed.seg_doc.tolist()], pa.string())

    def add(self, values: np.ndarray, offsets: np.ndarray, ids: list[str]) -> None:
        self.ids.extend(ids)
        flat, doc_offsets = packing.with_separators((values.astype(self.dtype, copy=False), offsets), self.p.sep_id,
                                                    self.dtype)
        if self.p.strategy != "concat":
            self.parts.append((flat, doc_offsets))
            return
        flat = np.concatenate([self.carry, flat])
        doc_offsets = np.concatenate([self.carry_offsets[:-1], doc_offsets + len(self.carry)])
        packed, used = packing.pack_concat(flat, doc_offsets, self.p.seq_len, doc_base=self.carry_base,
                                           first_doc_offset=self.carry_first)
        self.writer.add(packed, self._segment_ids(packed))
        first = int(np.searchsorted(doc_offsets, used, side="right") - 1)
        self.carry_first = int(used - doc_offsets[first]) + (self.carry_first if first == 0 else 0)
        self.carry = flat[used:]
        self.carry_offsets = np.append(np.maximum(doc_offsets[first:-1], used), doc_offsets[-1]) - used
        self.carry_base += first

    def finish(self, input_documents: int) -> pa.Table | None:
        """Close the shard; returns the concat tail (id, start, tokens) or None."""
        tail = None
        if self.p.strategy == "concat":
            n = len(self.carry_offsets) - 1
            if n:
                starts = np.zeros(n, np.int64)
                starts[0] = self.carry_first
                tail = pa.table({"id": pa.array(self.ids[self.carry_base:self.carry_base + n], pa.string()),
                                 "start": starts,
                                 "tokens": pa.LargeListArray.from_arrays(pa.array(self.carry_offsets, pa.int64()),
                                                                         pa.array(self.carry))})
        elif self.parts:
            flat = np.concatenate([f for f, _ in self.parts])
            bases = np.cumsum([0] + [len(f) for f, _ in self.parts[:-1]])
            doc_offsets = np.concatenate([o[:-1] + b for (_, o), b in zip(self.parts, bases)] + [[len(flat)]])
            packed = packing.pack_bestfit(flat, doc_offsets, self.p.seq_len, self.p.pad_id, self.p.window)
            self.writer.add(packed, self._segment_ids(packed))
        self.writer.dtype = self.dtype
        self.writer.close({"input_documents": input_documents})
        return tail

    def abort(self) -> None:
        self.writer.abort()


def _pack_tails(source: str, table: pa.Table, p: PackParams) -> None:
    """The tails of a source's shards, in corpus order, packed as `_tail` (the last sequence padded)."""
    dtype = np.dtype(p.dtype)
    values, offsets = from_list_array(table.column("tokens"))
    flat = values.astype(dtype, copy=False)
    starts = table.column("start").to_numpy()
    # A tail row is a document or the rest of one: packed as documents whose first token sits `start`
    # tokens into the original (separator already in place).
    packed, used = packing.pack_concat(flat, offsets, p.seq_len)
    packed.seg_doc_offset = packed.seg_doc_offset + starts[packed.seg_doc]
    rest = packing.empty(p.seq_len, dtype)
    if used < len(flat):
        first = int(np.searchsorted(offsets, used, side="right") - 1)
        rest_offsets = np.append(np.maximum(offsets[first:-1], used), offsets[-1]) - used
        rest = packing.pad_last(flat[used:], rest_offsets, p.seq_len, p.pad_id, doc_base=first,
                                first_doc_offset=used - int(offsets[first]))
        rest.seg_doc_offset = rest.seg_doc_offset + starts[rest.seg_doc]
    packed = packing.concat_packed([packed, rest], p.seq_len, dtype)
    # A tail row that starts inside its document (start > 0) is the rest of the last document of the
    # shard it came from: recorded so that an export joins the two parts into one document again.
    shards = table.column("shard").to_numpy(zero_copy_only=False) if "shard" in table.column_names else None
    continues = [{"doc": int(row), "shard": str(shards[row]) if shards is not None else None}
                 for row in np.flatnonzero(starts > 0).tolist()]
    write_shard(os.path.join(p.out, source), TAIL, packed, table.column("id").to_numpy(zero_copy_only=False),
                source=source, seq_len=p.seq_len, strategy=p.strategy, sep_id=p.sep_id, pad_id=p.pad_id,
                tokenizer_sha256=p.tokenizer_sha256, extra={"input_documents": 0, "continues": continues})


def summarise(out: str | Path) -> dict[str, Any]:
    """`pack.json`: every complete shard of every source folder, with totals (what the manifest reads)."""
    # One listing of the folder (on disk or in a bucket): the source folders are the first parts of the
    # paths of the files at depth two.
    folders = sorted({e.relative.split("/")[0] for e in storage.list_files(out)
                      if e.relative.count("/") == 1 and not e.relative.startswith(("_", "."))})
    sources: dict[str, Any] = {}
    for name in folders:
        folder = storage.join(out, name)
        names = list_shard_names(folder)
        if not names:
            continue
        metas = [read_meta(folder, n) for n in names]
        keys = ("sequences", "tokens", "document_tokens", "padding_tokens", "split_documents", "segments")
        sources[name] = {
            "shards": [{"name": m["name"], "sequences": m["sequences"], "tokens": m["tokens"], "bin_sha256": m["bin_sha256"],
                        "index_sha256": m["index_sha256"]} for m in metas],
            **{k: int(sum(m[k] for m in metas)) for k in keys},
            "documents": int(sum(m.get("input_documents", 0) for m in metas)),
        }
    first = None
    for folder in sources:
        first = read_meta(storage.join(out, folder), sources[folder]["shards"][0]["name"])
        break
    return {"format": "curation-pack", "version": 1, "sources": sources,
            **({k: first[k] for k in ("seq_len", "dtype", "strategy", "sep_id", "pad_id", "tokenizer_sha256")} if first else {})}


# Bounds of the options, checked when the stage is built (before any work: a bad value used to fail
# deep in numpy, or to run). seq_len: 2 is the least that holds a token and its separator; 1 << 20
# (1,048,576) is above the longest contexts trained today and keeps the worst cases bounded: concat pads
# under seq_len tokens per source (2 MiB in uint16; `seq_len: 1e9` wrote a 2 GB padded tail for 60
# documents), and the loader builds 3 int64 planes per sequence (24 MiB a sequence at the bound).
SEQ_LEN_MIN, SEQ_LEN_MAX = 2, 1 << 20
# window: bestfit's open bins. Placing a piece is O(window) (list index and remove) and memory holds
# the open bins, while the gain in padding stops long before the bound. Measured on 6.2 M tokens of the
# shared text (web, GUM, EWT, MSRA, code; 4,000-id BPE): at seq_len 2048 padding is 11.7% with window
# 1, 6.45% at 64, 4.55% at 512, 4.49% at 4096; at seq_len 512, 0.59% at 64 and 0.56% from 512 on.
WINDOW_MAX = 4096
TOKEN_DTYPES = ("uint16", "uint32", "auto")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_options(c: Any) -> None:
    """Type and range of every `pack` option, with a message that says what is accepted."""
    def text(name: str, value: Any, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value:
            kind = "a non-empty string" + (" or null" if optional else "")
            raise ValueError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")

    text("tokenizer", c.tokenizer)
    if not _is_int(c.seq_len) or not SEQ_LEN_MIN <= c.seq_len <= SEQ_LEN_MAX:
        raise ValueError(f"seq_len must be at least {SEQ_LEN_MIN} and at most {SEQ_LEN_MAX:,} tokens, a whole number; "
                         f"got {c.seq_len!r} ({type(c.seq_len).__name__})")
    if not isinstance(c.strategy, str) or c.strategy not in packing.STRATEGIES:
        raise ValueError(f"strategy must be one of {packing.STRATEGIES}, got {c.strategy!r}")
    if not _is_int(c.window) or not 1 <= c.window <= WINDOW_MAX:
        raise ValueError(f"window (bestfit's open bins) must be a whole number from 1 to {WINDOW_MAX}, got {c.window!r} "
                         f"({type(c.window).__name__})")
    if not isinstance(c.dtype, str) or c.dtype not in TOKEN_DTYPES:
        raise ValueError(f"dtype must be one of {TOKEN_DTYPES}, got {c.dtype!r}")
    text("out", c.out, optional=True)
    text("tokens_column", c.tokens_column, optional=True)
    text("source_column", c.source_column, optional=True)
    text("default_source", c.default_source)


@register_stage("pack")
class Pack(Sink):
    """Tokenize (unless a tokens column exists) and pack documents into fixed-length sequences per source."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        tokenizer: str  # tokenizer.json (curation train-tokenizer)
        seq_len: int = 2048
        strategy: str = "concat"  # or "bestfit"
        window: int = 64  # bestfit: open bins
        out: str | None = None  # folder of the packed shards (default: the run's output folder)
        dtype: str = "uint16"  # "uint32" or "auto" for vocabularies over 65,536
        # used when present and produced by this tokenizer (a `tokenize` stage records its sha256 in the
        # column's field); encoded here otherwise; null: always encode
        tokens_column: str | None = "tokens"
        # the column naming each document's source (input.sources writes it); null: one source
        source_column: str | None = "dataset"
        default_source: str = "default"

        def __post_init__(self) -> None:
            _check_options(self)

    def setup(self) -> None:
        self._encoder = Encoder(self.config.tokenizer, self.config.dtype)

    def source_of(self, batch: pa.RecordBatch, rows: pa.Array) -> pa.Array:
        c = self.config
        if c.source_column and c.source_column in batch.schema.names:
            values = pc.fill_null(pc.take(batch.column(c.source_column), rows).cast(pa.string()), c.default_source)
            return pa.array([safe_source(v) for v in values.to_pylist()], pa.string())
        return pa.array([safe_source(c.default_source)] * len(rows), pa.string())

    def open(self, shard: Shard, context: SinkContext) -> SinkWriter:
        return _PackWriter(self, shard, self._params(context), _tails_path(context, shard.name), context.compression)

    def encode(self, batch: pa.RecordBatch, position: BatchPosition, rows: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets) of the tokens of `rows`: the batch's tokens column when this tokenizer wrote
        it, else the text encoded."""
        column = self._tokens_column(batch, position, len(rows))
        if column is not None:
            return self._column_tokens(column, rows, position)
        return self._encoder.encode(pc.take(batch.column(TEXT), rows))

    def _tokens_column(self, batch: pa.RecordBatch, position: BatchPosition, live: int) -> pa.Array | None:
        """The batch's token column when this tokenizer produced it, else None (the text is encoded).

        Re-encoding rather than refusing: the text is what the tokens were made from, the tokenizer
        asked for is explicit, and neither `curation pack` nor a job can drop a stale column (a job
        trains its own tokenizer after a curation pipeline may have run `tokenize` with another). A
        column of unknown provenance (a `tokens` column of the input's own, or one written before the
        sha256 was recorded) is re-encoded for the same reason: its ids would be recorded under this
        tokenizer's name. The count is in the stage's metrics (`documents_reencoded`)."""
        name = self.config.tokens_column
        if not name or name not in batch.schema.names:
            return None
        recorded = tokens_provenance(batch.schema.field(name))
        if recorded == self._encoder.sha256:
            return batch.column(name)
        warned = self.__dict__.setdefault("_warned", set())
        if position.shard_name not in warned:
            warned.add(position.shard_name)
            why = f"by tokenizer {recorded[:12]}..." if recorded else "by an unknown tokenizer (no sha256 recorded)"
            log.warning("pack: input shard %r: column %r was produced %s, not %s (sha256 %s...): encoding the text "
                        "again", position.shard_name, name, why, self.config.tokenizer, self._encoder.sha256[:12])
        self.metrics["documents_reencoded"] += live
        return None

    def _column_tokens(self, column: pa.Array, rows: pa.Array, position: BatchPosition) -> tuple[np.ndarray, np.ndarray]:
        """(values, offsets) of the live rows' token lists, checked: a list of integer ids, no null on a
        live row, every id inside this tokenizer's vocabulary."""
        name, where = self.config.tokens_column, f"input shard {position.shard_name!r}"
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or \
                not pa.types.is_integer(column.type.value_type):
            raise InputError(f"{where}: column {name!r} has type {column.type}; its metadata says our tokenizer produced "
                             f"it, which writes a list of integer ids: drop the column (or set tokens_column: null) to "
                             f"encode the text")
        tokens = pc.take(column, rows)
        if tokens.null_count:
            row = position.row_offset + int(rows[pc.index(pc.is_null(tokens), True).as_py()].as_py())
            raise InputError(f"{where}: row {row}: column {name!r} is null on a kept document: drop the column (or set "
                             f"tokens_column: null) to encode the text")
        values = pc.list_flatten(tokens)
        if len(values):
            low, high = pc.min_max(values).values()
            if low.as_py() < 0 or high.as_py() >= self._encoder.vocab_size:
                bad = pc.or_(pc.less(values, 0), pc.greater_equal(values, self._encoder.vocab_size))
                at = pc.index(bad, True).as_py()
                doc = int(np.searchsorted(tokens.offsets.to_numpy() - tokens.offsets[0].as_py(), at, side="right") - 1)
                row = position.row_offset + int(rows[doc].as_py())
                raise InputError(f"{where}: row {row}: column {name!r} holds id {values[at].as_py()}, outside the "
                                 f"tokenizer's {self._encoder.vocab_size:,} ids")
        return from_list_array(tokens.cast(pa.large_list(pa.from_numpy_dtype(self._encoder.dtype))))

    def _params(self, context: SinkContext) -> PackParams:
        if not hasattr(self, "_encoder"):  # the driver's finish step: no worker set this sink up there
            # It needs the ids, the dtype and the file's hash, never an encode: HF tokenizers alone (0.2
            # CPU-s), not fastokens and the parity check besides (1.2-1.5 CPU-s and about 80 MB on the
            # driver at the end of a Ray run, bench/bench_peer.py). Both backends give the same ids.
            self._encoder = Encoder(self.config.tokenizer, self.config.dtype, backend="tokenizers")
        return PackParams(out=str(self.config.out or context.output_dir), seq_len=self.config.seq_len,
                          strategy=self.config.strategy, window=self.config.window, dtype=self._encoder.dtype.name, sep_id=self._encoder.sep_id,
                          pad_id=self._encoder.pad_id, tokenizer_sha256=self._encoder.sha256)

    def finish(self, context: FinishContext) -> dict[str, Any]:
        p = self._params(context)
        # Every shard is done: a temporary file left now was a killed actor's, whose shard ran again (on
        # an object store there are none: uploads go straight to their final keys).
        if not storage.is_uri(p.out):
            for orphan in Path(p.out).rglob(".*.tmp-*"):
                orphan.unlink(missing_ok=True)
        spilled = storage.names_in(_tails_folder(context))
        # in corpus order; small: under seq_len tokens per source and shard
        tails = [pq.read_table(storage.parquet_source(_tails_path(context, shard.name))) for shard in context.shards
                 if f"{shard.name}.parquet" in spilled]
        if tails and p.strategy == "concat":
            table = pa.concat_tables(tails)
            sources = table.column("source").to_numpy(zero_copy_only=False)
            for source in sorted(set(sources.tolist())):
                _pack_tails(source, table.filter(pa.array(sources == source)), p)
        summary = summarise(p.out)
        summary["tokenizer"] = storage.normalise(self.config.tokenizer)
        write_json_atomic(storage.join(p.out, SUMMARY), summary)
        return {"out": p.out, **{f"{s}_sequences": v["sequences"] for s, v in summary["sources"].items()},
                **{f"{s}_padding_tokens": v["padding_tokens"] for s, v in summary["sources"].items()},
                **{f"{s}_split_documents": v["split_documents"] for s, v in summary["sources"].items()}}


def _tails_folder(context: SinkContext) -> str:
    """Where the shards' concat tails wait for `finish`: in the sink's work folder."""
    return storage.join(context.work_dir, "tails")


def _tails_path(context: SinkContext, shard_name: str) -> str:
    return storage.join(_tails_folder(context), f"{shard_name}.parquet")


class _PackWriter(SinkWriter):
    """One input shard's packing: a `_SourcePacker` per source met in it."""

    def __init__(self, pack: Pack, shard: Shard, params: PackParams, tails_path: str, compression: str) -> None:
        self.pack, self.shard, self.p = pack, shard, params
        self.tails_path, self.compression = tails_path, compression
        self.packers: dict[str, _SourcePacker] = {}
        self.documents: dict[str, int] = {}
        self.rows = 0  # rows of the shard before the next batch: row numbers in error messages

    def write(self, batch: pa.RecordBatch) -> None:
        position = BatchPosition(self.shard.index, self.shard.name, self.rows)
        self.rows += batch.num_rows
        rows = pc.indices_nonzero(live_mask(batch))
        if len(rows) == 0:
            return
        values, offsets = self.pack.encode(batch, position, rows)
        self.pack.metrics["tokens"] += int(offsets[-1])
        self.pack.metrics["documents"] += len(rows)
        sources = self.pack.source_of(batch, rows).to_numpy(zero_copy_only=False)
        ids = pc.take(batch.column(ID), rows).to_numpy(zero_copy_only=False)
        for source in sorted(set(sources.tolist())):
            picked = np.flatnonzero(sources == source)
            if source not in self.packers:
                self.packers[source] = _SourcePacker(self.p, source, self.shard.name)
                self.documents[source] = 0
            self.packers[source].add(*_documents_of(values, offsets, picked), ids[picked].tolist())
            self.documents[source] += len(picked)

    def commit(self) -> None:
        """Close the shard's packed shards; the concat tails are spilled for `finish`."""
        tails = []
        for source, packer in sorted(self.packers.items()):
            tail = packer.finish(self.documents[source])
            if tail is not None and tail.num_rows:
                tails.append(tail.append_column("source", pa.array([source] * tail.num_rows, pa.string()))
                             .append_column("shard", pa.array([self.shard.name] * tail.num_rows, pa.string())))
        if tails:
            writer = AtomicParquetWriter(self.tails_path, self.compression)
            try:
                writer.write(pa.concat_tables(tails))
                writer.commit()
            except BaseException:
                writer.abort()
                raise

    def abort(self) -> None:
        for packer in self.packers.values():
            packer.abort()

