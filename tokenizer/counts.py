"""Training the BPE from pre-token counts, so that memory does not grow with the sample.

`tokenizers`' `train_from_iterator` keeps every distinct pre-token of the sample, with its pair
positions, in memory: about 1.3 GB for 100 MB of text and 3.1 GB for 500 MB here, and hundreds of GB
for 100 GB samples (tokenizers issue 1824). Most of those pre-tokens are rare and never change a merge.

1. Count (Ray tasks, one per input shard): the same language-balanced sample as `sample.py` (same
   keep decisions), split with the pre-tokenizer's own expression (the `regex` module: the same
   pieces as `tokenizers`' Split, ten times faster from Python) and counted; counts are spilled to
   Parquet by hash partition whenever a task's table grows past `spill_words`.
2. Merge (one Ray task per partition): sum the counts of each pre-token. One seen fewer than
   `min_count` times is not dropped but cut into chunks of `rare_chunk` characters, which recur: most
   rare pre-tokens are long Han runs (one pre-token per run, nearly every one unique), and dropping them
   loses what the BPE learns of Chinese (measured: 2.0 instead of 3.2 bytes per token held out).
3. Train (driver): the `max_words` most frequent pre-tokens are fed to `BpeTrainer`, each repeated in
   proportion to its count (scaled down so that at most `feed_items` pre-tokens are fed). The trainer
   then holds `max_words` distinct pre-tokens whatever the sample size.

Memory: a count task holds one shard's table (at most `spill_words` entries), a merge task one
partition, the trainer `max_words` pre-tokens: none grows with the sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.config import InputConfig
from curation.io import AtomicParquetWriter, list_shards, read_shard
from curation.tokenizer.sample import SampleSpec, _groups, _uniform

COUNT_SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])


@dataclasses.dataclass(frozen=True)
class CountJob:
    """What a count task needs (plain data: it travels to Ray tasks)."""

    pattern: str
    spec: SampleSpec
    rates: dict[str, float]
    work: str
    partitions: int = 16
    spill_words: int = 2_000_000


def _partition(words: list[str], partitions: int) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "little") % partitions
                        for w in words), dtype=np.int32, count=len(words))


def _spill(counts: Counter, job: CountJob, name: str) -> None:
    words = list(counts)
    table = pa.table({"word": pa.array(words, pa.string()), "count": pa.array(list(counts.values()), pa.int64())})
    part = _partition(words, job.partitions)
    for p in range(job.partitions):
        writer = AtomicParquetWriter(os.path.join(job.work, f"p{p:04d}", f"{name}.parquet"), schema=COUNT_SCHEMA)
        writer.write(table.filter(pa.array(part == p)))
        writer.commit()


def count_shard(args: tuple[str, int, CountJob]) -> dict[str, int]:
    """Count task: pre-tokens of the sampled documents of one input shard."""
    import regex  # in the counting tasks only: the driver never splits pre-tokens

    path, shard_index, job = args
    split = regex.compile(job.pattern)
    config = InputConfig(path=(path,), text_column=job.spec.text_column, id_column=None, empty_text="drop")
    (shard,) = list_shards(config)
    counts: Counter = Counter()
    sampled = spills = offset = 0
    for batch in read_shard(shard, config):
        groups = _groups(batch, job.spec)
        u = _uniform(job.spec.seed, shard_index, offset + np.arange(batch.num_rows))
        keep = u < np.array([job.rates.get(g, 0.0) for g in groups])
        offset += batch.num_rows
        for text in pc.filter(batch.column("text"), pa.array(keep)).to_pylist():
            counts.update(split.findall(text))
            sampled += len(text.encode("utf-8"))
        if len(counts) > job.spill_words:
            _spill(counts, job, f"s{shard_index:06d}-{spills:04d}")
            counts, spills = Counter(), spills + 1
    if counts or spills == 0:
        _spill(counts, job, f"s{shard_index:06d}-{spills:04d}")
    return {"sampled_bytes": sampled}


def _summed(table: pa.Table) -> pa.Table:
    summed = table.group_by("word").aggregate([("count", "sum")])
    return pa.table({"word": summed.column("word"), "count": summed.column("count_sum")})


def merge_partition(args: tuple[str, str, int, int]) -> dict[str, int]:
    """Merge task: the summed counts of one partition; pre-tokens under `min_count` cut into chunks."""
    folder, out, min_count, rare_chunk = args
    files = storage.parquet_files(folder)  # on disk or in a bucket (a job's output in object storage)
    table = pa.concat_tables([pq.read_table(storage.parquet_source(f)) for f in files]) if files else COUNT_SCHEMA.empty_table()
    summed = _summed(table)
    frequent = pc.greater_equal(summed.column("count"), min_count)
    kept = summed.filter(frequent)
    rare = summed.filter(pc.invert(frequent))
    chunks: Counter = Counter()
    for word, count in zip(rare.column("word").to_pylist(), rare.column("count").to_pylist()):
        for i in range(0, len(word), rare_chunk):
            chunks[word[i:i + rare_chunk]] += count
    writer = AtomicParquetWriter(out, schema=COUNT_SCHEMA)
    writer.write(kept.cast(COUNT_SCHEMA))
    writer.write(pa.table({"word": pa.array(list(chunks), pa.string()), "count": pa.array(list(chunks.values()), pa.int64())}))
    writer.commit()
    return {"distinct": summed.num_rows, "kept": kept.num_rows, "rare_chunks": len(chunks),
            "pretokens": int(pc.sum(summed.column("count")).as_py() or 0)}


def top_words(merged: list[str], max_words: int) -> pa.Table:
    """The `max_words` most frequent pre-tokens and chunks (ties by the word itself: deterministic).
    A chunk of a rare pre-token may come from several partitions: summed here."""
    table = pa.concat_tables([pq.read_table(storage.parquet_source(f)) for f in merged]) if merged else COUNT_SCHEMA.empty_table()
    table = _summed(table).sort_by([("count", "descending"), ("word", "ascending")])
    return table.slice(0, max_words)


def feed(table: pa.Table, feed_items: int, batch: int = 50_000) -> Iterator[list[str]]:
    """Batches of pre-tokens, each repeated in proportion to its count, at most about `feed_items`."""
    counts = table.column("count").to_numpy()
    total = int(counts.sum()) if len(counts) else 0
    scale = max(1.0, total / max(feed_items, 1))
    repeats = np.maximum(1, np.rint(counts / scale)).astype(np.int64)
    out: list[str] = []
    for word, n in zip(table.column("word").to_pylist(), repeats.tolist()):
        out.extend([word] * n)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def count_pretokens(inputs: list[str], spec: SampleSpec, totals: dict[str, int], pattern: str, work: str, backend,
                    min_count: int = 2, partitions: int = 16, rare_chunk: int = 4) -> tuple[list[str], dict[str, Any]]:
    """Steps 1 and 2 on `backend` (the executor's Ray or local backend); returns the merged files."""
    rates = {g: min(1.0, spec.quota(g) / totals[g]) if totals[g] else 0.0 for g in totals}
    config = InputConfig(path=tuple(inputs), text_column=spec.text_column, id_column=None, empty_text="drop")
    shards = list_shards(config)
    job = CountJob(pattern=pattern, spec=spec, rates=rates, work=os.path.join(work, "counts"), partitions=partitions)
    counted = backend.map(count_shard, [(s.path, s.index, job) for s in shards])
    merged = [os.path.join(work, "merged", f"p{p:04d}.parquet") for p in range(partitions)]
    results = backend.map(merge_partition, [(os.path.join(job.work, f"p{p:04d}"), merged[p], min_count, rare_chunk)
                                            for p in range(partitions)])
    info = {"sampled_bytes": sum(r["sampled_bytes"] for r in counted), "distinct_pretokens": sum(r["distinct"] for r in results),
            "kept_pretokens": sum(r["kept"] for r in results), "rare_chunks": sum(r["rare_chunks"] for r in results),
            "pretokens": sum(r["pretokens"] for r in results)}
    return merged, info
