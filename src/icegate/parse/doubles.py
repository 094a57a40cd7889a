"""A double (a spreadsheet cell, a Parquet float column) as the text a spreadsheet shows for it.

One rule for every format, so that a value reads the same from XLSX and Parquet: a whole number is its digits
(``12125550100``, never ``12125550100.0`` or ``1.21255501e+10``); a fraction has at most 15 significant digits
(Excel's precision: beyond them a double only carries binary noise, ``0.1 + 0.2`` reads ``0.3``); a whole number
from 2⁵³ on, which a double cannot tell from its neighbours, is written with an exponent, as Excel stores it
(``1.23456789012346E+18``), so that validation refuses it as a count as it refuses that text in a CSV file, rather
than loading digits the file never held.
"""

from __future__ import annotations

#: From here on a double is no longer every whole number (validation refuses such counts: ``validate._FLOAT_EXACT``).
FLOAT_EXACT = float(2**53)


def double_text(value: float) -> str:
    """A double as a spreadsheet shows it: ``12``, ``12125550100``, ``0.3``, ``1e-07``, ``1.23456789012346E+18``."""
    if value.is_integer():
        if abs(value) < FLOAT_EXACT:
            return str(int(value))
        # 15 significant digits (what Excel shows and stores); an exponent, so it is not read as an exact count.
        return f"{value:.15G}"
    return repr(float(f"{value:.15g}"))
