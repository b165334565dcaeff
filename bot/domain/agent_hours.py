"""When people answer: the shop's agent hours, as the shopper is told them.

`AGENT_HOURS` is written the way a shop would put it on its contact page:
``mon-fri 09:00-17:30; sat 10:00-14:00`` (days, then a time range, in the shop's
time zone; several ranges separated by ``;``), or ``always``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import FrozenSet, Optional, Set, Tuple

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(?P<days>[a-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


@dataclass(frozen=True)
class Span:
    days: FrozenSet[int]  # 0 = Monday
    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class Hours:
    spans: Tuple[Span, ...]
    always: bool = False

    def is_open(self, local: dt.datetime) -> bool:
        """Whether `local` (in the shop's zone) falls within agent hours."""
        if self.always:
            return True
        clock = local.time().replace(tzinfo=None)
        return any(local.weekday() in s.days and s.start <= clock < s.end for s in self.spans)

    def closes_at(self, local: dt.datetime) -> Optional[dt.datetime]:
        """When the span `local` falls in ends (None when closed, or always open)."""
        if self.always:
            return None
        clock = local.time().replace(tzinfo=None)
        ends = [s.end for s in self.spans if local.weekday() in s.days and s.start <= clock < s.end]
        if not ends:
            return None
        end = max(ends)
        if end == dt.time.max:
            return dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0, 0), tzinfo=local.tzinfo)
        return dt.datetime.combine(local.date(), end, tzinfo=local.tzinfo)

    def next_opening(self, local: dt.datetime) -> Optional[dt.datetime]:
        """The next moment after `local` at which agent hours begin (None when always open)."""
        if self.always:
            return None
        best: Optional[dt.datetime] = None
        for offset in range(0, 8):
            day = (local + dt.timedelta(days=offset)).date()
            for span in self.spans:
                if day.weekday() not in span.days:
                    continue
                start = dt.datetime.combine(day, span.start, tzinfo=local.tzinfo)
                if start > local and (best is None or start < best):
                    best = start
            if best is not None:
                return best
        return best


def _day(name: str) -> int:
    try:
        return DAYS.index(name.strip()[:3])
    except ValueError:
        raise ValueError(f"{name.strip()!r} is not a day (use mon, tue, ... sun)") from None


def _days(text: str) -> FrozenSet[int]:
    found: Set[int] = set()
    for part in text.split(","):
        if "-" in part:
            first, last = (_day(p) for p in part.split("-", 1))
            span = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
            found.update(span)
        else:
            found.add(_day(part))
    return frozenset(found)


def _time(text: str) -> dt.time:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours == 24 and minutes == 0:
        return dt.time.max
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"{text} is not a time of day")
    return dt.time(hours, minutes)


def parse_hours(text: str) -> Hours:
    """Read AGENT_HOURS.

    Raises:
        ValueError: saying which part could not be read.
    """
    cleaned = text.strip().lower()
    if cleaned in ("always", "24/7"):
        return Hours(spans=(), always=True)
    spans = []
    for part in filter(None, (p.strip() for p in cleaned.split(";"))):
        match = _SPAN.match(part)
        if not match:
            raise ValueError(f"{part!r} is not like 'mon-fri 09:00-17:00'")
        start, end = _time(match["start"]), _time(match["end"])
        if end <= start:
            raise ValueError(f"{part!r} ends before it starts")
        spans.append(Span(days=_days(match["days"]), start=start, end=end))
    if not spans:
        raise ValueError("give at least one range such as 'mon-fri 09:00-17:00', or 'always'")
    return Hours(spans=tuple(spans))
