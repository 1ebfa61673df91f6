"""The pure Paygentic webhook functions: Svix headers, the library's signature check with every
exception wrapped, the timestamp window on an injected clock, the body."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from payout_gateway.domain.errors import WebhookRejectedError
from payout_gateway.providers.paygentic import webhooks as pw
from tests.webhooks.support import (
    COMMET_SECRET,
    OTHER_SVIX_SECRET,
    SVIX_SECRET,
    T0,
    commet_signature,
    paygentic_body,
    svix_headers,
)

NOW = int(T0.timestamp())
BODY = paygentic_body(event_id="evt_1")


def headers_for(body: bytes = BODY, secret: str = SVIX_SECRET, **kwargs: Any) -> pw.SvixHeaders:
    kwargs.setdefault("timestamp", NOW)
    kwargs.setdefault("message_id", "msg_1")
    return pw.svix_headers(svix_headers(body, secret, **kwargs))


def verify(body: bytes, headers: pw.SvixHeaders, secret: str = SVIX_SECRET, **kwargs: Any) -> None:
    kwargs.setdefault("now", T0)
    pw.verify(body, headers, secret, **kwargs)


def rejected(status: int, call: Any, *args: Any, **kwargs: Any) -> WebhookRejectedError:
    with pytest.raises(WebhookRejectedError) as caught:
        call(*args, **kwargs)
    assert caught.value.status_code == status
    return caught.value


# --- headers ---------------------------------------------------------------------------------


def test_svix_headers_are_read_case_insensitively() -> None:
    raw = svix_headers(BODY, timestamp=NOW, message_id="msg_1")
    parsed = pw.svix_headers({name.upper(): value for name, value in raw.items()})
    assert parsed == pw.SvixHeaders("msg_1", NOW, raw["svix-signature"])


def test_standard_webhooks_header_names_are_accepted_too() -> None:
    raw = svix_headers(BODY, timestamp=NOW, message_id="msg_1")
    renamed = {name.replace("svix-", "webhook-"): value for name, value in raw.items()}
    verify(BODY, pw.svix_headers(renamed))


SIGNED = svix_headers(BODY, timestamp=NOW, message_id="msg_1")


def without(name: str) -> dict[str, str]:
    return {key: value for key, value in SIGNED.items() if key != name}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (without("svix-id"), 401),
        (without("svix-timestamp"), 401),
        (without("svix-signature"), 401),
        ({**SIGNED, "svix-id": ""}, 401),
        ({**SIGNED, "svix-id": "msg 1"}, 400),
        ({**SIGNED, "svix-id": "m" * 201}, 400),
        ({**SIGNED, "svix-id": "msg_\u00e9"}, 400),
        ({**SIGNED, "svix-timestamp": "1e9"}, 400),
        ({**SIGNED, "svix-timestamp": "nan"}, 400),
        ({**SIGNED, "svix-timestamp": "-1"}, 400),
        ({**SIGNED, "svix-timestamp": "+1784116800"}, 400),
        ({**SIGNED, "svix-timestamp": " 1784116800"}, 400),
        ({**SIGNED, "svix-timestamp": "1784116800.5"}, 400),
        ({**SIGNED, "svix-timestamp": "\uff11\uff17\uff18\uff14"}, 400),
        ({**SIGNED, "svix-timestamp": "9" * 13}, 400),
        ({**SIGNED, "svix-signature": "v1," + "A" * pw.MAX_SIGNATURE_HEADER}, 400),
        ({**SIGNED, "svix-signature": "v1,\u00e9"}, 400),
    ],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str], status: int) -> None:
    rejected(status, pw.svix_headers, headers)


# --- signature (the reference library, wrapped) ---------------------------------------------


def test_a_delivery_signed_by_the_reference_library_verifies() -> None:
    verify(BODY, headers_for())


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    good = svix_headers(BODY, timestamp=NOW, message_id="msg_1")["svix-signature"]
    other = svix_headers(BODY, OTHER_SVIX_SECRET, timestamp=NOW, message_id="msg_1")
    both = f"{other['svix-signature']} {good}"
    verify(BODY, pw.SvixHeaders("msg_1", NOW, both))


def flipped(body: bytes, index: int) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


@pytest.mark.parametrize(
    ("case", "body", "headers", "secret", "status"),
    [
        ("wrong secret", BODY, headers_for(), OTHER_SVIX_SECRET, 401),
        ("signed by another secret", BODY, headers_for(secret=OTHER_SVIX_SECRET), SVIX_SECRET, 401),
        ("one tampered byte", flipped(BODY, 30), headers_for(), SVIX_SECRET, 401),
        (
            "another message id",
            BODY,
            pw.SvixHeaders("msg_2", NOW, SIGNED["svix-signature"]),
            SVIX_SECRET,
            401,
        ),
        (
            "another timestamp",
            BODY,
            pw.SvixHeaders("msg_1", NOW + 1, SIGNED["svix-signature"]),
            SVIX_SECRET,
            401,
        ),
        ("Commet's secret as the key", BODY, headers_for(), COMMET_SECRET, 401),
        (
            "Commet's hex signature",
            BODY,
            pw.SvixHeaders("msg_1", NOW, commet_signature(BODY)),
            SVIX_SECRET,
            400,
        ),
        (
            "only an unknown version",
            BODY,
            pw.SvixHeaders("msg_1", NOW, "v2,abcd"),
            SVIX_SECRET,
            401,
        ),
    ],
)
def test_bad_signatures_are_refused(
    case: str, body: bytes, headers: pw.SvixHeaders, secret: str, status: int
) -> None:
    rejected(status, verify, body, headers, secret)


# Each of these makes standardwebhooks raise something other than its own error.
@pytest.mark.parametrize(
    "signature",
    [
        "v1",  # no comma: tuple unpacking fails (ValueError)
        "v1,a,b",  # two commas
        "v1,abc",  # bad base64 padding (binascii.Error)
        " ",  # empty entries
        "v1,ok v1",  # a good-looking entry, then a broken one
    ],
)
def test_exceptions_the_library_leaves_unwrapped_become_400(signature: str) -> None:
    with pytest.raises(Exception) as raw:  # noqa: PT011 - documents the library's behaviour
        Webhook(SVIX_SECRET).verify(
            BODY,
            {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": signature},
        )
    assert not isinstance(raw.value, WebhookRejectedError)
    rejected(400, verify, BODY, pw.SvixHeaders("msg_1", NOW, signature))


def test_a_body_that_is_not_utf8_is_400() -> None:
    rejected(400, verify, b"\xff\xfe{}", pw.SvixHeaders("msg_1", NOW, SIGNED["svix-signature"]))


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_!!!!", "not base64 at all \u00e9"])
def test_an_unusable_stored_secret_refuses_with_401(secret: str) -> None:
    assert not pw.is_usable_secret(secret)
    rejected(401, verify, BODY, headers_for(), secret)


def test_usable_secrets_are_recognised() -> None:
    assert pw.is_usable_secret(SVIX_SECRET)
    assert pw.is_usable_secret(base64.b64encode(b"raw-key").decode())  # prefix is optional


@given(
    message_id=st.text(max_size=50),
    timestamp=st.text(max_size=20),
    signature=st.text(max_size=300),
    body=st.binary(max_size=200),
)
def test_any_headers_and_body_give_a_typed_4xx(
    message_id: str, timestamp: str, signature: str, body: bytes
) -> None:
    raw = {"svix-id": message_id, "svix-timestamp": timestamp, "svix-signature": signature}
    with pytest.raises(WebhookRejectedError) as caught:
        verify(body, pw.svix_headers(raw))
    assert caught.value.status_code in (400, 401)


@given(signature=st.text(alphabet="v1, =+/abcAB0", max_size=120))
def test_signature_lists_near_the_real_shape_never_escape_unwrapped(signature: str) -> None:
    outcome: int | None = None
    try:
        verify(BODY, pw.SvixHeaders("msg_1", NOW, signature))
    except WebhookRejectedError as exc:
        outcome = exc.status_code
    assert outcome in (None, 400, 401)


# --- timestamp window (docs: reject when more than 5 minutes off) -----------------------------


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (0, True),
        (-299, True),
        (299, True),
        (-300, True),
        (300, True),
        (-301, False),
        (301, False),
        (-86_400 * 3, False),
        (86_400, False),
    ],
)
def test_the_timestamp_must_be_within_five_minutes_of_now(offset: int, accepted: bool) -> None:
    headers = headers_for(timestamp=NOW + offset)
    if accepted:
        verify(BODY, headers)
    else:
        rejected(401, verify, BODY, headers)


def test_the_window_is_a_setting() -> None:
    headers = headers_for(timestamp=NOW - 100)
    verify(BODY, headers, tolerance_seconds=100)
    rejected(401, verify, BODY, headers, tolerance_seconds=99)


def test_the_injected_clock_decides_not_the_wall_clock() -> None:
    # T0 is far from today: the library's own wall-clock check would refuse this delivery.
    verify(BODY, headers_for(), now=T0 + timedelta(seconds=10))
    rejected(401, verify, BODY, headers_for(), now=T0 + timedelta(days=1))


def test_the_library_method_the_window_override_replaces_still_exists() -> None:
    # If standardwebhooks renames it, the override silently stops applying (and the library's
    # wall-clock check comes back): this fails first.
    assert callable(getattr(Webhook, "_Webhook__verify_timestamp", None))


# --- body --------------------------------------------------------------------------------------


def test_the_body_is_read() -> None:
    event = pw.parse_event(BODY, message_id="msg_1")
    assert event.event_type == "invoice.paid.v0"
    assert event.event_id == "evt_1"
    assert event.organization_id == "org_paygenticA"
    assert event.timestamp == "2026-07-15T12:00:00Z"


def test_the_svix_message_id_stands_in_for_a_missing_event_id() -> None:
    body = json.dumps({"eventType": "customer.created.v0", "data": {}}).encode()
    event = pw.parse_event(body, message_id="msg_9")
    assert event.event_id == "msg_9"
    assert event.organization_id is None


@pytest.mark.parametrize("organization_id", [None, 7, "", "org a", "o" * 101])
def test_an_implausible_organization_id_reads_as_none(organization_id: Any) -> None:
    body = json.dumps(
        {
            "eventType": "invoice.paid.v0",
            "eventId": "e",
            "data": {"organizationId": organization_id},
        }
    ).encode()
    assert pw.parse_event(body, message_id="m").organization_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[" * 5000,
        b"[]",
        b'{"eventId": "e", "data": {}}',
        b'{"eventType": 3, "eventId": "e"}',
        b'{"eventType": "t t", "eventId": "e"}',
        b'{"eventType": "t", "eventId": 5}',
        b'{"eventType": "t", "eventId": ""}',
        b'{"eventType": "t", "eventId": "e", "data": []}',
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    rejected(400, pw.parse_event, body, message_id="msg_1")


def test_documented_events_concern_neither_payouts_nor_external_accounts() -> None:
    assert not any(
        "payout" in name or "externalAccount" in name for name in pw.DOCUMENTED_EVENT_TYPES
    )
