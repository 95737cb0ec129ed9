"""Byte-level BPE training with HF `tokenizers` (the 65,536-entry vocabulary: every id fits uint16).

The pre-tokenizer is a regular expression then byte-level mapping (no regex of its own); the choice of
expression is measured in bench/bench_tokenizer.py (bytes per token on held-out English, Chinese and
code). Special tokens come first (ids 0..3): begin and end of document, padding, and the separator
that packing puts between documents.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from curation import storage
from curation.config import ExecutorConfig
from curation.errors import CurationError
from curation.executor import make_backend
from curation.tokenizer import counts as counting
from curation.tokenizer.sample import SampleError, balanced_sample, group_bytes

BOS, EOS, PAD, SEP = "<|bos|>", "<|eos|>", "<|pad|>", "<|sep|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, SEP)
UINT16_VOCAB = 65_536
BYTE_ALPHABET = 256

# cl100k's split (contractions, a letter run with one leading non-letter, punctuation runs with their
# line breaks, white space runs whole except the last space so code indentation is few tokens) with
# digits in groups of up to three with an optional leading space. Han runs stay one pre-token, as the
# letters they are, so BPE learns multi-character Chinese words. Measured against GPT-2's split and
# against individual digits or Han runs cut to 1-4 characters (bench/bench_tokenizer.py): the only one
# at or above the plain ByteLevelBPETokenizer on English, Chinese and code held-out text.
PRE_TOKENIZER_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


class TokenizerError(CurationError, ValueError):
    """The tokenizer cannot be trained as asked; the message says why."""


def new_tokenizer(pattern: str = PRE_TOKENIZER_PATTERN) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def check_vocab_size(vocab_size: int, uint16: bool = True) -> None:
    smallest = BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise TokenizerError(f"vocab_size {vocab_size} is under the byte alphabet plus special tokens ({smallest})")
    if uint16 and vocab_size > UINT16_VOCAB:
        raise TokenizerError(f"vocab_size {vocab_size} is over {UINT16_VOCAB}: ids would not fit uint16 "
                             "(pass uint16=False / --no-uint16 for a larger vocabulary)")


DEFAULT_METHOD = "counts"
METHODS = (DEFAULT_METHOD, "stream")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountOptions:
    """`counts` training (tokenizer/counts.py): prune, cap, feed."""

    min_count: int = 2  # pre-tokens seen fewer times are dropped before training
    max_words: int = 2_000_000  # distinct pre-tokens the trainer holds
    feed_items: int = 30_000_000  # pre-tokens fed to the trainer (counts scaled down to it)
    partitions: int = 16


def train_from_shards(inputs: list[str], out_dir: str | Path, spec, vocab_size: int = UINT16_VOCAB,
                      uint16: bool = True, show_progress: bool = False, method: str = DEFAULT_METHOD,
                      backend=None, options: CountOptions | None = None) -> Path | str:
    """Draw the language-balanced sample from curated shards and train on it: `counts` (default) counts
    pre-tokens in Ray tasks and trains from the pruned counts, in memory that does not grow with the
    sample; `stream` feeds the sampled documents to `train_from_iterator` (the plain way). The sample's
    spec and inputs are stored with the tokenizer, so the same sample can be drawn again."""
    if method not in METHODS:
        raise TokenizerError(f"method must be one of {METHODS}, got {method!r}")
    check_vocab_size(vocab_size, uint16)
    totals = group_bytes(inputs, spec)
    missing = [g for g, n in totals.items() if n == 0 and spec.shares[g] > 0]
    if missing:
        raise SampleError(f"no text for group(s) {missing} (column {spec.group_column!r}) in {inputs}: "
                          "give inputs with that language, or drop it from the shares")
    meta = {"inputs": list(inputs), "sample": dataclasses.asdict(spec), "group_bytes": totals, "method": method}
    if method == "stream":
        return train_tokenizer(balanced_sample(inputs, spec, totals), out_dir, vocab_size=vocab_size, uint16=uint16,
                               show_progress=show_progress, extra_meta=meta)
    options = options or CountOptions()
    with _work_folder(out_dir) as work:
        with make_backend(ExecutorConfig(kind="ray")) if backend is None else nullcontext(backend) as backend:
            merged, info = counting.count_pretokens(inputs, spec, totals, PRE_TOKENIZER_PATTERN, work, backend,
                                                    options.min_count, options.partitions)
            # the trainer runs here, on the driver: the counting actors' memory and CPUs go back first
            backend.release()
        table = counting.top_words(merged, options.max_words)
    info["trained_pretokens"] = table.num_rows
    meta["counts"] = {**info, **dataclasses.asdict(options)}
    return train_tokenizer(counting.feed(table, options.feed_items), out_dir, vocab_size=vocab_size, uint16=uint16,
                           show_progress=show_progress, extra_meta=meta)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = UINT16_VOCAB, min_frequency: int = 2,
                    uint16: bool = True, pattern: str = PRE_TOKENIZER_PATTERN, show_progress: bool = False,
                    extra_meta: dict | None = None) -> Path | str:
    """Train on `texts` (any iterable: it is streamed) and write OUT_DIR/tokenizer.json atomically."""
    check_vocab_size(vocab_size, uint16)
    tokenizer = new_tokenizer(pattern)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    seen = 0

    def counted() -> Iterable[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield text

    tokenizer.train_from_iterator(counted(), trainer)
    if seen == 0:
        raise TokenizerError("no text to train on: the sample is empty")
    storage.make_dirs(out_dir)
    meta = {"vocab_size": tokenizer.get_vocab_size(), "special_tokens": {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS},
            "pattern": pattern, "documents": seen, "uint16": uint16, **(extra_meta or {})}
    # each file published whole (temporary file and rename on disk, one upload to its key in a bucket)
    for name, data in transformers_files().items():
        storage.write_bytes(storage.join(out_dir, name), (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    storage.write_bytes(storage.join(out_dir, "tokenizer_meta.json"), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    # last: a tokenizer.json means the folder is complete (the job skips training when it exists)
    target = storage.join(out_dir, "tokenizer.json")
    storage.write_bytes(target, tokenizer.to_str().encode("utf-8"))
    return target if storage.is_uri(target) else Path(target)


def transformers_files() -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json, so that `AutoTokenizer.from_pretrained(folder)`
    knows the special tokens (padding works) and encodes as `Encoder` does: no spaces cleaned up on
    decoding (the decoding is lossless), and special tokens' text in the input split as text
    (`split_special_tokens`), as in the packed shards."""
    roles = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "sep_token": SEP}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **roles, "clean_up_tokenization_spaces": False,
              "split_special_tokens": True, "padding_side": "right"}
    return {"tokenizer_config.json": config, "special_tokens_map.json": roles}


@contextmanager
def _work_folder(out_dir: str | Path) -> Iterator[str]:
    """The counting tasks' spill folder, removed afterwards: beside the tokenizer, so that on a cluster
    whose nodes share no disk every task reaches it (a prefix in the bucket when `out_dir` is a URI)."""
    if not storage.is_uri(out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".counts-") as work:
            yield work
        return
    work = storage.join(out_dir, f".counts-{uuid.uuid4().hex[:12]}")
    try:
        yield work
    finally:
        storage.delete_tree(work)
