"""Near-dedup at scale: `minhash_dedup` on a corpus of several GB built from ../shared/data with
perturbed copies, on the embedded Ray instance, watching the resident memory of each of its own
processes (the driver and the Ray instance it starts; other work on the machine is not counted).

The corpus: the shared documents (short sentences and reviews grouped into documents of about 2 KB
per source and language), each copied until the corpus reaches the size asked for; a copy is exact,
has word-level edits (1-30% of its length: insertions, deletions, substitutions at random places), or
sits inside a boilerplate wrapper; all copies are shuffled across the shards, so a document's copies
land in many shards far apart. Cached under .cache/bench.

    .venv/bin/python bench/bench_dedup_scale.py [--gb 5] [--shards 40]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE, DATA, REPO  # noqa: E402

from curation.config import pipeline_from_dict  # noqa: E402
from curation.executor import RunOptions, run_pipeline  # noqa: E402

GROUP_BYTES = 2000
EDIT_RATES = (0.0, 0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.3)
FILLER = "the of and to in a is that for it as was with be by on not this are or from at which 的 了 是".split()
WRAPPER = ("Home | News | Sport | Weather | Contact us | Subscribe to our newsletter | Privacy policy | "
           "Cookie settings | All rights reserved") * 3


def base_documents() -> list[tuple[str, str]]:
    """(text, lang) of the shared documents, short ones grouped (per source and language) into ~2 KB.
    The language travels with the copies: Chinese and Japanese are shingled by characters."""
    docs, pending = [], defaultdict(list)
    for path in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                text, lang = row["text"], row.get("lang") or "und"
                if not text:
                    continue
                if len(text.encode()) >= 500:
                    docs.append((text, lang))
                    continue
                key = (path.name, lang)
                pending[key].append(text)
                if sum(len(t.encode()) for t in pending[key]) >= GROUP_BYTES:
                    docs.append(("\n".join(pending.pop(key)), lang))
    docs.extend(("\n".join(v), key[1]) for key, v in pending.items())
    return docs


def perturb(text: str, rate: float, rng: random.Random) -> str:
    """Word-level edits at about `rate` of the words, by string slicing at random spaces (fast)."""
    edits = int(len(text) / 6 * rate)
    if edits == 0:
        return text
    cuts = sorted(rng.randrange(len(text)) for _ in range(edits))
    pieces, last = [], 0
    for cut in cuts:
        pieces.append(text[last:cut])
        kind = rng.random()
        if kind < 1 / 3:  # deletion of a few characters
            last = min(len(text), cut + rng.randrange(2, 8))
        else:  # insertion or substitution of a filler word
            pieces.append(" " + rng.choice(FILLER) + " ")
            last = cut + (rng.randrange(2, 8) if kind < 2 / 3 else 0)
    pieces.append(text[last:])
    return "".join(pieces)


def _write_shard(args: tuple[Path, list[str], np.ndarray, np.ndarray, int]) -> int:
    path, docs, source, copy, seed = args
    rng = random.Random(seed)
    ids, texts, langs = [], [], []
    for s, c in zip(source.tolist(), copy.tolist()):
        kind = c % (len(EDIT_RATES) + 1)
        text, lang = docs[s]
        if c == 0:
            pass  # the original
        elif kind == len(EDIT_RATES):
            text = WRAPPER + "\n" + text + "\n" + WRAPPER
        else:
            text = perturb(text, EDIT_RATES[kind], rng)
        ids.append(f"d{s}~c{c}")
        texts.append(text)
        langs.append(lang)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table({"id": ids, "text": texts, "lang": langs}), tmp, compression="zstd", row_group_size=20000)
    os.replace(tmp, path)
    return sum(len(t.encode()) for t in texts)


def build(gb: float, shards: int) -> list[Path]:
    folder = CACHE / f"dedup_scale_{gb:g}gb_{shards}"
    files = [folder / f"part{i:04d}.parquet" for i in range(shards)]
    if all(f.exists() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    docs = base_documents()
    size = sum(len(text.encode()) for text, _ in docs)
    copies = int(np.ceil(gb * 1e9 / size))
    source = np.repeat(np.arange(len(docs)), copies)
    copy = np.tile(np.arange(copies), len(docs))
    order = np.random.default_rng(7).permutation(len(source))
    chunks = np.array_split(order, shards)
    work = [(files[i], docs, source[c], copy[c], i) for i, c in enumerate(chunks)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        total = sum(pool.imap_unordered(_write_shard, work))
    print(f"built {len(source)} documents, {total / 1e9:.2f} GB of text in {shards} shards", flush=True)
    return files


def process_kind(name: str) -> str:
    """A process's kind for the per-kind peaks: the driver, a Ray task or actor by its function name
    (`ray::_verify_src`), or a Ray service by its executable (raylet, gcs_server, dashboard...)."""
    if name.startswith("ray::"):
        return name.split()[0]
    words = name.split()
    if not words:
        return "?"
    if "python" in Path(words[0]).name and len(words) > 1:  # a Python service: name it by its script
        script = next((w for w in words[1:] if w.endswith(".py")),
                      next((w for w in words[1:] if not w.startswith("-")), words[0]))
        return Path(script).name
    return Path(words[0]).name


class MemoryWatch(threading.Thread):
    """Samples the resident memory of this process and its descendants (the embedded Ray instance's
    services and workers are children of the driver), never other work on the machine; keeps each
    process's peak."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.peaks, self.running = interval, {}, True

    @staticmethod
    def _descendants(root: int) -> set[int]:
        children: dict[int, list[int]] = defaultdict(list)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
        found, todo = {root}, [root]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def run(self) -> None:
        me = os.getpid()
        while self.running:
            for pid in self._descendants(me):
                try:
                    with open(f"/proc/{pid}/statm") as handle:
                        rss = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        name = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:400]
                except (OSError, IndexError, ValueError):
                    continue  # the process ended meanwhile
                key = (pid, "driver" if pid == me else name)
                self.peaks[key] = max(self.peaks.get(key, 0), rss)
            time.sleep(self.interval)

    def by_kind(self) -> dict[str, int]:
        """The largest peak of each kind of process, in MB."""
        kinds: dict[str, int] = {}
        for (_, name), rss in self.peaks.items():
            kind = process_kind(name)
            kinds[kind] = max(kinds.get(kind, 0), round(rss / 2**20))
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=5)
    parser.add_argument("--shards", type=int, default=40)
    # minhash_dedup's `partitions`: the aggregate's tasks each hold one partition, so their memory follows
    # corpus / partitions (16 partitions: 0.82 GB at 1 GB of text, 1.16 GB at 2 GB); 16 per GB keeps it flat
    parser.add_argument("--partitions", type=int, default=None, help="default: 16 per GB of text")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "dedup_scale.json"),
                        help="where the report goes (a smaller run: another file, the 5 GB one stays)")
    args = parser.parse_args()
    files = build(args.gb, args.shards)
    partitions = args.partitions or max(16, round(16 * args.gb))
    watch = MemoryWatch()
    watch.start()
    with tempfile.TemporaryDirectory(dir=REPO / ".cache") as tmp:
        # keep_work: the spilled keys stay after the run, to be weighed (the aggregate's own
        # intermediates are removed step by step; their size is the keys' times a small factor)
        raw = {"input": {"path": [str(f) for f in files]}, "output": {"path": str(Path(tmp) / "out"), "keep_work": True},
               "executor": {"kind": "ray", "num_cpus": 2}, "stages": [{"name": "minhash_dedup", "partitions": partitions}]}
        started = time.perf_counter()
        stats = run_pipeline(pipeline_from_dict(raw), RunOptions(progress=True))
        wall = time.perf_counter() - started
        spilled: dict[str, int] = defaultdict(int)
        for root, _, names in os.walk(Path(tmp) / "out" / "_work"):
            for name in names:
                if name.endswith(".parquet"):
                    spilled[Path(root).name if "keys" in root else "other"] += os.path.getsize(os.path.join(root, name))
    watch.running = False
    watch.join()
    peaks = sorted(watch.peaks.items(), key=lambda kv: -kv[1])
    text_mb = stats["input"]["bytes"] / 1e6
    report = {
        "docs": stats["input"]["docs"],
        "input_text_gb": round(text_mb / 1e3, 2),
        "shards": len(files),
        "partitions": partitions,
        "cores": os.cpu_count(),
        "wall_s": round(wall, 1),
        "mb_s": round(text_mb / wall, 2),
        "aggregate": stats["aggregates"],
        "kept_docs": stats["output"]["kept_docs"],
        "rejected_docs": stats["output"]["rejected_docs"],
        "spilled_keys_bytes_per_doc": round(sum(spilled.values()) / max(stats["input"]["docs"], 1), 1),
        "spilled_bytes_by_folder": dict(spilled),
        "peak_rss_mb_by_kind": watch.by_kind(),
        "peak_rss_mb_largest_processes": [{"process": name, "rss_mb": round(rss / 2**20)} for (_, name), rss in peaks[:8]],
        "every_process_below_3gb": all(rss < 3 * 2**30 for rss in watch.peaks.values()),
        "every_process_below_1gb": all(rss < 2**30 for rss in watch.peaks.values()),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
