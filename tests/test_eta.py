"""Delivery estimates as a range: the percentile maths, the rules for a range, its words, the store's
history, the answers that give it, and the backtest (by hand on a tiny shop, and its command).

Dates: 18 Nov 2026 is a Wednesday; 2, 9 and 16 Nov are Mondays.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.domain.eta import (
    CARRIER,
    CARRIER_DATE,
    HISTORY,
    EtaRange,
    day,
    describe_range,
    eta_range,
    history_range,
    percentile,
)
from bot.services import answers, eta
from bot.store import db
from bot.store.demo import SCENARIOS, SHOWCASE_FIRST_NUMBER
from bot.store.models import Base, Customer, Order, Shipment
from bot.store.queries import EventIn, add_events, carriers_by_code, get_order, sync_carriers

from .conftest import NOW
from .helpers.servers import ROOT

D = dt.date
TODAY = D(2026, 11, 18)  # NOW in the shop's zone, a Wednesday


# --- percentiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("values, q, expected", [
    ([1, 2, 3, 4, 5], 0.1, 1.4),  # position 0.1 * 4 = 0.4: 1 + 0.4 * (2 - 1)
    ([1, 2, 3, 4, 5], 0.9, 4.6),  # position 3.6: 4 + 0.6 * (5 - 4)
    ([5, 1, 4, 2, 3], 0.5, 3.0),  # unsorted input: the median
    ([1, 2, 3, 4, 5], 0.0, 1.0),  # the smallest
    ([1, 2, 3, 4, 5], 1.0, 5.0),  # the largest
    ([0, 1, 1, 1, 1, 2, 2, 2, 3, 5], 0.1, 0.9),  # position 0.9: 0 + 0.9 * (1 - 0)
    ([0, 1, 1, 1, 1, 2, 2, 2, 3, 5], 0.9, 3.2),  # position 8.1: 3 + 0.1 * (5 - 3)
    ([7], 0.9, 7.0),  # one value is every percentile
])
def test_percentile_interpolates_between_the_nearest_ranks(values, q, expected):
    """The worked-out figures of the usual (linear, inclusive) definition."""
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_agrees_with_the_standard_library():
    """The same definition as statistics.quantiles(method="inclusive"), at every decile."""
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    assert [percentile(values, k / 10) for k in range(1, 10)] == pytest.approx(deciles)


def test_percentile_refuses_no_values_and_a_share_outside_0_to_1():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1, 2], 1.5)


def test_history_range_is_the_10th_to_90th_percentile_and_needs_enough_deliveries():
    """Ten samples give (0.9, 3.2) as worked out above; nine are too few for the default of ten."""
    samples = [2, 1, 0, 1, 5, 2, 1, 3, 2, 1]
    assert history_range(samples) == pytest.approx((0.9, 3.2))
    assert history_range(samples[:9]) is None
    assert history_range(samples[:9], min_samples=9) is not None
    assert history_range([1, 2, 3, 4, 5], low=0.25, high=0.75, min_samples=5) == pytest.approx((2.0, 4.0))
    with pytest.raises(ValueError):
        history_range(samples, low=0.9, high=0.1)


# --- the range's rules ------------------------------------------------------------------------------


def rng(**given) -> Optional[EtaRange]:
    """eta_range with nothing known unless given; today is Wed 18 Nov."""
    known = dict(state_eta=None, feed_earliest=None, feed_latest=None, history=None, last_scan_day=None,
                 today=TODAY)
    known.update(given)
    return eta_range(**known)


def test_history_counts_from_the_last_scan_rounding_outwards():
    """(0.9, 3.2) weekdays from Mon 16 Nov: floor 0 and ceil 4, so Mon 16 (today then) to Fri 20 Nov."""
    assert rng(history=(0.9, 3.2), last_scan_day=D(2026, 11, 16), today=D(2026, 11, 16)) == EtaRange(
        D(2026, 11, 16), D(2026, 11, 20), HISTORY)


def test_history_counts_weekdays_or_calendar_days():
    """One to two days after a Friday scan: Mon-Tue in weekdays, Sat-Sun in calendar days."""
    friday = D(2026, 11, 13)
    assert rng(history=(1.0, 2.0), last_scan_day=friday, today=friday) == EtaRange(
        D(2026, 11, 16), D(2026, 11, 17), HISTORY)
    assert rng(history=(1.0, 2.0), last_scan_day=friday, today=friday, business_days=False) == EtaRange(
        D(2026, 11, 14), D(2026, 11, 15), HISTORY)


@pytest.mark.parametrize("given, expected", [
    # a range partly gone by starts today
    (dict(history=(0.0, 4.0), last_scan_day=D(2026, 11, 16)), EtaRange(TODAY, D(2026, 11, 20), HISTORY)),
    (dict(feed_earliest=D(2026, 11, 16), feed_latest=D(2026, 11, 19)), EtaRange(TODAY, D(2026, 11, 19), CARRIER)),
    # a range that ends today is still an estimate
    (dict(feed_earliest=D(2026, 11, 12), feed_latest=TODAY), EtaRange(TODAY, TODAY, CARRIER)),
    # wholly gone by, and nothing else known: no estimate
    (dict(history=(0.0, 1.0), last_scan_day=D(2026, 11, 16)), None),
    (dict(feed_earliest=D(2026, 11, 12), feed_latest=D(2026, 11, 17)), None),
    (dict(state_eta=D(2026, 11, 17)), None),
    # wholly gone by: the next source that is still to come
    (dict(history=(0.0, 1.0), last_scan_day=D(2026, 11, 16), state_eta=D(2026, 11, 19)),
     EtaRange(D(2026, 11, 19), D(2026, 11, 19), CARRIER_DATE)),
    (dict(feed_earliest=D(2026, 11, 12), feed_latest=D(2026, 11, 17), history=(1.0, 2.0),
          last_scan_day=D(2026, 11, 17)), EtaRange(TODAY, D(2026, 11, 19), HISTORY)),
])
def test_a_range_never_starts_before_today_and_one_wholly_past_is_dropped(given, expected):
    assert rng(**given) == expected


def test_the_feeds_own_range_wins_over_history_and_the_carriers_date():
    feed = dict(feed_earliest=D(2026, 11, 23), feed_latest=D(2026, 11, 19))  # given the wrong way round
    assert rng(**feed, history=(0.0, 1.0), last_scan_day=TODAY, state_eta=D(2026, 11, 20)) == EtaRange(
        D(2026, 11, 19), D(2026, 11, 23), CARRIER)


def test_history_wins_over_the_carriers_single_date_and_stretches_to_take_it_in():
    """The shop's range, widened to the carrier's date when that falls outside it (never contradicting it)."""
    history = dict(history=(1.0, 2.0), last_scan_day=TODAY)  # Thu 19 - Fri 20
    assert rng(**history, state_eta=D(2026, 11, 19)) == EtaRange(D(2026, 11, 19), D(2026, 11, 20), HISTORY)
    assert rng(**history, state_eta=D(2026, 11, 24)) == EtaRange(D(2026, 11, 19), D(2026, 11, 24), HISTORY)
    assert rng(**history, state_eta=TODAY) == EtaRange(TODAY, D(2026, 11, 20), HISTORY)
    assert rng(**history, state_eta=D(2026, 11, 17)) == EtaRange(D(2026, 11, 19), D(2026, 11, 20), HISTORY)


def test_the_carriers_single_date_is_a_one_day_range():
    assert rng(state_eta=D(2026, 11, 20)) == EtaRange(D(2026, 11, 20), D(2026, 11, 20), CARRIER_DATE)
    assert rng(feed_latest=D(2026, 11, 20)) == EtaRange(D(2026, 11, 20), D(2026, 11, 20), CARRIER_DATE)
    assert rng() is None


@pytest.mark.parametrize("status", ["delivered", "lost", "returned_to_sender"])
def test_a_delivered_or_final_parcel_has_no_estimate(status):
    assert rng(status=status, feed_earliest=TODAY, feed_latest=D(2026, 11, 20), state_eta=TODAY,
               history=(0.0, 1.0), last_scan_day=TODAY) is None
    assert rng(status="in_transit", state_eta=TODAY) is not None


# --- the words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("earliest, latest, words", [
    (D(2026, 12, 1), D(2026, 12, 3), "between Tue 1 and Thu 3 Dec"),  # the month once
    (D(2026, 11, 30), D(2026, 12, 2), "between Mon 30 Nov and Wed 2 Dec"),
    (D(2026, 12, 3), D(2026, 12, 3), "on Thu 3 Dec"),
    (TODAY, TODAY, "today"),
    (D(2026, 11, 19), D(2026, 11, 19), "tomorrow"),
    (TODAY, D(2026, 11, 20), "between today and Fri 20 Nov"),
    (TODAY, D(2026, 11, 19), "between today and tomorrow"),
    (D(2026, 11, 19), D(2026, 11, 20), "between tomorrow and Fri 20 Nov"),
])
def test_a_range_in_words(earliest, latest, words):
    assert describe_range(EtaRange(earliest, latest, HISTORY), TODAY) == words


def test_a_one_day_range_after_a_label_is_the_day_alone():
    """'Expected delivery: Thu 3 Dec.' as the answers always wrote a single day."""
    assert describe_range(EtaRange(D(2026, 12, 3), D(2026, 12, 3), CARRIER_DATE), TODAY, on=False) == "Thu 3 Dec"
    assert describe_range(EtaRange(TODAY, D(2026, 11, 20), CARRIER), TODAY, on=False) == \
        "between today and Fri 20 Nov"


def test_the_day_formatter_moved_to_the_domain_unchanged():
    """One formatter, shared: the answers (and the services importing it from them) use the domain's."""
    assert answers.day is day
    assert [day(D(2026, 11, 20)), day(TODAY, TODAY), day(D(2026, 11, 19), TODAY), day(D(2026, 11, 17), TODAY),
            day(D(2027, 1, 1), TODAY)] == ["Fri 20 Nov", "today", "tomorrow", "yesterday", "Fri 1 Jan"]


