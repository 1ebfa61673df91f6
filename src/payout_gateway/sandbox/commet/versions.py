"""Commet API versions: which release a requested ``commet-version`` date resolves to."""

from __future__ import annotations

import re
from datetime import date
from enum import Enum

# Releases that matter to the payout surface (docs/providers/commet.md, "API versions").
# 2026-07-11 changed nothing here, but it is the version the SDK 7.x line pins, so a request
# for it echoes it back instead of the older 2026-06-07.
RELEASES: tuple[str, ...] = ("2026-06-07", "2026-07-11", "2026-07-24", "2026-08-27")
OLDEST = RELEASES[0]
CURRENT = RELEASES[-1]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class VerificationShape(Enum):
    """What ``POST /payouts/verification`` does under a version."""

    ALREADY_EXISTS_FLAG = "alreadyExists"
    OUTCOME_UNION = "outcome"
    RETIRED = "retired"


class VersionError(ValueError):
    """The requested version is not a date, or predates the payout API."""


def resolve_version(requested: str) -> str:
    """The newest release on or before ``requested`` (a ``YYYY-MM-DD`` date)."""
    if _DATE.fullmatch(requested) is None:
        raise VersionError("must be a date in the form YYYY-MM-DD")
    try:
        day = date.fromisoformat(requested)
    except ValueError:
        raise VersionError("must be a valid calendar date in the form YYYY-MM-DD") from None
    eligible = [release for release in RELEASES if date.fromisoformat(release) <= day]
    if not eligible:
        raise VersionError(f"must be {OLDEST} or later; the payout API did not exist before")
    return eligible[-1]


def verification_shape(version: str) -> VerificationShape:
    if version >= "2026-08-27":
        return VerificationShape.RETIRED
    if version >= "2026-07-24":
        return VerificationShape.OUTCOME_UNION
    return VerificationShape.ALREADY_EXISTS_FLAG
