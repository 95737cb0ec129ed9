"""The layout of a `curation pack` output folder: a folder of token shards per source
(`<source>/<input shard>.{bin,index.parquet,json}`, see shards.py), the source's `_tail` shard that packs
every input shard's last partial sequence, and `pack.json` listing every shard (written last: its
presence means the packing is complete). Written by the pack sink (its `finish` step writes the tails
and pack.json); read by the Megatron export and the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation import storage

TAIL = "_tail"
SUMMARY = "pack.json"


def load_summary(out: str | Path) -> dict[str, Any]:
    path = storage.join(out, SUMMARY)  # on disk or in a bucket
    try:
        return storage.read_json(path)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {out} is not a finished `curation pack` output") from None
