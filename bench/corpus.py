"""Benchmark corpora built from ../shared/data (cached under .cache/bench; never shipped)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATION_TEST_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"


def real_texts() -> list[dict]:
    rows = []
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if row["text"]:
                    rows.append({"id": row["id"], "text": row["text"]})
    return rows


def parquet_corpus(total_mb: int, shards: int) -> list[Path]:
    """`shards` Parquet files holding about `total_mb` MB of real text (the shared data, repeated)."""
    folder = CACHE / f"parquet_{total_mb}mb_{shards}"
    files = [folder / f"part{i:03d}.parquet" for i in range(shards)]
    if all(f.exists() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rows = real_texts()
    if not rows:
        raise SystemExit(f"no documents in {DATA}/*.jsonl.gz: point CURATION_TEST_DATA at the shared data")
    per_shard = total_mb * 1_000_000 // shards
    cursor, copy = 0, 0
    for path in files:
        ids, texts, size = [], [], 0
        while size < per_shard:
            row = rows[cursor]
            ids.append(f"{row['id']}#{copy}")
            texts.append(row["text"])
            size += len(row["text"].encode())
            cursor += 1
            if cursor == len(rows):
                cursor, copy = 0, copy + 1
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.table({"id": ids, "text": texts}), tmp, compression="zstd")
        os.replace(tmp, path)
    return files
