"""The schema, its constraints and event ingest, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from bot.store import db
from bot.store.models import Base, Customer, Order, Resolution, Shipment, TrackingEvent
from bot.store.queries import EventIn, add_events, carriers_by_code, get_order, sync_carriers

T0 = dt.datetime(2026, 11, 16, 9, 0, tzinfo=dt.timezone.utc)


def test_migrations_from_empty_create_every_table_and_match_the_models(databases):
    """Upgrading an empty database yields exactly the schema the models describe."""
    engine = db.make_engine(databases.new_url())
    assert inspect(engine).get_table_names() == []
    db.migrate(engine)
    db.migrate(engine)  # running it again is harmless
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    db.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def make_order(session, number="WS-5001", email="kim@example.com"):
    customer = session.scalars(select(Customer).where(Customer.email == email)).first() or Customer(
        email=email, name="Kim")
    order = Order(number=number, customer=customer, placed_at=T0, promised_date=dt.date(2026, 11, 19),
                  ship_name="Kim", ship_line1="Damrak 1", ship_city="Amsterdam", ship_postcode="1012 LG",
                  ship_country="NL", value=Decimal("59.90"), currency="EUR")
    session.add(order)
    session.flush()
    return order


def make_shipment(session, order, tracking="JVGL0001", carrier="dhl"):
    sync_carriers(session=session)
    shipment = Shipment(order=order, carrier=carriers_by_code(session=session)[carrier], tracking_number=tracking)
    session.add(shipment)
    session.flush()
    return shipment


def test_order_numbers_are_unique(session):
    """Two orders can never share a number."""
    make_order(session)
    with pytest.raises(IntegrityError):
        make_order(session, email="other@example.com")


def test_tracking_numbers_are_unique_per_carrier(session):
    """The same carrier cannot have the same tracking number twice."""
    order = make_order(session)
    make_shipment(session, order)
    with pytest.raises(IntegrityError):
        make_shipment(session, order)


def test_money_keeps_its_cents(session):
    """Order values come back exactly as stored."""
    make_order(session)
    session.commit()
    assert session.scalar(select(Order.value)) == Decimal("59.90")


@pytest.mark.parametrize(
    "column, value",
    [
        ("status", "shipped"),  # not a canonical status
        ("customer_id", 999_999),  # no such customer (foreign keys are on, SQLite included)
    ],
)
def test_schema_rejects_invalid_rows(session, column, value):
    """The database itself refuses rows that break the rules."""
    order = make_order(session)
    if column == "status":
        shipment = make_shipment(session, order)
        shipment.status = value
    else:
        order.customer_id = value
    with pytest.raises(IntegrityError):
        session.flush()


def test_one_resolution_per_shipment_and_reason(session):
    """Asking twice never pays twice: a second refund for the same problem is refused."""
    order = make_order(session)
    shipment = make_shipment(session, order)
    session.add(Resolution(order_id=order.id, shipment_id=shipment.id, reason="lost", kind="refund",
                           amount=Decimal("59.90"), currency="EUR"))
    session.flush()
    session.add(Resolution(order_id=order.id, shipment_id=shipment.id, reason="damaged", kind="reship",
                           currency="EUR"))
    session.flush()  # another reason is another claim
    session.add(Resolution(order_id=order.id, shipment_id=shipment.id, reason="lost", kind="reship",
                           currency="EUR"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_carrier_event_is_stored_once_even_when_delivered_twice(session):
    """Re-delivered events are recognised by id, or by time, code and place."""
    shipment = make_shipment(session, make_order(session))
    events = [
        EventIn(occurred_at=T0, raw_code="picked-up", location="Tilburg, NL"),
        EventIn(occurred_at=T0 + dt.timedelta(hours=20), raw_code="transit", location="Venlo, NL",
                event_id="evt-42"),
    ]
    assert add_events(session=session, shipment=shipment, events=events) == 2
    same_again = [
        EventIn(occurred_at=T0.astimezone(dt.timezone(dt.timedelta(hours=1))), raw_code=" PICKED-UP",
                location="tilburg, nl "),  # same scan, other offset, case and padding
        EventIn(occurred_at=T0 + dt.timedelta(hours=21), raw_code="transit", event_id="evt-42"),
    ]
    assert add_events(session=session, shipment=shipment, events=same_again) == 0
    assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 2


def test_duplicate_event_key_is_refused_by_the_schema(session):
    """Even code that bypasses ingest cannot store an event twice."""
    shipment = make_shipment(session, make_order(session))
    row = {"shipment_id": shipment.id, "event_key": "k1", "occurred_at": T0, "raw_code": "X",
           "received_at": T0}
    session.execute(insert(TrackingEvent).values(**row))
    with pytest.raises(IntegrityError):
        session.execute(insert(TrackingEvent).values(**row))


def test_ingest_updates_the_shipment_status_and_keeps_unmapped_codes(session):
    """The cached status follows the newest mapped scan; unknown codes are kept verbatim."""
    shipment = make_shipment(session, make_order(session))
    add_events(session=session, shipment=shipment, events=[
        EventIn(occurred_at=T0, raw_code="picked-up"),
        EventIn(occurred_at=T0 + dt.timedelta(days=1), raw_code="out-for-delivery"),
        EventIn(occurred_at=T0 + dt.timedelta(days=1, hours=2), raw_code="NEW-CODE-9", raw_text="Mystery"),
    ])
    session.commit()
    order = get_order(session=session, number="WS-5001")
    stored = order.shipments[0]
    assert stored.status == "out_for_delivery"
    assert stored.shipped_at == T0
    assert stored.last_event_at == T0 + dt.timedelta(days=1, hours=2)
    unknown = stored.events[-1]
    assert (unknown.raw_code, unknown.raw_text, unknown.status) == ("NEW-CODE-9", "Mystery", None)


def test_events_arriving_out_of_order_do_not_roll_the_status_back(session):
    """A late-delivered older scan does not override a newer one."""
    shipment = make_shipment(session, make_order(session))
    add_events(session=session, shipment=shipment, events=[EventIn(occurred_at=T0 + dt.timedelta(days=2),
                                                                   raw_code="delivered")])
    add_events(session=session, shipment=shipment, events=[EventIn(occurred_at=T0, raw_code="transit")])
    assert shipment.status == "delivered"


def test_sync_carriers_is_idempotent_and_keeps_shop_edits(session):
    """Running setup again adds nothing and leaves mappings the shop changed alone."""
    assert sync_carriers(session=session) > 0
    carrier = carriers_by_code(session=session)["dhl"]
    row = next(r for r in carrier.status_codes if r.raw_code == "TRANSIT")
    row.description = "Edited by the shop"
    session.flush()
    assert sync_carriers(session=session) == 0
    assert row.description == "Edited by the shop"
