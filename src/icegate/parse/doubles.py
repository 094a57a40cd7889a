"""A double (a spreadsheet cell, a Parquet float column) as the text a spreadsheet shows for it.

One rule for every format, so that a value reads the same from XLSX and Parquet: a whole number is its digits
(``12125550100``, never ``12125550100.0`` or ``1.21255501e+10``); a fraction has at most 15 significant digits
(Excel's precision: beyond them a double only carries binary noise, ``0.1 + 0.2`` reads ``0.3``); a whole number
from 2⁵³ on, which a double cannot tell from its neighbours, is written with an exponent, as Excel stores it
(``1.23456789012346E+18``), so that validation refuses it as a count as it refuses that text in a CSV file, rather
than loading digits the file never held.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from icegate.constants import FLOAT_EXACT

#: A fraction Arrow writes positionally in at most this many characters has at most 15 significant digits.
_SHORT_TEXT = 16
#: Below this Python writes a fraction with an exponent (``1e-05``) where Arrow does not (``0.00001``).
_POSITIONAL_FROM = 1e-4


def double_text(value: float) -> str:
    """A double as a spreadsheet shows it: ``12``, ``12125550100``, ``0.3``, ``1e-07``, ``1.23456789012346E+18``."""
    if value.is_integer():
        if abs(value) < FLOAT_EXACT:
            return str(int(value))
        # 15 significant digits (what Excel shows and stores); an exponent, so it is not read as an exact count.
        return f"{value:.15G}"
    return repr(float(f"{value:.15g}"))


def double_strings(array: pa.Array) -> pa.Array:
    """:func:`double_text` of each value of a float64 array (nulls stay null), vectorised for the common values."""
    values = array.cast(pa.float64())
    whole = pc.and_(pc.equal(pc.floor(values), values), pc.less(pc.abs(values), FLOAT_EXACT))
    text = pc.if_else(whole, values, 0.0).cast(pa.int64()).cast(pa.string())
    fraction = pc.invert(whole).fill_null(False)
    if not pc.any(fraction).as_py():
        return text
    rest = values.filter(fraction)
    # Arrow writes a double's shortest round-trip digits, as repr does; short and positional, they are repr's text.
    shortest = rest.cast(pa.string())
    as_repr = pc.and_(
        pc.and_(pc.less_equal(pc.utf8_length(shortest), _SHORT_TEXT), pc.invert(pc.match_substring(shortest, "e"))),
        pc.and_(pc.is_finite(rest), pc.greater_equal(pc.abs(rest), _POSITIONAL_FROM)),
    )
    slow = pc.invert(as_repr)
    if pc.any(slow).as_py():
        shortest = pc.replace_with_mask(
            shortest, slow, pa.array([double_text(value) for value in rest.filter(slow).to_pylist()], pa.string())
        )
    return pc.replace_with_mask(text, fraction, shortest)
