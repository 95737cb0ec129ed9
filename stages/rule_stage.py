"""`RuleStage`: the base of the rule stages. It picks the rows to check (live, and in `languages` when
given), with their text and CJK flags, and hands them to `check`; rows it does not pick pass untouched.

A stage that measures reference pages differently (gopher_repetition's and fineweb's `reference_page_copies`)
records which pages are reference pages in the REFERENCE_PAGE column and reads what an earlier stage recorded
there: c4 removes a reference page's signature lines (they end without punctuation), which are what
`text_rules.reference_pages` recognises it by, so a stage after c4 must not recognise it from the text it gets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import Stage, set_column
from curation.stages import text_rules as tr

REFERENCE_PAGE = "reference_page"  # bool: a reference page (text_rules.reference_pages); null: not looked at


class RuleStage(Stage):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        cjk_languages: tuple[str, ...] = tr.CJK_LANGUAGES  # counted by characters (see text_rules.words)
        languages: tuple[str, ...] | None = None  # only rows whose `lang` is listed (default: all)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self.reads_reference_pages() and REFERENCE_PAGE not in batch.schema.names:
            # every batch gets the column, so that the shards a run writes share one schema
            batch = set_column(batch, REFERENCE_PAGE, pa.nulls(batch.num_rows, pa.bool_()))
        selected = tr.select_rows(batch, self.config.languages, self.config.cjk_languages)
        if selected is None:
            return batch
        return self.check(batch, selected)

    def check(self, batch: pa.RecordBatch, selected: tr.Selected) -> pa.RecordBatch:
        raise NotImplementedError

    def reads_reference_pages(self) -> bool:
        """True where this stage's settings measure reference pages differently (it then calls `reference_pages`)."""
        return False

    def reference_pages(self, batch: pa.RecordBatch, selected: tr.Selected) -> tuple[pa.RecordBatch, np.ndarray]:
        """(the batch with REFERENCE_PAGE filled in for the selected rows, the selected rows' flags): a row an
        earlier stage looked at keeps its flag, the others are recognised from their text here."""
        column = batch.column(REFERENCE_PAGE)
        recorded = pc.take(column, pa.array(selected.rows))
        flags = tr.to_numpy_bool(recorded)
        unknown = np.flatnonzero(tr.to_numpy_bool(pc.is_null(recorded)))
        if len(unknown) == 0:
            return batch, flags
        flags[unknown] = tr.reference_pages(pc.take(selected.text, pa.array(unknown)))
        mask = np.zeros(len(column), bool)
        mask[selected.rows[unknown]] = True  # ascending, as replace_with_mask takes its replacements
        filled = pc.replace_with_mask(column, pa.array(mask), pa.array(flags[unknown], pa.bool_()))
        return set_column(batch, REFERENCE_PAGE, filled), flags