# --- a tiny shop, worked out by hand -----------------------------------------------------------------
#
# Four DHL parcels and one UPS parcel, each scanned in transit on a Monday at 10:00 and delivered at 14:00:
#   A: Mon 2 Nov -> Tue 3 Nov (1 weekday)    B: Mon 9 Nov -> Tue 10 Nov (1)
#   C: Mon 2 Nov -> Wed 4 Nov (2)            D: Mon 9 Nov -> Fri 13 Nov (4)
#   E (UPS): Mon 16 Nov -> Wed 18 Nov (2)
# plus a DHL parcel still in transit (scanned Mon 16 Nov), which teaches nothing.

JOURNEYS: Dict[str, Tuple[str, D, D]] = {
    "A": ("dhl", D(2026, 11, 2), D(2026, 11, 3)),
    "B": ("dhl", D(2026, 11, 9), D(2026, 11, 10)),
    "C": ("dhl", D(2026, 11, 2), D(2026, 11, 4)),
    "D": ("dhl", D(2026, 11, 9), D(2026, 11, 13)),
    "E": ("ups", D(2026, 11, 16), D(2026, 11, 18)),
}
CODES = {"dhl": ("arrived-facility", "delivered"), "ups": ("I/AR", "D/KB")}


def _local(settings: Settings, when: D, hour: int) -> dt.datetime:
    return dt.datetime.combine(when, dt.time(hour), tzinfo=settings.tz).astimezone(dt.timezone.utc)


