"""Helpers shared by the packing, export and loader tests: a small BPE trained on real text, input
shards of real documents, `curation pack` on them, and the packed documents read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import read_jsonl
from curation.cli import main as cli_main
from curation.tokenizer.shards import open_shard
from curation.tokenizer.train import train_tokenizer

# Real documents of several scripts and lengths: English prose, Chinese news, code, web text.
INPUTS = {"a_gum": ("en_gum_docs.jsonl.gz", 40), "b_msra": ("zh_msra_news.jsonl.gz", 80),
          "c_code": ("code_humanevalx_linux.jsonl.gz", 40), "d_web": ("web_commoncrawl_samples.jsonl.gz", 40)}


def small_tokenizer(out: Path, vocab_size: int = 2000, docs: int = 400) -> Path:
    texts = [r["text"] for name in ("en_gum_docs.jsonl.gz", "zh_msra_news.jsonl.gz", "code_humanevalx_linux.jsonl.gz")
             for r in read_jsonl(name, docs) if r["text"]]
    return train_tokenizer(texts, out, vocab_size=vocab_size)


def write_inputs(folder: Path, inputs: dict[str, tuple[str, int]] = INPUTS) -> dict[str, str]:
    """One Parquet shard per entry (rows with text only); returns {id: text} of every document."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = {}
    for stem, (name, limit) in inputs.items():
        rows = [{"id": f"{stem}-{r['id']}", "text": r["text"]} for r in read_jsonl(name, limit) if r["text"]]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{stem}.parquet")
        docs.update((r["id"], r["text"]) for r in rows)
    return docs


def pack(tokenizer: Path, out: Path, inputs, *extra: str) -> int:
    args = ["pack", "--tokenizer", str(tokenizer), "--out", str(out), "--executor", "local", *extra]
    return cli_main([*args, *[str(i) for i in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]])


def packed_documents(folder: Path, summary: dict) -> dict[str, np.ndarray]:
    """doc id -> its tokens (separator included), joined from the segments of every shard."""
    pieces: dict[str, list] = {}
    for source, entry in summary["sources"].items():
        for shard_entry in entry["shards"]:
            shard = open_shard(folder / source, shard_entry["name"], verify=True)
            ids = shard.doc_ids.to_pylist()
            for s in range(shard.sequences):
                for k in range(shard.seg_ptr[s], shard.seg_ptr[s + 1]):
                    pos, length = int(shard.seg_pos[k]), int(shard.seg_len[k])
                    pieces.setdefault(ids[k], []).append((int(shard.seg_doc_offset[k]), shard.tokens[s, pos:pos + length]))
    return {doc: np.concatenate([t for _, t in sorted(parts, key=lambda p: p[0])]) for doc, parts in pieces.items()}
