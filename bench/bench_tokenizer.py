"""Two measurements of the tokenizer (both modes run when none is named).

`pretokenizer`: the pre-tokenizer choice for the byte-level BPE: bytes per token on held-out English,
Chinese and code for candidate split expressions, each trained with `tokenizers` on the same sample
(90% of the shared English, Chinese, web, code and 75-language text; 10% held out), against a plain
`ByteLevelBPETokenizer` with default settings. Vocabulary 65,536. -> bench/results/tokenizer.json

`encode`: encoding throughput on one thread, side by side in one process and interleaved rounds:
`Encoder` (the library's path: fastokens behind the parity check, special tokens split, ids to
uint16; also in 64K-character pieces, and with its tokenizers fallback), HF tokenizers' `encode_batch`
(with `encode_special_tokens`, ids gathered into numpy) and raw `fastokens.encode_batch_flat`, on
about 1 MiB batches of 4 M characters of the shared text, with a 65,536-id tokenizer trained on a
quarter of the shared text (kept in .cache/bench/encode_tokenizer_65536; delete it to retrain).
Throughput is characters per CPU-second of the process (all its threads), which other processes'
load disturbs less than wall time; the medians over rounds and each round's ratios are recorded.
-> bench/results/tokenizer_encode.json

    .venv/bin/python bench/bench_tokenizer.py [pretokenizer|encode] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import CACHE, REPO  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from conftest import read_jsonl  # noqa: E402

from tokenizers import Tokenizer, pre_tokenizers, trainers  # noqa: E402
from tokenizers.implementations import ByteLevelBPETokenizer  # noqa: E402

from curation.tokenizer.train import PRE_TOKENIZER_PATTERN, SPECIAL_TOKENS, new_tokenizer  # noqa: E402

VOCAB = 65_536
GPT2_DIGITS3 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
GPT2_DIGITS1 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
CL100K_DIGITS3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def han_chunks(k: int) -> str:
    return (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{Han}{1,%d}|[^\r\n\p{L}\p{N}]?[\p{L}&&[^\p{Han}]]+| ?\p{N}{1,3}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+") % k


CANDIDATES = {"curation (cl100k, space + digits{1,3})": PRE_TOKENIZER_PATTERN, "cl100k, digits{1,3}": CL100K_DIGITS3,
              "gpt2, digits{1,3}": GPT2_DIGITS3, "gpt2, single digits": GPT2_DIGITS1,
              "han runs cut to 1 char": han_chunks(1), "han runs cut to 2": han_chunks(2), "han runs cut to 4": han_chunks(4)}


def split() -> tuple[list[str], dict[str, list[str]]]:
    rng = random.Random(0)
    train, held = [], {"en": [], "zh": [], "code": []}
    group = {"en_wikitext2_valid_test.jsonl.gz": "en", "en_gum_docs.jsonl.gz": "en", "web_commoncrawl_samples.jsonl.gz": "en",
             "zh_msra_news.jsonl.gz": "zh", "zh_reviews.jsonl.gz": "zh", "code_humanevalx_linux.jsonl.gz": "code",
             "lid_lingua_75lang.jsonl.gz": None}
    for name, g in group.items():
        rows = [r["text"] for r in read_jsonl(name) if r["text"]]
        rng.shuffle(rows)
        k = len(rows) // 10
        train += rows[k:]
        if g:
            held[g] += rows[:k]
    rng.shuffle(train)
    return train, held


def bytes_per_token(tokenizer, texts: list[str]) -> float:
    encodings = tokenizer.encode_batch(texts)
    return sum(len(t.encode()) for t in texts) / sum(len(e.ids) for e in encodings)


def pretokenizer_bench() -> None:
    train, held = split()
    report = {"train_mb": round(sum(len(t.encode()) for t in train) / 1e6, 1), "vocab_size": VOCAB, "bytes_per_token": {}}
    started = time.perf_counter()
    plain = ByteLevelBPETokenizer()
    plain.train_from_iterator(train, vocab_size=VOCAB, show_progress=False)
    report["bytes_per_token"]["plain ByteLevelBPETokenizer"] = {g: round(bytes_per_token(plain, t), 3) for g, t in held.items()}
    report["plain_train_s"] = round(time.perf_counter() - started, 1)
    for name, pattern in CANDIDATES.items():
        tokenizer: Tokenizer = new_tokenizer(pattern)
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tokenizer.train_from_iterator(train, trainer)
        report["bytes_per_token"][name] = {g: round(bytes_per_token(tokenizer, t), 3) for g, t in held.items()}
        print(name, report["bytes_per_token"][name], flush=True)
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "tokenizer.json").write_text(json.dumps(report, indent=2) + "\n")


# --- encode throughput -------------------------------------------------------------------------------

ENCODE_SAMPLE_CHARS = 4_000_000  # per round and way; every file in proportion to its size
BATCH_CHARS = 1 << 20
FAST_PASSES = 4  # the fastokens ways pass over the sample this many times a round (a pass is ~0.3 CPU-s)


def encode_sample() -> list[list[str]]:
    """About ENCODE_SAMPLE_CHARS characters of the shared text (a fixed sample of every file) in
    batches of about BATCH_CHARS characters, as the executor hands them to a stage."""
    from corpus import real_texts

    texts = [r["text"] for r in real_texts()]
    random.Random(0).shuffle(texts)
    picked, total = [], 0
    for text in texts:
        if total >= ENCODE_SAMPLE_CHARS:
            break
        picked.append(text)
        total += len(text)
    batches, batch, chars = [], [], 0
    for text in picked:
        if batch and chars + len(text) > BATCH_CHARS:
            batches.append(batch)
            batch, chars = [], 0
        batch.append(text)
        chars += len(text)
    return batches + [batch] if batch else batches


def encode_bench(rounds: int) -> None:
    """Train a 65,536-id tokenizer on a quarter of the shared text (all threads), then measure in a
    child process started with one thread for tokenizers and fastokens."""
    from corpus import real_texts

    from curation.tokenizer.train import train_tokenizer

    path = CACHE / f"encode_tokenizer_{VOCAB}" / "tokenizer.json"  # trained once, kept for reruns
    if not path.exists():
        started = time.perf_counter()
        train_tokenizer([r["text"] for r in real_texts()[::4]], path.parent, vocab_size=VOCAB)
        print(f"trained in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "FASTOKENS_BPE_THREADS": "1"}
    result = subprocess.run([sys.executable, __file__, "encode-child", str(path), "--rounds", str(rounds)],
                            env=env, check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(result.stdout)
    print(json.dumps(report, indent=2))
    (REPO / "bench" / "results" / "tokenizer_encode.json").write_text(json.dumps(report, indent=2) + "\n")


def encode_child(path: str, rounds: int) -> None:
    import statistics

    import fastokens
    import numpy as np

    from curation.tokenizer import encode as encode_module
    from curation.tokenizer.encode import Encoder

    batches = encode_sample()
    chars = sum(len(t) for b in batches for t in b)
    built = time.process_time()
    encoder = Encoder(path)
    build_cpu_s = time.process_time() - built
    assert encoder.backend == "fastokens", encoder.fallback_reason
    # its own instance: fastokens caches what it encoded, and the variants must not warm each other's
    encoder_64k_pieces = Encoder(path)
    fallback = Encoder(path, backend="tokenizers")
    hf = Tokenizer.from_file(path)
    hf.encode_special_tokens = True
    text = Path(path).read_text()
    loaded = time.process_time()
    raw = fastokens.Tokenizer.from_json_str(text)
    fastokens_load_cpu_s = time.process_time() - loaded
    loaded = time.process_time()
    Tokenizer.from_str(text)
    tokenizers_load_cpu_s = time.process_time() - loaded

    def encoder_64k(batch):
        # the fastokens path in the 64K-character pieces the tokenizers path needs for its memory
        saved = encode_module.FAST_CHUNK_CHARS
        encode_module.FAST_CHUNK_CHARS = encode_module.ENCODE_CHUNK_CHARS
        try:
            return int(encoder_64k_pieces.encode(batch)[1][-1])
        finally:
            encode_module.FAST_CHUNK_CHARS = saved

    def hf_batch(batch):
        encodings = hf.encode_batch(batch, add_special_tokens=False)
        return len(np.concatenate([np.asarray(e.ids, np.uint16) for e in encodings]))

    def raw_batch(batch):
        ids, _ = raw.encode_batch_flat(batch, add_special_tokens=False, split_special_tokens=True)
        return len(ids) // 4

    ways = {"Encoder (fastokens)": lambda batch: int(encoder.encode(batch)[1][-1]),
            "Encoder (fastokens, 64K-char pieces)": encoder_64k,
            "Encoder (tokenizers backend)": lambda batch: int(fallback.encode(batch)[1][-1]),
            "tokenizers encode_batch": hf_batch, "fastokens encode_batch_flat": raw_batch}
    cpu = {name: [] for name in ways}
    wall = {name: [] for name in ways}
    tokens = {}
    names = list(ways)
    for name in names:  # warm up (caches, thread pools) on two batches
        for batch in batches[:2]:
            ways[name](batch)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            passes = 1 if "tokenizers" in name else FAST_PASSES
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(passes):
                tokens[name] = sum(ways[name](batch) for batch in batches)
            cpu[name].append((time.process_time() - c0) / passes)
            wall[name].append((time.perf_counter() - w0) / passes)
        print(f"round {r + 1}: " + ", ".join(f"{n} {chars / cpu[n][-1] / 1e6:.2f}" for n in names) + " M chars/CPU-s",
              file=sys.stderr, flush=True)
    assert len(set(tokens.values())) == 1, tokens
    base = "tokenizers encode_batch"
    per_cpu = {n: chars / statistics.median(cpu[n]) for n in names}
    report = {
        "threads": {"RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
                    "FASTOKENS_BPE_THREADS": os.environ.get("FASTOKENS_BPE_THREADS")},
        "vocab_size": encoder.vocab_size, "sample_chars": chars, "batches": len(batches), "rounds": rounds,
        "fastokens_passes_per_round": FAST_PASSES,
        "tokens": tokens[base],
        "fastokens": _version("fastokens"),
        "tokenizers": _version("tokenizers"),
        "encoder_build_cpu_s (parity check included)": round(build_cpu_s, 3),
        "load_cpu_s": {"fastokens": round(fastokens_load_cpu_s, 3), "tokenizers": round(tokenizers_load_cpu_s, 3)},
        "mchars_per_cpu_s": {n: round(v / 1e6, 3) for n, v in per_cpu.items()},
        "cpu_s_over_wall_s": {n: round(sum(cpu[n]) / sum(wall[n]), 2) for n in names},
        "ratio_to_tokenizers_per_cpu_s": {n: round(per_cpu[n] / per_cpu[base], 2) for n in names},
        "ratio_per_round": {n: [round(cpu[base][r] / cpu[n][r], 2) for r in range(rounds)] for n in names},
        "encoder_over_raw_fastokens": round(per_cpu["Encoder (fastokens)"] / per_cpu["fastokens encode_batch_flat"], 3),
    }
    print(json.dumps(report))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="*", default=["pretokenizer", "encode"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.mode and args.mode[0] == "encode-child":
        encode_child(args.mode[1], args.rounds)
        return
    for mode in args.mode:
        if mode == "pretokenizer":
            pretokenizer_bench()
        elif mode == "encode":
            encode_bench(args.rounds)
        else:
            parser.error(f"unknown mode {mode!r}: pretokenizer or encode")


if __name__ == "__main__":
    main()