def _parcel(session, settings: Settings, name: str, carrier: str, scans: List[Tuple[D, int, str]]) -> Shipment:
    customer = session.scalars(select(Customer).where(Customer.email == "kim@example.com")).first() or Customer(
        email="kim@example.com", name="Kim")
    order = Order(number=f"WS-7{ord(name)}", customer=customer, placed_at=_local(settings, D(2026, 10, 30), 9),
                  promised_date=D(2026, 11, 20), ship_name="Kim", ship_line1="Damrak 1", ship_city="Amsterdam",
                  ship_postcode="1012 LG", ship_country="NL", value=Decimal("40.00"), currency="EUR")
    session.add(order)
    shipment = Shipment(order=order, carrier=carriers_by_code(session=session)[carrier],
                        tracking_number=f"TEST{ord(name)}")
    session.add(shipment)
    session.flush()
    add_events(session=session, shipment=shipment,
               events=[EventIn(occurred_at=_local(settings, when, hour), raw_code=code) for when, hour, code in scans])
    return shipment


def build_tiny_shop(session, settings: Settings, journeys: Dict[str, Tuple[str, D, D]] = JOURNEYS) -> Shipment:
    """The five delivered parcels above and the one on its way, which is returned."""
    sync_carriers(session=session)
    for name, (carrier, scanned, delivered) in journeys.items():
        moving, done = CODES[carrier]
        _parcel(session, settings, name, carrier, [(scanned, 10, moving), (delivered, 14, done)])
    return _parcel(session, settings, "P", "dhl", [(D(2026, 11, 16), 10, "arrived-facility")])


