"""`noop`: passes every batch through unchanged; measures the executor's own overhead."""

from __future__ import annotations

import pyarrow as pa

from curation.stage import Stage, register_stage


@register_stage("noop")
class Noop(Stage):
    """Passes batches through unchanged."""

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch
