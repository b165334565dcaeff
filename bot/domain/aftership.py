"""AfterShip's tracking webhooks, read into plain values.

AfterShip tracks parcels for many couriers and posts a `tracking_update` to us
whenever a tracking changes.  This module is the whole of what the rest of the
code needs to know about its format: the signature check, which courier slugs
are our carriers, the raw code an AfterShip checkpoint is stored under (its
sub-tag, mapped through `bot.domain.carriers.AFTERSHIP_CODES` like any carrier
code), and a strict reading of the body that names the field at fault.

A body is trusted only after `signature_is_valid`; even then it is read
defensively, since a malformed checkpoint must not reach the store.  A bad
delivery estimate, on the other hand, is dropped quietly: the scans are still
good, and AfterShip would only resend the same body if we refused it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from bot.domain.carriers import AFTERSHIP_CODES, AFTERSHIP_PREFIX, CodeMapping, normalise_code

__all__ = [
    "AFTERSHIP_CODES",
    "MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "SLUG_CARRIERS",
    "Checkpoint",
    "CodeMapping",
    "Estimate",
    "FeedUpdate",
    "MalformedFeed",
    "carrier_for_slug",
    "parse_webhook",
    "plain_reason",
    "raw_code",
    "sample_webhook",
    "sign",
    "signature_is_valid",
]

#: The header AfterShip puts its signature in: base64 of HMAC-SHA256(secret, raw body).
SIGNATURE_HEADER = "aftership-hmac-sha256"

#: Larger bodies are refused before any parsing (a tracking with hundreds of checkpoints is far smaller).
MAX_BODY_BYTES = 1024 * 1024

#: AfterShip courier slugs that are one of our built-in carriers.  Freight, forwarding and supply-chain
#: services of the same groups are left out: their numbers are not tracked on the parcel pages we link.
SLUG_CARRIERS: Dict[str, str] = {
    **dict.fromkeys(
        (
            "dhl",
            "dhl-express",
            "dhl-active-tracing",
            "dhl-pieceid",
            "dhl-reference",
            "dhl-germany",
            "dhl-global-mail",
            "dhl-global-mail-asia",
            "dhl-global-mail-asia-api",
            "dhl-benelux",
            "dhl-nl",
            "dhl-es",
            "dhl-poland",
            "dhl-hk",
            "dhlparcel-nl",
            "dhlparcel-es",
            "dhlparcel-uk",
        ),
        "dhl",
    ),
    **dict.fromkeys(("ups", "ups-api", "ups-mi"), "ups"),
    **dict.fromkeys(("usps", "usps-webhook"), "usps"),
    "royal-mail": "royalmail",
}

_TRACKING_NUMBER = re.compile(r"^[A-Za-z0-9-]{4,64}$")
_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<frac>\d{1,9}))?)?"
    r"\s*(?P<tz>Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_MAX_EVENT_ID = 200
_MAX_ORDER_NUMBER = 64
_MAX_TEXT = 500
_MAX_LOCATION = 200
#: 1 January 3000 UTC: a `ts` past this is not a time AfterShip sent.
_MAX_TS = 32503680000


class MalformedFeed(ValueError):
    """The body is not an AfterShip tracking webhook we can read; the message names the field at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Checkpoint:
    """One AfterShip checkpoint, ready to become a stored carrier event."""

    occurred_at: dt.datetime  # aware, UTC
    raw_code: str  # "AS:<SUBTAG>" (or "AS:<TAG>"), normalised
    text: str = ""
    location: str = ""
    event_id: str = ""  # stable across webhooks that resend the checkpoint


@dataclass(frozen=True)
class Estimate:
    """When the parcel should arrive, as AfterShip or the carrier last said."""

    on: Optional[dt.date]
    earliest: Optional[dt.date]
    latest: Optional[dt.date]
    confidence: Optional[Union[float, str]]
    source: str  # the AfterShip field it came from, and its own source when it names one


@dataclass(frozen=True)
class FeedUpdate:
    """One AfterShip webhook, read."""

    event: str
    event_id: str
    ts: dt.datetime  # aware, UTC
    tracking_number: str
    slug: str
    carrier: Optional[str]  # our carrier code, when the slug is one of ours
    tag: str
    subtag: Optional[str]
    checkpoints: Tuple[Checkpoint, ...]  # oldest first
    estimate: Optional[Estimate]
    order_number: Optional[str]


