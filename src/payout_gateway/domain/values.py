"""Validated value types for caller input: bank numbers, ISO codes, phones, public URLs; and
providers' times in UTC.

Every validator fails with a message that never repeats the submitted value, because that value
may be an account number and error messages travel to responses and logs.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

import pycountry
from pydantic import AfterValidator, BeforeValidator, SecretStr, StringConstraints
from stdnum import iban
from stdnum.us import rtn

_SEPARATORS = re.compile(r"[ \-]")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# C0 and C1 control characters. PostgreSQL cannot store NUL in a text column: one in a holder
# name failed the store after the provider had created the account.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Free text keeps tabs and line breaks.
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A host name as URL parsers take it without reinterpreting it (no percent-escapes, no
# characters they would drop or map); and a label they read as a number.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_NUMBER_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _ascii_digits(value: str) -> bool:
    # str.isdigit() and int() accept full-width and other Unicode digits; bank numbers are ASCII.
    return _ASCII_DIGITS.fullmatch(value) is not None


def canonical_account_number(value: object) -> str:
    """Strip spaces and hyphens; accept 4-17 ASCII digits (US) or a valid IBAN."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("must be a string")
    # ASCII before upper-casing: "\u017f".upper() is "S" (long s), so a non-ASCII IBAN would
    # pass as an ASCII one.
    if not value.isascii():
        raise ValueError("must contain only the ASCII digits 0-9, or be an IBAN")
    compact = _SEPARATORS.sub("", value).upper()
    if _ascii_digits(compact):
        if not 4 <= len(compact) <= 17:
            raise ValueError("must have 4 to 17 digits")
        return compact
    if compact[:2].isalpha():
        if iban.is_valid(compact):
            return iban.compact(compact)
        raise ValueError("is not a valid IBAN")
    raise ValueError("must contain only the ASCII digits 0-9, or be an IBAN")


def canonical_routing_number(value: object) -> str:
    """A US ABA routing transit number: 9 ASCII digits with a valid checksum."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("must be a string")
    compact = _SEPARATORS.sub("", value)
    if not _ascii_digits(compact):
        raise ValueError("must contain only the ASCII digits 0-9")
    if len(compact) != 9:
        raise ValueError("must have exactly 9 digits")
    # The check digit alone: ``rtn.is_valid`` would clean and check the digits and length
    # again (two thirds of this function's time on every add).
    if rtn.calc_check_digit(compact[:-1]) != compact[-1]:
        raise ValueError("fails the ABA routing number checksum")
    # The first two digits name the Federal Reserve district (01-12), a thrift's (21-32), an
    # electronic-only number's (61-72), the U.S. Government (00) or traveler's checks (80): any
    # other number, and nine zeros, is no bank's, though one in ten passes the checksum.
    if compact == "000000000" or not _ABA_PREFIXES.fullmatch(compact[:2]):
        raise ValueError("is not a US routing number (its first two digits name no bank)")
    return compact


_ABA_PREFIXES = re.compile(r"0[0-9]|1[0-2]|2[1-9]|3[0-2]|6[1-9]|7[0-2]|80")


def canonical_country(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.isascii():  # before upper(): "u\u017f".upper() is "US"
        raise ValueError("must be an ISO 3166-1 alpha-2 country code")
    code = value.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code")
    return code


def canonical_currency(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.isascii():  # before upper(), as for countries
        raise ValueError("must be an ISO 4217 currency code")
    code = value.strip().upper()
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError("must be an ISO 4217 currency code")
    return code


def canonical_e164(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    compact = re.sub(r"[ \-()]", "", value)
    if not compact.isascii() or _E164.fullmatch(compact) is None:
        raise ValueError("must be a phone number in E.164 format, e.g. +14155550123")
    return compact


def _is_private_host(host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    if host in {"localhost", "metadata.google.internal"} or host.endswith(
        (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
    ):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # URL parsers (WHATWG's, curl's) read a host whose last label is a number as an IPv4
        # address in decimal, octal or hex parts ("2130706433", "127.1", "0x7f.0.0.1") and
        # decode percent-escapes in a host ("127.0.0%2e1"): an address in disguise. A name
        # without a dot is an internal one.
        return (
            "." not in host
            or _HOST_NAME.fullmatch(host) is None
            or _NUMBER_LABEL.fullmatch(host.rsplit(".", 1)[1]) is not None
        )
    return not address.is_global


def public_https_url(value: str) -> str:
    """An https URL whose host is a public name or address (the provider fetches it)."""
    if not value.isascii():
        raise ValueError("must be an ASCII URL (punycode for international names)")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials")
    if _is_private_host(parts.hostname):
        raise ValueError("must point at a public host, not a private or internal address")
    return value


def no_control_characters(value: str) -> str:
    if _CONTROL.search(value) is not None:
        raise ValueError("must not contain control characters")
    return value


def readable_name(value: str) -> str:
    """A name or an address part: no control characters, and at least one letter or digit (a
    value of zero-width spaces, direction marks or dashes alone reads as empty to a person,
    and is no name a bank can match)."""
    no_control_characters(value)
    if not any(character.isalnum() for character in value):
        raise ValueError("must contain a letter or a digit")
    return value


def no_control_characters_but_line_breaks(value: str) -> str:
    if _TEXT_CONTROL.search(value) is not None:
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


def last4_of(number: SecretStr) -> str:
    return number.get_secret_value()[-4:]


def in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC, as the store gives times back; ISO 8601 without an offset is read as
    UTC rather than as local time."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def iban_country(number: SecretStr) -> str | None:
    """The country an account number in its canonical form names if it is an IBAN (its first
    two letters); None for a domestic one (digits only)."""
    prefix = number.get_secret_value()[:2]
    return prefix if prefix.isalpha() else None


AccountNumber = Annotated[SecretStr, BeforeValidator(canonical_account_number)]
RoutingNumber = Annotated[SecretStr, BeforeValidator(canonical_routing_number)]
CountryCode = Annotated[str, BeforeValidator(canonical_country)]
CurrencyCode = Annotated[str, BeforeValidator(canonical_currency)]
PhoneNumber = Annotated[str, BeforeValidator(canonical_e164)]
PublicHttpsUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2048), AfterValidator(public_https_url)
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(readable_name),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(readable_name),
]
FreeText = Annotated[
    str, StringConstraints(max_length=500), AfterValidator(no_control_characters_but_line_breaks)
]
