"""AfterShip webhooks: signatures, reading bodies, sub-tag codes (no database, no network)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import json

import pytest

from bot.domain.aftership import (
    AFTERSHIP_CODES,
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    SLUG_CARRIERS,
    Estimate,
    MalformedFeed,
    carrier_for_slug,
    parse_webhook,
    plain_reason,
    raw_code,
    sample_webhook,
    sign,
    signature_is_valid,
)
from bot.domain.carriers import BUILT_IN_CARRIERS, CANONICAL_STATUSES, REASONS, normalise_code
from bot.domain.enums import DelayReason, Status

SECRET = "whsec-test-0123456789"
UTC = dt.timezone.utc
EASTERN = dt.timezone(-dt.timedelta(hours=5))

#: A tracking_update as AfterShip documents it (webhook specification and tracking model), trimmed
#: to realistic values: three DHL checkpoints, the last a customs hold, with every estimate field.
REAL_BODY = {
    "event": "tracking_update",
    "event_id": "5a4c8bd7-2c3f-4b3a-9d7e-0c3f6c0f9b21",
    "is_tracking_first_tag": True,
    "ts": 1795006800,  # 2026-11-18 13:00 UTC
    "msg": {
        "id": "lrm4ypm9j8rbmlf0x2ilr01n",
        "tracking_number": "JD014600006281230704",
        "title": "#1043",
        "note": None,
        "origin_country_iso3": "DEU",
        "destination_country_iso3": "GBR",
        "shipment_package_count": 1,
        "active": True,
        "order_id": "1043",
        "order_id_path": None,
        "order_number": "#1043",
        "customer_name": "Ada Lovelace",
        "source": "api",
        "emails": ["ada@example.com"],
        "smses": [],
        "slug": "dhl",
        "tag": "Exception",
        "subtag": "Exception_004",
        "subtag_message": "Delayed (Customs clearance)",
        "tracked_count": 14,
        "language": "en",
        "return_to_sender": False,
        "expected_delivery": "2026-11-19",
        "courier_estimated_delivery_date": {
            "estimated_delivery_date": "2026-11-20",
            "estimated_delivery_date_min": None,
            "estimated_delivery_date_max": None,
        },
        "aftership_estimated_delivery_date": {
            "estimated_delivery_date": "2026-11-21",
            "confidence_code": 1.0,
            "estimated_delivery_date_min": "2026-11-20",
            "estimated_delivery_date_max": "2026-11-23",
        },
        "latest_estimated_delivery": {
            "type": "specific",
            "source": "AfterShip EDD",
            "datetime": "2026-11-22T18:00:00+01:00",
            "datetime_min": "2026-11-21",
            "datetime_max": "2026-11-24T12:00:00+01:00",
        },
        "checkpoints": [
            {
                "slug": "dhl",
                "city": None,
                "created_at": "2026-11-14T09:02:11+00:00",
                "location": "Leipzig - Germany",
                "country_name": "Germany",
                "message": "The shipment has been processed in the parcel center",
                "country_iso3": "DEU",
                "tag": "InTransit",
                "subtag": "InTransit_003",
                "subtag_message": "Arrival scan",
                "checkpoint_time": "2026-11-14T08:55:00+01:00",
                "coordinates": [],
                "state": None,
                "zip": None,
                "raw_tag": "PO",
            },
            {
                "slug": "dhl",
                "city": "London",
                "created_at": "2026-11-16T07:40:30+00:00",
                "location": None,
                "country_name": "United Kingdom",
                "message": "Arrived in the destination country",
                "country_iso3": "GBR",
                "tag": "InTransit",
                "subtag": "InTransit_004",
                "subtag_message": "Arrived at destination country",
                "checkpoint_time": "2026-11-16T07:31:00",
                "coordinates": [],
                "state": "Greater London",
                "zip": None,
                "raw_tag": "AR",
            },
            {
                "slug": "dhl",
                "city": "London",
                "created_at": "2026-11-17T11:15:02+00:00",
                "location": "London Heathrow - UK",
                "country_name": "United Kingdom",
                "message": (
                    "Customs clearance status updated. Note - The Customs clearance process may require several steps."
                ),
                "country_iso3": "GBR",
                "tag": "Exception",
                "subtag": "Exception_004",
                "subtag_message": "Delayed (Customs clearance)",
                "checkpoint_time": "2026-11-17T11:02:00+00:00",
                "coordinates": [],
                "state": None,
                "zip": None,
                "raw_tag": "CD",
            },
        ],
        "unknown_future_field": {"anything": [1, 2, 3]},
    },
}


def body_of(payload) -> bytes:
    return json.dumps(payload).encode("utf-8")


def changed(path, value, *more):
    """REAL_BODY with fields replaced (or removed when the value is REMOVE), as bytes.

    `more` holds further (path, value) pairs.
    """
    payload = copy.deepcopy(REAL_BODY)
    for where, what in ((path, value), *more):
        holder = payload
        for key in where[:-1]:
            holder = holder[key]
        if what is REMOVE:
            del holder[where[-1]]
        else:
            holder[where[-1]] = what
    return body_of(payload)


REMOVE = object()


# --- signatures ------------------------------------------------------------------------------


def test_a_body_signed_with_the_secret_is_accepted():
    """It accepts the base64 HMAC-SHA256 of the exact body, computed independently of `sign`."""
    body = body_of(REAL_BODY)
    header = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert SIGNATURE_HEADER == "aftership-hmac-sha256"
    assert sign(SECRET, body) == header
    assert signature_is_valid(SECRET, body, header) is True
    assert signature_is_valid(SECRET, body, f"  {header}\n") is True  # header folding whitespace


@pytest.mark.parametrize(
    "secret, tamper, header",
    [
        ("another-secret", False, "good"),  # signed with another account's secret
        (SECRET, True, "good"),  # one byte of the body changed after signing
        (SECRET, False, None),  # no header at all
        (SECRET, False, ""),  # empty header
        (SECRET, False, "   "),  # blank header
        (SECRET, False, "not base64 at all!"),  # garbage
        (SECRET, False, "ÿÿÿÿ"),  # not even ASCII
        (SECRET, False, base64.b64encode(b"short").decode()),  # valid base64, wrong digest length
        ("", False, "good"),  # no secret configured: nothing validates
    ],
)
def test_a_body_whose_signature_does_not_match_is_refused(secret, tamper, header):
    """It refuses a body whose signature does not match, and every missing or garbled header."""
    body = body_of(REAL_BODY)
    if header == "good":
        header = sign(SECRET if secret else "", body)
    if tamper:
        body = body.replace(b"Leipzig", b"Leipzog")
    assert signature_is_valid(secret, body, header) is False


# --- reading a real body -----------------------------------------------------------------------


def test_a_documented_body_is_read_into_checkpoints_codes_carrier_and_estimate():
    """It reads AfterShip's documented shape: UTC times, AS: codes, our carrier, the latest estimate."""
    update = parse_webhook(body_of(REAL_BODY))
    assert update.event == "tracking_update"
    assert update.event_id == "5a4c8bd7-2c3f-4b3a-9d7e-0c3f6c0f9b21"
    assert update.ts == dt.datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
    assert (update.tracking_number, update.slug, update.carrier) == ("JD014600006281230704", "dhl", "dhl")
    assert (update.tag, update.subtag) == ("Exception", "Exception_004")
    assert update.order_number == "#1043"  # order_number wins over order_id

    assert [c.raw_code for c in update.checkpoints] == ["AS:INTRANSIT_003", "AS:INTRANSIT_004", "AS:EXCEPTION_004"]
    assert [c.occurred_at for c in update.checkpoints] == [
        dt.datetime(2026, 11, 14, 7, 55, tzinfo=UTC),  # +01:00 moved to UTC
        dt.datetime(2026, 11, 16, 7, 31, tzinfo=UTC),  # no offset: read as UTC
        dt.datetime(2026, 11, 17, 11, 2, tzinfo=UTC),
    ]
    assert all(c.occurred_at.utcoffset() == dt.timedelta(0) for c in update.checkpoints)
    first, second, third = update.checkpoints
    assert first.text == "The shipment has been processed in the parcel center"
    assert first.location == "Leipzig - Germany"
    assert second.location == "London, Greater London, United Kingdom"  # no `location`: the parts joined
    assert third.location == "London Heathrow - UK"
    assert len({c.event_id for c in update.checkpoints}) == 3

    mapping = AFTERSHIP_CODES[third.raw_code]
    assert (mapping.status, mapping.reason) == (Status.EXCEPTION, DelayReason.CUSTOMS)

    assert update.estimate == Estimate(
        on=dt.date(2026, 11, 22),
        earliest=dt.date(2026, 11, 21),
        latest=dt.date(2026, 11, 24),
        confidence=None,
        source="latest_estimated_delivery: AfterShip EDD",
    )


def test_checkpoints_come_back_oldest_first_without_repeats():
    """Checkpoints out of order are sorted, and one sent twice in the same body is kept once."""
    payload = copy.deepcopy(REAL_BODY)
    points = payload["msg"]["checkpoints"]
    payload["msg"]["checkpoints"] = [points[2], points[0], points[2], points[1]]
    update = parse_webhook(body_of(payload))
    assert [c.raw_code for c in update.checkpoints] == ["AS:INTRANSIT_003", "AS:INTRANSIT_004", "AS:EXCEPTION_004"]


def test_a_checkpoint_time_without_an_offset_is_utc():
    """`2026-11-16T07:31:00` means 07:31 UTC, not the server's local time."""
    update = parse_webhook(changed(("msg", "checkpoints", 0, "checkpoint_time"), "2026-11-14T23:30:00"))
    assert update.checkpoints[0].occurred_at == dt.datetime(2026, 11, 14, 23, 30, tzinfo=UTC)
    assert update.checkpoints[0].occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    "written, instant",
    [
        ("2026-11-14T08:55:00Z", dt.datetime(2026, 11, 14, 8, 55, tzinfo=UTC)),
        ("2026-11-14T08:55:00.123Z", dt.datetime(2026, 11, 14, 8, 55, 0, 123000, tzinfo=UTC)),
        ("2026-11-14T08:55:00-0500", dt.datetime(2026, 11, 14, 13, 55, tzinfo=UTC)),  # offset without colon
        ("2026-11-14T08:55:00+08:00", dt.datetime(2026, 11, 14, 0, 55, tzinfo=UTC)),
        ("2026-11-14", dt.datetime(2026, 11, 14, tzinfo=UTC)),  # carriers that give only a day
    ],
)
def test_checkpoint_times_in_each_iso_spelling_are_read(written, instant):
    """The ISO 8601 spellings couriers pass through AfterShip all give the same aware instant."""
    update = parse_webhook(changed(("msg", "checkpoints", 0, "checkpoint_time"), written))
    assert update.checkpoints[0].occurred_at == instant


