"""Every match of an RE2 pattern in every row of a string array, with its offsets, in a few Arrow calls.

Arrow has no "find all" kernel. `split_on_matches` gets one anyway: `replace_substring_regex` wraps each
match in a marker character, `split_pattern` cuts at the markers, and the pieces of a row alternate
between text around the matches (even positions) and the matches themselves (odd positions), always
2k+1 pieces for k matches, adjacent matches included (an empty piece between them). Code-point
offsets come from a cumulative sum of piece lengths. The `pii` and `decontaminate` stages use it;
no Python code runs per row or per match.

The marker is U+FDD0, a Unicode noncharacter (never assigned, not meant for interchange). A row that
carries one anyway has it replaced by U+FFFD first (same length, so offsets still hold), which is the
only change this makes to text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MARK = "\ufdd0"
# U+FDD0..U+FDEF are noncharacters: the stages here use a few of them as internal markers.
NONCHARACTERS = "[\ufdd0-\ufdef]"


def sanitize(text: pa.Array) -> pa.Array:
    """`text` with nulls as "" and any noncharacter U+FDD0..U+FDEF as U+FFFD (same length)."""
    text = pc.fill_null(text, "")
    if pc.any(pc.match_substring_regex(text, NONCHARACTERS)).as_py():
        text = pc.replace_substring_regex(text, NONCHARACTERS, "\ufffd")
    return text


@dataclass
class Pieces:
    """The pieces of some rows, cut at the matches of a pattern, flattened."""

    values: pa.Array  # string: every piece of every row, in order
    parent: np.ndarray  # int64: the row of each piece
    is_match: np.ndarray  # bool: odd pieces of a row are matches
    start: np.ndarray  # int64: code-point offset of each piece in its row
    length: np.ndarray  # int64: code points of each piece
    row_offsets: np.ndarray  # int64, n_rows + 1: row r's pieces are row_offsets[r]:row_offsets[r+1]

    @property
    def n_rows(self) -> int:
        return len(self.row_offsets) - 1

    def matches(self) -> np.ndarray:
        """Indices (into the pieces) of the matches."""
        return np.flatnonzero(self.is_match)

    def join(self, values: pa.Array | None = None) -> pa.Array:
        """Each row's pieces joined again (`values`: the same pieces, some replaced)."""
        values = self.values if values is None else values
        lists = pa.ListArray.from_arrays(pa.array(self.row_offsets.astype(np.int32)), values)
        return pc.binary_join(lists, "")


def split_on_matches(text: pa.Array, pattern: str) -> Pieces:
    """Cut every row of `text` (already `sanitize`d) at the matches of `pattern`.

    The pattern must not match the empty string (a marker pair would then sit between every two
    characters and nothing would be found).
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    marked = pc.replace_substring_regex(text, pattern, MARK + r"\0" + MARK)
    lists = pc.split_pattern(marked, MARK)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(lists)
    row_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    parent = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    position = np.arange(len(values), dtype=np.int64) - row_offsets[parent]
    length = pc.utf8_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(length)
    start = ends - length
    start -= start[row_offsets[parent]] if len(values) else 0  # offsets restart at every row
    return Pieces(values, parent, (position % 2) == 1, start, length, row_offsets)
