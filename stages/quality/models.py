"""Quality models: `curation train-lm` trains them, the `quality` and `quality_classifier` stages load them.

A model folder holds, per language, a KenLM binary (`LANG.kenlm.binary`, an n-gram model of gold text,
CCNet style) and/or a fastText classifier (`LANG.classifier.bin`, gold versus web, DCLM style), and
`quality.json`: what each file is, the normalisation it was trained with and, for KenLM, the perplexity
cut-offs (percentiles on a sample) that name the `head` / `middle` / `tail` buckets.

KenLM's `lmplz` and `build_binary` come from `scripts/build_kenlm.sh` (built from the kenlm sdist,
cached in ~/.cache/curation/kenlm, or `CURATION_KENLM_DIR`); nothing is downloaded here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.config import InputConfig
from curation.errors import CurationError
from curation.io import list_shards, read_shard, write_json_atomic
from curation.stages.model_files import ModelError, sha256_of
from curation.stages.quality import lm_text
from curation.stages.text_rules import CJK_LANGUAGES


META = "quality.json"
KENLM_MAGIC = b"mmap lm http://kheafield.com/code"
LINE_BREAK = " <nl> "
BUCKET_PERCENTILES = (33.3, 66.7)  # CCNet: head / middle / tail thirds


class TrainError(CurationError, ValueError):
    """Training cannot start or produced nothing; the message says what to do."""


def kenlm_binaries() -> tuple[Path, Path]:
    """(lmplz, build_binary): from CURATION_KENLM_DIR/bin, the setup's cache, or PATH."""
    folder = Path(os.environ.get("CURATION_KENLM_DIR", Path.home() / ".cache" / "curation" / "kenlm")) / "bin"
    found = []
    for name in ("lmplz", "build_binary"):
        path = folder / name if (folder / name).exists() else shutil.which(name)
        if path is None:
            raise TrainError(f"KenLM's {name} not found in {folder} or on PATH: run scripts/build_kenlm.sh "
                             "(scripts/setup.sh does) to build it from the kenlm sdist")
        found.append(Path(path))
    return found[0], found[1]


def read_meta(model_dir: str | Path) -> dict:
    path = Path(model_dir) / META
    if not path.exists():
        raise ModelError(f"no quality models in {model_dir} ({META} missing): train them with "
                         "`curation train-lm --lang LANG --out DIR GOLD...`")
    return json.loads(path.read_text())


def _update_meta(model_dir: Path, kind: str, lang: str, entry: dict) -> None:
    meta = read_meta(model_dir) if (model_dir / META).exists() else {}
    meta.setdefault(kind, {})[lang] = entry
    write_json_atomic(model_dir / META, meta)


def check_kenlm_binary(path: Path) -> None:
    """A clear error for a missing file or an ARPA file where KenLM's binary format is expected."""
    if not path.exists():
        raise ModelError(f"KenLM model {path} is missing: train it with `curation train-lm` or fix model_dir")
    with open(path, "rb") as handle:
        head = handle.read(len(KENLM_MAGIC))
    if head != KENLM_MAGIC:
        if head.lstrip().startswith(b"\\data\\"):
            raise ModelError(f"{path} is an ARPA file, not a KenLM binary: convert it with "
                             f"`build_binary {path} OUT.binary` (or train with `curation train-lm`)")
        raise ModelError(f"{path} is not a KenLM binary model")


def check_unchanged(path: Path, expected: str | None) -> None:
    """A model file must be the one `train-lm` wrote (its sha256 is in quality.json): a file swapped or
    damaged since is refused before a native loader reads it."""
    if expected is not None and sha256_of(path) != expected:
        raise ModelError(f"{path} does not match the sha256 recorded in {META} when it was trained: "
                         "it was changed or damaged; train it again with `curation train-lm`")


def _gold_texts(inputs: list[str], lang: str, text_column: str, lang_column: str | None) -> Iterator[pa.Array]:
    """Text of the gold documents, batch by batch; when the input has a `lang_column`, only `lang` rows."""
    config = InputConfig(path=tuple(inputs), text_column=text_column, id_column=None, empty_text="drop")
    for shard in list_shards(config):
        for batch in read_shard(shard, config):
            live = pc.is_null(batch.column("drop_reason"))
            if lang_column and lang_column in batch.schema.names:
                live = pc.and_(live, pc.fill_null(pc.equal(batch.column(lang_column), lang), False))
            yield pc.filter(batch.column("text"), live)


