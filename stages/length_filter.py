"""`length_filter`: drops documents outside a character-length range."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import TEXT, Stage, drop_rows, register_stage


@register_stage("length_filter")
class LengthFilter(Stage):
    """Drops documents shorter than min_chars (length:too_short) or longer than max_chars (length:too_long)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        min_chars: int = 0
        max_chars: int | None = None

        def __post_init__(self) -> None:
            if self.min_chars < 0 or (self.max_chars is not None and self.max_chars < self.min_chars):
                raise ValueError("need 0 <= min_chars <= max_chars")

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        length = pc.utf8_length(batch.column(TEXT))
        batch = drop_rows(batch, pc.less(length, self.config.min_chars), "length:too_short")
        if self.config.max_chars is not None:
            batch = drop_rows(batch, pc.greater(length, self.config.max_chars), "length:too_long")
        return batch
