"""`lid`: language identification with fastText lid.176.

fastText's predict reads one line: the stage folds every line break and tab into a space and classifies
the first `max_chars` characters of the whole document (a documented prefix: beyond a few hundred
characters the label no longer changes, and the cost grows with the length). A prediction below its
language's `min_score` comes out as `und` (undetermined), never as the best guess: raw fastText calls most
text in languages it does not know English with a low score.

English asks 0.7, which also turns real English that is not running prose (API references, catalogue
records, pages of links) into `und`. With `en_evidence` on, an English prediction under 0.7 is kept when
the text itself looks English (`lid_rules.english_evidence`): its score is at least `en_evidence_min_score`
and `en_evidence_min_margin` times the runner-up label's, at least `en_evidence_min_stop_share` of its
words are English function words, and under `en_evidence_max_vowel_final` of its longer words end in a
vowel (the languages lid.176 lacks and calls English are Bantu languages, Maori and Oromo, which end
nearly every word in a vowel). Measured on the held-out half of the evaluation in `bench/bench_lid.py`
(English of at least 200 characters against ten lingua languages lid.176 lacks): English recall 0.953 ->
0.991 with precision 0.997 kept (see `bench/results/lid_quality.json`).

Adds `lang` (ISO 639-1 where one exists, as lid.176 labels), `lang_score` and `lang_group` (the route:
`en`, `zh`, ... or `other`, from `routes`), which later stages use through their `languages` option.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages import lid_native
from curation.stages.model_files import lid_model_path
from curation.stage import TEXT, Stage, drop_rows, register_stage, set_column
from curation.stages.lid_rules import english_evidence

log = logging.getLogger(__name__)

UNDETERMINED = "und"
LINE_BREAKS = r"[\r\n\t\v\f\x{85}\x{2028}\x{2029}]+"


@register_stage("lid")
class LanguageID(Stage):
    """fastText lid.176 language ID: adds lang, lang_score, lang_group; optional keep_languages filter."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        model_path: str | None = None  # default: the cached lid.176.ftz (curation fetch-models)
        max_chars: int = 2000
        min_score: float = 0.3  # below it: lang = "und" (measured on the 75-language set: see tests)
        min_scores: dict[str, float] = dataclasses.field(default_factory=lambda: {"en": 0.7})
        routes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: {"en": ("en",), "zh": ("zh",)})
        keep_languages: tuple[str, ...] | None = None  # drop the rest with reason "lang"
        # Sources whose language is known, e.g. {code: code}: their rows get that lang and lang_group
        # (score 1) instead of a guess (lid.176 calls most code English, and English rules would drop it).
        source_languages: dict[str, str] = dataclasses.field(default_factory=dict)
        source_column: str = "dataset"
        # English under its min_score kept on evidence from the text (module docstring). Cut-offs chosen
        # on the tuning half of bench/bench_lid.py's evaluation: margin 3-4, stop share 0.02-0.05 and
        # vowel-final 0.5-0.6 all give recall and precision >= 0.99 there. The floor 0.4 is the highest that
        # keeps recall >= 0.99 (0.45: 0.986); under 0.4 a Latin page opening with an English credit line
        # and Somali and Oromo pages with English names come out English on the 75-language doc3 set.
        en_evidence: bool = True
        en_evidence_min_score: float = 0.4
        en_evidence_min_margin: float = 3.0
        en_evidence_min_stop_share: float = 0.02
        en_evidence_max_vowel_final: float = 0.6

        def __post_init__(self) -> None:
            if self.max_chars < 1:
                raise ValueError("max_chars must be >= 1")
            object.__setattr__(self, "routes", {k: tuple(v) for k, v in self.routes.items()})

    def setup(self) -> None:
        import fasttext  # the optional `lid` extra, loaded in the worker that predicts

        path = lid_model_path(self.config.model_path)
        fasttext.FastText.eprint = lambda *args, **kwargs: None  # its load warning is noise here
        # The pybind object directly: the Python wrapper's predict breaks on numpy 2 and is slower.
        self._model = fasttext.load_model(str(path)).f
        # The compiled predict where the setup built it (stages/lid_native.py): the same labels and scores
        # bit for bit (tests/test_lid_native.py), without a Python string per document.
        lib, self._native = lid_native.library(), None
        if lib is not None:
            try:
                self._native = lid_native.NativeModel(lib, str(path))
            except ValueError as error:  # a model it does not handle (word n-grams): the pybind path
                log.warning("%s", error)
        labels = self._native.labels if self._native is not None else self._model.getLabels("strict")[0]
        # Labels by index, "und" last: predictions are indexes into these until the columns are built.
        self._codes = np.array([label[9:] for label in labels] + [UNDETERMINED], dtype=object)  # "__label__en" -> "en"
        self._index = {label: i for i, label in enumerate(labels)}
        c = self.config
        self._thresholds = np.array([c.min_scores.get(code, c.min_score) for code in self._codes], dtype=np.float32)
        self._lang_column = pa.array(self._codes, pa.string())
        routes = {lang: group for group, langs in c.routes.items() for lang in langs}
        self._group_column = pa.array([routes.get(code, "other") for code in self._codes], pa.string())

    def predict(self, text: pa.Array) -> tuple[list[str], np.ndarray]:
        """Labels and scores for an array of documents (before thresholds)."""
        label, scores = self._predict(text)
        return self._codes[label].tolist(), np.minimum(scores, 1.0)

    def _one_line(self, text: pa.Array) -> pa.Array:
        """The line fastText reads: the first max_chars characters, line breaks and tabs as spaces."""
        return pc.replace_substring_regex(pc.utf8_slice_codeunits(text, 0, self.config.max_chars), LINE_BREAKS, " ")

    def _predict(self, text: pa.Array, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The k-th label (an index into _codes, "und" where fastText gives fewer than k) and its score
        (fastText's exp of a log-probability, which can pass 1 by a little)."""
        if self._native is not None:
            labels, probs = self._native.predict(text, self.config.max_chars, k)
            label, score = labels[:, k - 1], probs[:, k - 1]
            label = np.where(label < 0, len(self._codes) - 1, label)
        else:
            names, probs = self._model.multilinePredict(self._one_line(text).to_pylist(), k, 0.0, "strict")
            label = np.array([self._index[n[k - 1]] if len(n) >= k else len(self._codes) - 1 for n in names], np.int64)
            score = np.array([s[k - 1] if len(s) >= k else 0.0 for s in probs], dtype=np.float32)
        return label, score

    def _runner_up(self, text: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The second label's score for `rows` (k=2), asked only for the rows en_evidence weighs: 7% of
        the stage's time when asked for every row (bench/bench_stage_ratios.py). k=1 gives the same top
        label and score as k=2 (all 194,027 documents of the shared data)."""
        return self._predict(text.take(pa.array(rows)), k=2)[1]

    def english_kept(self, langs: np.ndarray, scores: np.ndarray, text: pa.Array, passed: np.ndarray) -> np.ndarray:
        """Rows whose English prediction failed its threshold but whose text gives English evidence."""
        c = self.config
        kept = np.zeros(len(langs), dtype=bool)
        rows = np.flatnonzero((langs == "en") & ~passed & (scores >= c.en_evidence_min_score))
        if not c.en_evidence or len(rows) == 0:
            return kept
        rows = rows[scores[rows] >= c.en_evidence_min_margin * self._runner_up(text, rows)]
        if len(rows) == 0:
            return kept
        # Only the candidates are split into words: a few percent of a web batch, so the stage keeps
        # fastText's throughput (bench/results/stage_ratios.json).
        stop_share, vowel_final = english_evidence(self._one_line(text.take(pa.array(rows))))
        ok = (stop_share >= c.en_evidence_min_stop_share) & (vowel_final < c.en_evidence_max_vowel_final)
        kept[rows[ok]] = True
        return kept

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        c = self.config
        text = batch.column(TEXT)
        label, scores = self._predict(text)
        scores = np.minimum(scores, 1.0)
        passed = scores >= self._thresholds[label]
        passed |= self.english_kept(self._codes[label], scores, text, passed)
        label = np.where(passed, label, len(self._codes) - 1)
        langs, groups = self._lang_column.take(label), self._group_column.take(label)
        if c.source_languages and c.source_column in batch.schema.names:
            langs, groups = langs.to_pylist(), groups.to_pylist()
            for row, source in enumerate(batch.column(c.source_column).to_pylist()):
                known = c.source_languages.get(source)
                if known is not None:
                    langs[row], groups[row], scores[row] = known, known, 1.0
            langs, groups = pa.array(langs, pa.string()), pa.array(groups, pa.string())
        batch = set_column(batch, "lang", langs)
        batch = set_column(batch, "lang_score", pa.array(scores, pa.float32()))
        batch = set_column(batch, "lang_group", groups)
        if c.keep_languages is not None:
            keep = pc.is_in(batch.column("lang"), value_set=pa.array(list(c.keep_languages), pa.string()))
            batch = drop_rows(batch, pc.invert(keep), "lang")
        return batch