@dataclass(frozen=True)
class KenlmTraining:
    lang: str
    inputs: list[str]
    out: Path
    order: int = 5
    text_column: str = "text"
    lang_column: str | None = "lang"
    calibrate: list[str] | None = None  # documents for the bucket cut-offs (default: held-out gold)
    holdout_every: int = 20  # every n-th gold document is held out for the cut-offs
    # At least this many held-out documents (0: off): when the gold is too small for `holdout_every` to
    # give them, every k-th document is held out instead (k >= 2: never more than half the gold). The 33rd
    # and 67th percentiles of 14 documents (English WikiText + GUM, 299 documents, every 20th) move a lot
    # with the draw: subsets of 14 of 99 held-out documents put the tail cut-off (lm_score) anywhere in
    # 0.317-0.374 (5th-95th percentile), subsets of 50 in 0.335-0.357; holding out every 5th (59) instead
    # of every 20th moved the English web (UD EWT) share in the head from 16% to 22%, the tail 67% -> 66%.
    min_holdout_docs: int = 0
    memory: str = "40%"


class Unigrams:
    """Unigram log10 probabilities of the training tokens (add-half smoothing; `</s>` once per line),
    stored beside the model: the baseline that `lm_score` subtracts (SLOR: Lau et al. 2017)."""

    def __init__(self, words: pa.Array, log10p: np.ndarray, oov_log10p: float) -> None:
        self.words, self.log10p, self.oov = words, np.append(log10p, oov_log10p), oov_log10p
        self.eos = float(log10p[words.index("</s>").as_py()]) if words.index("</s>").as_py() >= 0 else oov_log10p

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> "Unigrams":
        total, vocab = sum(counts.values()), len(counts)
        words = pa.array(list(counts), pa.string())
        freq = np.fromiter(counts.values(), dtype=np.float64, count=vocab)
        return cls(words, np.log10((freq + 0.5) / (total + 0.5 * vocab)), float(np.log10(0.5 / (total + 0.5 * vocab))))

    def save(self, path: Path) -> None:
        table = pa.table({"word": self.words, "log10p": self.log10p[:-1]})
        table = table.replace_schema_metadata({"oov_log10p": str(self.oov)})
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Unigrams":
        table = pq.read_table(path)
        return cls(table.column("word").combine_chunks(), table.column("log10p").to_numpy(),
                   float(table.schema.metadata[b"oov_log10p"]))

    def line_log10p(self, line_array: pa.Array) -> np.ndarray:
        """Sum of unigram log10 probabilities per line, `</s>` included."""
        words, parent = lm_text.tokens(line_array)
        index = pc.fill_null(pc.index_in(words, value_set=self.words), -1).to_numpy(zero_copy_only=False)
        per_token = self.log10p[index]  # -1 picks the out-of-vocabulary value at the end
        return np.bincount(parent.to_numpy(), weights=per_token, minlength=len(line_array)) + self.eos


@dataclass
class DocumentScores:
    ppl: np.ndarray  # perplexity over all lines (NaN: no line)
    lm_score: np.ndarray  # (log10 P_lm - log10 P_unigram) per token: fluency beyond word frequency
    line_ppl: list[np.ndarray] | None  # per non-empty line (paragraph), where asked for


def score_documents(model, normalised: pa.Array, unigrams: Unigrams | None = None) -> DocumentScores:
    """KenLM scores of normalised documents through the `kenlm` module; each line a sentence with <s>
    and </s>, as CCNet does."""
    line_array, parent = lm_text.lines(normalised)
    score = model.score
    # bytes, not str: KenLM encodes every str to UTF-8 itself (13% of its time, measured)
    logprob = np.fromiter((score(s) for s in line_array.cast(pa.binary()).to_pylist()), dtype=np.float64,
                          count=len(line_array))
    words = lm_text.token_counts(line_array).astype(np.float64) + 1  # + </s>
    parent = parent.to_numpy()
    n = len(normalised)
    unigram_lp = None
    if unigrams is not None:
        unigram_lp = np.bincount(parent, weights=unigrams.line_log10p(line_array), minlength=n) if len(line_array) else np.zeros(n)
    return _document_scores(np.bincount(parent, weights=logprob, minlength=n), np.bincount(parent, weights=words, minlength=n),
                            unigram_lp, (logprob, words, parent))


def score_native(scorer, text: pa.Array, cjk: bool, lm_score: bool, per_line: bool) -> DocumentScores:
    """The same scores from the compiled scorer (`curation.stages.quality.native`), on raw text."""
    lp, words, unigram_lp, lines = scorer.score(text, cjk, per_line)
    return _document_scores(lp, words, unigram_lp if lm_score else None, lines)


