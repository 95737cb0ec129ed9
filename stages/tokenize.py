"""`tokenize`: adds `tokens`, the token ids of each live document (a list column, uint16 for a vocabulary
of up to 65,536), encoded in batches with a trained `tokenizer.json`. A later `pack` stage uses the
column instead of encoding again; on its own it gives curated Parquet with tokens beside the text.

The column's Arrow field carries the sha256 of the tokenizer that produced it (field metadata
`curation.tokenizer_sha256`). Field metadata, not the schema's: the reader rebuilds each batch's schema
from its fields (curation/io.py `_normalise`), so only field metadata reaches a later run through the
Parquet files (ARROW:schema); `pack` uses the column only when this sha256 is its own tokenizer's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import TEXT, Stage, live_mask, register_stage
from curation.tokenizer.encode import Encoder

TOKENIZER_SHA256 = b"curation.tokenizer_sha256"


def tokens_field(name: str, value_type: pa.DataType, tokenizer_sha256: str) -> pa.Field:
    """The field of a token column, naming the tokenizer that produced it."""
    return pa.field(name, pa.large_list(value_type), metadata={TOKENIZER_SHA256: tokenizer_sha256.encode()})


def tokens_provenance(field: pa.Field) -> str | None:
    """The sha256 of the tokenizer that produced a token column, None when the column does not say."""
    value = (field.metadata or {}).get(TOKENIZER_SHA256)
    return value.decode("ascii", "replace") if value is not None else None


@register_stage("tokenize")
class Tokenize(Stage):
    """Token ids of each live document in a list column (null for dropped rows)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        tokenizer: str  # tokenizer.json (curation train-tokenizer)
        column: str = "tokens"
        dtype: str = "uint16"  # "uint32" or "auto" for vocabularies over 65,536

    def setup(self) -> None:
        self._encoder = Encoder(self.config.tokenizer, self.config.dtype)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not hasattr(self, "_encoder"):
            self.setup()
        live = live_mask(batch)
        rows = pc.indices_nonzero(live).to_numpy()
        values, offsets = self._encoder.encode(pc.take(batch.column(TEXT), pa.array(rows)))
        # offsets for every row: dropped rows get an empty, null list
        lengths = np.zeros(batch.num_rows, np.int64)
        lengths[rows] = np.diff(offsets)
        full = np.zeros(batch.num_rows + 1, np.int64)
        np.cumsum(lengths, out=full[1:])
        validity = pa.array(live.to_numpy(zero_copy_only=False)).buffers()[1] if len(rows) < batch.num_rows else None
        value_type = pa.from_numpy_dtype(self._encoder.dtype)
        tokens = pa.LargeListArray.from_buffers(pa.large_list(value_type), batch.num_rows,
                                                [validity, pa.py_buffer(full)], children=[pa.array(values, value_type)])
        self.metrics["tokens"] += int(offsets[-1])
        # which encoder ran (fastokens, or HF tokenizers after a failed parity check: Encoder logs why)
        self.metrics[f"batches_{self._encoder.backend}"] += 1
        field = tokens_field(self.config.column, value_type, self._encoder.sha256)
        index = batch.schema.get_field_index(self.config.column)
        if index >= 0:
            return batch.set_column(index, field, tokens)
        return batch.append_column(field, tokens)
