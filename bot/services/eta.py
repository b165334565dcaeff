"""Delivery estimates from the store: this shop's delivery history, one parcel's range, and the backtest.

The history is every delivered parcel's scans before its delivery: for each
scan, how many days (weekdays by default) it still took to the delivery day,
grouped by carrier and by the scan's status.  A parcel on its way gets the
10th to 90th percentile of its carrier's figures for its last scan's status,
counted from that scan's day (`bot.domain.eta` has the rules).  The backtest
replays the delivered parcels to measure how often the real delivery day fell
inside the range the assistant would have given.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.carriers import FINAL_STATUSES
from bot.domain.enums import Status
from bot.domain.eta import (
    ANY_CARRIER,
    HIGH,
    LOW,
    MIN_SAMPLES,
    EtaRange,
    History,
    Journey,
    Stop,
    days_between,
    eta_range,
    history_range,
    history_samples,
    samples_for,
)
from bot.domain.tracking import ShipmentState
from bot.store.models import Carrier, Shipment, TrackingEvent
from bot.store.queries import shipment_state

#: Statuses of a parcel still moving towards the shopper: from these, history tells how long the rest takes.
#: (Exceptions are left to the carrier's own date: a customs hold and a damaged parcel are not alike.)
ESTIMATED_STATUSES: Tuple[str, ...] = (Status.INFO_RECEIVED.value, Status.IN_TRANSIT.value,
                                       Status.OUT_FOR_DELIVERY.value, Status.FAILED_ATTEMPT.value)
#: Count weekdays: carriers mostly deliver Monday to Friday, so a Friday scan is one day from Monday.
BUSINESS_DAYS = True
#: How long a process reuses the history it loaded (a store emptied or reseeded is reloaded at once).
CACHE_SECONDS = 300.0

#: (database, zone, weekdays) -> (the newest event when loaded, when it expires, the table).
_cache: Dict[Tuple[Any, ...], Tuple[Optional[Tuple[int, dt.datetime]], float, History]] = {}
_cache_lock = threading.Lock()


def load_journeys(*, session: Session, settings: Settings) -> List[Journey]:
    """Every delivered shipment's way: its scans with a known status before the first delivery scan."""
    delivered = select(TrackingEvent.shipment_id).where(TrackingEvent.status == Status.DELIVERED.value)
    rows = session.execute(
        select(TrackingEvent.shipment_id, Carrier.code, TrackingEvent.status, TrackingEvent.occurred_at)
        .join(Shipment, Shipment.id == TrackingEvent.shipment_id)
        .join(Carrier, Carrier.id == Shipment.carrier_id)
        .where(TrackingEvent.status.is_not(None), TrackingEvent.shipment_id.in_(delivered))
        .order_by(TrackingEvent.shipment_id, TrackingEvent.occurred_at, TrackingEvent.id)
    )
    journeys: List[Journey] = []
    current: Optional[int] = None
    stops: List[Stop] = []
    done = False
    for shipment_id, carrier, status, occurred_at in rows:
        if shipment_id != current:
            current, stops, done = shipment_id, [], False
        if done:
            continue
        local_day = occurred_at.astimezone(settings.tz).date()
        if status == Status.DELIVERED:
            journeys.append(Journey(shipment_id, carrier, tuple(stops), local_day, occurred_at))
            done = True
        else:
            stops.append(Stop(status, local_day, occurred_at))
    return journeys


