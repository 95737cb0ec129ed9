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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.model_files import lid_model_path
from curation.stage import TEXT, Stage, drop_rows, register_stage, set_column
from curation.stages.lid_rules import english_evidence

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
        self._route_of = {lang: group for group, langs in self.config.routes.items() for lang in langs}

    def predict(self, text: pa.Array) -> tuple[list[str], np.ndarray]:
        """Labels and scores for an array of documents (before thresholds)."""
        langs, scores, _ = self._predict(text)
        return langs, scores

    def _predict(self, text: pa.Array) -> tuple[list[str], np.ndarray, pa.Array]:
        """Labels, scores and the one-line prefixes fastText read."""
        prefix = pc.utf8_slice_codeunits(text, 0, self.config.max_chars)
        one_line = pc.replace_substring_regex(prefix, LINE_BREAKS, " ")
        labels, scores = self._model.multilinePredict(one_line.to_pylist(), 1, 0.0, "strict")
        langs = [label[0][9:] if label else UNDETERMINED for label in labels]  # "__label__en" -> "en"
        top = np.array([s[0] if len(s) else 0.0 for s in scores], dtype=np.float32)
        return langs, np.minimum(top, 1.0), one_line

    def _runner_up(self, one_line: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The second label's score for `rows` (k=2), asked only for the rows en_evidence weighs: 7% of
        the stage's time when asked for every row (bench/bench_stage_ratios.py). k=1 gives the same top
        label and score as k=2 (all 194,027 documents of the shared data)."""
        _, scores = self._model.multilinePredict(one_line.take(pa.array(rows)).to_pylist(), 2, 0.0, "strict")
        return np.array([s[1] if len(s) > 1 else 0.0 for s in scores], dtype=np.float32)

    def english_kept(self, langs: np.ndarray, scores: np.ndarray, one_line: pa.Array, passed: np.ndarray) -> np.ndarray:
        """Rows whose English prediction failed its threshold but whose text gives English evidence."""
        c = self.config
        kept = np.zeros(len(langs), dtype=bool)
        rows = np.flatnonzero((langs == "en") & ~passed & (scores >= c.en_evidence_min_score))
        if not c.en_evidence or len(rows) == 0:
            return kept
        rows = rows[scores[rows] >= c.en_evidence_min_margin * self._runner_up(one_line, rows)]
        if len(rows) == 0:
            return kept
        # Only the candidates are split into words: a few percent of a web batch, so the stage keeps
        # fastText's throughput (bench/results/stage_ratios.json).
        stop_share, vowel_final = english_evidence(one_line.take(pa.array(rows)))
        ok = (stop_share >= c.en_evidence_min_stop_share) & (vowel_final < c.en_evidence_max_vowel_final)
        kept[rows[ok]] = True
        return kept

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        c = self.config
        predicted, scores, one_line = self._predict(batch.column(TEXT))
        langs = np.array(predicted, dtype=object)
        thresholds = np.array([c.min_scores.get(lang, c.min_score) for lang in predicted], dtype=np.float32)
        passed = scores >= thresholds
        passed |= self.english_kept(langs, scores, one_line, passed)
        langs = np.where(passed, langs, UNDETERMINED).tolist()
        groups = [self._route_of.get(lang, "other") for lang in langs]
        if c.source_languages and c.source_column in batch.schema.names:
            for row, source in enumerate(batch.column(c.source_column).to_pylist()):
                known = c.source_languages.get(source)
                if known is not None:
                    langs[row], groups[row], scores[row] = known, known, 1.0
        batch = set_column(batch, "lang", pa.array(langs, pa.string()))
        batch = set_column(batch, "lang_score", pa.array(scores, pa.float32()))
        batch = set_column(batch, "lang_group", pa.array(groups, pa.string()))
        if c.keep_languages is not None:
            keep = pc.is_in(batch.column("lang"), value_set=pa.array(list(c.keep_languages), pa.string()))
            batch = drop_rows(batch, pc.invert(keep), "lang")
        return batch
