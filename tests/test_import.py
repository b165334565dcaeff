"""Importing orders and carrier events: all or nothing, clear errors, idempotent."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.store import db
from bot.store.importer import ImportFailed, import_events, import_orders
from bot.store.models import AuditLog, Customer, Order, OrderItem, Shipment, TrackingEvent
from bot.store.queries import get_order

from .helpers.servers import ROOT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TABLES = (Customer, Order, OrderItem, Shipment, TrackingEvent)


def counts(session):
    return {t.__tablename__: session.scalar(select(func.count()).select_from(t)) for t in TABLES}


def run_import(engine, settings, kind, path):
    with db.session_scope(engine) as session:
        importer = import_orders if kind == "orders" else import_events
        return importer(session=session, path=path, settings=settings)


def test_json_orders_are_imported_with_normalised_fields(engine, settings):
    """Numbers, emails, postcodes and countries are stored in one canonical form."""
    report = run_import(engine, settings, "orders", FIXTURES / "orders.json")
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)
    with db.session_factory(engine)() as session:
        order = get_order(session=session, number="WS-2001")
        assert order.customer.email == "noor.hendriks@example.org"
        assert (order.ship_postcode, order.ship_country, order.value) == ("2514 ED", "NL", Decimal("64.50"))
        assert [(i.sku, i.quantity) for i in order.items] == [("CANDLE-FIG", 1), ("MUG-STONE", 2)]
        assert order.shipments[0].carrier.code == "dhl"
        assert order.shipments[0].estimated_delivery == dt.date(2026, 11, 17)
        bare = get_order(session=session, number="WS-2002")  # typed as "2002"
        # a timestamp without offset is the shop's local time (Amsterdam, UTC+1 in November)
        assert bare.placed_at == dt.datetime(2026, 11, 13, 8, 0, tzinfo=dt.timezone.utc)
        assert session.scalar(select(func.count()).select_from(AuditLog)) == 2


def test_reimporting_the_same_file_changes_nothing(engine, settings):
    """A second import of the same file finds every order unchanged and writes nothing."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    with db.session_factory(engine)() as session:
        before = counts(session)
        audits = session.scalar(select(func.count()).select_from(AuditLog))
    report = run_import(engine, settings, "orders", FIXTURES / "orders.json")
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    with db.session_factory(engine)() as session:
        assert counts(session) == before
        assert session.scalar(select(func.count()).select_from(AuditLog)) == audits


def test_a_changed_order_is_updated_and_audited(engine, settings, tmp_path):
    """A newer export updates the order and leaves an audit row saying what changed."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    data = json.loads((FIXTURES / "orders.json").read_text())
    data["orders"][0]["promised_date"] = "2026-11-20"
    changed = tmp_path / "orders.json"
    changed.write_text(json.dumps(data))
    report = run_import(engine, settings, "orders", changed)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1)
    with db.session_factory(engine)() as session:
        assert get_order(session=session, number="WS-2001").promised_date == dt.date(2026, 11, 20)
        entry = session.scalars(select(AuditLog).where(AuditLog.action == "order.updated")).one()
        assert entry.entity_id == "WS-2001" and "promised_date" in entry.details["changed"]


def test_csv_rows_of_one_order_become_one_order_with_several_shipments(engine, settings):
    """One CSV line per parcel; lines with the same order number make one split order."""
    report = run_import(engine, settings, "orders", FIXTURES / "orders.csv")
    assert report.created == 2
    with db.session_factory(engine)() as session:
        split = get_order(session=session, number="WS-3001")
        assert sorted(s.carrier.code for s in split.shipments) == ["dhl", "ups"]
        us = get_order(session=session, number="WS-3002")
        assert (us.ship_region, us.currency) == ("CA", "USD")


def _write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fixture_rows():
    with (FIXTURES / "orders.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("email", "lena-at-example", "line 5, field email: not a valid email address"),
        ("ship_postcode", "ABC", "line 5, field shipping_address.postcode: not a valid postcode for DE"),
        ("value", "-5", "line 5, field value: ensure this value is greater than or equal to 0"),
        ("placed_at", "yesterday", "line 5, field placed_at: invalid datetime format"),
        ("carrier", "fedx", "line 5, field shipments[0].carrier: unknown carrier 'fedx'"),
        ("ship_country", "XX", "line 5, field shipping_address.country: not a valid country for XX"),
    ],
)
def test_a_bad_row_is_reported_by_line_and_field_and_nothing_is_written(engine, settings, tmp_path, field, value,
                                                                         message):
    """The good rows before a bad one are not written either."""
    rows = _fixture_rows()
    bad = dict(rows[0], order_number="WS-3003", tracking_number="JVGL9000000000000999", **{field: value})
    path = tmp_path / "orders.csv"
    _write_csv(path, rows + [bad])
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "orders", path)
    assert any(message in problem for problem in error.value.problems), error.value.problems
    with db.session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 0


def test_a_failed_import_leaves_existing_data_untouched(engine, settings, tmp_path):
    """A bad file that would also update stored orders changes none of them."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    data = json.loads((FIXTURES / "orders.json").read_text())
    data["orders"][0]["value"] = "99.00"  # a valid change ...
    data["orders"][1]["email"] = ""  # ... in the same file as a broken row
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "orders", path)
    assert error.value.problems == ["orders.json record 2, field email: not a valid email address"]
    with db.session_factory(engine)() as session:
        assert get_order(session=session, number="WS-2001").value == Decimal("64.50")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"orders": [', "not valid JSON (line 1"),
        ('{"customers": []}', "expected a JSON list of orders"),
        ('[1, 2]', "record 1: expected an object"),
        ('[{"order_number": "WS-1"}]', "record 1, field placed_at: field required"),
    ],
)
def test_malformed_json_is_a_clear_error(engine, settings, tmp_path, content, message):
    """Broken JSON and wrong shapes are reported, not crashed on."""
    path = tmp_path / "orders.json"
    path.write_text(content)
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "orders", path)
    assert message in "\n".join(error.value.problems)