def _newest_event(session: Session) -> Optional[Tuple[int, dt.datetime]]:
    """(id, received_at) of the store's newest tracking event: one primary-key lookup."""
    row = session.execute(
        select(TrackingEvent.id, TrackingEvent.received_at).order_by(TrackingEvent.id.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def _still_there(session: Session, mark: Optional[Tuple[int, dt.datetime]]) -> bool:
    """Whether the event the table was loaded up to is still stored as it was (a primary-key lookup).

    Not when the store was emptied, reseeded or is another one: its events are new rows, even where
    SQLite hands out the same ids again (their `received_at` differs).
    """
    if mark is None:
        return False
    received_at = session.scalar(select(TrackingEvent.received_at).where(TrackingEvent.id == mark[0]))
    return received_at is not None and received_at == mark[1]


def history_table(*, session: Session, settings: Settings, business_days: bool = BUSINESS_DAYS) -> History:
    """The store's days-to-delivery samples per (carrier, status), kept per process for CACHE_SECONDS.

    A table is reused only for the same database, time zone and way of counting, and only while
    the newest event it was loaded with is still stored unchanged: a store emptied, reseeded or
    rebuilt is read again at once.  Deliveries added since are counted at the next load, at most
    CACHE_SECONDS later (a few more samples barely move the percentiles); checking costs one
    primary-key lookup, where a count of the deliveries would read the whole table on every answer.
    """
    bind = session.get_bind()
    key = (str(getattr(bind, "engine", bind).url), settings.shop_timezone, business_days)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and time.monotonic() < cached[1] and _still_there(session, cached[0]):
        return cached[2]
    mark = _newest_event(session)
    table = history_samples(load_journeys(session=session, settings=settings), business_days=business_days,
                            statuses=ESTIMATED_STATUSES)
    with _cache_lock:
        _cache[key] = (mark, time.monotonic() + CACHE_SECONDS, table)
    return table


def clear_cache() -> None:
    """Forget every loaded history (for tests, and after editing the store by hand)."""
    with _cache_lock:
        _cache.clear()


def shipment_eta_range(*, session: Optional[Session], shipment: Shipment, settings: Settings, now: dt.datetime,
                       state: Optional[ShipmentState] = None, low: float = LOW, high: float = HIGH,
                       min_samples: int = MIN_SAMPLES) -> Optional[EtaRange]:
    """When this parcel should arrive, as a range from today on, or None (delivered, lost, or nothing known).

    The feed's own range when the shipment has one (`eta_earliest`, `eta_latest`); else the history
    of this carrier's parcels from the same status as the last scan, counted from that scan's day
    and only from deliveries that took at least as long as this parcel has already waited; else
    the carrier's single date.  No history for a parcel that has gone quiet (stalled): its last
    scan no longer says where it is.  `session` None (an order not loaded from the store) skips
    the history; `state` saves deriving it again; `low`, `high` and `min_samples` as in
    `bot.domain.eta.history_range`.
    """
    state = state if state is not None else shipment_state(shipment, settings=settings, now=now)
    if state.status in FINAL_STATUSES or state.presumed_lost:
        return None
    today = now.astimezone(settings.tz).date()
    history: Optional[Tuple[float, float]] = None
    last_day: Optional[dt.date] = None
    scan = state.status_scan
    if (session is not None and scan is not None and not state.stalled
            and state.carrier_status in ESTIMATED_STATUSES):
        last_day = scan.occurred_at.astimezone(settings.tz).date()
        waited = days_between(last_day, today, business_days=BUSINESS_DAYS)
        table = history_table(session=session, settings=settings)
        samples = samples_for(table, shipment.carrier.code, state.carrier_status, min_samples=min_samples)
        history = history_range([days for days in samples if days >= waited], low=low, high=high,
                                min_samples=min_samples)
    return eta_range(
        state_eta=state.eta,
        feed_earliest=getattr(shipment, "eta_earliest", None),
        feed_latest=getattr(shipment, "eta_latest", None),
        history=history,
        last_scan_day=last_day,
        today=today,
        business_days=BUSINESS_DAYS,
        status=state.status,
    )


# --- the backtest -----------------------------------------------------------------------------------

SPLITS = ("time", "loo")


@dataclass
class Tally:
    """Predictions made, how many held the real delivery day, and their widths in days."""

    predictions: int = 0
    inside: int = 0
    width_days: int = 0

    def add(self, inside: bool, width: int) -> None:
        self.predictions += 1
        self.inside += int(inside)
        self.width_days += width

    @property
    def coverage(self) -> Optional[float]:
        """The share of predictions whose range held the delivery day (0 to 1)."""
        return self.inside / self.predictions if self.predictions else None

    @property
    def mean_width(self) -> Optional[float]:
        """The mean number of calendar days a range spanned, both ends included."""
        return self.width_days / self.predictions if self.predictions else None

    def as_dict(self) -> Dict[str, Any]:
        coverage, width = self.coverage, self.mean_width
        return {"predictions": self.predictions, "inside": self.inside,
                "coverage": None if coverage is None else round(coverage, 4),
                "mean_width_days": None if width is None else round(width, 2)}


@dataclass
class Backtest:
    """How the history ranges would have done on the store's delivered parcels."""

    low: float
    high: float
    split: str
    business_days: bool
    min_samples: int
    shipments: int = 0
    #: Scans for which too little history was there to give a range.
    unpredicted: int = 0
    overall: Tally = field(default_factory=Tally)
    carriers: Dict[str, Tally] = field(default_factory=dict)
    statuses: Dict[str, Tally] = field(default_factory=dict)

    def add(self, journey: Journey, stop: Stop, predicted: EtaRange) -> None:
        inside = predicted.earliest <= journey.delivered_day <= predicted.latest
        for tally in (self.overall, self.carriers.setdefault(journey.carrier, Tally()),
                      self.statuses.setdefault(stop.status, Tally())):
            tally.add(inside, predicted.days)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "low": self.low, "high": self.high, "split": self.split, "business_days": self.business_days,
            "min_samples": self.min_samples, "shipments": self.shipments, "unpredicted": self.unpredicted,
            **self.overall.as_dict(),
            "carriers": {code: tally.as_dict() for code, tally in sorted(self.carriers.items())},
            "statuses": {status: tally.as_dict() for status, tally in sorted(self.statuses.items())},
        }


def _predict(table: History, journey: Journey, stop: Stop, *, low: float, high: float, min_samples: int,
             business_days: bool) -> Optional[EtaRange]:
    """The range the assistant would have given right after `stop`, from `table` alone."""
    samples = samples_for(table, journey.carrier, stop.status, min_samples=min_samples)
    history = history_range(samples, low=low, high=high, min_samples=min_samples)
    if history is None:
        return None
    return eta_range(state_eta=None, feed_earliest=None, feed_latest=None, history=history,
                     last_scan_day=stop.day, today=stop.day, business_days=business_days)


def _without(table: History, journey: Journey, *, business_days: bool, statuses: Sequence[str]) -> History:
    """`table` less one journey's own samples (copies only the lists that change)."""
    trimmed = dict(table)
    for status, days in journey.samples(business_days=business_days, statuses=statuses):
        for key in ((journey.carrier, status), (ANY_CARRIER, status)):
            if trimmed[key] is table[key]:
                trimmed[key] = list(table[key])
            trimmed[key].remove(days)
    return trimmed


def replay(journeys: Iterable[Journey], *, low: float = LOW, high: float = HIGH, min_samples: int = MIN_SAMPLES,
           business_days: bool = BUSINESS_DAYS, split: str = "time",
           statuses: Sequence[str] = ESTIMATED_STATUSES) -> Backtest:
    """Predict each delivered parcel's range after each of its scans, from the other parcels, and score it.

    `split="time"`: a prediction learns only from parcels delivered before its scan, which is
    what the assistant knew at the time.  `split="loo"` (leave one out): from every other
    delivered parcel, whenever delivered.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    journeys = list(journeys)
    result = Backtest(low, high, split, business_days, min_samples, shipments=len(journeys))
    options = dict(low=low, high=high, min_samples=min_samples, business_days=business_days)
    wanted = frozenset(statuses)
    if split == "loo":
        full = history_samples(journeys, business_days=business_days, statuses=statuses)
        for journey in journeys:
            others = _without(full, journey, business_days=business_days, statuses=statuses)
            for stop in journey.stops:
                if stop.status in wanted:
                    _score(result, others, journey, stop, options)
        return result
    learnt = sorted(journeys, key=lambda j: j.delivered_at)
    points = sorted(((stop, journey) for journey in journeys for stop in journey.stops if stop.status in wanted),
                    key=lambda point: point[0].at)
    table: History = {}
    taken = 0
    for stop, journey in points:
        while taken < len(learnt) and learnt[taken].delivered_at < stop.at:
            done = learnt[taken]
            for status, days in done.samples(business_days=business_days, statuses=statuses):
                bisect.insort(table.setdefault((done.carrier, status), []), days)
                bisect.insort(table.setdefault((ANY_CARRIER, status), []), days)
            taken += 1
        _score(result, table, journey, stop, options)
    return result


def _score(result: Backtest, table: History, journey: Journey, stop: Stop, options: Dict[str, Any]) -> None:
    predicted = _predict(table, journey, stop, **options)
    if predicted is None:
        result.unpredicted += 1
    else:
        result.add(journey, stop, predicted)


def backtest(*, session: Session, settings: Settings, low: float = LOW, high: float = HIGH,
             min_samples: int = MIN_SAMPLES, business_days: bool = BUSINESS_DAYS, split: str = "time") -> Backtest:
    """`replay` on every delivered shipment in the store."""
    return replay(load_journeys(session=session, settings=settings), low=low, high=high, min_samples=min_samples,
                  business_days=business_days, split=split)
