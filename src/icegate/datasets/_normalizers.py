"""Value normalisers that dataset contracts attach to their columns (``Column(normalizer=...)``).

Each takes a column of trimmed strings (nulls for empty values) and returns the canonical form that
validation, the merge key and the table see. They live with the contracts, not with the parser, so
that a dataset's meaning of "the same value" is stated where the dataset is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Final

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from icegate.datasets._contract import NormalizeContext

__all__ = ["instagram_handle", "phone"]


def phone(values: pa.ChunkedArray, context: NormalizeContext) -> pa.ChunkedArray:
    """A phone number in one canonical form, so that equal numbers compare equal and others never do.

    - a valid number (per ``phonenumbers``; without a ``+`` it is read in ``context.phone_region``)
      becomes E.164, ``+12125550100``, with ``;ext=12`` when it has an extension;
    - any other number keeps every digit as written, vanity letters turned into their keypad
      digits (``555-CALL-NOW`` -> ``5552255669``) and a leading ``+`` kept;
    - a value that is no phone number at all (``n/a``) is left as it is, for the quality rules.
    """
    return _map_distinct(values, lambda value: _phone(value, context.phone_region))


@lru_cache(maxsize=65_536)  # scrapes repeat the same numbers file after file
def _phone(value: str, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return value
    if phonenumbers.is_valid_number(number):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return f"{e164};ext={number.extension}" if number.extension else e164
    # Not a number phonenumbers can vouch for (e.g. the fictional 555 exchange): never merge two of
    # them unless their digits are the same; letters count as the digits they dial.
    digits = phonenumbers.normalize_digits_only(phonenumbers.convert_alpha_characters_in_number(value))
    return ("+" if value.startswith("+") else "") + digits if digits else value


_INSTAGRAM_URL: Final = r"^(?:https?://)?(?:www\.|m\.)?(?:instagram\.com|instagr\.am)/"
#: Paths under instagram.com that are not a profile (a post, a reel, ...): left for validation to flag.
_NOT_A_PROFILE: Final = _INSTAGRAM_URL + r"(?:p|reels?|tv|explore|stories|accounts)(?:[/?#]|$)"


def instagram_handle(values: pa.ChunkedArray, context: NormalizeContext) -> pa.ChunkedArray:
    """``@Name``, ``name``, ``https://www.instagram.com/Name/?hl=en`` -> ``@name``."""
    lowered = pc.utf8_lower(values)
    from_url = pc.replace_substring_regex(
        lowered, pattern=_INSTAGRAM_URL + r"@?([^/?#\s]+)(?:[/?#].*)?$", replacement=r"@\1"
    )
    handle = pc.replace_substring_regex(from_url, pattern=r"^@?([^\s/:?#@]+)$", replacement=r"@\1")
    return pc.if_else(pc.match_substring_regex(lowered, _NOT_A_PROFILE), lowered, handle)


def _map_distinct(values: pa.ChunkedArray, convert: Callable[[str], str]) -> pa.ChunkedArray:
    """Apply a per-value Python function once per distinct value, nulls staying null."""
    distinct = pc.unique(values)
    converted = pa.array([None if v is None else convert(v) for v in distinct.to_pylist()], type=values.type)
    return pc.take(converted, pc.index_in(values, value_set=distinct))