# --- malformed bodies ----------------------------------------------------------------------------


TIME_1 = ("msg", "checkpoints", 1, "checkpoint_time")


def _malformed_cases():
    return [
        # (body, the field the message must name)
        (b"\xff\xfe{}", "body"),  # not UTF-8
        (b"{\"event_id\": ", "body"),  # not JSON
        (b"{\"ts\": NaN}", "body"),  # JSON's non-standard constants refused
        (b"[1, 2]", "body"),  # not an object
        (b"[" * 100000 + b"]" * 100000, "body"),  # nested past the parser's depth
        (changed(("event_id",), REMOVE), "event_id"),
        (changed(("event_id",), "   "), "event_id"),
        (changed(("event_id",), 42), "event_id"),
        (changed(("event_id",), "x" * 201), "event_id"),
        (changed(("ts",), REMOVE), "ts"),
        (changed(("ts",), "yesterday"), "ts"),
        (changed(("ts",), True), "ts"),
        (changed(("ts",), -5), "ts"),
        (changed(("ts",), 10**15), "ts"),
        (changed(("msg",), REMOVE), "msg"),
        (changed(("msg",), "not an object"), "msg"),
        (changed(("msg", "tracking_number"), REMOVE), "msg.tracking_number"),
        (changed(("msg", "tracking_number"), " "), "msg.tracking_number"),
        (changed(("msg", "tracking_number"), "AB1"), "msg.tracking_number"),  # too short
        (changed(("msg", "tracking_number"), "JD0146 0000"), "msg.tracking_number"),  # space
        (changed(("msg", "tracking_number"), "1Z99<script>"), "msg.tracking_number"),
        (changed(("msg", "tracking_number"), "9" * 65), "msg.tracking_number"),
        (changed(("msg", "slug"), REMOVE), "msg.slug"),
        (changed(("msg", "slug"), ""), "msg.slug"),
        (changed(("msg", "slug"), "dhl/../../etc"), "msg.slug"),
        (changed(("msg", "checkpoints"), {"0": {}}), "msg.checkpoints"),
        (changed(("msg", "checkpoints", 1), "InTransit"), "msg.checkpoints[1]"),
        (changed(TIME_1, REMOVE), "msg.checkpoints[1].checkpoint_time"),
        (changed(TIME_1, ""), "msg.checkpoints[1].checkpoint_time"),
        (changed(TIME_1, "16/11/2026 07:31"), "msg.checkpoints[1].checkpoint_time"),
        (changed(TIME_1, "2026-02-30T10:00:00"), "msg.checkpoints[1].checkpoint_time"),  # no such day
        (changed(TIME_1, "2026-11-16T25:00:00"), "msg.checkpoints[1].checkpoint_time"),  # no such hour
        (changed(TIME_1, 1763280000), "msg.checkpoints[1].checkpoint_time"),  # a number, not ISO 8601
        (changed(("msg", "checkpoints", 2, "tag"), REMOVE, (("msg", "checkpoints", 2, "subtag"), None)),
         "msg.checkpoints[2].tag"),  # neither tag nor subtag
        (changed(("msg", "checkpoints", 0, "subtag"), 3), "msg.checkpoints[0].subtag"),
        (changed(("msg", "tag"), 7), "msg.tag"),
    ]


