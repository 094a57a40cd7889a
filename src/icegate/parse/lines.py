"""The physical lines each record of a delimited text file spans (rejected rows point at them).

A record's number is not its line: a quoted caption may hold line breaks, and blank lines are
skipped. pyarrow does not say where a record started, so the lines are counted here: a line break
ends a record when an even number of quotes precedes it (a quoted field's doubled quotes keep the
count even). This is vectorised over the bytes. A file where that count disagrees with the reader's
records (a stray quote inside an unquoted value) is counted again by Python's csv reader, which reads
quotes as pyarrow does; if that disagrees too, the lines are unknown (null) rather than wrong.

Both count the same line breaks — a line feed, a carriage return and line feed, a lone carriage return —
so a file's lines do not depend on which of the two counted them (a streamed file's blocks may not all be
counted alike).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from icegate.parse.text import line_breaks

#: The columns a parsed delimited file carries besides the contract's (1-based, inclusive).
LINE = "line"
LAST_LINE = "last_line"

_Lines = tuple[pl.Series, pl.Series]
#: What a blank line may hold besides line breaks (and what pyarrow's reader skips as one).
_SPACES = b" \t\r\n\v\f"
_LF = ord("\n")
_CR = ord("\r")
_QUOTE = ord('"')


def record_lines(text: bytes, delimiter: str, rows: int, columns: int) -> pa.Table:
    """First and last physical line of each of the ``rows`` data records (the header excluded), in a file whose
    header has ``columns`` fields."""
    return count_record_lines(text, delimiter, rows, columns).table


@dataclass(frozen=True)
class RecordLines:
    """:func:`record_lines`, and how they were counted (a streamed file's blocks carry the count on)."""

    #: ``LINE`` and ``LAST_LINE`` of each data record.
    table: pa.Table
    #: Quote parity placed every record and the text ends outside any quoted value: every quote in it is
    #: around a value, so its record breaks are exactly the line feeds that an even number of quotes precede.
    by_parity: bool
    #: The text's line breaks: line feeds and lone carriage returns.
    breaks: int


def count_record_lines(text: bytes, delimiter: str, rows: int, columns: int) -> RecordLines:
    """:func:`record_lines` with how they were counted."""
    parity = _by_quote_parity(text, delimiter, rows, columns)
    found = parity[0] if parity else _by_csv_reader(text, delimiter, rows, columns)
    if found is None:
        nulls = pa.nulls(rows, pa.int64())
        table = pa.table({LINE: nulls, LAST_LINE: nulls})
    else:
        first, last = found
        table = pa.table({LINE: first.cast(pl.Int64).to_arrow(), LAST_LINE: last.cast(pl.Int64).to_arrow()})
    if parity:
        _, breaks, even = parity
        return RecordLines(table, by_parity=even, breaks=breaks)
    return RecordLines(table, by_parity=False, breaks=line_breaks(text))


def _by_quote_parity(text: bytes, delimiter: str, rows: int, columns: int) -> tuple[_Lines, int, bool] | None:
    """The lines, the number of line breaks and whether the quotes are even; None if parity cannot place them."""
    size = len(text)
    data = pl.Series(pa.Array.from_buffers(pa.uint8(), size, [None, pa.py_buffer(text)]))
    found_breaks, quotes = _line_breaks_and_quotes(data, crs=b"\r" in text)
    if not _quotes_only_around_values(data, quotes, delimiter):
        return None
    # An even number of quotes before a line break: the break is outside any quoted value.
    break_at, ends_record = found_breaks.get_column(_AT), found_breaks.get_column(_EVEN)
    line_of_break = pl.int_range(1, break_at.len() + 1, eager=True, dtype=pl.Int64)  # the break ends this line
    breaks = break_at.filter(ends_record)
    record_breaks = line_of_break.filter(ends_record)
    # Record k spans from after break k-1 (or the start) to break k (or the end of the text).
    starts = pl.concat([pl.Series([0], dtype=pl.Int64), breaks + 1])
    ends = pl.concat([breaks, pl.Series([size], dtype=pl.Int64)])
    first = pl.concat([pl.Series([1], dtype=pl.Int64), record_breaks + 1])
    last = pl.concat([record_breaks, pl.Series([break_at.len() + 1], dtype=pl.Int64)])
    keep = ~_blank(text, data, delimiter, starts, ends, columns)
    first, last = first.filter(keep), last.filter(keep)
    if first.len() != rows + 1:  # the header is the first record kept
        return None
    return (first.slice(1), last.slice(1)), break_at.len(), quotes.height % 2 == 0


_AT = "at"
_EVEN = "even"


def _line_breaks_and_quotes(data: pl.Series, *, crs: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The line breaks and the quotes of ``data``: where each is (``_AT``), and whether the quotes up to it,
    itself included, are even (``_EVEN``): for a line break, whether it is outside any quoted value.

    A line break is a line feed, or a carriage return no line feed follows (``crs``: the text has carriage
    returns). One lazy query over the bytes finds them (polars' lazy engine is several times faster than
    series methods); carriage returns are looked for only if some are not followed by a line feed.
    """
    bytes_ = data.to_frame("byte").lazy()
    byte = pl.col("byte")
    wanted = (byte == _LF) | (byte == _QUOTE)
    if not crs:
        at = bytes_.select(pl.arg_where(wanted).cast(pl.Int64)).collect().to_series()
    else:
        found, counted = pl.collect_all(
            [bytes_.select(pl.arg_where(wanted).cast(pl.Int64)), bytes_.select((byte == _CR).sum())]
        )
        at = found.to_series()
        line_feeds = at.filter(data.gather(at) == _LF)
        pairs = int((data.gather((line_feeds - 1).clip(lower_bound=0)) == _CR).sum())
        if counted.item() > pairs:  # lone carriage returns: find them too
            at = bytes_.select(pl.arg_where(wanted | (byte == _CR)).cast(pl.Int64)).collect().to_series()
            following = data.gather((at + 1).clip(upper_bound=data.len() - 1))
            paired = (data.gather(at) == _CR) & (following == _LF) & (at + 1 < data.len())
            at = at.filter(~paired)
    specials = pl.DataFrame({_AT: at, "quote": data.gather(at) == _QUOTE}).lazy()
    specials = specials.with_columns((pl.col("quote").cast(pl.Int64).cum_sum() % 2 == 0).alias(_EVEN))
    breaks, quotes = pl.collect_all(
        [specials.filter(~pl.col("quote")).select(_AT, _EVEN), specials.filter(pl.col("quote")).select(_AT, _EVEN)]
    )
    return breaks, quotes


def _quotes_only_around_values(data: pl.Series, quotes: pl.DataFrame, delimiter: str) -> bool:
    """Parity holds only when every quote opens a value at its start or closes it at its end (a doubled
    quote is a close and a reopen). A quote elsewhere is a literal character to the reader."""
    if quotes.is_empty():
        return True
    bounds = [ord(delimiter), ord("\r"), _LF, _QUOTE]
    at = quotes.get_column(_AT)
    opens = ~quotes.get_column(_EVEN)  # an odd count, itself included: it opens a value
    before = (at - 1).filter(opens & (at > 0))
    after = (at + 1).filter(~opens & (at < data.len() - 1))
    return bool(data.gather(pl.concat([before, after])).is_in(bounds).all())


def _blank(text: bytes, data: pl.Series, delimiter: str, starts: pl.Series, ends: pl.Series, columns: int) -> pl.Series:
    """Records of whitespace only (pyarrow skips them): no other byte between their start and end.

    A record that starts with a visible byte is not blank, which settles almost every record by one
    byte each; only the empty ones and those starting with whitespace are read in full.
    """
    if ord(delimiter) in _SPACES:
        return _blank_between_whitespace_fields(data, delimiter, starts, ends, columns)
    spaces = bytes(b for b in _SPACES if b != ord(delimiter))
    at_start = data.gather(starts.clip(upper_bound=data.len() - 1))
    unsure = ((starts >= ends) | at_start.is_in(list(spaces))).arg_true()
    blank = pl.repeat(False, starts.len(), dtype=pl.Boolean, eager=True)
    if unsure.len():
        pairs = zip(starts.gather(unsure).to_list(), ends.gather(unsure).to_list(), strict=True)
        blank = blank.scatter(unsure, [not text[start:end].strip(spaces) for start, end in pairs])
    return blank


def _blank_between_whitespace_fields(
    data: pl.Series, delimiter: str, starts: pl.Series, ends: pl.Series, columns: int
) -> pl.Series:
    """:func:`_blank` when the delimiter is whitespace itself (a TSV's tab): a line of tabs and spaces has fields.

    The reader keeps it as a row of empty values when they are as many as the header's, and skips it as a blank
    line otherwise (``delimited._InvalidRows``). Counted over every byte at once (cumulative counts), since here
    every record whose first field is empty starts with whitespace.
    """

    def within(counted: pl.Series) -> pl.Series:
        running = pl.concat([pl.Series([0], dtype=pl.Int64), counted.cast(pl.Int64).cum_sum()])
        return running.gather(ends) - running.gather(starts)

    visible = within(~data.is_in(list(_SPACES)))
    delimiters = within(data == ord(delimiter))
    return (visible == 0) & (delimiters != columns - 1)


def _by_csv_reader(text: bytes, delimiter: str, rows: int, columns: int) -> _Lines | None:
    try:
        # newline="": line breaks inside quoted values stay in them; line_num counts \n, \r and \r\n.
        reader = csv.reader(io.StringIO(text.decode("utf-8"), newline=""), delimiter=delimiter, strict=False)
        first: list[int] = []
        last: list[int] = []
        previous = 0
        for record in reader:
            # As the reader reads a record of whitespace only: a row if it has the header's fields, else blank.
            whitespace = not any(field.strip() for field in record) and (len(record) < 2 or delimiter.isspace())
            if not whitespace or len(record) == columns:
                first.append(previous + 1)
                last.append(reader.line_num)
            previous = reader.line_num
    except (csv.Error, UnicodeDecodeError):
        return None
    if len(first) != rows + 1:
        return None
    return pl.Series(first[1:], dtype=pl.Int64), pl.Series(last[1:], dtype=pl.Int64)
