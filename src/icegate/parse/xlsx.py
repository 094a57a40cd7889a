"""XLSX: the first worksheet through openpyxl (read-only, defusedxml), every cell as the text a user typed."""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Iterable
from datetime import date, datetime, time
from typing import Any, TypeAlias

import pyarrow as pa

from icegate.constants import FLOAT_EXACT
from icegate.errors import EmptyFile, FileTooLarge, MalformedFile
from icegate.parse.doubles import double_text
from icegate.parse.limits import limited_table, too_many_rows
from icegate.parse.text import OLE2_MAGIC
from icegate.settings import Limits


def decode_xlsx(data: bytes, file: str, *, limits: Limits) -> pa.Table:
    """The first worksheet as strings; its first non-empty row is the header."""
    if data.startswith(OLE2_MAGIC):
        raise MalformedFile("the file is a legacy .xls workbook; save it as .xlsx (or CSV)", file=file)
    _check_zip(data, file, limits)
    import openpyxl  # imported here: a cold start pays for it only when a workbook arrives

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # style and data-validation warnings say nothing about the data
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds (KeyError, ValueError, XML errors) for a broken file
        raise MalformedFile(f"the workbook cannot be opened ({type(exc).__name__}: {exc})", file=file) from None
    try:
        if not workbook.worksheets:
            raise EmptyFile("the workbook has no worksheet", file=file)
        sheet = workbook.worksheets[0]
        _refuse_other_sheets_with_data(workbook.worksheets[1:], file)
        sheet.reset_dimensions()  # a wrong <dimension> tag would otherwise cut rows short
        xml = _sheet_xml(sheet)
        _refuse_uncomputed_formulas(xml, file)
        padded = _zero_padded_styles(workbook)
        cells = _shown(sheet.iter_rows(), padded) if padded else sheet.iter_rows(values_only=True)
        rows = _with_merged_values(cells, _merged_down(xml))
        del xml
        return _sheet_table(rows, file, limits)
    except (EmptyFile, MalformedFile, FileTooLarge):
        raise
    except Exception as exc:  # a sheet part that is broken only shows while reading
        raise MalformedFile(f"the worksheet cannot be read ({type(exc).__name__}: {exc})", file=file) from None
    finally:
        workbook.close()


def _refuse_other_sheets_with_data(sheets: Iterable[Any], file: str) -> None:
    """One worksheet is read: a workbook with data on others would lose it without a word."""
    filled = [sheet.title for sheet in sheets if any(_filled(row) for row in sheet.iter_rows(values_only=True))]
    if filled:
        raise MalformedFile(
            f"the workbook has data on {len(filled) + 1} worksheets (also {', '.join(map(repr, filled))}); only the "
            "first is read, so the rest would be lost. Save each worksheet as a file of its own, or move their rows "
            "to the first",
            file=file,
        )


#: A merged range in a worksheet's XML (read-only openpyxl does not read them): its first and last cell.
_MERGE_CELL = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]+)([0-9]+):([A-Z]+)([0-9]+)"')


#: A formula cell without a computed value: no value, or an empty one, and no type that an empty text result has.
_UNCOMPUTED_FORMULA = re.compile(
    rb"<(?:\w+:)?c\b([^>]*?)>\s*<(?:\w+:)?f\b[^>]*?(?:/>|>[^<]*</(?:\w+:)?f>)\s*"
    rb"(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>"
)
_CELL_REF = re.compile(rb'\br="([A-Z]+)([0-9]+)"')
_TEXT_RESULT = re.compile(rb'\bt="(?:str|inlineStr|s)"')


def _sheet_xml(sheet: Any) -> bytes:
    # The part read-only openpyxl reads the rows from (private names: it has no public way to what is read here).
    with sheet.parent._archive.open(sheet._worksheet_path) as part:
        return bytes(part.read())


