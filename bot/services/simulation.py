"""A day of AfterShip-format tracking webhooks for the demo shop, to watch proactive updates arrive.

`python -m bot simulate-feed` builds them here and signs and posts them to the
running assistant's ``/webhooks/aftership/webhook``, as AfterShip would.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain import aftership
from bot.domain.carriers import FINAL_STATUSES
from bot.store.demo import showcase
from bot.store.queries import get_order

#: Our carrier codes as AfterShip's courier slugs.
SLUGS = {"dhl": "dhl", "ups": "ups", "usps": "usps", "royalmail": "royal-mail"}

#: What happens to each demo scenario's parcel during the simulated day: (tag, subtag, message, place).
#: An estimate (days from today: on, earliest, latest) comes with the checkpoint when given.
DAY: Dict[str, List[Tuple[str, str, str, str, Optional[Tuple[int, int, int]]]]] = {
    "info_received": [("InTransit", "InTransit_002", "Picked up by the carrier", "Distribution centre", None)],
    "in_transit_on_time": [
        ("InTransit", "InTransit_003", "Arrived at the delivery depot", "Local depot", None),
        ("OutForDelivery", "OutForDelivery_001", "Out for delivery", "Local depot", None),
    ],
    "out_for_delivery": [("AttemptFail", "AttemptFail_002", "Recipient not available", "At the address", None)],
    "late_no_reason": [("InTransit", "InTransit_003", "Arrived at the sorting centre", "Sorting centre",
                        (3, 2, 4))],
    "shipped_redirect_possible": [("Exception", "Exception_005", "Delayed by circumstances outside our control",
                                   "Sorting centre", None)],
    "split_shipment": [("AvailableForPickup", "AvailableForPickup_001", "Ready for collection",
                        "Parcel shop Central Station", None)],
}


@dataclass(frozen=True)
class Simulated:
    """One webhook to send: which order it is about, what happens, and the signed body."""

    order_number: str
    scenario: str
    what: str
    body: bytes


def plan(*, session: Session, settings: Settings, now: dt.datetime, only: Sequence[str] = ()) -> List[Simulated]:
    """The day's webhooks for the demo orders (or only the order numbers in `only`), in sending order."""
    rows = showcase(session=session, settings=settings, now=now)
    by_scenario = {row["scenario"]: row for row in rows}
    today = now.astimezone(settings.tz).date()
    out: List[Simulated] = []
    step = 0
    for scenario, events in DAY.items():
        row = by_scenario.get(scenario)
        if row is None or (only and row["order_number"] not in only):
            continue
        order = get_order(session=session, number=row["order_number"])
        if order is None:
            continue
        parcels = [s for s in order.shipments if s.status not in FINAL_STATUSES]
        if not parcels:
            continue
        shipment = parcels[-1]
        slug = SLUGS.get(shipment.carrier.code, shipment.carrier.code)
        for tag, subtag, message, place, estimate in events:
            step += 1
            # A little before now, and after the parcel's newest scan (the demo's own may be later today).
            when = now - dt.timedelta(minutes=60 - step)
            if shipment.last_event_at is not None and when <= shipment.last_event_at:
                when = shipment.last_event_at + dt.timedelta(minutes=step)
            days = None
            if estimate is not None:
                on, earliest, latest = (today + dt.timedelta(days=n) for n in estimate)
                days = (on, earliest, latest)
            # One id per order, step and day, as AfterShip keeps one per event: running the day again
            # changes nothing (a replay must not move a parcel back from "out for delivery").
            body = aftership.sample_webhook(tracking_number=shipment.tracking_number, slug=slug, tag=tag,
                                            subtag=subtag, message=message, checkpoint_time=when, location=place,
                                            estimate=days, event_id=f"simulated-{today}-{order.number}-{subtag}")
            out.append(Simulated(order.number, scenario, f"{message} ({subtag})",
                                 json.dumps(body).encode("utf-8")))
    return out


def covered(*, session: Session, settings: Settings, now: dt.datetime) -> List[str]:
    """The demo orders the simulated day has events for."""
    rows = showcase(session=session, settings=settings, now=now)
    return [row["order_number"] for row in rows if row["scenario"] in DAY]


def headers(secret: str, body: bytes) -> Dict[str, Any]:
    """The headers AfterShip sends with a body."""
    return {"Content-Type": "application/json", aftership.SIGNATURE_HEADER: aftership.sign(secret, body)}
