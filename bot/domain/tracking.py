"""A shipment's state derived from its carrier events and the shop's policy.

Pure functions over plain values, so the rules can be read and tested without
a database: which status holds now, when the parcel should arrive, whether it
is late, stalled or presumed lost, and what the carrier said about why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence
from zoneinfo import ZoneInfo

from bot.domain.carriers import FINAL_STATUSES
from bot.domain.enums import ClaimReason, DelayReason, Status
from bot.domain.policy import Policy

#: Statuses in which the parcel should keep producing scans; silence means trouble.
_WATCHED = frozenset(
    {Status.INFO_RECEIVED, Status.IN_TRANSIT, Status.OUT_FOR_DELIVERY, Status.FAILED_ATTEMPT, Status.EXCEPTION}
)


@dataclass(frozen=True)
class Scan:
    """One tracking event as the rules need it."""

    occurred_at: dt.datetime
    status: Optional[str]
    reason: Optional[str] = None
    text: str = ""
    location: str = ""
    estimated_delivery: Optional[dt.date] = None


@dataclass(frozen=True)
class ShipmentState:
    """Everything the assistant may say about where a parcel is."""

    status: str
    carrier_status: str
    last_scan: Optional[Scan]
    eta: Optional[dt.date]
    promised_date: Optional[dt.date]
    delivered_on: Optional[dt.date]
    days_late: int
    is_late: bool
    expected_late: bool
    business_days_without_scan: Optional[int]
    stalled: bool
    presumed_lost: bool
    delay_reason: Optional[str]
    #: The newest scan with a known meaning: when and where the current status began.
    status_scan: Optional[Scan] = None
    #: The day a parcel still being watched is (or will be) presumed lost if no scan comes first.
    lost_on: Optional[dt.date] = None

    @property
    def delivered(self) -> bool:
        return self.status == Status.DELIVERED


def business_days_between(start: dt.date, end: dt.date) -> int:
    """Weekdays after `start` up to and including `end` (0 when end <= start)."""
    if end <= start:
        return 0
    days = (end - start).days
    full_weeks, rest = divmod(days, 7)
    count = full_weeks * 5
    for offset in range(1, rest + 1):
        if (start + dt.timedelta(days=offset)).weekday() < 5:
            count += 1
    return count


def add_business_days(start: dt.date, days: int) -> dt.date:
    """The date `days` weekdays after (negative: before) `start`."""
    step = 1 if days >= 0 else -1
    current, remaining = start, abs(days)
    while remaining:
        current += dt.timedelta(days=step)
        if current.weekday() < 5:
            remaining -= 1
    return current


def derive_state(
    scans: Iterable[Scan],
    *,
    promised_date: Optional[dt.date],
    planned_eta: Optional[dt.date],
    policy: Policy,
    now: dt.datetime,
    tz: ZoneInfo,
) -> ShipmentState:
    """Work out a shipment's state at `now`.

    The newest scan with a known meaning sets the carrier status (scans whose
    raw code is not mapped still count as a sign of life).  A watched parcel
    with no scan for `policy.stalled_business_days` is stalled, and after
    `policy.lost_business_days` it is presumed lost even if the carrier never
    says so.
    """
    ordered: Sequence[Scan] = sorted(scans, key=lambda scan: scan.occurred_at)
    today = now.astimezone(tz).date()
    meaningful = [scan for scan in ordered if scan.status]
    last_meaningful = meaningful[-1] if meaningful else None
    last_scan = ordered[-1] if ordered else None
    carrier_status = last_meaningful.status if last_meaningful else Status.PENDING
    assert carrier_status is not None

    delivered_on = (
        last_meaningful.occurred_at.astimezone(tz).date()
        if last_meaningful and carrier_status == Status.DELIVERED
        else None
    )

    eta: Optional[dt.date] = None
    if carrier_status not in FINAL_STATUSES:
        announced = [scan.estimated_delivery for scan in ordered if scan.estimated_delivery]
        eta = announced[-1] if announced else planned_eta

    quiet_days: Optional[int] = None
    lost_on: Optional[dt.date] = None
    if last_scan is not None:
        last_day = last_scan.occurred_at.astimezone(tz).date()
        quiet_days = business_days_between(last_day, today)
        if carrier_status in _WATCHED:
            lost_on = add_business_days(last_day, policy.lost_business_days)
    watched = carrier_status in _WATCHED and quiet_days is not None
    stalled = watched and quiet_days >= policy.stalled_business_days  # type: ignore[operator]
    presumed_lost = watched and quiet_days >= policy.lost_business_days  # type: ignore[operator]

    days_late, is_late, expected_late = 0, False, False
    if promised_date is not None:
        reference = delivered_on or today
        days_late = max(0, (reference - promised_date).days)
        is_late = days_late > policy.grace_days and carrier_status != Status.AVAILABLE_FOR_PICKUP
        grace_end = promised_date + dt.timedelta(days=policy.grace_days)
        expected_late = not is_late and eta is not None and eta > grace_end

    reasons = [scan.reason for scan in meaningful if scan.reason]
    return ShipmentState(
        status=Status.LOST if presumed_lost else carrier_status,
        carrier_status=carrier_status,
        last_scan=last_scan,
        eta=eta,
        promised_date=promised_date,
        delivered_on=delivered_on,
        days_late=days_late,
        is_late=is_late,
        expected_late=expected_late,
        business_days_without_scan=quiet_days,
        stalled=stalled,
        presumed_lost=presumed_lost or carrier_status == Status.LOST,
        delay_reason=reasons[-1] if reasons else None,
        status_scan=last_meaningful,
        lost_on=lost_on,
    )


def claim_fits(state: ShipmentState, reason: str, policy: Policy, today: dt.date) -> bool:
    """Whether a refund-or-reship claim for `reason` can be settled for this parcel today."""
    if reason == ClaimReason.LOST:
        return state.presumed_lost
    if reason == ClaimReason.DAMAGED:
        return state.status == Status.DELIVERED or (state.status == Status.EXCEPTION
                                                    and state.delay_reason == DelayReason.DAMAGED)
    if reason == ClaimReason.LATE:
        return state.presumed_lost or (state.is_late and state.days_late >= policy.late_claim_days)
    if reason == ClaimReason.NOT_RECEIVED:
        if state.status == Status.RETURNED_TO_SENDER:  # back with the shop: never reached the shopper
            return True
        return (state.status == Status.DELIVERED and state.delivered_on is not None
                and (today - state.delivered_on).days >= policy.delivered_wait_days)
    return False


def late_claim_from(state: ShipmentState, policy: Policy) -> Optional[dt.date]:
    """The first day a late or lost claim fits if the parcel does not arrive or move before then."""
    dates = []
    if state.promised_date is not None:
        dates.append(state.promised_date + dt.timedelta(days=max(policy.late_claim_days, policy.grace_days + 1)))
    if state.lost_on is not None:
        dates.append(state.lost_on)
    return min(dates) if dates else None
