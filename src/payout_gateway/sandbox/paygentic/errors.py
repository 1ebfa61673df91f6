"""Paygentic error bodies: the one exception the sandbox raises and its JSON rendering."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse

from payout_gateway.sandbox.paygentic.models import (
    ErrorBody,
    FieldError,
    ForbiddenErrorBody,
    ValidationErrorBody,
)

_CATEGORIES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

# pydantic's error types, renamed into the UPPER_SNAKE codes Paygentic uses; others are upper-cased.
_FIELD_CODES = {
    "missing": "REQUIRED",
    "extra_forbidden": "UNKNOWN_FIELD",
    "string_type": "INVALID_TYPE",
    "int_type": "INVALID_TYPE",
    "dict_type": "INVALID_TYPE",
    "model_type": "INVALID_TYPE",
    "model_attributes_type": "INVALID_TYPE",
    "int_parsing": "INVALID_TYPE",
    "string_pattern_mismatch": "INVALID_FORMAT",
    "string_too_short": "INVALID_LENGTH",
    "string_too_long": "INVALID_LENGTH",
    "literal_error": "INVALID_VALUE",
    "greater_than_equal": "OUT_OF_RANGE",
    "less_than_equal": "OUT_OF_RANGE",
}

_LOCATIONS = {"body", "query", "path", "header"}


def category_for(status: int) -> str:
    if status in _CATEGORIES:
        return _CATEGORIES[status]
    try:
        return re.sub(r"[^a-z0-9]+", "_", HTTPStatus(status).phrase.lower()).strip("_")
    except ValueError:
        return "error"


class PaygenticApiError(Exception):
    """An API answer other than success, carrying the exact body Paygentic would send."""

    def __init__(
        self, status: int, body: BaseModel, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {getattr(body, 'message', '')}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body.model_dump(mode="json", exclude_none=True),
            status_code=self.status,
            headers=self.headers,
        )

    @classmethod
    def plain(
        cls,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> PaygenticApiError:
        body = ErrorBody(message=message, error=category_for(status), code=code, details=details)
        return cls(status, body, headers)

    @classmethod
    def not_found(cls, what: str) -> PaygenticApiError:
        return cls.plain(404, f"{what} not found")

    @classmethod
    def unauthorized(cls, message: str) -> PaygenticApiError:
        return cls.plain(401, message, headers={"WWW-Authenticate": "Bearer"})

    @classmethod
    def insufficient_scope(cls, permission: str) -> PaygenticApiError:
        body = ForbiddenErrorBody(
            message=f"This API key may not perform this operation; it needs {permission}",
            error="forbidden",
            reason="insufficient_scope",
            requiredPermissions=[permission],
        )
        return cls(403, body)

    @classmethod
    def validation(cls, errors: Sequence[FieldError]) -> PaygenticApiError:
        first = errors[0]
        message = f"Invalid request: {first.field}: {first.message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return cls(400, ValidationErrorBody(message=message, errors=list(errors)))

    @classmethod
    def from_pydantic(cls, errors: Iterable[Mapping[str, Any]]) -> PaygenticApiError:
        """Translate FastAPI/pydantic validation errors; the submitted ``input`` is dropped."""
        field_errors: list[FieldError] = []
        for error in errors:
            kind = str(error.get("type", "value_error"))
            if kind == "json_invalid":
                return cls.plain(400, "Request body is not valid JSON", code="INVALID_JSON")
            loc = [str(part) for part in error.get("loc", ())]
            if loc and loc[0] in _LOCATIONS:
                loc = loc[1:] or loc[:1]
            field_errors.append(
                FieldError(
                    field=".".join(loc) or "body",
                    message=str(error.get("msg", "Invalid value")),
                    code=_FIELD_CODES.get(kind, kind.upper()),
                )
            )
        if not field_errors:
            field_errors.append(FieldError(field="body", message="Invalid request", code="INVALID"))
        return cls.validation(field_errors)