def test_csv_with_missing_or_unknown_columns_is_refused(engine, settings, tmp_path):
    """A header problem is named before any row is read."""
    path = tmp_path / "orders.csv"
    path.write_text("order_number,colour\nWS-1,red\n")
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "orders", path)
    assert "missing column(s)" in error.value.problems[0] and "placed_at" in error.value.problems[0]


def test_a_tracking_number_cannot_move_to_another_order(engine, settings, tmp_path):
    """A parcel already stored for one order is refused for a different one."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    data = json.loads((FIXTURES / "orders.json").read_text())
    data["orders"][1]["shipments"] = [{"carrier": "dhl", "tracking_number": "JVGL9000000000000001"}]
    data["orders"] = data["orders"][1:]  # only the other order, claiming WS-2001's parcel
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "orders", path)
    assert "already belongs to order WS-2001" in error.value.problems[0]


def test_events_are_appended_once_and_set_the_status(engine, settings):
    """Importing events stores each scan once and derives the shipment status from them."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    report = run_import(engine, settings, "events", FIXTURES / "events.csv")
    assert (report.events_stored, report.events_known) == (4, 0)
    assert report.unmapped_codes == {"dhl:X-NEW": 1}
    again = run_import(engine, settings, "events", FIXTURES / "events.csv")
    assert (again.events_stored, again.events_known) == (0, 4)
    with db.session_factory(engine)() as session:
        shipment = get_order(session=session, number="WS-2001").shipments[0]
        assert shipment.status == "in_transit"
        assert [e.reason for e in shipment.events if e.reason] == ["weather"]
        assert shipment.events[2].estimated_delivery == dt.date(2026, 11, 19)
        assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 4


def test_events_for_an_unknown_parcel_are_refused_and_none_are_stored(engine, settings, tmp_path):
    """One event for a tracking number the store lacks stops the whole file."""
    run_import(engine, settings, "orders", FIXTURES / "orders.json")
    path = tmp_path / "events.json"
    path.write_text(json.dumps([
        {"carrier": "dhl", "tracking_number": "JVGL9000000000000001", "occurred_at": "2026-11-14T06:10:00Z",
         "code": "picked-up"},
        {"carrier": "dhl", "tracking_number": "JVGL0000000000000000", "occurred_at": "2026-11-14T06:10:00Z",
         "code": "picked-up"},
        {"carrier": "dhl", "tracking_number": "JVGL9000000000000001", "occurred_at": "2099-01-01T00:00:00Z",
         "code": "delivered"},
    ]))
    with pytest.raises(ImportFailed) as error:
        run_import(engine, settings, "events", path)
    assert error.value.problems[0].startswith("events.json record 2, field tracking_number: no dhl shipment")
    assert "record 3, field occurred_at: in the future" in error.value.problems[1]
    with db.session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 0


@pytest.mark.slow  # runs `python -m bot setup` and `python -m bot import`
def test_import_command_reports_problems_and_exit_codes(tmp_path):
    """`python -m bot import` prints the summary, or every problem and exit code 1."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def bot(*args):
        return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True)

    assert bot("setup", "--demo", "never").returncode == 0
    ok = bot("import", "orders", str(FIXTURES / "orders.csv"))
    assert ok.returncode == 0 and "2 created, 0 updated, 0 unchanged" in ok.stdout
    bad = tmp_path / "events.csv"
    shutil.copy(FIXTURES / "events.csv", bad)
    with bad.open("a") as handle:
        handle.write("dhl,JVGL9000000000000101,not-a-date,transit,,,,\n")
    failed = bot("import", "events", str(bad))
    assert failed.returncode == 1
    assert "Nothing was imported" in failed.stderr
    assert "events.csv line 2, field tracking_number: no dhl shipment JVGL9000000000000001" in failed.stderr
    assert "events.csv line 6, field occurred_at: invalid datetime format" in failed.stderr
    assert "Traceback" not in failed.stderr
    missing = bot("import", "orders", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
