"""Unique names for what the tests share with other runs (Redis channels) and logs may show."""

from __future__ import annotations

import secrets
import string


def unique_suffix(length: int = 12) -> str:
    """Random lowercase letters: never mistaken for an account number by the suite's log canary.

    A hex suffix is all digits now and then (one CI run drew ``0858317915``), and a log line naming
    the channel then reads as a long digit run, which the canary rightly refuses.
    """
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))