# --- signatures --------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The signature AfterShip sends with `body` for a webhook secret (our simulator signs this way)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_is_valid(secret: str, body: bytes, header: Optional[str]) -> bool:
    """Whether `header` is AfterShip's signature of exactly these bytes under `secret`.

    Compared in constant time on the decoded digests.  An empty secret never
    validates anything, so a missing setting cannot open the endpoint.
    """
    if not secret or not header or not isinstance(header, str) or not header.strip():
        return False
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, given)


# --- carriers and codes ------------------------------------------------------------------------


def carrier_for_slug(slug: str) -> Optional[str]:
    """Our carrier code for an AfterShip courier slug, or None for a courier we do not know."""
    return SLUG_CARRIERS.get(slug.strip().lower()) if isinstance(slug, str) else None


def raw_code(tag: str, subtag: Optional[str]) -> str:
    """The raw code a checkpoint is stored under: `AS:<SUBTAG>`, normalised.

    A sub-tag our table does not know yet (AfterShip adds some every year) is
    stored under its tag instead, so the event still has a status; a checkpoint
    without a sub-tag uses its tag too.
    """
    tag_code = normalise_code(AFTERSHIP_PREFIX + tag) if tag and tag.strip() else None
    sub_code = normalise_code(AFTERSHIP_PREFIX + subtag) if subtag and subtag.strip() else None
    if sub_code and (sub_code in AFTERSHIP_CODES or tag_code is None or tag_code not in AFTERSHIP_CODES):
        return sub_code
    if tag_code:
        return tag_code
    raise ValueError("an AfterShip checkpoint needs a tag or a sub-tag")


def plain_reason(subtag: Optional[str]) -> Optional[str]:
    """The delay reason (a `DelayReason` value) an AfterShip sub-tag gives, if any."""
    if not subtag or not subtag.strip():
        return None
    mapping = AFTERSHIP_CODES.get(normalise_code(AFTERSHIP_PREFIX + subtag))
    return mapping.reason if mapping else None


# --- reading a body ----------------------------------------------------------------------------


def _iso(value: Any) -> Optional[Tuple[dt.date, Optional[dt.datetime]]]:
    """An ISO 8601 date or datetime string as (its own calendar date, the instant in UTC).

    A datetime without an offset is taken as UTC; a bare date has no instant.
    None for anything else, including impossible dates.
    """
    if not isinstance(value, str):
        return None
    match = _ISO.match(value.strip())
    if not match:
        return None
    try:
        day = dt.date.fromisoformat(match["date"])
        if match["h"] is None:
            return day, None
        frac = (match["frac"] or "0")[:6].ljust(6, "0")
        offset = dt.timedelta(0)
        zone = match["tz"]
        if zone and zone not in ("Z", "z"):
            digits = zone[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            if hours > 23 or minutes > 59:
                return None
            offset = dt.timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
        local = dt.datetime(
            day.year, day.month, day.day, int(match["h"]), int(match["m"]), int(match["s"] or 0), int(frac),
            tzinfo=dt.timezone(offset),
        )
        return day, local.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _text(value: Any, limit: int) -> str:
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:limit]


def _location(point: Mapping[str, Any]) -> str:
    named = _text(point.get("location"), _MAX_LOCATION)
    if named:
        return named
    country = point.get("country_name") or point.get("country_region_name") or point.get("country_iso3")
    parts = [_text(part, _MAX_LOCATION) for part in (point.get("city"), point.get("state"), country)]
    return ", ".join(part for part in parts if part)[:_MAX_LOCATION]


def _checkpoint_id(slug: str, tracking_number: str, when: dt.datetime, label: str, message: str) -> str:
    """A stable identity for a checkpoint, which AfterShip does not give: the same scan resent hashes alike."""
    basis = "|".join(
        ("aftership", slug.lower(), tracking_number.upper(), when.isoformat(), normalise_code(label), message)
    )
    return "as-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:40]


def _checkpoint(index: int, point: Any, slug: str, tracking_number: str) -> Checkpoint:
    where = f"msg.checkpoints[{index}]"
    if not isinstance(point, dict):
        raise MalformedFeed(where, "each checkpoint must be an object")
    if "checkpoint_time" not in point or point["checkpoint_time"] in (None, ""):
        raise MalformedFeed(f"{where}.checkpoint_time", "missing")
    read = _iso(point["checkpoint_time"])
    if read is None:
        raise MalformedFeed(f"{where}.checkpoint_time", "not an ISO 8601 date and time")
    day, instant = read
    occurred_at = instant or dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    tag, subtag = point.get("tag"), point.get("subtag")
    for name, value in (("tag", tag), ("subtag", subtag)):
        if value is not None and not isinstance(value, str):
            raise MalformedFeed(f"{where}.{name}", "must be a string")
    if not (tag and tag.strip()) and not (subtag and subtag.strip()):
        raise MalformedFeed(f"{where}.tag", "a checkpoint needs a tag or a subtag")
    message = _text(point.get("message"), _MAX_TEXT) or _text(point.get("subtag_message"), _MAX_TEXT)
    label = subtag if subtag and subtag.strip() else tag
    assert label is not None
    return Checkpoint(
        occurred_at=occurred_at,
        raw_code=raw_code(tag or "", subtag),
        text=message,
        location=_location(point),
        event_id=_checkpoint_id(slug, tracking_number, occurred_at, label, message),
    )