def _document_scores(total_lp: np.ndarray, total_words: np.ndarray, unigram_lp: np.ndarray | None,
                     lines: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> DocumentScores:
    n = len(total_lp)
    has_text = total_words > 0
    safe_words = np.maximum(total_words, 1)
    ppl = np.where(has_text, 10.0 ** (-total_lp / safe_words), np.nan)
    lm_score = np.full(n, np.nan)
    if unigram_lp is not None:
        lm_score = np.where(has_text, (total_lp - unigram_lp) / safe_words, np.nan)
    if lines is None:
        return DocumentScores(ppl, lm_score, None)
    logprob, words, parent = lines
    with np.errstate(divide="ignore", invalid="ignore"):
        line_ppl = 10.0 ** (-logprob / words)
    bounds = np.searchsorted(parent, np.arange(n + 1))
    return DocumentScores(ppl, lm_score, [line_ppl[bounds[i]:bounds[i + 1]] for i in range(n)])


def _holdout_every(job: KenlmTraining) -> int:
    """`holdout_every`, lowered when the gold is too small to give `min_holdout_docs` held-out documents
    (counted in a first pass: gold sets are small next to the web they judge)."""
    if job.calibrate or job.min_holdout_docs <= 0:
        return job.holdout_every
    total = sum(len(t) for t in _gold_texts(job.inputs, job.lang, job.text_column, job.lang_column))
    if total // job.holdout_every >= job.min_holdout_docs:
        return job.holdout_every
    return max(2, min(job.holdout_every, total // job.min_holdout_docs))


def train_kenlm(job: KenlmTraining) -> dict:
    """Train a KenLM model of `order` on the gold inputs; write LANG.kenlm.binary and its quality.json entry."""
    import kenlm  # the optional `quality` extra: only `train-lm` needs it here

    cjk_languages = CJK_LANGUAGES
    lmplz, build_binary = kenlm_binaries()
    cjk = job.lang in cjk_languages
    job.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    every = _holdout_every(job)
    with tempfile.TemporaryDirectory(dir=job.out, prefix=".train-") as tmp:
        corpus, held_out, docs, chars = Path(tmp) / "corpus.txt", [], 0, 0
        counts: Counter = Counter()
        with open(corpus, "w", encoding="utf-8") as handle:
            for text in _gold_texts(job.inputs, job.lang, job.text_column, job.lang_column):
                normalised = lm_text.normalise(text, cjk)
                held = (np.arange(docs, docs + len(normalised)) % every) == every - 1
                if len(held_out) >= 5000:
                    held[:] = False
                held_out.extend(d for d in pc.filter(normalised, pa.array(held)).to_pylist() if d)
                train = pc.filter(normalised, pa.array(~held))
                docs += len(normalised)
                line_array, _ = lm_text.lines(train)
                if not len(line_array):
                    continue
                words, _ = lm_text.tokens(line_array)
                counted = pc.value_counts(words)
                counts.update(dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))
                counts["</s>"] += len(line_array)
                block = "\n".join(line_array.to_pylist())
                handle.write(block)
                handle.write("\n")
                chars += len(block)
        if chars == 0:
            raise TrainError(f"no gold text for language {job.lang!r} in {job.inputs}"
                             + (f" (rows whose {job.lang_column!r} is {job.lang!r})" if job.lang_column else "")
                             + ": give gold documents of that language")
        arpa, binary = Path(tmp) / "model.arpa", job.out / f"{job.lang}.kenlm.binary"
        with open(corpus, "rb") as source, open(arpa, "wb") as sink:
            # --skip_symbols: literal <s>, </s>, <unk> in text (WikiText has <unk>) are treated as
            # white space instead of aborting; --discount_fallback: small corpora lack some counts.
            run = subprocess.run([str(lmplz), "-o", str(job.order), "-S", job.memory, "-T", tmp, "--skip_symbols",
                                  "--discount_fallback"], stdin=source, stdout=sink, stderr=subprocess.PIPE)
        if run.returncode != 0:
            raise TrainError(f"lmplz failed: {run.stderr.decode(errors='replace')[-2000:]}")
        tmp_binary = Path(tmp) / "model.binary"
        run = subprocess.run([str(build_binary), str(arpa), str(tmp_binary)], capture_output=True)
        if run.returncode != 0:
            raise TrainError(f"build_binary failed: {run.stderr.decode(errors='replace')[-2000:]}")
        os.replace(tmp_binary, binary)
    unigrams = Unigrams.from_counts(counts)
    unigrams.save(job.out / f"{job.lang}.unigram.parquet")
    model = kenlm.Model(str(binary))
    if job.calibrate:
        sample = pa.concat_arrays([lm_text.normalise(t, cjk) for t in _gold_texts(job.calibrate, job.lang, job.text_column,
                                                                                   job.lang_column)] or [pa.array([], pa.string())])
    else:
        sample = pa.array(held_out, pa.string())
    scores = score_documents(model, sample, unigrams)
    ppl = scores.ppl[np.isfinite(scores.ppl)]
    lm_score = scores.lm_score[np.isfinite(scores.lm_score)]
    if not len(ppl):
        raise TrainError(f"no documents to compute the bucket cut-offs from ({'--calibrate' if job.calibrate else 'held-out gold'}"
                         f" is empty): give more gold documents or --calibrate")
    entry = {"file": binary.name, "sha256": sha256_of(binary), "unigrams": f"{job.lang}.unigram.parquet",
             "unigrams_sha256": sha256_of(job.out / f"{job.lang}.unigram.parquet"), "order": job.order,
             "normalisation": lm_text.NORMALISATION_VERSION,
             "cjk_characters": cjk, "train_chars": chars, "train_docs": docs - len(held_out),
             # low perplexity is good: head is under the first cut-off; high lm_score is good: head is over
             "cutoffs": {"ppl": {"head": float(np.percentile(ppl, BUCKET_PERCENTILES[0])),
                                 "middle": float(np.percentile(ppl, BUCKET_PERCENTILES[1]))},
                         "lm_score": {"head": float(np.percentile(lm_score, 100 - BUCKET_PERCENTILES[0])),
                                      "middle": float(np.percentile(lm_score, 100 - BUCKET_PERCENTILES[1]))}},
             "cutoff_sample_docs": int(len(ppl)),
             "cutoff_sample": "calibrate" if job.calibrate else "held-out gold",
             "holdout_every": None if job.calibrate else every, "train_s": round(time.perf_counter() - started, 1)}
    _update_meta(job.out, "kenlm", job.lang, entry)
    return entry


def _classifier_lines(inputs: list[str], lang: str, label: str, text_column: str, lang_column: str | None,
                      cjk: bool, limit: int | None) -> list[str]:
    out: list[str] = []
    for text in _gold_texts(inputs, lang, text_column, lang_column):
        one_line = pc.replace_substring(lm_text.normalise(text, cjk, lower=False), "\n", LINE_BREAK)
        out.extend(f"__label__{label} {doc}" for doc in one_line.to_pylist() if doc)
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def classifier_text(text: pa.Array, cjk: bool) -> list[str]:
    """What the classifier reads: the normalised document on one line, line breaks as a token (how a
    page is cut into lines tells menus and fragments from prose)."""
    return pc.replace_substring(lm_text.normalise(text, cjk, lower=False), "\n", LINE_BREAK).to_pylist()


def train_classifier(lang: str, positive: list[str], negative: list[str], out: Path, text_column: str = "text",
                     lang_column: str | None = "lang", epoch: int = 10, word_ngrams: int = 2, dim: int = 64,
                     negative_lang_column: str | None = None) -> dict:
    """fastText supervised classifier, gold (`hq`) versus web (`lq`), classes balanced by truncation."""
    import fasttext  # the optional `quality` extra: only `train-lm --kind classifier` needs it

    cjk_languages = CJK_LANGUAGES
    cjk = lang in cjk_languages
    started = time.perf_counter()
    pos = _classifier_lines(positive, lang, "hq", text_column, lang_column, cjk, None)
    if not pos:
        raise TrainError(f"no gold text for language {lang!r} in {positive}: give gold documents of that language")
    neg = _classifier_lines(negative, lang, "lq", text_column, negative_lang_column, cjk, None)
    if not neg:
        raise TrainError(f"no negative (web) text in {negative}: `--kind classifier` needs --negative documents")
    n = min(len(pos), len(neg))
    rng = np.random.default_rng(0)
    lines = [pos[i] for i in sorted(rng.choice(len(pos), n, replace=False))] + \
            [neg[i] for i in sorted(rng.choice(len(neg), n, replace=False))]
    rng.shuffle(lines)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".train-") as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        fasttext.FastText.eprint = lambda *args, **kwargs: None
        model = fasttext.train_supervised(input=str(data), epoch=epoch, lr=0.1, wordNgrams=word_ngrams, dim=dim,
                                          minCount=2, thread=1, verbose=0)
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        target = out / f"{lang}.classifier.bin"
        os.replace(tmp_model, target)
    entry = {"file": target.name, "sha256": sha256_of(target), "normalisation": lm_text.NORMALISATION_VERSION, "cjk_characters": cjk,
             "positive_docs": n, "negative_docs": n, "epoch": epoch, "word_ngrams": word_ngrams,
             "train_s": round(time.perf_counter() - started, 1)}
    _update_meta(out, "classifier", lang, entry)
    return entry
