"""Pre-tokenizer choice for the byte-level BPE: bytes per token on held-out English, Chinese and code
for candidate split expressions, each trained with `tokenizers` on the same sample (90% of the shared
English, Chinese, web, code and 75-language text; 10% held out), against a plain
`ByteLevelBPETokenizer` with default settings. Vocabulary 65,536.

    .venv/bin/python bench/bench_tokenizer.py
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from corpus import REPO  # noqa: E402

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


def main() -> None:
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


if __name__ == "__main__":
    main()
