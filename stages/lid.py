"""`lid`: language identification with fastText lid.176.

fastText's predict reads one line: the stage folds every line break and tab into a space and classifies
the first `max_chars` characters of the whole document (a documented prefix: beyond a few hundred
characters the label no longer changes, and the cost grows with the length). A prediction below its
language's `min_score` comes out as `und` (undetermined), never as the best guess: raw fastText calls most
text in languages it does not know English with a low score.

Adds `lang` (ISO 639-1 where one exists, as lid.176 labels), `lang_score` and `lang_group` (the route:
`en`, `zh`, ... or `other`, from `routes`), which later stages use through their `languages` option.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.models import lid_model_path
from curation.stage import TEXT, Stage, drop_rows, register_stage, set_column

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

        def __post_init__(self) -> None:
            if self.max_chars < 1:
                raise ValueError("max_chars must be >= 1")
            object.__setattr__(self, "routes", {k: tuple(v) for k, v in self.routes.items()})

    def setup(self) -> None:
        import fasttext

        path = lid_model_path(self.config.model_path)
        fasttext.FastText.eprint = lambda *args, **kwargs: None  # its load warning is noise here
        # The pybind object directly: the Python wrapper's predict breaks on numpy 2 and is slower.
        self._model = fasttext.load_model(str(path)).f
        self._route_of = {lang: group for group, langs in self.config.routes.items() for lang in langs}

    def predict(self, text: pa.Array) -> tuple[list[str], np.ndarray]:
        """Labels and scores for an array of documents (before thresholds)."""
        prefix = pc.utf8_slice_codeunits(text, 0, self.config.max_chars)
        one_line = pc.replace_substring_regex(prefix, LINE_BREAKS, " ").to_pylist()
        labels, scores = self._model.multilinePredict(one_line, 1, 0.0, "strict")
        langs = [label[0][9:] if label else UNDETERMINED for label in labels]  # "__label__en" -> "en"
        values = np.array([s[0] if len(s) else 0.0 for s in scores], dtype=np.float32)
        return langs, np.minimum(values, 1.0)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        c = self.config
        langs, scores = self.predict(batch.column(TEXT))
        thresholds = np.array([c.min_scores.get(lang, c.min_score) for lang in langs], dtype=np.float32)
        langs = [lang if ok else UNDETERMINED for lang, ok in zip(langs, scores >= thresholds)]
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