@pytest.mark.parametrize("body, field", _malformed_cases())
def test_a_malformed_body_is_refused_naming_the_field(body, field):
    """Each malformed body raises MalformedFeed, and the message says which field is at fault."""
    with pytest.raises(MalformedFeed) as caught:
        parse_webhook(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_a_body_over_the_size_limit_is_refused_even_when_well_formed():
    """A well-formed, correctly shaped body larger than MAX_BODY_BYTES is refused before parsing."""
    huge = changed(("msg", "note"), "x" * MAX_BODY_BYTES)
    with pytest.raises(MalformedFeed, match=r"^body: larger than \d+ bytes"):
        parse_webhook(huge)
    fits = changed(("msg", "note"), "x" * (MAX_BODY_BYTES - len(body_of(REAL_BODY)) - 10))
    assert len(fits) <= MAX_BODY_BYTES and parse_webhook(fits).event_id


def test_the_refusal_cases_differ_from_the_good_body_only_where_intended():
    """The good body itself parses, so each case above fails for its own field alone."""
    assert parse_webhook(body_of(REAL_BODY)).event_id
    bodies = [body for body, _ in _malformed_cases()]
    assert len(set(bodies)) == len(bodies)


def test_unknown_fields_and_missing_optional_ones_are_fine():
    """A body with only the required fields parses; extra fields anywhere are ignored."""
    minimal = {"event_id": "e-1", "ts": 1795006800, "msg": {"tracking_number": "1Z999AA10123456784", "slug": "UPS"}}
    update = parse_webhook(body_of(minimal))
    assert (update.event, update.carrier, update.slug) == ("tracking_update", "ups", "ups")
    assert (update.tag, update.subtag, update.checkpoints, update.estimate, update.order_number) == (
        "", None, (), None, None,
    )


# --- estimates ----------------------------------------------------------------------------------


def _without(*fields):
    payload = copy.deepcopy(REAL_BODY)
    for name in fields:
        payload["msg"].pop(name, None)
    return payload


def test_the_estimate_falls_back_field_by_field_in_order():
    """latest_estimated_delivery, then AfterShip's own, then the courier's, then expected_delivery."""
    update = parse_webhook(body_of(_without("latest_estimated_delivery")))
    assert update.estimate == Estimate(
        dt.date(2026, 11, 21), dt.date(2026, 11, 20), dt.date(2026, 11, 23), 1.0, "aftership_estimated_delivery_date"
    )
    update = parse_webhook(body_of(_without("latest_estimated_delivery", "aftership_estimated_delivery_date")))
    assert update.estimate == Estimate(dt.date(2026, 11, 20), None, None, None, "courier_estimated_delivery_date")
    payload = _without(
        "latest_estimated_delivery", "aftership_estimated_delivery_date", "courier_estimated_delivery_date"
    )
    payload["msg"]["expected_delivery"] = "2026-11-19T17:00:00-08:00"  # the date as written, not moved to UTC
    assert parse_webhook(body_of(payload)).estimate == Estimate(
        dt.date(2026, 11, 19), None, None, None, "expected_delivery"
    )
    payload["msg"].pop("expected_delivery")
    assert parse_webhook(body_of(payload)).estimate is None


@pytest.mark.parametrize(
    "latest",
    [
        "tomorrow",  # not an object
        {"type": "specific", "datetime": "next week"},  # unparseable date
        {"type": "range", "datetime_min": "2026-11-25", "datetime_max": "2026-11-21"},  # min after max
        {"type": "specific", "datetime": None, "datetime_min": None, "datetime_max": None},  # empty
        None,
    ],
)
def test_a_malformed_estimate_is_skipped_not_refused(latest):
    """A bad estimate field is ignored (the next one is used); the scans still come through."""
    update = parse_webhook(changed(("msg", "latest_estimated_delivery"), latest))
    assert len(update.checkpoints) == 3
    assert update.estimate is not None and update.estimate.source == "aftership_estimated_delivery_date"


def test_a_range_without_a_day_keeps_on_empty():
    """With only the earliest and latest days, `on` stays None rather than being guessed."""
    update = parse_webhook(changed(
        ("msg", "latest_estimated_delivery"),
        {"type": "range", "source": "Carrier EDD", "datetime_min": "2026-11-21", "datetime_max": "2026-11-24"},
    ))
    assert update.estimate == Estimate(
        None, dt.date(2026, 11, 21), dt.date(2026, 11, 24), None, "latest_estimated_delivery: Carrier EDD"
    )


# --- checkpoint identity ------------------------------------------------------------------------


def test_the_same_checkpoint_resent_in_a_later_webhook_keeps_its_id():
    """AfterShip resends the whole history: an old checkpoint must be recognised, a new one must not."""
    first = parse_webhook(body_of(REAL_BODY))
    later = copy.deepcopy(REAL_BODY)
    later["event_id"] = "0b8f5a7e-0000-4000-8000-000000000001"
    later["ts"] += 3600
    later["msg"]["checkpoints"][0]["checkpoint_time"] = "2026-11-14T07:55:00Z"  # same instant, other spelling
    later["msg"]["checkpoints"][0]["created_at"] = "2026-11-18T10:00:00+00:00"  # re-fetched by AfterShip
    later["msg"]["checkpoints"].append(
        {
            "slug": "dhl", "location": "London Heathrow - UK", "message": "Clearance processing complete",
            "tag": "InTransit", "subtag": "InTransit_005", "checkpoint_time": "2026-11-18T09:00:00+00:00",
        }
    )
    second = parse_webhook(body_of(later))
    assert [c.event_id for c in second.checkpoints[:3]] == [c.event_id for c in first.checkpoints]
    assert second.checkpoints[3].event_id not in {c.event_id for c in first.checkpoints}


@pytest.mark.parametrize(
    "field, value",
    [
        ("message", "The shipment has been loaded onto the delivery vehicle"),
        ("checkpoint_time", "2026-11-14T08:56:00+01:00"),
        ("subtag", "InTransit_007"),
    ],
)
def test_a_different_checkpoint_gets_a_different_id(field, value):
    """Changing the text, time or sub-tag of a checkpoint makes it another checkpoint."""
    original = parse_webhook(body_of(REAL_BODY)).checkpoints[0].event_id
    other = parse_webhook(changed(("msg", "checkpoints", 0, field), value))
    assert original not in {c.event_id for c in other.checkpoints}


def test_the_same_checkpoint_of_another_parcel_is_another_checkpoint():
    """Identity includes the tracking number and courier, so two parcels' identical scans stay apart."""
    original = parse_webhook(body_of(REAL_BODY)).checkpoints[0].event_id
    other_parcel = parse_webhook(changed(("msg", "tracking_number"), "JD014600006281230705"))
    other_courier = parse_webhook(changed(("msg", "slug"), "dhl-germany"))
    assert other_parcel.checkpoints[0].event_id != original
    assert other_courier.checkpoints[0].event_id != original


# --- the code table -----------------------------------------------------------------------------

TAGS = (
    "Pending", "InfoReceived", "InTransit", "OutForDelivery", "AttemptFail",
    "Delivered", "AvailableForPickup", "Exception", "Expired",
)


def test_every_aftership_code_maps_to_a_canonical_status():
    """Every tag and sub-tag maps to a status (and reason) the rules know, under a normalised AS: key."""
    assert {normalise_code(f"AS:{tag}") for tag in TAGS} <= set(AFTERSHIP_CODES)
    assert len(AFTERSHIP_CODES) > 40
    for code, mapping in AFTERSHIP_CODES.items():
        assert code == normalise_code(code) and code.startswith("AS:"), code
        assert mapping.status in CANONICAL_STATUSES, code
        assert mapping.reason is None or mapping.reason in REASONS, code
        assert mapping.description, code
        assert len(code) <= 40 and len(mapping.description) <= 300  # the carrier_status_codes columns
    for number in range(1, 14):
        assert f"AS:EXCEPTION_{number:03d}" in AFTERSHIP_CODES
    for number in range(1, 10):
        assert f"AS:INTRANSIT_{number:03d}" in AFTERSHIP_CODES


@pytest.mark.parametrize(
    "subtag, status, reason",
    [
        ("Exception_004", Status.EXCEPTION, DelayReason.CUSTOMS),  # customs clearance delay
        ("Exception_006", Status.EXCEPTION, DelayReason.CUSTOMS),  # held for payment (duties)
        ("Exception_002", Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM),  # customer moved
        ("Exception_007", Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM),  # incorrect address
        ("Exception_012", Status.EXCEPTION, DelayReason.DAMAGED),
        ("Exception_013", Status.LOST, DelayReason.CARRIER_LOST),
        ("Exception_010", Status.EXCEPTION, None),  # returning: still moving, can stall
        ("Exception_011", Status.RETURNED_TO_SENDER, None),  # returned: final
        ("AttemptFail_002", Status.FAILED_ATTEMPT, DelayReason.RECIPIENT_UNAVAILABLE),
        ("AttemptFail_003", Status.FAILED_ATTEMPT, DelayReason.RECIPIENT_UNAVAILABLE),  # business closed
        ("Exception_017", Status.IN_TRANSIT, DelayReason.WEATHER),  # extreme weather, as the carriers' own
        ("Expired_001", Status.EXCEPTION, None),
        ("Pending_001", Status.INFO_RECEIVED, None),  # a tracking number exists: a label awaiting pickup
        ("Delivered_005", Status.DELIVERED, None),  # left with a neighbour
        ("AvailableForPickup_001", Status.AVAILABLE_FOR_PICKUP, None),
        ("OutForDelivery_001", Status.OUT_FOR_DELIVERY, None),
    ],
)
def test_subtags_map_to_the_status_and_reason_a_shopper_should_hear(subtag, status, reason):
    """The sub-tags that change what the assistant says map to the matching status and reason."""
    mapping = AFTERSHIP_CODES[raw_code(subtag.split("_")[0], subtag)]
    assert (mapping.status, mapping.reason) == (status, reason)
    assert plain_reason(subtag) == reason


def test_every_built_in_carrier_speaks_aftership():
    """Each built-in carrier's table holds every AfterShip code, unchanged, besides its own codes."""
    for carrier in BUILT_IN_CARRIERS:
        for code, mapping in AFTERSHIP_CODES.items():
            assert carrier.codes.get(code) == mapping, (carrier.code, code)
        own = [code for code in carrier.codes if not code.startswith("AS:")]
        assert len(own) >= 10, carrier.code


def test_raw_codes_use_the_subtag_then_the_tag():
    """`AS:<subtag>`; a checkpoint without a sub-tag, or with one we do not know yet, uses its tag."""
    assert raw_code("InTransit", "InTransit_007") == "AS:INTRANSIT_007"
    assert raw_code("Delivered", None) == "AS:DELIVERED"
    assert raw_code("Delivered", "  ") == "AS:DELIVERED"
    assert raw_code("InTransit", "InTransit_099") == "AS:INTRANSIT"  # a sub-tag newer than our table
    assert raw_code("", "Exception_099") == "AS:EXCEPTION_099"  # nothing better to fall back to
    assert raw_code("Teleported", "Teleported_001") == "AS:TELEPORTED_001"  # neither known: kept for the shop
    with pytest.raises(ValueError):
        raw_code("", None)
    assert plain_reason("Exception_099") is None and plain_reason(None) is None


def test_a_new_subtag_in_a_body_still_gets_its_tags_status():
    """A checkpoint with a sub-tag AfterShip added after this table is stored under its tag's code."""
    update = parse_webhook(changed(("msg", "checkpoints", 2, "subtag"), "Exception_099"))
    assert update.checkpoints[2].raw_code == "AS:EXCEPTION"
    assert AFTERSHIP_CODES["AS:EXCEPTION"].status == Status.EXCEPTION


@pytest.mark.parametrize(
    "slug, carrier",
    [
        ("dhl", "dhl"),
        ("dhl-global-mail", "dhl"),
        ("dhl-germany", "dhl"),
        (" DHLPARCEL-UK ", "dhl"),  # case and padding ignored
        ("ups", "ups"),
        ("ups-mi", "ups"),
        ("usps", "usps"),
        ("royal-mail", "royalmail"),
        ("parcel-force", None),  # Royal Mail group, but another tracking system
        ("fedex", None),
        ("dhl-freight", None),  # freight is not the parcel network we link to
    ],
)
def test_courier_slugs_name_our_carriers(slug, carrier):
    """AfterShip's slugs for DHL, UPS, USPS and Royal Mail name our carriers; others name none."""
    assert carrier_for_slug(slug) == carrier
    assert set(SLUG_CARRIERS.values()) == {c.code for c in BUILT_IN_CARRIERS}


# --- building bodies ----------------------------------------------------------------------------


def test_a_sample_webhook_reads_back_as_what_it_was_built_from():
    """sample_webhook's body, serialised and parsed, gives back its checkpoints and estimate."""
    earlier = sample_webhook(
        tracking_number="1Z999AA10123456784", slug="ups", tag="InTransit", subtag="InTransit_002",
        message="Origin scan", checkpoint_time=dt.datetime(2026, 11, 16, 18, 5, tzinfo=EASTERN),
        location="Louisville, KY, US",
    )["msg"]["checkpoints"]
    payload = sample_webhook(
        tracking_number="1Z999AA10123456784",
        slug="ups",
        tag="AttemptFail",
        subtag="AttemptFail_002",
        message="The receiver was not available for delivery",
        checkpoint_time=dt.datetime(2026, 11, 18, 10, 40),  # naive: taken as UTC
        location="Springfield, IL, US",
        event_id="sim-0001",
        estimate=(dt.date(2026, 11, 19), dt.date(2026, 11, 19), dt.date(2026, 11, 20)),
        earlier_checkpoints=earlier,
    )
    body = json.dumps(payload).encode()
    assert signature_is_valid(SECRET, body, sign(SECRET, body))
    update = parse_webhook(body)
    assert (update.event, update.event_id, update.carrier) == ("tracking_update", "sim-0001", "ups")
    assert (update.tag, update.subtag) == ("AttemptFail", "AttemptFail_002")
    assert update.ts == dt.datetime(2026, 11, 18, 10, 40, tzinfo=UTC)
    assert [(c.raw_code, c.occurred_at, c.location) for c in update.checkpoints] == [
        ("AS:INTRANSIT_002", dt.datetime(2026, 11, 16, 23, 5, tzinfo=UTC), "Louisville, KY, US"),
        ("AS:ATTEMPTFAIL_002", dt.datetime(2026, 11, 18, 10, 40, tzinfo=UTC), "Springfield, IL, US"),
    ]
    assert update.checkpoints[1].text == "The receiver was not available for delivery"
    assert update.estimate == Estimate(
        dt.date(2026, 11, 19), dt.date(2026, 11, 19), dt.date(2026, 11, 20), None, "aftership_estimated_delivery_date"
    )


def test_sample_webhooks_get_fresh_event_ids_but_stable_checkpoint_ids():
    """Two deliveries of the same scan are two webhooks (new event ids) about one checkpoint."""
    kwargs = dict(
        tracking_number="EV123456785GB", slug="royal-mail", tag="Delivered", subtag="Delivered_001",
        message="Delivered", checkpoint_time=dt.datetime(2026, 11, 18, 12, 0, tzinfo=UTC),
    )
    one, two = parse_webhook(body_of(sample_webhook(**kwargs))), parse_webhook(body_of(sample_webhook(**kwargs)))
    assert one.event_id != two.event_id
    assert one.checkpoints[0].event_id == two.checkpoints[0].event_id
    assert one.carrier == "royalmail" and one.estimate is None
