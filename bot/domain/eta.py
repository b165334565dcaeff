"""Delivery estimates as a range of days, and how the assistant words a day.

A carrier's single date is a guess that is often wrong by a day or two; a
range the shop has measured is honest about that.  The range comes, in this
order, from the carrier feed's own earliest and latest day, from this shop's
history (how many days parcels of the same carrier took from a scan like the
parcel's last one to their delivery), or from the carrier's single date.  A
day already gone is never part of an estimate: a range is clipped to start
today, and one wholly in the past is no estimate at all.

Pure functions over plain values (stdlib and `bot.domain` only), so the rules
can be tested without a store; `bot.services.eta` feeds them from it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from bot.domain.carriers import FINAL_STATUSES
from bot.domain.enums import Status
from bot.domain.tracking import add_business_days, business_days_between

#: Where a range comes from (`EtaRange.source`).
CARRIER = "carrier"  # the carrier feed's own earliest and latest day
HISTORY = "history"  # this shop's deliveries with the same carrier, from the same kind of scan
CARRIER_DATE = "carrier_date"  # the carrier's single date, as a one-day range

#: The percentiles a history range spans: about four deliveries in five fall inside it.
LOW, HIGH = 0.10, 0.90
#: Fewer deliveries than this to learn from give no history range (the percentiles would be noise).
MIN_SAMPLES = 10

_RELATIVE = ("today", "tomorrow", "yesterday")


def day(value: dt.date, today: Optional[dt.date] = None) -> str:
    """A day as the shopper reads it: "today", "tomorrow", "yesterday" (given `today`), else "Fri 20 Nov"."""
    if today is not None:
        if value == today:
            return "today"
        if value == today + dt.timedelta(days=1):
            return "tomorrow"
        if value == today - dt.timedelta(days=1):
            return "yesterday"
    return f"{value:%a} {value.day} {value:%b}"


@dataclass(frozen=True)
class EtaRange:
    """The days a parcel should arrive between, both included; `source` is one of the three above."""

    earliest: dt.date
    latest: dt.date
    source: str

    @property
    def days(self) -> int:
        """How many calendar days the range spans, both ends included (a one-day range is 1)."""
        return (self.latest - self.earliest).days + 1


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-quantile (0 to 1) of `values`, interpolating linearly between the two nearest ranks.

    The usual definition (numpy's default, `statistics.quantiles(method="inclusive")`): with the
    values sorted, the quantile sits at position `q * (n - 1)`, so 0 is the smallest value, 1 the
    largest and 0.5 the median.  For [1, 2, 3, 4, 5], q=0.1 is at position 0.4: 1 + 0.4 * (2 - 1) = 1.4.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be between 0 and 1, not {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def history_range(samples: Sequence[float], *, low: float = LOW, high: float = HIGH,
                  min_samples: int = MIN_SAMPLES) -> Optional[Tuple[float, float]]:
    """The `low` and `high` percentiles of days-to-delivery, or None with fewer than `min_samples` samples."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, not {low} and {high}")
    if len(samples) < max(1, min_samples):
        return None
    return percentile(samples, low), percentile(samples, high)


def days_between(start: dt.date, end: dt.date, *, business_days: bool) -> int:
    """Days from `start` to `end`: weekdays after `start` up to `end`, or calendar days (0 when end <= start)."""
    if business_days:
        return business_days_between(start, end)
    return max(0, (end - start).days)


def days_after(start: dt.date, count: int, *, business_days: bool) -> dt.date:
    """The day `count` days (weekdays, or calendar days) after `start`."""
    return add_business_days(start, count) if business_days else start + dt.timedelta(days=count)


def _clipped(earliest: dt.date, latest: dt.date, source: str, today: dt.date) -> Optional[EtaRange]:
    """The range from today on, or None when it has wholly gone by."""
    earliest, latest = min(earliest, latest), max(earliest, latest)
    if latest < today:
        return None
    return EtaRange(max(earliest, today), latest, source)


def eta_range(*, state_eta: Optional[dt.date], feed_earliest: Optional[dt.date], feed_latest: Optional[dt.date],
              history: Optional[Tuple[float, float]], last_scan_day: Optional[dt.date], today: dt.date,
              business_days: bool = True, status: Optional[str] = None) -> Optional[EtaRange]:
    """When the parcel should arrive, as a range from today on; None when nothing still to come is known.

    Sources, best first:

    1. the feed's earliest and latest day (both given): the carrier's own range;
    2. the history's percentiles (in days, see `days_between`) counted from the day of the last
       scan, the low one rounded down and the high one up; stretched to take in the carrier's
       single date when that is still to come, so the answer never contradicts the date on the
       carrier's tracking page that it links to;
    3. the carrier's single date (`state_eta`, else a feed date given alone) as a one-day range.

    A range whose earliest day has gone by starts today; a source wholly in the past is passed
    over for the next, and when none is left the answer is None, so the caller says the estimate
    has passed instead of giving it.  A delivered, lost or returned parcel (`status`) has none.
    """
    if status is not None and status in FINAL_STATUSES:
        return None
    found = _from_sources(state_eta=state_eta, feed_earliest=feed_earliest, feed_latest=feed_latest,
                          history=history, last_scan_day=last_scan_day, today=today, business_days=business_days)
    if found is not None and status == Status.FAILED_ATTEMPT and last_scan_day == today and found.earliest <= today:
        # Missed today: the carrier tries again from the next working day, never later today.
        retry = days_after(today, 1, business_days=True)
        found = EtaRange(retry, max(found.latest, retry), found.source)
    return found


