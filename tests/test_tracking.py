"""The rules that turn carrier scans into what the assistant says (no database)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bot.config import Policy
from bot.domain.tracking import Scan, add_business_days, business_days_between, derive_state

TZ = ZoneInfo("Europe/Amsterdam")
NOW = dt.datetime(2026, 11, 18, 12, 0, tzinfo=TZ)  # a Wednesday
TODAY = NOW.date()
POLICY = Policy()


def scan(days_ago: int, status: str | None, reason: str | None = None, eta: dt.date | None = None) -> Scan:
    return Scan(occurred_at=NOW - dt.timedelta(days=days_ago, hours=1), status=status, reason=reason,
                estimated_delivery=eta)


def state(scans, promised: dt.date | None = None, planned: dt.date | None = None, policy: Policy = POLICY):
    return derive_state(scans, promised_date=promised, planned_eta=planned, policy=policy, now=NOW, tz=TZ)


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (dt.date(2026, 11, 13), dt.date(2026, 11, 16), 1),  # Friday -> Monday: only Monday counts
        (dt.date(2026, 11, 16), dt.date(2026, 11, 16), 0),  # same day
        (dt.date(2026, 11, 14), dt.date(2026, 11, 15), 0),  # a weekend has no business days
        (dt.date(2026, 11, 2), dt.date(2026, 11, 16), 10),  # two full weeks
        (dt.date(2026, 11, 18), dt.date(2026, 11, 11), 0),  # end before start
    ],
)
def test_business_days_between_counts_weekdays_after_start(start, end, expected):
    """It counts the weekdays after the start date up to and including the end date."""
    assert business_days_between(start, end) == expected


def test_add_business_days_skips_weekends():
    """Adding business days never lands on a weekend, in either direction."""
    assert add_business_days(dt.date(2026, 11, 20), 1) == dt.date(2026, 11, 23)  # Fri + 1 = Mon
    assert add_business_days(dt.date(2026, 11, 23), -1) == dt.date(2026, 11, 20)  # Mon - 1 = Fri
    assert add_business_days(dt.date(2026, 11, 18), -5) == dt.date(2026, 11, 11)


def test_no_scans_means_pending():
    """A shipment the carrier has not scanned yet is pending, not late, not stalled."""
    result = state([], promised=TODAY + dt.timedelta(days=3), planned=TODAY + dt.timedelta(days=2))
    assert (result.status, result.is_late, result.stalled) == ("pending", False, False)
    assert result.eta == TODAY + dt.timedelta(days=2)


def test_latest_meaningful_scan_sets_the_status_and_unmapped_scans_still_count_as_life():
    """An unmapped code does not change the status but resets the stall clock."""
    scans = [scan(6, "in_transit"), scan(0, None)]
    result = state(scans, promised=TODAY + dt.timedelta(days=2))
    assert result.status == "in_transit"
    assert result.business_days_without_scan == 0
    assert not result.stalled


@pytest.mark.parametrize(
    "days_past_promise, grace, late",
    [
        (0, 1, False),  # due today
        (1, 1, False),  # inside the grace period
        (2, 1, True),  # past it
        (1, 0, True),  # no grace at all
    ],
)
def test_lateness_respects_the_grace_period(days_past_promise, grace, late):
    """A parcel is late only once the promised date plus the grace days has passed."""
    result = state([scan(1, "in_transit")], promised=TODAY - dt.timedelta(days=days_past_promise),
                   policy=Policy(grace_days=grace))
    assert result.is_late is late
    assert result.days_late == days_past_promise


def test_delivered_late_is_measured_at_delivery_not_today():
    """A parcel delivered on time stays on time however long ago that was."""
    delivered = [scan(10, "in_transit"), scan(8, "delivered")]
    result = state(delivered, promised=TODAY - dt.timedelta(days=8))
    assert result.status == "delivered"
    assert result.delivered_on == TODAY - dt.timedelta(days=8)
    assert not result.is_late
    assert result.eta is None


def test_announced_eta_beats_the_planned_one_and_can_predict_lateness():
    """The carrier's newest estimate is the ETA; past promise + grace it is 'expected late'."""
    new_eta = TODAY + dt.timedelta(days=4)
    result = state([scan(1, "in_transit", "weather", eta=new_eta)], promised=TODAY + dt.timedelta(days=1),
                   planned=TODAY + dt.timedelta(days=1))
    assert result.eta == new_eta
    assert result.expected_late and not result.is_late
    assert result.delay_reason == "weather"


def test_stalled_then_presumed_lost_after_business_days_without_scan():
    """No scan for the stalled threshold: stalled; for the lost threshold: presumed lost."""
    last = NOW - dt.timedelta(days=7)  # Wednesday a week ago: 5 business days of silence
    result = state([Scan(occurred_at=last, status="in_transit")])
    assert result.business_days_without_scan == 5
    assert result.stalled and not result.presumed_lost
    assert result.status == "in_transit"

    long_ago = NOW - dt.timedelta(days=15)
    lost = state([Scan(occurred_at=long_ago, status="in_transit")])
    assert lost.presumed_lost and lost.status == "lost" and lost.carrier_status == "in_transit"


@pytest.mark.parametrize("status", ["delivered", "available_for_pickup", "returned_to_sender", "lost"])
def test_parcels_that_wait_or_are_done_never_stall(status):
    """Silence is expected after delivery, at a pickup point, on return or once lost."""
    result = state([Scan(occurred_at=NOW - dt.timedelta(days=30), status=status)])
    assert not result.stalled


def test_carrier_lost_is_lost_without_waiting():
    """When the carrier says lost, the parcel is lost at once."""
    result = state([scan(3, "in_transit"), scan(1, "lost", "lost")])
    assert result.status == "lost" and result.presumed_lost and result.delay_reason == "lost"
