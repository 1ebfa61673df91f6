"""Bearer API-key checks of the Paygentic sandbox: who may call, and who may only read."""

from __future__ import annotations

import re

from payout_gateway.sandbox.paygentic.errors import PaygenticApiError

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_\-.]{8,}")
READ_ONLY_PREFIX = "sk_readonly_"
REVOKED_PREFIX = "sk_revoked_"


def authenticate(authorization: str | None, *, write: bool, permission: str) -> None:
    """Raise the 401/403 Paygentic would answer, or return when the key may proceed."""
    if authorization is None or not authorization.strip():
        raise PaygenticApiError.unauthorized(
            "Missing Authorization header; send 'Authorization: Bearer <API key>'"
        )
    scheme, _, token = authorization.strip().partition(" ")
    # The scheme name is case-insensitive (RFC 9110 section 11.1).
    if scheme.lower() != "bearer":
        raise PaygenticApiError.unauthorized("The Authorization header must use the Bearer scheme")
    token = token.strip()
    if TOKEN_PATTERN.fullmatch(token) is None:
        raise PaygenticApiError.unauthorized("Malformed API key")
    if token.startswith(REVOKED_PREFIX):
        raise PaygenticApiError.unauthorized("Invalid or revoked API key")
    if write and token.startswith(READ_ONLY_PREFIX):
        raise PaygenticApiError.insufficient_scope(permission)