def _refuse_uncomputed_formulas(xml: bytes, file: str) -> None:
    """A formula whose value was never computed (a workbook written by a program, never saved by a spreadsheet
    app) would read as empty: refused, naming the cell. A formula whose result is empty text is typed ``str``."""
    for match in _UNCOMPUTED_FORMULA.finditer(xml):
        attributes = match.group(1)
        if _TEXT_RESULT.search(attributes):
            continue
        found = _CELL_REF.search(attributes)
        column, row = (found.group(1).decode(), found.group(2).decode()) if found else ("?", "?")
        raise MalformedFile(
            f"cell {column}{row} holds a formula whose value was never computed (the workbook was written by a "
            "program, not saved by a spreadsheet app), so it would read as empty; open and save it in one, or "
            "export CSV",
            file=file,
            location=f"row {row}, column {column}",
        )


def _merged_down(xml: bytes) -> dict[int, list[tuple[int, int]]]:
    """Row -> (column, top row) of each cell a merge covers below its top row, in its first column (0-based).

    Excel shows a cell merged down over several rows beside each of them: each row reads its value. A merge across
    columns belongs to its first column (the others show nothing of their own).
    """
    from openpyxl.utils import column_index_from_string

    covered: dict[int, list[tuple[int, int]]] = {}
    after_rows = max(xml.rfind(b"sheetData>"), 0)  # merges are listed after the rows
    for first_column, first_row, _, last_row in _MERGE_CELL.findall(xml, after_rows):
        column, top = column_index_from_string(first_column.decode()) - 1, int(first_row)
        for row in range(top + 1, int(last_row) + 1):
            covered.setdefault(row, []).append((column, top))
    return covered


def _with_merged_values(
    rows: Iterable[tuple[Any, ...]], covered: dict[int, list[tuple[int, int]]]
) -> Iterable[tuple[Any, ...]]:
    """The rows, each cell a merge covers holding the merge's value (see :func:`_merged_down`)."""
    if not covered:
        yield from rows
        return
    # Each merge's top row -> its columns: a row looks up only its own merges, not every merge of the sheet.
    tops: dict[int, set[int]] = {}
    for cells in covered.values():
        for column, top in cells:
            tops.setdefault(top, set()).add(column)
    shown: dict[tuple[int, int], Any] = {}
    for number, row in enumerate(rows, start=1):
        values = list(row)
        for column, top in covered.get(number, ()):
            values.extend([None] * (column + 1 - len(values)))
            if values[column] is None:
                values[column] = shown.get((top, column))
        for column in tops.get(number, ()):
            if column < len(values):
                shown[(number, column)] = values[column]
        yield tuple(values)


#: A part of a number format: quoted text, an escaped character, a run of zero digit placeholders, or a character
#: Excel shows as itself unquoted.
_FORMAT_PART = re.compile(r'"([^"]*)"|\\(.)|(0+)|([-+():$ ])')
#: The parts of a zero-padded integer format: literal text, or the number of digits a run of zeros shows.
_Padding: TypeAlias = list[str | int]


def _zero_padded(number_format: str) -> _Padding | None:
    """A number format that shows a whole number zero-padded (``00000``, ``"ID-"000000``, ``000\\-0000``), as
    its parts; None for any other (General, decimals, thousands separators, dates, percentages, several sections)."""
    parts: _Padding = []
    position = 0
    for match in _FORMAT_PART.finditer(number_format):
        if match.start() != position:
            return None
        position = match.end()
        quoted, escaped, zeros, plain = match.groups()
        parts.append(len(zeros) if zeros else quoted if quoted is not None else escaped or plain)
    zeros = sum(part for part in parts if isinstance(part, int))
    # "0" alone shows a whole number as it reads anyway.
    if position != len(number_format) or not zeros or parts == [1]:
        return None
    return parts