def test_the_history_has_each_carriers_days_from_each_scan_to_its_delivery(session, settings):
    """Weekdays from the in-transit scan to the delivery, per carrier and for every carrier together."""
    build_tiny_shop(session, settings)
    table = eta.history_table(session=session, settings=settings)
    assert table[("dhl", "in_transit")] == [1, 1, 2, 4]
    assert table[("ups", "in_transit")] == [2]
    assert table[("*", "in_transit")] == [1, 1, 2, 2, 4]
    assert ("dhl", "delivered") not in table


def test_a_new_delivery_is_counted_once_the_cache_expires(session, settings, monkeypatch):
    """Kept for CACHE_SECONDS; here none, so the next answer reads the new delivery."""
    monkeypatch.setattr(eta, "CACHE_SECONDS", 0.0)
    moving = build_tiny_shop(session, settings)
    assert eta.history_table(session=session, settings=settings)[("dhl", "in_transit")] == [1, 1, 2, 4]
    add_events(session=session, shipment=moving,
               events=[EventIn(occurred_at=_local(settings, D(2026, 11, 17), 12), raw_code="delivered")])
    assert eta.history_table(session=session, settings=settings)[("dhl", "in_transit")] == [1, 1, 1, 2, 4]


def test_a_store_emptied_and_rebuilt_is_never_answered_from_the_old_history(session, settings):
    """Same database, same number of events (SQLite even reuses their ids), other deliveries: read again."""
    build_tiny_shop(session, settings)
    assert eta.history_table(session=session, settings=settings)[("dhl", "in_transit")] == [1, 1, 2, 4]
    for table in reversed(Base.metadata.sorted_tables):
        session.execute(table.delete())
    session.expunge_all()
    again = {**JOURNEYS, "D": ("dhl", D(2026, 11, 9), D(2026, 11, 11))}  # D in 2 weekdays this time
    build_tiny_shop(session, settings, again)
    assert eta.history_table(session=session, settings=settings)[("dhl", "in_transit")] == [1, 1, 2, 2]


def test_a_parcel_on_its_way_gets_its_carriers_range_from_its_last_scan(session, settings):
    """DHL's [1, 1, 2, 4]: 10th percentile 1 (position 0.3), 90th 3.4 (2 + 0.7 * 2), so Tue 17 to Fri 20 Nov.

    Two days later it has waited two weekdays: only the deliveries that took at least that long, [2, 4],
    count (2.2 -> 2 and 3.8 -> 4 with two samples), so Wed 18 to Fri 20 Nov.  Up to the median instead:
    [2, 4] gives 3 weekdays, Thu 19, where all four would have given 1.5 -> 2, Wed 18.
    """
    parcel = build_tiny_shop(session, settings)
    monday = _local(settings, D(2026, 11, 16), 15)
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=monday,
                                  min_samples=3) == EtaRange(D(2026, 11, 17), D(2026, 11, 20), HISTORY)
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=NOW,
                                  min_samples=2) == EtaRange(TODAY, D(2026, 11, 20), HISTORY)
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=NOW, min_samples=2,
                                  high=0.5) == EtaRange(TODAY, D(2026, 11, 19), HISTORY)
    # too few deliveries to learn from, and no carrier date: no estimate rather than a guess
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=monday) is None
    # without the store (an order built in memory) only the carrier's dates count
    assert eta.shipment_eta_range(session=None, shipment=parcel, settings=settings, now=monday,
                                  min_samples=3) is None


