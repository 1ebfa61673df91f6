"""Commet's error vocabulary (code -> type and HTTP status) and the error envelope it answers with.

CommetError            any refusal; becomes ``{"success": false, "error": {...}}``
└── RequestRejected    refused before the operation began (bad JSON, invalid fields,
                       retired endpoint); never stored under an Idempotency-Key
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DOC_URL = "https://commet.co/docs/api-reference/{version}/errors/{code}.md"

# code -> (type, HTTP status), from docs/providers/commet.md "Envelopes"; the last block holds
# the sandbox's own codes for cases the contract leaves open (documented in app.py).
ERROR_CODES: Mapping[str, tuple[str, int]] = {
    "validation_error": ("validation_error", 400),
    "invalid_json": ("validation_error", 400),
    "unauthorized": ("authentication_error", 401),
    "forbidden": ("authentication_error", 403),
    "payouts_not_available_in_sandbox": ("authentication_error", 403),
    "not_found": ("not_found_error", 404),
    "endpoint_deprecated": ("not_found_error", 410),
    "duplicate": ("conflict_error", 409),
    "idempotency_key_mismatch": ("conflict_error", 409),
    "idempotency_in_progress": ("conflict_error", 409),
    "provider_unsupported": ("conflict_error", 409),
    "insufficient_balance": ("billing_error", 400),
    "idempotency_unavailable": ("internal_error", 500),
    "internal_error": ("internal_error", 500),
    "rate_limited": ("rate_limit_error", 429),
    # sandbox-chosen
    "payout_account_not_verified": ("conflict_error", 409),
    "invalid_status_transition": ("conflict_error", 409),
}


def doc_url(version: str, code: str) -> str:
    return DOC_URL.format(version=version, code=code)


class CommetError(Exception):
    """A Commet error response. ``status`` overrides the table (fault injection uses it)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        details: Sequence[Mapping[str, str]] | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        error_type, default_status = ERROR_CODES.get(code, ("api_error", 500))
        self.code = code
        self.type = error_type
        self.message = message
        self.param = param
        self.details = [dict(detail) for detail in details] if details is not None else None
        self.status = status if status is not None else default_status
        self.headers = dict(headers or {})

    def body(self, version: str) -> dict[str, Any]:
        return {
            "success": False,
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "details": self.details,
                "doc_url": doc_url(version, self.code),
            },
        }


class RequestRejected(CommetError):
    """Refused before execution began: a corrected request may reuse the Idempotency-Key."""


def validation_error(
    issues: Sequence[tuple[str, str]], *, summary: str | None = None
) -> RequestRejected:
    """``validation_error`` with ``details = [{field, message}]`` and ``param`` = first field."""
    details = [{"field": field, "message": message} for field, message in issues]
    first_field, first_message = issues[0]
    message = summary or f"Invalid request: {first_field}: {first_message}"
    return RequestRejected("validation_error", message, param=first_field, details=details)
