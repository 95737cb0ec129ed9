"""`RuleStage`: the base of the rule stages. It picks the rows to check (live, and in `languages` when
given), with their text and CJK flags, and hands them to `check`; rows it does not pick pass untouched."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from curation.stage import Stage
from curation.stages import text_rules as tr


class RuleStage(Stage):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        cjk_languages: tuple[str, ...] = tr.CJK_LANGUAGES  # counted by characters (see text_rules.words)
        languages: tuple[str, ...] | None = None  # only rows whose `lang` is listed (default: all)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        selected = tr.select_rows(batch, self.config.languages, self.config.cjk_languages)
        if selected is None:
            return batch
        return self.check(batch, selected)

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        raise NotImplementedError