def _date(value: Any) -> Optional[dt.date]:
    """The calendar date a date or datetime string names (as written, not moved to UTC)."""
    if value is None or value == "":
        return None
    read = _iso(value)
    if read is None:
        raise ValueError(value)
    return read[0]


def _confidence(block: Mapping[str, Any]) -> Optional[Union[float, str]]:
    for key in ("confidence_score", "confidence_code"):
        value = block.get(key)
        if isinstance(value, bool) or value is None or value == "":
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        if isinstance(value, str):
            return value.strip()[:40]
    return None


def _estimate_from(field: str, block: Any) -> Optional[Estimate]:
    """One of AfterShip's estimate fields, or None when it is absent, empty or malformed."""
    try:
        if field == "expected_delivery":
            on = _date(block)
            return Estimate(on, None, None, None, field) if on else None
        if not isinstance(block, dict):
            return None
        if field == "latest_estimated_delivery":
            keys = ("datetime", "datetime_min", "datetime_max")
        else:
            keys = ("estimated_delivery_date", "estimated_delivery_date_min", "estimated_delivery_date_max")
        on, earliest, latest = (_date(block.get(key)) for key in keys)
    except ValueError:
        return None
    if on is None and earliest is None and latest is None:
        return None
    if earliest and latest and earliest > latest:
        return None
    source = field
    inner = block.get("source")
    if isinstance(inner, str) and inner.strip():
        source = f"{field}: {_text(inner, 60)}"
    confidence = _confidence(block) if field == "aftership_estimated_delivery_date" else None
    return Estimate(on, earliest, latest, confidence, source)


#: AfterShip's estimate fields, most trustworthy first.
_ESTIMATE_FIELDS = (
    "latest_estimated_delivery",
    "aftership_estimated_delivery_date",
    "courier_estimated_delivery_date",
    "expected_delivery",
)


def _estimate(msg: Mapping[str, Any]) -> Optional[Estimate]:
    for field in _ESTIMATE_FIELDS:
        if field in msg:
            found = _estimate_from(field, msg[field])
            if found is not None:
                return found
    return None


def _required_text(holder: Mapping[str, Any], key: str, where: str) -> str:
    value = holder.get(key)
    if value is None:
        raise MalformedFeed(where, "missing")
    if not isinstance(value, str):
        raise MalformedFeed(where, "must be a string")
    if not value.strip():
        raise MalformedFeed(where, "blank")
    return value.strip()


def _optional_text(holder: Mapping[str, Any], key: str, where: str) -> Optional[str]:
    value = holder.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedFeed(where, "must be a string")
    return value.strip() or None


def _order_number(msg: Mapping[str, Any]) -> Optional[str]:
    for key in ("order_number", "order_id"):
        value = msg.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip() and len(value.strip()) <= _MAX_ORDER_NUMBER:
            return value.strip()
    return None