def test_a_parcel_gone_quiet_gets_no_range_from_history(session, settings):
    """Three weekdays without a scan (stalled): its last scan no longer says where it is.

    On Wednesday it gets the range of C and D ([2, 4]), which took at least the two weekdays it had waited;
    on Thursday D alone (4 weekdays, Fri 20 Nov) would be left, but a stalled parcel gets none.
    """
    parcel = build_tiny_shop(session, settings)
    wednesday, thursday = _local(settings, D(2026, 11, 18), 15), _local(settings, D(2026, 11, 19), 15)
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=wednesday,
                                  min_samples=1) == EtaRange(D(2026, 11, 18), D(2026, 11, 20), HISTORY)
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=thursday,
                                  min_samples=1) is None


def test_the_feeds_range_wins_and_a_delivered_parcel_has_none(session, settings):
    parcel = build_tiny_shop(session, settings)
    monday = _local(settings, D(2026, 11, 16), 15)
    parcel.eta_earliest, parcel.eta_latest = D(2026, 11, 18), D(2026, 11, 19)  # columns or plain attributes
    assert eta.shipment_eta_range(session=session, shipment=parcel, settings=settings, now=monday,
                                  min_samples=3) == EtaRange(D(2026, 11, 18), D(2026, 11, 19), CARRIER)
    delivered = session.scalars(select(Shipment).where(Shipment.tracking_number == f"TEST{ord('A')}")).one()
    delivered.eta_earliest, delivered.eta_latest = D(2026, 11, 18), D(2026, 11, 19)
    assert eta.shipment_eta_range(session=session, shipment=delivered, settings=settings, now=monday,
                                  min_samples=3) is None


# --- the backtest ------------------------------------------------------------------------------------


def test_leave_one_out_coverage_worked_out_by_hand(session, settings):
    """Each parcel predicted from the others (at least 3 samples, else every carrier's):

    A, B: others [1, 2, 4] -> 10th 1.2, 90th 3.6 -> 1 to 4 weekdays: Tue-Fri (4 days); 1 inside.
    C: others [1, 1, 4] -> 1 and 3.4 -> Tue-Fri (4 days); 2 inside.
    D: others [1, 1, 2] -> 1 and 1.8 -> Tue-Wed (2 days); 4 outside.
    E: UPS has no other parcel: every carrier's [1, 1, 2, 4] -> 1 and 3.4 -> Tue-Fri (4 days); 2 inside.
    So 4 of 5 inside (80 %), DHL 3 of 4, UPS 1 of 1; mean width (4 + 4 + 4 + 2 + 4) / 5 = 3.6 days.
    """
    build_tiny_shop(session, settings)
    result = eta.backtest(session=session, settings=settings, min_samples=3, split="loo")
    assert (result.shipments, result.overall.predictions, result.overall.inside) == (5, 5, 4)
    assert result.overall.coverage == pytest.approx(0.8) and result.overall.mean_width == pytest.approx(3.6)
    assert (result.carriers["dhl"].predictions, result.carriers["dhl"].inside) == (4, 3)
    assert (result.carriers["ups"].predictions, result.carriers["ups"].inside) == (1, 1)
    assert result.unpredicted == 0


def test_time_split_learns_only_from_parcels_delivered_before_the_scan(session, settings):
    """At least 2 samples.  A and C (Mon 2 Nov) have nothing before them: not predicted.

    B and D (Mon 9 Nov) learn from A and C, [1, 2] -> 1.1 and 1.9 -> Tue-Wed (2 days): B's 1 inside, D's 4
    outside.  E (Mon 16 Nov) learns from all four DHL parcels (UPS has none yet): 1 and 3.4 -> Tue-Fri (4
    days), 2 inside.  So 2 of 3 inside, mean width 8 / 3 days, 2 scans not predicted.
    """
    build_tiny_shop(session, settings)
    result = eta.backtest(session=session, settings=settings, min_samples=2, split="time")
    assert (result.overall.predictions, result.overall.inside, result.unpredicted) == (3, 2, 2)
    assert result.overall.mean_width == pytest.approx(8 / 3)
    assert (result.carriers["dhl"].predictions, result.carriers["dhl"].inside) == (2, 1)


def test_the_backtest_refuses_an_unknown_split():
    with pytest.raises(ValueError):
        eta.replay([], split="random")


