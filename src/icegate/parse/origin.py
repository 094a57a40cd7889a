"""Where a block of a streamed file starts, so that the errors found in the block name the file's places.

A streamed CSV/TSV file is decoded a block at a time, each block being the file's header plus some of
its records (:mod:`.stream`). The decoders number lines, rows and bytes from the start of the text they
are given; an :class:`Origin` turns those numbers into the file's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """What to add to the numbers a block's own text gives, to name the same place in the whole file."""

    #: Added to byte offsets (in the file's UTF-8 text, after any byte-order mark).
    offset: int = 0
    #: Added to line numbers (lines counted as ``line_at`` counts them: one per ``\\n``).
    lines: int = 0
    #: Data rows of the file before the block's first.
    rows: int = 0