def _timestamp(payload: Mapping[str, Any]) -> dt.datetime:
    value = payload.get("ts")
    if value is None:
        raise MalformedFeed("ts", "missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedFeed("ts", "must be a Unix timestamp (a number)")
    if not math.isfinite(value) or not 0 < value < _MAX_TS:
        raise MalformedFeed("ts", "out of range")
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_webhook(body: bytes) -> FeedUpdate:
    """Read an AfterShip tracking webhook body; raise `MalformedFeed` naming the field at fault.

    Unknown fields are ignored.  Checkpoints come back oldest first, without
    repeats; the estimate is the first well-formed one of AfterShip's fields in
    `_ESTIMATE_FIELDS` order.
    """
    if len(body) > MAX_BODY_BYTES:
        raise MalformedFeed("body", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise MalformedFeed("body", "not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise MalformedFeed("body", "not valid JSON") from None
    if not isinstance(payload, dict):
        raise MalformedFeed("body", "must be a JSON object")

    event_id = _required_text(payload, "event_id", "event_id")
    if len(event_id) > _MAX_EVENT_ID:
        raise MalformedFeed("event_id", f"longer than {_MAX_EVENT_ID} characters")
    event = _optional_text(payload, "event", "event") or "tracking_update"
    ts = _timestamp(payload)

    msg = payload.get("msg")
    if not isinstance(msg, dict):
        raise MalformedFeed("msg", "missing" if msg is None else "must be an object")
    tracking_number = _required_text(msg, "tracking_number", "msg.tracking_number")
    if not _TRACKING_NUMBER.match(tracking_number):
        raise MalformedFeed("msg.tracking_number", "must be 4-64 letters, digits or hyphens")
    slug = _required_text(msg, "slug", "msg.slug").lower()
    if not _SLUG.match(slug):
        raise MalformedFeed("msg.slug", "must be 1-64 letters, digits, hyphens or underscores")
    tag = _optional_text(msg, "tag", "msg.tag") or ""
    subtag = _optional_text(msg, "subtag", "msg.subtag")

    points = msg.get("checkpoints")
    if points is None:
        points = []
    if not isinstance(points, list):
        raise MalformedFeed("msg.checkpoints", "must be a list")
    read: List[Checkpoint] = []
    seen = set()
    for index, point in enumerate(points):
        checkpoint = _checkpoint(index, point, slug, tracking_number)
        if checkpoint.event_id not in seen:
            seen.add(checkpoint.event_id)
            read.append(checkpoint)
    read.sort(key=lambda checkpoint: checkpoint.occurred_at)

    return FeedUpdate(
        event=event,
        event_id=event_id,
        ts=ts,
        tracking_number=tracking_number,
        slug=slug,
        carrier=carrier_for_slug(slug),
        tag=tag,
        subtag=subtag,
        checkpoints=tuple(read),
        estimate=_estimate(msg),
        order_number=_order_number(msg),
    )


# --- building a body (simulator and tests) -----------------------------------------------------


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def sample_webhook(
    *,
    tracking_number: str,
    slug: str,
    tag: str,
    subtag: str,
    message: str,
    checkpoint_time: dt.datetime,
    location: str = "",
    event_id: Optional[str] = None,
    estimate: Optional[Tuple[Optional[dt.date], Optional[dt.date], Optional[dt.date]]] = None,
    earlier_checkpoints: Sequence[Dict[str, Any]] = (),
) -> Dict[str, Any]:
    """A `tracking_update` body shaped as AfterShip sends it, for the simulator and the tests.

    The new checkpoint comes after `earlier_checkpoints` (AfterShip resends a
    tracking's whole history each time); `estimate` is `(on, earliest, latest)`.
    Serialise with `json.dumps(...).encode()` and sign the bytes with `sign`.
    """
    moment = _aware(checkpoint_time)
    description = AFTERSHIP_CODES.get(normalise_code(AFTERSHIP_PREFIX + subtag))
    subtag_message = description.description if description else subtag
    new_point: Dict[str, Any] = {
        "slug": slug,
        "city": None,
        "created_at": moment.astimezone(dt.timezone.utc).isoformat(),
        "location": location or None,
        "country_name": None,
        "message": message,
        "country_iso3": None,
        "tag": tag,
        "subtag": subtag,
        "subtag_message": subtag_message,
        "checkpoint_time": moment.isoformat(),
        "coordinates": [],
        "state": None,
        "zip": None,
        "raw_tag": None,
    }
    msg: Dict[str, Any] = {
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"aftership:{slug}:{tracking_number}").hex,
        "tracking_number": tracking_number,
        "slug": slug,
        "active": tag not in ("Delivered", "Expired"),
        "tag": tag,
        "subtag": subtag,
        "subtag_message": subtag_message,
        "title": tracking_number,
        "checkpoints": [dict(point) for point in earlier_checkpoints] + [new_point],
        "updated_at": moment.astimezone(dt.timezone.utc).isoformat(),
    }
    if estimate is not None:
        on, earliest, latest = estimate
        msg["aftership_estimated_delivery_date"] = {
            "estimated_delivery_date": on.isoformat() if on else None,
            "estimated_delivery_date_min": earliest.isoformat() if earliest else None,
            "estimated_delivery_date_max": latest.isoformat() if latest else None,
            "confidence_code": None,
        }
    return {
        "event": "tracking_update",
        "event_id": event_id or str(uuid.uuid4()),
        "is_tracking_first_tag": False,
        "ts": int(moment.timestamp()),
        "msg": msg,
    }
