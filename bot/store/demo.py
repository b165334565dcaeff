"""A deterministic demo shop: a few hundred orders covering every status and policy branch.

Timelines are written relative to the day the data is seeded for, so a
"late" parcel is late whatever the calendar says.  The same `now` always gives
the same rows.  Each scenario has one showcase order with a fixed number
(`WS-1001` onwards) that the README and `python -m bot demo-orders` point to;
filler orders around them make the store look like a real shop's.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.enums import OrderSource
from bot.domain.tracking import add_business_days
from bot.store.models import Customer, Order, OrderItem, Shipment
from bot.store.queries import (
    EventIn,
    add_events,
    carriers_by_code,
    get_meta,
    get_order,
    set_meta,
    shipment_state,
    sync_carriers,
)

SCENARIOS: Tuple[str, ...] = (
    "not_shipped",
    "info_received",
    "in_transit_on_time",
    "out_for_delivery",
    "delivered",
    "failed_attempt",
    "available_for_pickup",
    "late_with_reason",
    "late_no_reason",
    "stalled",
    "exception",
    "lost",
    "damaged",
    "delivered_disputed",
    "returned_to_sender",
    "split_shipment",
    "shipped_redirect_possible",
    "shipped_no_redirect",
    "high_value_lost",
)

SCENARIO_NOTES: Dict[str, str] = {
    "not_shipped": "paid, still in the warehouse: the address can be changed directly",
    "info_received": "label printed, the carrier has not picked it up yet",
    "in_transit_on_time": "on its way and expected before the promised date",
    "out_for_delivery": "on the van today",
    "delivered": "delivered on time",
    "failed_attempt": "the courier called yesterday and nobody was home",
    "available_for_pickup": "waiting at a pickup point",
    "late_with_reason": "past the promised date; the carrier reported a weather delay",
    "late_no_reason": "past the promised date, still moving, no reason given",
    "stalled": "no scan for several business days",
    "exception": "held at customs",
    "lost": "the carrier declared it lost",
    "damaged": "the carrier reported it damaged",
    "delivered_disputed": "carrier says delivered days ago; a shopper may say it never came",
    "returned_to_sender": "address problem, sent back to the shop",
    "split_shipment": "two parcels with two carriers, one delivered, one on its way",
    "shipped_redirect_possible": "in transit with a carrier that accepts redirects",
    "shipped_no_redirect": "in transit with a carrier that cannot redirect",
    "high_value_lost": "an expensive order with no scan for weeks: presumed lost, goes to a human",
}

SHOWCASE_FIRST_NUMBER = 1001
FILLER_FIRST_NUMBER = 1101
FILLER_COUNT = 280
DEMO_ANCHOR_KEY = "demo_anchor_date"

# The same journey step in each carrier's own code.
STEP_CODES: Dict[str, Dict[str, str]] = {
    "dhl": {
        "label": "pre-transit", "pickup": "picked-up", "arrive": "arrived-facility",
        "depart": "departed-facility", "weather": "weather-delay", "customs": "customs-hold",
        "out": "out-for-delivery", "attempt": "delivery-failed", "address": "address-issue",
        "damaged": "damaged", "pickup_point": "servicepoint-ready", "delivered": "delivered",
        "lost": "lost", "returned": "returned",
    },
    "ups": {
        "label": "M/MP", "pickup": "P/PU", "arrive": "I/AR", "depart": "I/DP",
        "weather": "I/WX", "customs": "X/CH", "out": "O/OT", "attempt": "X/48",
        "address": "X/AD", "damaged": "X/DM", "pickup_point": "P/AP", "delivered": "D/KB",
        "lost": "X/LS", "returned": "RS/RS",
    },
    "usps": {
        "label": "GX", "pickup": "03", "arrive": "07", "depart": "10", "weather": "WX",
        "customs": "CH", "out": "OF", "attempt": "02", "address": "22", "damaged": "DM",
        "pickup_point": "16", "delivered": "01", "lost": "ML", "returned": "09",
    },
    "royalmail": {
        "label": "EVGPD", "pickup": "EVAIP", "arrive": "EVIMC", "depart": "EVIMC",
        "weather": "EVDAV", "customs": "EVCUS", "out": "EVKOP", "attempt": "EVKNR",
        "address": "EVKAD", "damaged": "EVDMG", "pickup_point": "EVKLC", "delivered": "EVKSP",
        "lost": "EVLST", "returned": "EVRTS",
    },
}

HUBS = {
    "dhl": ("Tilburg, NL", "Venlo, NL"),
    "ups": ("Eindhoven, NL", "Köln, DE"),
    "usps": ("Jamaica, NY, US", "Oakland, CA, US"),
    "royalmail": ("Heathrow Worldwide Distribution Centre, GB", "Bristol Mail Centre, GB"),
}
WAREHOUSE = "Tilburg, NL"
#: Where each carrier's pickup point in the shopper's town is, as its scan names it.
PICKUP_POINTS = {
    "dhl": "Station Kiosk",
    "ups": "Market Square Newsagent",
    "usps": "Main Street Post Office",
    "royalmail": "Royal Mail Delivery Office, Station Road",
}


@dataclass(frozen=True)
class Address:
    line1: str
    city: str
    postcode: str
    country: str
    region: str = ""


ADDRESSES: Dict[str, Sequence[Address]] = {
    "NL": (
        Address("Keizersgracht 112", "Amsterdam", "1015 CW", "NL"),
        Address("Oudegracht 45", "Utrecht", "3511 AB", "NL"),
        Address("Witte de Withstraat 20", "Rotterdam", "3012 BP", "NL"),
    ),
    "DE": (
        Address("Bergmannstraße 14", "Berlin", "10961", "DE"),
        Address("Schanzenstraße 7", "Hamburg", "20357", "DE"),
    ),
    "BE": (Address("Rue des Bouchers 9", "Bruxelles", "1000", "BE"),),
    "FR": (Address("12 Rue Oberkampf", "Paris", "75011", "FR"),),
    "GB": (
        Address("14 Stokes Croft", "Bristol", "BS1 3PR", "GB"),
        Address("22 Deansgate", "Manchester", "M3 2BW", "GB"),
    ),
    "US": (
        Address("350 Valencia St", "San Francisco", "94103", "US", "CA"),
        Address("88 Bedford Ave", "Brooklyn", "11211", "US", "NY"),
    ),
    "CH": (Address("Langstrasse 21", "Zürich", "8004", "CH"),),
}
CARRIERS_FOR = {
    "NL": ("dhl", "ups"), "DE": ("dhl", "ups"), "BE": ("dhl", "ups"), "FR": ("ups", "dhl"),
    "GB": ("royalmail", "dhl"), "US": ("usps", "ups"), "CH": ("dhl", "ups"),
}

CATALOGUE: Sequence[Tuple[str, str, Decimal]] = (
    ("MUG-STONE", "Stoneware mug, sand", Decimal("18.50")),
    ("LINEN-NAP4", "Linen napkins, set of 4", Decimal("32.00")),
    ("THROW-WOOL", "Wool throw, moss green", Decimal("89.00")),
    ("LAMP-OAK", "Oak table lamp", Decimal("124.00")),
    ("CANDLE-FIG", "Fig leaf candle", Decimal("24.00")),
    ("BOWL-CER3", "Ceramic bowls, set of 3", Decimal("46.00")),
    ("TOWEL-WAF", "Waffle bath towel", Decimal("29.00")),
    ("VASE-GLASS", "Recycled glass vase", Decimal("39.50")),
)
ESPRESSO = ("ESPRESSO-PRO", "Lever espresso machine", Decimal("899.00"))
MODEST_VALUE = Decimal("200")

FIRST_NAMES = (
    "Anna", "Lucas", "Sophie", "Daan", "Emma", "Noah", "Julia", "Finn", "Mila", "Liam",
    "Sara", "Jonas", "Olivia", "Max", "Chloé", "Hugo", "Amelia", "Oliver", "Grace", "Ethan",
)
LAST_NAMES = (
    "de Vries", "Jansen", "Müller", "Schmidt", "Peeters", "Martin", "Smith", "Brown",
    "Johnson", "Bakker", "Visser", "Dubois", "Taylor", "Walker", "Meier", "Garcia",
)

# (business-day offset from today, local hour, step, where) -- where: origin, hub, local, point (a pickup point)
Step = Tuple[int, float, str, str]


@dataclass(frozen=True)
class ParcelPlan:
    carrier: str
    steps: Sequence[Step]
    planned_eta: Optional[int] = None  # business days from today
    announced_eta: Optional[int] = None  # business days, sent with the last scan


@dataclass(frozen=True)
class ScenarioPlan:
    placed: int  # business days from today
    promised: int
    parcels: Sequence[ParcelPlan] = ()
    country: Optional[str] = None
    high_value: bool = False
    item_count: int = 2


def _journey(start: int, *extra: Step) -> List[Step]:
    """Label, pickup and a hub scan starting `start` business days ago."""
    return [(start, 16.5, "label", "origin"), (start + 1, 18.0, "pickup", "origin"),
            (start + 2, 5.75, "arrive", "hub"), *extra]


def scenario_plan(name: str, carrier: str) -> ScenarioPlan:
    """The timeline of one scenario, for a parcel with `carrier`."""
    plans: Dict[str, ScenarioPlan] = {
        "not_shipped": ScenarioPlan(placed=-1, promised=3),
        "info_received": ScenarioPlan(-1, 3, [ParcelPlan(carrier, [(-1, 16.5, "label", "origin")], 2)]),
        "in_transit_on_time": ScenarioPlan(-3, 2, [ParcelPlan(carrier, _journey(-3, (-1, 9.5, "depart", "hub")), 1)]),
        "out_for_delivery": ScenarioPlan(-3, 0, [ParcelPlan(carrier, _journey(-3, (-1, 10.0, "depart", "hub"), (0, 7.2, "out", "local")), 0)]),
        "delivered": ScenarioPlan(-5, -1, [ParcelPlan(carrier, _journey(-5, (-3, 11.0, "depart", "hub"), (-2, 7.5, "out", "local"), (-2, 14.2, "delivered", "local")), -2)]),
        "failed_attempt": ScenarioPlan(-4, 0, [ParcelPlan(carrier, _journey(-4, (-2, 9.0, "depart", "hub"), (-1, 7.5, "out", "local"), (-1, 15.7, "attempt", "local")), 1, 1)]),
        "available_for_pickup": ScenarioPlan(-5, -1, [ParcelPlan(carrier, _journey(-5, (-3, 9.0, "depart", "hub"), (-2, 7.5, "out", "local"), (-2, 13.1, "attempt", "local"), (-1, 10.0, "pickup_point", "point")), -2)]),
        "late_with_reason": ScenarioPlan(-8, -3, [ParcelPlan(carrier, _journey(-8, (-4, 12.0, "weather", "hub"), (-1, 8.4, "depart", "hub")), -3, 2)]),
        "late_no_reason": ScenarioPlan(-7, -3, [ParcelPlan(carrier, _journey(-7, (-4, 9.0, "depart", "hub"), (-1, 6.3, "arrive", "local")), -3)]),
        "stalled": ScenarioPlan(-9, -2, [ParcelPlan(carrier, _journey(-9, (-5, 9.0, "depart", "hub")), -2)]),
        "exception": ScenarioPlan(-5, 1, [ParcelPlan("dhl", _journey(-5, (-1, 11.3, "customs", "hub")), 1)], country="CH"),
        "lost": ScenarioPlan(-12, -6, [ParcelPlan(carrier, _journey(-12, (-9, 9.0, "depart", "hub"), (-2, 10.0, "lost", "hub")), -6)]),
        "damaged": ScenarioPlan(-5, 0, [ParcelPlan(carrier, _journey(-5, (-1, 14.0, "damaged", "hub")), 0)]),
        "delivered_disputed": ScenarioPlan(-9, -4, [ParcelPlan(carrier, _journey(-9, (-6, 9.0, "depart", "hub"), (-5, 7.5, "out", "local"), (-5, 11.9, "delivered", "local")), -4)]),
        "returned_to_sender": ScenarioPlan(-12, -6, [ParcelPlan(carrier, _journey(-12, (-9, 9.0, "depart", "hub"), (-8, 7.5, "out", "local"), (-8, 12.0, "address", "local"), (-2, 15.0, "returned", "origin")), -6)]),
        "split_shipment": ScenarioPlan(-4, 1, [
            ParcelPlan("dhl", _journey(-4, (-2, 9.0, "depart", "hub"), (-1, 7.5, "out", "local"), (-1, 13.4, "delivered", "local")), -1),
            ParcelPlan("ups", _journey(-3, (-1, 9.0, "depart", "hub")), 1, 2),
        ], country="NL", item_count=3),
        "shipped_redirect_possible": ScenarioPlan(-2, 3, [ParcelPlan("ups", [(-2, 16.5, "label", "origin"), (-1, 18.0, "pickup", "origin"), (0, 5.5, "arrive", "hub")], 2)], country="DE"),
        "shipped_no_redirect": ScenarioPlan(-2, 2, [ParcelPlan("royalmail", [(-2, 16.5, "label", "origin"), (-1, 18.0, "pickup", "origin"), (0, 5.5, "arrive", "hub")], 2)], country="GB"),
        "high_value_lost": ScenarioPlan(-20, -12, [ParcelPlan("dhl", _journey(-19, (-15, 9.0, "depart", "hub")), -12)], country="NL", high_value=True, item_count=1),
    }
    return plans[name]


FILLER_WEIGHTS: Dict[str, int] = {
    "delivered": 45, "in_transit_on_time": 18, "not_shipped": 8, "out_for_delivery": 5,
    "info_received": 5, "split_shipment": 3, "late_with_reason": 3, "late_no_reason": 3,
    "failed_attempt": 2, "available_for_pickup": 2, "stalled": 2, "delivered_disputed": 1,
    "exception": 1, "lost": 1, "damaged": 1, "returned_to_sender": 1,
}


@dataclass
class _Builder:
    session: Session
    settings: Settings
    now: dt.datetime
    rng: random.Random
    carriers: Dict[str, Any] = field(default_factory=dict)
    customers: Dict[str, Customer] = field(default_factory=dict)

    @property
    def today(self) -> dt.date:
        return self.now.astimezone(self.settings.tz).date()

    def day(self, offset: int) -> dt.date:
        return add_business_days(self.today, offset) if offset else self.today

    def moment(self, offset: int, hour: float) -> dt.datetime:
        """A local time `offset` business days from today, never in the future."""
        local = dt.datetime.combine(self.day(offset), dt.time(0), tzinfo=self.settings.tz)
        when = local + dt.timedelta(minutes=round(hour * 60))
        latest = self.now - dt.timedelta(minutes=20)
        if when > latest:
            when = max(latest, local + dt.timedelta(minutes=1))
        return when.astimezone(dt.timezone.utc)

    def customer(self, first: str, last: str, country: str) -> Customer:
        email = f"{_ascii(first)}.{_ascii(last)}@example.com"
        customer = self.customers.get(email)
        if customer is None:
            customer = self.session.scalars(select(Customer).where(Customer.email == email)).first()
        if customer is None:
            phone = {"US": "+1 415 555 0"}.get(country, "+31 6 5555 ") + f"{self.rng.randint(100, 999)}"
            customer = Customer(email=email, name=f"{first} {last}", phone=phone)
            self.session.add(customer)
        self.customers[email] = customer
        return customer

    def tracking_number(self, carrier: str) -> str:
        digits = lambda n: "".join(self.rng.choice("0123456789") for _ in range(n))  # noqa: E731
        if carrier == "dhl":
            return "JVGL" + digits(16)
        if carrier == "ups":
            return "1Z" + "".join(self.rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(6)) + "68" + digits(8)
        if carrier == "usps":
            return "9400" + digits(18)
        return "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2)) + digits(9) + "GB"

    def build(self, number: int, scenario: str, first: str, last: str, jitter: int = 0,
              modest: bool = False) -> Order:
        base = scenario_plan(scenario, "dhl")
        country = base.country or self.rng.choice(("NL", "NL", "NL", "DE", "DE", "BE", "FR", "GB", "US"))
        carrier = self.rng.choice(CARRIERS_FOR[country])
        plan = scenario_plan(scenario, carrier)
        address = self.rng.choice(ADDRESSES[country])
        customer = self.customer(first, last, country)
        if plan.high_value:
            lines = [(*ESPRESSO[:2], 1, ESPRESSO[2])]
        else:
            # Showcase orders stay modest so that only the high-value scenario needs a human.
            while True:
                items = self.rng.sample(list(CATALOGUE), plan.item_count)
                lines = [(sku, name, 1 if modest else self.rng.randint(1, 2), price) for sku, name, price in items]
                if not modest or sum(qty * price for _, _, qty, price in lines) <= MODEST_VALUE:
                    break
        value = sum((qty * price for _, _, qty, price in lines), Decimal("0"))
        order = Order(
            number=f"{self.settings.order_number_prefix}{number}",
            customer=customer,
            placed_at=self.moment(plan.placed - jitter, 10.0 + self.rng.random() * 10),
            promised_date=self.day(plan.promised - jitter),
            ship_name=customer.name,
            ship_line1=address.line1,
            ship_city=address.city,
            ship_postcode=address.postcode,
            ship_region=address.region,
            ship_country=address.country,
            value=value,
            currency=self.settings.shop_currency,
            source=OrderSource.DEMO.value,
            items=[OrderItem(sku=s, name=n, quantity=q, unit_price=p) for s, n, q, p in lines],
        )
        self.session.add(order)
        self.session.flush()
        for parcel in plan.parcels:
            self.ship(order, parcel, address, jitter)
        return order

    def ship(self, order: Order, parcel: ParcelPlan, address: Address, jitter: int) -> None:
        shipment = Shipment(
            order=order,
            carrier=self.carriers[parcel.carrier],
            tracking_number=self.tracking_number(parcel.carrier),
            estimated_delivery=self.day(parcel.planned_eta - jitter) if parcel.planned_eta is not None else None,
        )
        self.session.add(shipment)
        self.session.flush()
        hubs = HUBS[parcel.carrier]
        places = {"origin": WAREHOUSE, "hub": self.rng.choice(hubs), "local": f"{address.city}, {address.country}",
                  "point": f"{PICKUP_POINTS[parcel.carrier]}, {address.city}, {address.country}"}
        events = []
        for index, (offset, hour, step, where) in enumerate(parcel.steps):
            last = index == len(parcel.steps) - 1
            events.append(
                EventIn(
                    occurred_at=self.moment(offset - jitter, hour + self.rng.random() * 0.5),
                    raw_code=STEP_CODES[parcel.carrier][step],
                    location=places[where],
                    estimated_delivery=(
                        self.day(parcel.announced_eta - jitter)
                        if last and parcel.announced_eta is not None
                        else None
                    ),
                )
            )
        add_events(session=self.session, shipment=shipment, events=events)


def _ascii(text: str) -> str:
    table = str.maketrans({"é": "e", "ü": "u", "ö": "o", "ß": "ss", " ": ""})
    return text.lower().translate(table)


def seed_demo(*, session: Session, settings: Settings, now: dt.datetime) -> int:
    """Replace the demo orders with a fresh set for the day of `now`; returns how many."""
    sync_carriers(session=session)
    clear_demo(session=session)
    builder = _Builder(session, settings, now, random.Random(1043), carriers_by_code(session=session))
    names = [(f, l) for l in LAST_NAMES for f in FIRST_NAMES]
    random.Random(7).shuffle(names)
    for index, scenario in enumerate(SCENARIOS):
        first, last = names[index]
        builder.build(SHOWCASE_FIRST_NUMBER + index, scenario, first, last, modest=True)
    scenarios, weights = zip(*FILLER_WEIGHTS.items())
    for index in range(FILLER_COUNT):
        scenario = builder.rng.choices(scenarios, weights)[0]
        first, last = names[len(SCENARIOS) + index % (len(names) - len(SCENARIOS))]
        jitter = builder.rng.randint(0, 25) if scenario == "delivered" else 0
        builder.build(FILLER_FIRST_NUMBER + index, scenario, first, last, jitter)
    set_meta(session=session, key=DEMO_ANCHOR_KEY, value=builder.today.isoformat())
    session.flush()
    return len(SCENARIOS) + FILLER_COUNT


def clear_demo(*, session: Session) -> None:
    for order in session.scalars(select(Order).where(Order.source == OrderSource.DEMO)):
        session.delete(order)
    session.flush()
    orphans = select(Customer.id).where(~Customer.orders.any(),  # type: ignore[attr-defined]
                              Customer.email.like("%@example.com"))
    session.execute(delete(Customer).where(Customer.id.in_(orphans)).execution_options(synchronize_session=False))


def demo_is_stale(*, session: Session, settings: Settings, now: dt.datetime) -> bool:
    """Demo data seeded for an earlier day tells the wrong story (on-time parcels turn late)."""
    anchor = get_meta(session=session, key=DEMO_ANCHOR_KEY)
    return anchor is not None and anchor != now.astimezone(settings.tz).date().isoformat()


def showcase(*, session: Session, settings: Settings, now: dt.datetime) -> List[Dict[str, Any]]:
    """One order per scenario, with what a shopper needs to try it."""
    result = []
    for index, scenario in enumerate(SCENARIOS):
        number = f"{settings.order_number_prefix}{SHOWCASE_FIRST_NUMBER + index}"
        order = get_order(session=session, number=number)
        if order is None or order.source != OrderSource.DEMO:
            raise LookupError(f"demo order {number} is missing: run `python -m bot setup --demo`")
        states = [shipment_state(s, settings=settings, now=now) for s in order.shipments]
        statuses = [state.status for state in states]
        result.append(
            {
                "scenario": scenario,
                "order_number": order.number,
                "email": order.customer.email,
                "postcode": order.ship_postcode,
                "carrier": ", ".join(dict.fromkeys(s.carrier.code for s in order.shipments)) or None,
                "tracking_numbers": [s.tracking_number for s in order.shipments],
                "status": statuses[0] if len(set(statuses)) == 1 else ("pending" if not statuses else ", ".join(statuses)),
                "promised_date": order.promised_date.isoformat() if order.promised_date else None,
                "value": f"{order.value:.2f} {order.currency}",
                "what_it_shows": SCENARIO_NOTES[scenario],
            }
        )
    return result
