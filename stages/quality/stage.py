"""`quality` and `quality_classifier`: model-based quality scores (stage 3 of the pipeline).

`quality` scores each document by the perplexity of a KenLM n-gram model trained on gold text of its
language (CCNet): `ppl`, optionally `paragraph_ppl` (one per non-empty line), `lm_score` and
`quality_bucket` (`head` / `middle` / `tail` by the cut-offs stored with the model). `lm_score` is the
model's log10 probability minus that of the training unigrams, per token (SLOR, Lau et al. 2017): how
much more fluent than its bag of words the text reads. Perplexity alone rewards text made of frequent
words (keyword lists, sentence fragments); `lm_score` does not, so buckets use it by default
(`bucket_by: ppl` for CCNet's own). It drops by bucket (`drop_buckets`), perplexity (`max_ppl`) or
`min_lm_score` with reason `quality:ppl`. `quality_classifier` adds `quality_score`, the
probability a fastText classifier trained on gold versus web text gives to "gold" (DCLM), and drops
under `min_score` with reason `quality:classifier`. Both take the model folder `curation train-lm`
wrote and the document language from `lang` (the `lid` stage) or `default_lang`; documents in a language
without a model pass unscored (null), counted in stats as `unscored_LANG`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.model_files import ModelError, check_fasttext_file
from curation.stages.quality import native as kenlm_native
from curation.stages.quality.models import (Unigrams, check_kenlm_binary, check_unchanged, classifier_text, read_meta, score_documents,
                                     score_native)
from curation.stage import TEXT, Stage, drop_rows, live_mask, register_stage, set_column
from curation.stages.quality import lm_text

BUCKETS = ("head", "middle", "tail")


def _languages(batch: pa.RecordBatch, lang_column: str, default: str | None) -> np.ndarray:
    if lang_column in batch.schema.names:
        langs = pc.fill_null(batch.column(lang_column), default or "").to_numpy(zero_copy_only=False)
    else:
        langs = np.full(batch.num_rows, default or "", dtype=object)
    return langs.astype(str)


def _check_normalisation(entry: dict, path: Path) -> None:
    if entry.get("normalisation") != lm_text.NORMALISATION_VERSION:
        raise ModelError(f"{path} was trained with text normalisation {entry.get('normalisation')}, this version "
                         f"scores with {lm_text.NORMALISATION_VERSION}: train it again with `curation train-lm`")


class _PerLanguage(Stage):
    """Shared: which rows to score, language by language."""

    def _groups(self, batch: pa.RecordBatch, models: dict) -> list[tuple[str, np.ndarray]]:
        langs = _languages(batch, self.config.lang_column, self.config.default_lang)
        live = np.asarray(live_mask(batch).to_numpy(zero_copy_only=False), dtype=bool)
        groups = []
        for lang in np.unique(langs[live]):
            rows = np.flatnonzero(live & (langs == lang))
            if lang in models:
                groups.append((lang, rows))
            else:
                self.metrics[f"unscored_{lang or 'none'}"] += len(rows)
        return groups


@register_stage("quality")
class PerplexityQuality(_PerLanguage):
    """KenLM perplexity per document (CCNet): ppl, lm_score, quality_bucket; drop by bucket, max_ppl or min_lm_score."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        model_dir: str
        lang_column: str = "lang"
        default_lang: str | None = None  # language of rows with no lang column / null lang
        drop_buckets: tuple[str, ...] = ()  # e.g. ["tail"]
        bucket_by: str = "lm_score"  # or "ppl" (CCNet's own); lm_score separates junk better (bench/)
        max_ppl: float | None = None
        min_lm_score: float | None = None
        lm_score: bool = True  # false: perplexity only, about 1.3x faster (bench/bench_quality.py)
        paragraph_ppl: bool = False  # also `paragraph_ppl`: one value per non-empty line
        # "native": the compiled batch scorer built by scripts/build_kenlm.sh (curation.stages.quality.native);
        # "python": the `kenlm` module, line by line; "auto": native where it is built
        scorer: str = "auto"

        def __post_init__(self) -> None:
            object.__setattr__(self, "drop_buckets", tuple(self.drop_buckets))
            unknown = set(self.drop_buckets) - set(BUCKETS)
            if unknown:
                raise ValueError(f"drop_buckets: unknown bucket(s) {sorted(unknown)}; buckets are {BUCKETS}")
            if self.bucket_by not in ("ppl", "lm_score"):
                raise ValueError("bucket_by must be 'ppl' or 'lm_score'")
            if self.scorer not in ("auto", "native", "python"):
                raise ValueError("scorer must be 'auto', 'native' or 'python'")

    def setup(self) -> None:
        import kenlm  # the optional `quality` extra, loaded in the worker that scores

        native = self.config.scorer != "python" and kenlm_native.library() is not None
        if self.config.scorer == "native" and not native:
            raise ModelError(f"scorer: native, but {kenlm_native.library_path()} is not built: run scripts/build_kenlm.sh")
        meta = read_meta(self.config.model_dir).get("kenlm", {})
        if not meta:
            raise ModelError(f"no KenLM model in {self.config.model_dir}: train one with "
                             f"`curation train-lm --lang LANG --out {self.config.model_dir} GOLD...`")
        self._models, self._entries, self._unigrams = {}, {}, {}
        for lang, entry in meta.items():
            path = Path(self.config.model_dir) / entry["file"]
            check_kenlm_binary(path)
            check_unchanged(path, entry.get("sha256"))
            _check_normalisation(entry, path)
            unigram_path = Path(self.config.model_dir) / entry["unigrams"]
            if not unigram_path.exists():
                raise ModelError(f"{unigram_path} is missing (written by `curation train-lm` beside {path.name}): train again")
            check_unchanged(unigram_path, entry.get("unigrams_sha256"))
            self._unigrams[lang] = unigrams = Unigrams.load(unigram_path)
            if native:
                self._models[lang] = kenlm_native.NativeScorer(path)
                self._models[lang].set_unigrams(unigrams.words, unigrams.log10p[:-1], unigrams.oov, unigrams.eos)
            else:
                self._models[lang] = kenlm.Model(str(path))
            self._entries[lang] = entry
        self._native = native

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not hasattr(self, "_models"):
            self.setup()
        n = batch.num_rows
        ppl = np.full(n, np.nan)
        lm_score = np.full(n, np.nan)
        paragraphs: list = [None] * n
        bucket = np.full(n, None, dtype=object)
        for lang, rows in self._groups(batch, self._models):
            entry = self._entries[lang]
            text = pc.take(batch.column(TEXT), pa.array(rows))
            if self._native:
                scores = score_native(self._models[lang], text, entry["cjk_characters"], self.config.lm_score,
                                      self.config.paragraph_ppl)
            else:
                self.metrics["python_scorer"] += len(rows)
                scores = score_documents(self._models[lang], lm_text.normalise(text, entry["cjk_characters"]),
                                         self._unigrams[lang] if self.config.lm_score else None)
            ppl[rows], lm_score[rows] = scores.ppl, scores.lm_score
            cut = entry["cutoffs"][self.config.bucket_by]
            if self.config.bucket_by == "ppl":
                names = np.where(scores.ppl <= cut["head"], "head", np.where(scores.ppl <= cut["middle"], "middle", "tail"))
            else:
                names = np.where(scores.lm_score >= cut["head"], "head",
                                 np.where(scores.lm_score >= cut["middle"], "middle", "tail"))
            names = np.where(np.isnan(scores.ppl), None, names)
            bucket[rows] = names
            if self.config.paragraph_ppl:
                for row, values in zip(rows.tolist(), scores.line_ppl):
                    paragraphs[row] = values.tolist()
            self.metrics[f"scored_{lang}"] += len(rows)
            for name in BUCKETS:
                self.metrics[f"{lang}_{name}"] += int((names == name).sum())
        batch = set_column(batch, "ppl", pa.array(ppl, pa.float64(), from_pandas=True))
        batch = set_column(batch, "lm_score", pa.array(lm_score, pa.float64(), from_pandas=True))
        batch = set_column(batch, "quality_bucket", pa.array(bucket.tolist(), pa.string()))
        if self.config.paragraph_ppl:
            batch = set_column(batch, "paragraph_ppl", pa.array(paragraphs, pa.list_(pa.float64())))
        drop = np.isin(bucket.astype(str), list(self.config.drop_buckets)) if self.config.drop_buckets else np.zeros(n, bool)
        if self.config.max_ppl is not None:
            drop |= np.nan_to_num(ppl, nan=0.0) > self.config.max_ppl
        if self.config.min_lm_score is not None:
            drop |= np.nan_to_num(lm_score, nan=np.inf) < self.config.min_lm_score
        return drop_rows(batch, pa.array(drop), "quality:ppl")