def _zero_padded_styles(workbook: Any) -> dict[int, _Padding]:
    """Style index -> the parts of its number format, for the styles whose format is zero-padded."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, BUILTIN_FORMATS_MAX_SIZE

    padded: dict[int, _Padding] = {}
    # Private names: read-only openpyxl resolves a cell's format from them one cell at a time.
    for style_id, style in enumerate(workbook._cell_styles):
        number = style.numFmtId
        if number < BUILTIN_FORMATS_MAX_SIZE:
            number_format = BUILTIN_FORMATS.get(number, "General")
        else:
            number_format = workbook._number_formats[number - BUILTIN_FORMATS_MAX_SIZE]
        parts = _zero_padded(number_format)
        if parts is not None:
            padded[style_id] = parts
    return padded


def _shown(rows: Iterable[tuple[Any, ...]], padded: dict[int, _Padding]) -> Iterable[tuple[Any, ...]]:
    """The values of rows of cells, a whole number in a zero-padded format as the text it shows (a phone
    02079460958, an id 00123: its leading zeros are part of the value)."""
    for row in rows:
        yield tuple(_padded_text(cell.value, padded.get(getattr(cell, "_style_id", 0))) for cell in row)


def _padded_text(value: Any, parts: _Padding | None) -> Any:
    if parts is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not (value.is_integer() and abs(value) < FLOAT_EXACT):
        return value  # a fraction shows rounded, a double past 2**53 without its digits: read as they are
    number = int(value)
    width = sum(part for part in parts if isinstance(part, int))
    digits = str(abs(number)).zfill(width)
    # Excel fills the zeros from the right; digits beyond them go to the first run.
    extra, shown = len(digits) - width, ["-"] if number < 0 else []
    for part in parts:
        if isinstance(part, int):
            shown.append(digits[: part + extra])
            digits, extra = digits[part + extra :], 0
        else:
            shown.append(part)
    return "".join(shown)


def _filled(row: Iterable[Any]) -> bool:
    return any(value is not None and str(value).strip() for value in row)


def _check_zip(data: bytes, file: str, limits: Limits) -> None:
    """Refuse a zip whose members would expand past the cap (zipfile stops at the declared sizes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise MalformedFile(
            f"the file is not a valid .xlsx workbook (not a readable zip archive: {exc})", file=file
        ) from None
    if expanded > limits.max_uncompressed_bytes:
        raise FileTooLarge(
            f"the workbook expands to {expanded:,} bytes; the limit is {limits.max_uncompressed_bytes:,} "
            "(ICEGATE_MAX_UNCOMPRESSED_BYTES). Export it as CSV, or split it",
            file=file,
        )


def _sheet_table(rows: Iterable[tuple[Any, ...]], file: str, limits: Limits) -> pa.Table:
    from openpyxl.utils import get_column_letter

    header: list[str] | None = None
    columns: list[list[str | None]] = []
    count = 0
    # Characters of the values so far (a lower bound of their UTF-8 bytes): cells may all point at one shared
    # string, so a small workbook can stand for far more text than its zip members hold.
    size = 0
    for number, row in enumerate(rows, start=1):
        values = [_cell_text(value) for value in row]
        size += sum(len(value) for value in values if value is not None)
        if size > limits.max_uncompressed_bytes:
            raise FileTooLarge(
                f"the worksheet's values come to more than {limits.max_uncompressed_bytes:,} bytes by row {number} "
                "(ICEGATE_MAX_UNCOMPRESSED_BYTES); cells may repeat one shared text. Export it as CSV, or split it",
                file=file,
                location=f"row {number}",
            )
        while values and values[-1] is None:
            values.pop()
        if header is None and not _filled(values):
            continue  # blank rows above the header are layout
        if not any(values):
            # No cell, or only empty ones (a formula filled down showing ""): a blank line, which CSV skips too. A
            # cell of spaces is a value, as " , , " is a row in CSV: that row is rejected, not dropped unnumbered.
            continue
        if header is None:
            if len(values) > limits.max_columns:
                raise MalformedFile(
                    f"the header has {len(values):,} columns; the limit is {limits.max_columns:,} "
                    "(ICEGATE_MAX_COLUMNS)",
                    file=file,
                    location=f"row {number}",
                )
            header = [v or "" for v in values]
            columns = [[] for _ in header]
            continue
        if len(values) > len(header):
            cell, last = get_column_letter(len(values)), get_column_letter(len(header))
            raise MalformedFile(
                f"cell {cell}{number} holds a value right of the last header (column {last}); "
                "give that column a header or delete the cell",
                file=file,
                location=f"row {number}, column {cell}",
            )
        if count >= limits.max_rows:
            raise too_many_rows(file, limits)
        count += 1
        values.extend([None] * (len(header) - len(values)))
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    if header is None:
        raise EmptyFile("the first worksheet is empty", file=file)
    return limited_table(header, columns, file, limits)


def _cell_text(value: Any) -> str | None:
    """A cell as the text a user typed: 123, 1.5, 2026-01-13, 2026-01-13T17:53:19, true."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_text(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)