def _from_sources(*, state_eta: Optional[dt.date], feed_earliest: Optional[dt.date], feed_latest: Optional[dt.date],
                  history: Optional[Tuple[float, float]], last_scan_day: Optional[dt.date], today: dt.date,
                  business_days: bool) -> Optional[EtaRange]:
    if feed_earliest is not None and feed_latest is not None:
        found = _clipped(feed_earliest, feed_latest, CARRIER, today)
        if found is not None:
            return found
    single = state_eta or feed_earliest or feed_latest
    if history is not None and last_scan_day is not None:
        low, high = history
        found = _clipped(days_after(last_scan_day, math.floor(low), business_days=business_days),
                         days_after(last_scan_day, math.ceil(high), business_days=business_days), HISTORY, today)
        if found is not None:
            if single is not None and single >= today:
                found = EtaRange(min(found.earliest, single), max(found.latest, single), HISTORY)
            return found
    if single is not None:
        return _clipped(single, single, CARRIER_DATE, today)
    return None


def describe_range(r: EtaRange, today: dt.date, *, on: bool = True) -> str:
    """The range in a few words, to follow a verb: "between Tue 3 and Thu 5 Dec", "between today and Fri 4 Dec".

    A one-day range is "today", "tomorrow" or "on Thu 5 Dec" ("Thu 5 Dec" with `on=False`, after a
    label such as "Expected delivery:").  Days are written as `day` writes them.
    """
    if r.earliest == r.latest:
        when = day(r.earliest, today)
        return f"on {when}" if on and when not in _RELATIVE else when
    first, last = day(r.earliest, today), day(r.latest, today)
    same_month = (r.earliest.year, r.earliest.month) == (r.latest.year, r.latest.month)
    if same_month and first not in _RELATIVE and last not in _RELATIVE:
        first = f"{r.earliest:%a} {r.earliest.day}"  # "between Tue 3 and Thu 5 Dec": the month once
    return f"between {first} and {last}"


# --- history: how long this shop's delivered parcels took -----------------------------------------


class Stop(NamedTuple):
    """A scan on a delivered parcel's way, before its delivery."""

    status: str
    day: dt.date  # in the shop's zone
    at: dt.datetime


@dataclass(frozen=True)
class Journey:
    """One delivered parcel: its carrier, its scans before the delivery, and the delivery."""

    key: int
    carrier: str
    stops: Tuple[Stop, ...]
    delivered_day: dt.date
    delivered_at: dt.datetime

    def samples(self, *, business_days: bool, statuses: Optional[Iterable[str]] = None
                ) -> List[Tuple[str, float]]:
        """(status, days from that scan to the delivery) for each scan, in `statuses` when given."""
        wanted = None if statuses is None else frozenset(statuses)
        return [(stop.status, float(days_between(stop.day, self.delivered_day, business_days=business_days)))
                for stop in self.stops if wanted is None or stop.status in wanted]


#: The key of the pool of every carrier's samples for one status (the fallback for a carrier with too few).
ANY_CARRIER = "*"

History = Dict[Tuple[str, str], List[float]]


def history_samples(journeys: Iterable[Journey], *, business_days: bool,
                    statuses: Optional[Iterable[str]] = None) -> History:
    """Days-to-delivery samples, sorted, per (carrier, status) and per (ANY_CARRIER, status)."""
    wanted = None if statuses is None else tuple(statuses)
    table: History = {}
    for journey in journeys:
        for status, days in journey.samples(business_days=business_days, statuses=wanted):
            table.setdefault((journey.carrier, status), []).append(days)
            table.setdefault((ANY_CARRIER, status), []).append(days)
    for values in table.values():
        values.sort()
    return table


def samples_for(table: History, carrier: str, status: str, *, min_samples: int = MIN_SAMPLES) -> Sequence[float]:
    """The carrier's own samples for the status when it has enough, else every carrier's."""
    own = table.get((carrier, status), [])
    return own if len(own) >= min_samples else table.get((ANY_CARRIER, status), [])
