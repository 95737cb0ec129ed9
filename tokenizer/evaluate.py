"""Tokenizer evaluation: bytes per token per group on held-out text, vocabulary usage, longest tokens,
side by side with a plain `tokenizers.ByteLevelBPETokenizer` trained on the same sample (the sample
is drawn again from the spec stored with the tokenizer: sampling is deterministic). The tokenizer is
measured through `Encoder`, the encoding the packed shards get; the report names its backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from curation import storage
from curation.tokenizer.encode import Encoder
from curation.tokenizer.sample import SampleSpec, _batches, _groups, balanced_sample

BATCH_DOCS = 1000


def held_out_groups(paths: list[str], spec: SampleSpec, max_docs_per_group: int = 5000) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {g: [] for g in spec.shares}
    for _, _, batch in _batches(paths, spec):
        groups = _groups(batch, spec)
        column = batch.column("text")
        for group in texts:
            room = max_docs_per_group - len(texts[group])
            rows = np.flatnonzero(groups == group)[:room]
            texts[group].extend(column.take(rows).to_pylist())
    return {g: t for g, t in texts.items() if t}


def bytes_per_token(tokenizer: Tokenizer | Encoder, texts: list[str]) -> tuple[float, np.ndarray]:
    """(UTF-8 bytes per token, ids used) over `texts`, with an Encoder or a plain Tokenizer."""
    total_bytes, total_tokens, used = 0, 0, []
    for start in range(0, len(texts), BATCH_DOCS):
        chunk = texts[start:start + BATCH_DOCS]
        if isinstance(tokenizer, Encoder):
            ids = tokenizer.encode(chunk)[0].astype(np.int64)
        else:
            encodings = tokenizer.encode_batch(chunk, add_special_tokens=False)
            ids = np.concatenate([np.asarray(e.ids, np.int64) for e in encodings] or [np.zeros(0, np.int64)])
        total_bytes += sum(len(t.encode("utf-8")) for t in chunk)
        total_tokens += len(ids)
        used.append(np.unique(ids))
    return total_bytes / max(total_tokens, 1), np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)


def plain_baseline(spec: SampleSpec, inputs: list[str], vocab_size: int) -> Tokenizer:
    from tokenizers.implementations import ByteLevelBPETokenizer  # only for the optional baseline

    plain = ByteLevelBPETokenizer()
    plain.train_from_iterator(balanced_sample(inputs, spec), vocab_size=vocab_size, show_progress=False)
    return Tokenizer.from_str(plain.to_str())


def read_tokenizer_meta(tokenizer_path: str | Path) -> dict:
    """tokenizer_meta.json beside a tokenizer.json (a path or a URI): the sample's spec and inputs."""
    return storage.read_json(storage.join(storage.parent(tokenizer_path), "tokenizer_meta.json"))


def evaluate(tokenizer_path: str | Path, held_out: list[str], baseline: bool = True) -> dict:
    meta = read_tokenizer_meta(tokenizer_path)
    encoder = Encoder(tokenizer_path, "auto")
    tokenizer = encoder.tokenizer
    spec = SampleSpec(**meta["sample"])
    groups = held_out_groups(held_out, spec)
    others = {"plain_byte_level_bpe": plain_baseline(spec, meta["inputs"], meta["vocab_size"])} if baseline else {}
    report: dict = {"tokenizer": str(tokenizer_path if storage.is_uri(tokenizer_path) else Path(tokenizer_path)), "vocab_size": tokenizer.get_vocab_size(),
                    "encoder_backend": encoder.backend, "fallback_reason": encoder.fallback_reason, "groups": {}}
    all_used = []
    for group, texts in groups.items():
        ours, used = bytes_per_token(encoder, texts)
        all_used.append(used)
        row = {"docs": len(texts), "bytes_per_token": round(ours, 4)}
        for name, other in others.items():
            theirs, _ = bytes_per_token(other, texts)
            row[f"{name}_bytes_per_token"] = round(theirs, 4)
            row[f"ratio_to_{name}"] = round(ours / theirs, 4)
        report["groups"][group] = row
    vocab = tokenizer.get_vocab()
    used = np.unique(np.concatenate(all_used)) if all_used else np.zeros(0)
    report["vocabulary_used_on_held_out"] = round(len(used) / len(vocab), 4)
    # ties by id: get_vocab()'s order changes from one process to the next
    longest = sorted(vocab, key=lambda t: (-len(tokenizer.decode([vocab[t]]).encode("utf-8")), vocab[t]))[:10]
    report["longest_tokens"] = [tokenizer.decode([vocab[t]]) for t in longest]
    return report
