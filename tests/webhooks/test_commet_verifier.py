"""The pure Commet webhook functions: hex HMAC verification, envelope parsing, payout updates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payout_gateway.domain.enums import PayoutStatus
from payout_gateway.domain.errors import WebhookRejectedError
from payout_gateway.domain.events import ChangeSource, ObjectType
from payout_gateway.providers.commet import transformers
from payout_gateway.providers.commet import webhooks as cw
from tests.webhooks.support import (
    COMMET_SECRET,
    OTHER_COMMET_SECRET,
    SVIX_SECRET,
    T0,
    commet_body,
    commet_signature,
)

BODY = commet_body("payout.paid", payout_id="po_1", event_id="whev_1")


def rejected(status: int, call: Any, *args: Any, **kwargs: Any) -> WebhookRejectedError:
    with pytest.raises(WebhookRejectedError) as caught:
        call(*args, **kwargs)
    assert caught.value.status_code == status
    return caught.value


# --- signature -------------------------------------------------------------------------------


def test_a_signature_made_as_commet_makes_it_verifies() -> None:
    cw.verify_signature(BODY, commet_signature(BODY), COMMET_SECRET)
    assert cw.sign(BODY, COMMET_SECRET) == commet_signature(BODY)


def tampered(body: bytes, index: int) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


@pytest.mark.parametrize(
    ("case", "body", "signature", "secret", "status"),
    [
        ("wrong secret", BODY, commet_signature(BODY, OTHER_COMMET_SECRET), COMMET_SECRET, 401),
        ("other provider's secret", BODY, commet_signature(BODY, SVIX_SECRET), COMMET_SECRET, 401),
        ("one tampered byte", tampered(BODY, 40), commet_signature(BODY), COMMET_SECRET, 401),
        ("body with a trailing newline", BODY + b"\n", commet_signature(BODY), COMMET_SECRET, 401),
        ("missing header", BODY, None, COMMET_SECRET, 401),
        ("empty header", BODY, "", COMMET_SECRET, 401),
        ("empty secret", BODY, commet_signature(BODY, ""), "", 401),
        ("upper-case hex", BODY, commet_signature(BODY).upper(), COMMET_SECRET, 400),
        ("sha256= prefix", BODY, "sha256=" + commet_signature(BODY), COMMET_SECRET, 400),
        ("truncated", BODY, commet_signature(BODY)[:-1], COMMET_SECRET, 400),
        ("base64 instead of hex", BODY, "q" * 43 + "=", COMMET_SECRET, 400),
        ("full-width digits", BODY, "\uff11" * 64, COMMET_SECRET, 400),
        ("huge header", BODY, "a" * 100_000, COMMET_SECRET, 400),
    ],
)
def test_bad_signatures_are_refused(
    case: str, body: bytes, signature: str | None, secret: str, status: int
) -> None:
    rejected(status, cw.verify_signature, body, signature, secret)


@given(st.text(max_size=200))
def test_any_signature_header_is_refused_with_a_typed_4xx(header: str) -> None:
    with pytest.raises(WebhookRejectedError) as caught:
        cw.verify_signature(BODY, header, COMMET_SECRET)
    assert caught.value.status_code in (400, 401)


# --- envelope --------------------------------------------------------------------------------


def test_the_envelope_is_read_with_every_documented_field() -> None:
    event = cw.parse_envelope(BODY)
    assert event.id == "whev_1"
    assert event.event == "payout.paid"
    assert event.organization_id == "org_commetA"
    assert event.mode == "live"
    assert event.api_version == "2026-07-11"
    assert event.timestamp == "2026-07-15T12:00:00.000Z"
    assert event.data["payoutId"] == "po_1"
    assert event.actionable


def envelope(**overrides: Any) -> bytes:
    document = json.loads(BODY)
    for key, value in overrides.items():
        if value is ...:
            document.pop(key)
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[" * 5000,
        b"\xff\xfe\x00",
        b"[]",
        b'"a string"',
        b"1" * 5000,
        envelope(id=...),
        envelope(id=""),
        envelope(id=7),
        envelope(id="whev_ with a space"),
        envelope(id="x" * 201),
        envelope(id="whev_\u0000"),
        envelope(event=...),
        envelope(event="e" * 101),
        envelope(organizationId=...),
        envelope(organizationId=None),
        envelope(organizationId="o" * 101),
        envelope(data=...),
        envelope(data=[]),
        envelope(mode=1),
        envelope(apiVersion=["2026-07-11"]),
    ],
)
def test_malformed_envelopes_are_400(body: bytes) -> None:
    rejected(400, cw.parse_envelope, body)


def test_optional_envelope_fields_may_be_absent() -> None:
    event = cw.parse_envelope(envelope(mode=..., apiVersion=..., timestamp=...))
    assert (event.mode, event.api_version, event.timestamp) == (None, None, None)


# --- payout events -> status updates --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "provider_status"),
    [
        ("payout.created", PayoutStatus.PENDING, "pending"),
        ("payout.paid", PayoutStatus.PAID, "paid"),
        ("payout.failed", PayoutStatus.FAILED, "failed"),
    ],
)
def test_payout_events_become_payout_updates(
    name: str, status: PayoutStatus, provider_status: str
) -> None:
    event = cw.parse_envelope(commet_body(name, payout_id="po_42"))
    update = cw.status_update(event, organization_id="org_gw", at=T0)
    assert update is not None
    assert update.object_type is ObjectType.PAYOUT
    assert update.provider_object_id == "po_42"
    assert update.object_id is None
    assert update.organization_id == "org_gw"
    assert update.status is status
    assert update.provider_status == provider_status
    assert update.source is ChangeSource.WEBHOOK
    assert update.at == T0


def test_every_payout_event_maps_through_the_commet_status_table() -> None:
    for reported in cw.PAYOUT_EVENTS.values():
        assert reported in transformers.PAYOUT_STATUS
        assert transformers.PAYOUT_STATUS[reported] is not PayoutStatus.UNKNOWN


@pytest.mark.parametrize(
    "name", ["payout.available", "subscription.activated", "invoice.created", "payout.in_transit"]
)
def test_other_events_are_acknowledged_but_not_acted_on(name: str) -> None:
    event = cw.parse_envelope(commet_body(name, availableAmount=1000, currency="usd"))
    assert not event.actionable
    assert cw.status_update(event, organization_id="org_gw", at=T0) is None


@pytest.mark.parametrize("payout_id", [None, "", 42, "po " * 3, "p" * 101])
def test_a_payout_event_without_a_usable_payout_id_is_400(payout_id: Any) -> None:
    body = json.loads(commet_body("payout.paid", payout_id="po_1"))
    if payout_id is None:
        del body["data"]["payoutId"]
    else:
        body["data"]["payoutId"] = payout_id
    event = cw.parse_envelope(json.dumps(body).encode())
    rejected(400, cw.status_update, event, organization_id="org_gw", at=T0)


def test_the_event_name_decides_the_status_not_data_status() -> None:
    # data.status only repeats the event's status; a disagreeing one must not move anything else.
    event = cw.parse_envelope(commet_body("payout.paid", payout_id="po_1", status="pending"))
    update = cw.status_update(event, organization_id="org_gw", at=T0)
    assert update is not None
    assert update.status is PayoutStatus.PAID
