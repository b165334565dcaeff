"""Data access for orders, shipments and carrier events.

Keyword-only functions that take the session they work in; the caller owns
the transaction, so a command can do several of these and commit once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from bot.config import Settings
from bot.domain.carriers import BUILT_IN_CARRIERS, normalise_code, tracking_url
from bot.domain.clock import utcnow
from bot.domain.enums import Status
from bot.domain.tracking import Scan, ShipmentState, derive_state
from bot.store.models import (
    AuditLog,
    Carrier,
    CarrierStatusCode,
    Order,
    Shipment,
    StoreMeta,
    TrackingEvent,
)


def sync_carriers(*, session: Session) -> int:
    """Add the built-in carriers and any of their codes the store lacks.

    Rows the shop edited are left as they are.  Returns how many rows were added.
    """
    added = 0
    existing = {c.code: c for c in session.scalars(select(Carrier).options(selectinload(Carrier.status_codes)))}
    for definition in BUILT_IN_CARRIERS:
        carrier = existing.get(definition.code)
        if carrier is None:
            carrier = Carrier(
                code=definition.code,
                name=definition.name,
                tracking_url_template=definition.tracking_url_template,
                supports_redirect=definition.supports_redirect,
            )
            session.add(carrier)
            added += 1
        known = {row.raw_code for row in carrier.status_codes}
        for raw_code, mapping in definition.codes.items():
            if raw_code not in known:
                carrier.status_codes.append(
                    CarrierStatusCode(
                        raw_code=raw_code,
                        status=mapping.status,
                        reason=mapping.reason,
                        description=mapping.description,
                    )
                )
                added += 1
    session.flush()
    return added


def carriers_by_code(*, session: Session) -> Dict[str, Carrier]:
    return {c.code: c for c in session.scalars(select(Carrier))}


def status_mapping(*, session: Session, carrier_id: int) -> Dict[str, CarrierStatusCode]:
    rows = session.scalars(select(CarrierStatusCode).where(CarrierStatusCode.carrier_id == carrier_id))
    return {row.raw_code: row for row in rows}


def get_order(*, session: Session, number: str) -> Optional[Order]:
    """The order with this exact (normalised) number, with its shipments and events."""
    return session.scalars(
        select(Order)
        .where(Order.number == number)
        .options(
            selectinload(Order.customer),
            selectinload(Order.items),
            selectinload(Order.shipments).selectinload(Shipment.events),
            selectinload(Order.shipments).selectinload(Shipment.carrier),
        )
    ).first()


def get_order_by_tracking_number(*, session: Session, tracking_number: str) -> Optional[Order]:
    shipment = session.scalars(
        select(Shipment).where(
            func.upper(Shipment.tracking_number) == tracking_number.strip().upper()
        )
    ).first()
    return get_order(session=session, number=shipment.order.number) if shipment else None


def get_shipment(*, session: Session, carrier_code: str, tracking_number: str) -> Optional[Shipment]:
    return session.scalars(
        select(Shipment)
        .join(Carrier)
        .where(Carrier.code == carrier_code, Shipment.tracking_number == tracking_number)
    ).first()


def event_key(occurred_at: dt.datetime, raw_code: str, location: str, event_id: Optional[str]) -> str:
    """A stable identity for a carrier event, so a re-delivered event is recognised.

    The carrier's own event id wins when it sends one; otherwise the time, code
    and place of the scan identify it.
    """
    if event_id and event_id.strip():
        basis = f"id|{event_id.strip()}"
    else:
        when = occurred_at.astimezone(dt.timezone.utc).isoformat()
        basis = f"scan|{when}|{normalise_code(raw_code)}|{location.strip().lower()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class EventIn:
    """A carrier event as received, before it is stored."""

    occurred_at: dt.datetime
    raw_code: str
    raw_text: str = ""
    location: str = ""
    event_id: Optional[str] = None
    estimated_delivery: Optional[dt.date] = None


def add_events(*, session: Session, shipment: Shipment, events: Iterable[EventIn]) -> int:
    """Store events for one shipment, skipping any already stored; returns how many were new.

    Duplicate detection is the database's unique constraint (an `ON CONFLICT DO
    NOTHING` insert), so two workers ingesting the same webhook at once still
    store it once.
    """
    mapping = status_mapping(session=session, carrier_id=shipment.carrier_id)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stored = 0
    for event in events:
        code = normalise_code(event.raw_code)
        known = mapping.get(code)
        row: Dict[str, Any] = {
            "shipment_id": shipment.id,
            "event_key": event_key(event.occurred_at, code, event.location, event.event_id),
            "occurred_at": event.occurred_at,
            "raw_code": code,
            "raw_text": event.raw_text or (known.description if known else ""),
            "location": event.location,
            "status": known.status if known else None,
            "reason": known.reason if known else None,
            "estimated_delivery": event.estimated_delivery,
            "received_at": utcnow(),
        }
        statement = insert(TrackingEvent).values(**row).on_conflict_do_nothing(
            index_elements=["shipment_id", "event_key"]
        )
        stored += session.execute(statement).rowcount
    if stored:
        session.expire(shipment, ["events"])
        refresh_shipment(session=session, shipment=shipment)
    return stored


def refresh_shipment(*, session: Session, shipment: Shipment) -> None:
    """Recompute the cached status and last-scan time from the stored events."""
    events = list(shipment.events)
    meaningful = [e for e in events if e.status]
    if meaningful:
        shipment.status = meaningful[-1].status
    if events:
        shipment.last_event_at = events[-1].occurred_at
        if shipment.shipped_at is None:
            shipped = [e for e in meaningful if e.status not in (Status.PENDING, Status.INFO_RECEIVED)]
            if shipped:
                shipment.shipped_at = shipped[0].occurred_at
    session.flush()


def scans_of(shipment: Shipment) -> List[Scan]:
    return [
        Scan(
            occurred_at=e.occurred_at,
            status=e.status,
            reason=e.reason,
            text=e.raw_text,
            location=e.location,
            estimated_delivery=e.estimated_delivery,
        )
        for e in shipment.events
    ]


def shipment_state(shipment: Shipment, *, settings: Settings, now: dt.datetime) -> ShipmentState:
    return derive_state(
        scans_of(shipment),
        promised_date=shipment.order.promised_date,
        planned_eta=shipment.estimated_delivery,
        policy=settings.policy,
        now=now,
        tz=settings.tz,
    )


def shipment_tracking_url(shipment: Shipment) -> str:
    return tracking_url(shipment.carrier.tracking_url_template, shipment.tracking_number)


def audit(
    *,
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    details: Optional[Dict[str, Any]] = None,
) -> None:
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=entity,
            entity_id=str(entity_id),
            details=details or {},
        )
    )


def get_meta(*, session: Session, key: str) -> Optional[str]:
    row = session.get(StoreMeta, key)
    return row.value if row else None


def set_meta(*, session: Session, key: str, value: str) -> None:
    row = session.get(StoreMeta, key)
    if row is None:
        session.add(StoreMeta(key=key, value=value))
    else:
        row.value = value


def count_orders(*, session: Session, source: Optional[str] = None) -> int:
    query = select(func.count()).select_from(Order)
    if source is not None:
        query = query.where(Order.source == source)
    return int(session.scalar(query) or 0)