@register_stage("quality_classifier")
class ClassifierQuality(_PerLanguage):
    """fastText gold-vs-web classifier (DCLM): quality_score in [0, 1]; drop under min_score."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        model_dir: str
        lang_column: str = "lang"
        default_lang: str | None = None
        min_score: float | None = None

    def setup(self) -> None:
        import fasttext  # the optional `quality` extra, loaded in the worker that scores

        meta = read_meta(self.config.model_dir).get("classifier", {})
        if not meta:
            raise ModelError(f"no quality classifier in {self.config.model_dir}: train one with "
                             f"`curation train-lm --kind classifier --lang LANG --negative WEB... --out "
                             f"{self.config.model_dir} GOLD...`")
        fasttext.FastText.eprint = lambda *args, **kwargs: None
        self._models, self._entries = {}, {}
        for lang, entry in meta.items():
            path = Path(self.config.model_dir) / entry["file"]
            if not path.exists():
                raise ModelError(f"quality classifier {path} is missing: train it with `curation train-lm --kind classifier`")
            _check_normalisation(entry, path)
            check_fasttext_file(path)
            check_unchanged(path, entry.get("sha256"))
            try:
                self._models[lang] = fasttext.load_model(str(path)).f
            except ValueError as exc:
                raise ModelError(f"{path} is not a fastText model: {exc}") from None
            self._entries[lang] = entry

    def scores(self, text: pa.Array, lang: str) -> np.ndarray:
        lines = classifier_text(text, self._entries[lang]["cjk_characters"])
        labels, probs = self._models[lang].multilinePredict(lines, 2, 0.0, "strict")
        out = np.zeros(len(lines))
        for i, (names, values) in enumerate(zip(labels, probs)):
            for name, value in zip(names, values):
                if name == "__label__hq":
                    out[i] = min(float(value), 1.0)
        return out

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not hasattr(self, "_models"):
            self.setup()
        score = np.full(batch.num_rows, np.nan)
        for lang, rows in self._groups(batch, self._models):
            score[rows] = self.scores(pc.take(batch.column(TEXT), pa.array(rows)), lang)
            self.metrics[f"scored_{lang}"] += len(rows)
        batch = set_column(batch, "quality_score", pa.array(score, pa.float64(), from_pandas=True))
        if self.config.min_score is None:
            return batch
        return drop_rows(batch, pa.array(np.nan_to_num(score, nan=1.0) < self.config.min_score), "quality:classifier")