def test_the_command_prints_the_coverage(engine, settings):
    """`python -m bot eta-backtest` on the tiny shop: the 80 % worked out above, as text and as JSON."""
    with db.session_scope(engine) as session:
        build_tiny_shop(session, settings)
    env = {**os.environ, "DATABASE_URL": engine.url.render_as_string(hide_password=False),
           "SHOP_TIMEZONE": settings.shop_timezone}
    command = [sys.executable, "-m", "bot", "eta-backtest", "--split", "loo", "--min-samples", "3"]
    text = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "inside the range for 80.0 % of 5 predictions" in text.stdout
    assert [line.split() for line in text.stdout.splitlines() if line.startswith("carrier ")] == [
        ["carrier", "dhl", "4", "3", "75.0", "%", "3.50", "days"],
        ["carrier", "ups", "1", "1", "100.0", "%", "4.00", "days"]]
    figures = subprocess.run(command + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert figures.returncode == 0, figures.stderr
    report = json.loads(figures.stdout)
    assert (report["predictions"], report["inside"], report["coverage"], report["mean_width_days"]) == (5, 4, 0.8, 3.6)
    assert report["carriers"]["dhl"]["coverage"] == 0.75
    wrong = subprocess.run([sys.executable, "-m", "bot", "eta-backtest", "--low", "0.9", "--high", "0.1"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--low and --high" in wrong.stderr


# --- the answers give the range ------------------------------------------------------------------------


def showcase(session, scenario: str) -> Order:
    order = get_order(session=session, number=f"WS-{SHOWCASE_FIRST_NUMBER + SCENARIOS.index(scenario)}")
    assert order is not None
    return order


def test_the_answers_give_the_carriers_own_range_from_today_on(demo_session, settings):
    """A feed range partly gone by is given from today; the carrier's range is said to be theirs when late."""
    on_time = showcase(demo_session, "in_transit_on_time")
    on_time.shipments[0].eta_earliest, on_time.shipments[0].eta_latest = D(2026, 11, 16), D(2026, 11, 20)
    said = " ".join(answers.status_answer(on_time, settings, NOW).messages)
    assert "Expected delivery: between today and Fri 20 Nov." in said
    late = showcase(demo_session, "late_no_reason")  # promised Fri 13 Nov, the carrier's date gone by
    late.shipments[0].eta_earliest, late.shipments[0].eta_latest = D(2026, 11, 19), D(2026, 11, 23)
    for answer in (answers.status_answer(late, settings, NOW), answers.delay_answer(late, settings, NOW)):
        said = " ".join(answer.messages)
        assert "UPS now expects it between tomorrow and Mon 23 Nov." in said and "is late" in said


def test_the_answers_never_give_a_range_wholly_gone_by(demo_session, settings):
    """The feed's range has passed: the history's range is given instead, as the shop's, from today on."""
    late = showcase(demo_session, "late_no_reason")
    late.shipments[0].eta_earliest, late.shipments[0].eta_latest = D(2026, 11, 12), D(2026, 11, 13)
    said = " ".join(answers.status_answer(late, settings, NOW).messages)
    assert "Fri 13 Nov" not in said.replace("we promised (Fri 13 Nov)", "")
    assert "UPS hasn't given a new delivery date yet; we expect it between today and tomorrow." in said


def test_a_range_from_history_is_given_as_the_shops_own(demo_session, settings):
    """No carrier date at all for a moving parcel: the shop's range, never attributed to the carrier."""
    order = showcase(demo_session, "in_transit_on_time")
    order.shipments[0].estimated_delivery = None  # no planned date, and no scan announced one
    said = " ".join(answers.status_answer(order, settings, NOW).messages)
    assert "Expected delivery: between today and tomorrow." in said and "DHL expects" not in said


def test_after_a_delivery_missed_today_the_estimate_starts_on_the_next_working_day():
    """'Expected delivery: today' beside 'they try again the next business day' (a blind-review finding)."""
    from bot.domain.eta import eta_range

    friday = dt.date(2026, 12, 4)
    missed = eta_range(state_eta=friday, feed_earliest=None, feed_latest=None, history=None, last_scan_day=friday,
                       today=friday, status="failed_attempt")
    assert (missed.earliest, missed.latest) == (dt.date(2026, 12, 7), dt.date(2026, 12, 7))  # Monday
    # A parcel simply on its way today keeps today.
    moving = eta_range(state_eta=friday, feed_earliest=None, feed_latest=None, history=None, last_scan_day=friday,
                       today=friday, status="in_transit")
    assert moving.earliest == friday
