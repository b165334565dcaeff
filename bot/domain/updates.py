"""Which changes in a parcel's journey are worth a message, and when one may be sent.

Pure rules over a :class:`~bot.domain.tracking.ShipmentState`, so they can be
read and tested without a database or a channel:

* :func:`notice_for` names the one change a subscribed shopper should hear
  about now, with a key that identifies that change (the same change gives the
  same key, so it is told once however often the carrier repeats it);
* :func:`parse_quiet_hours` and :func:`release_time` keep messages out of the
  night in the shop's time zone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple
from zoneinfo import ZoneInfo

from bot.domain.enums import NoticeKind, Status
from bot.domain.tracking import ShipmentState

#: Kinds that describe the parcel's status: never told twice in a row for one parcel.
STATUS_KINDS = frozenset({NoticeKind.EXCEPTION, NoticeKind.FAILED_ATTEMPT, NoticeKind.PICKUP,
                          NoticeKind.OUT_FOR_DELIVERY, NoticeKind.LOST, NoticeKind.DELIVERED})


@dataclass(frozen=True)
class Notice:
    """One change worth a message: its kind, the key that identifies the change, and its facts."""

    kind: NoticeKind
    key: str
    facts: Dict[str, Any] = field(default_factory=dict)


def _moment(state: ShipmentState) -> str:
    scan = state.status_scan or state.last_scan
    return scan.occurred_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M") if scan else "none"


def notice_for(state: ShipmentState, *, notify_delivered: bool = False) -> Optional[Notice]:
    """The change in `state` worth telling a subscribed shopper, or None.

    The status the carrier reports comes first (a parcel out for delivery is
    news even if it is also late); a stalled parcel is found from the silence
    itself, so it is keyed by its last scan and told once per silence; a new
    estimate after the promised date (for a parcel late already, too) is keyed
    by that date, so each further slip is told again.
    """
    status, moment = state.status, _moment(state)
    facts: Dict[str, Any] = {"status": str(status)}
    if state.delay_reason:
        facts["reason"] = str(state.delay_reason)
    if state.status_scan is not None and state.status_scan.location:
        facts["location"] = state.status_scan.location
    if state.status_scan is not None and state.status_scan.text:
        facts["said"] = state.status_scan.text[:200]  # the carrier's own words, for a reason with no label
    if state.presumed_lost or status == Status.LOST:
        return Notice(NoticeKind.LOST, "lost", facts)
    if status == Status.DELIVERED:
        return Notice(NoticeKind.DELIVERED, "delivered", facts) if notify_delivered else None
    if status == Status.EXCEPTION:
        return Notice(NoticeKind.EXCEPTION, f"exception:{moment}", facts)
    if status == Status.FAILED_ATTEMPT:
        return Notice(NoticeKind.FAILED_ATTEMPT, f"failed_attempt:{moment}", facts)
    if status == Status.AVAILABLE_FOR_PICKUP:
        return Notice(NoticeKind.PICKUP, f"pickup:{moment}", facts)
    if status == Status.OUT_FOR_DELIVERY:
        return Notice(NoticeKind.OUT_FOR_DELIVERY, f"out_for_delivery:{moment}", facts)
    if state.stalled and state.last_scan is not None:
        stamp = state.last_scan.occurred_at.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M")
        return Notice(NoticeKind.STALLED, f"stalled:{stamp}", {**facts, "quiet_days": state.business_days_without_scan})
    if state.eta is not None and state.promised_date is not None and state.eta > state.promised_date:
        return Notice(NoticeKind.LATE_ESTIMATE, f"eta:{state.eta.isoformat()}",
                      {**facts, "eta": state.eta.isoformat(), "promised": state.promised_date.isoformat()})
    return None


_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_quiet_hours(text: str) -> Optional[Tuple[dt.time, dt.time]]:
    """``"21:00-08:00"`` -> (start, end) in local time; an empty text means no quiet hours.

    Raises:
        ValueError: naming what is wrong with the text.
    """
    if not text or not text.strip():
        return None
    match = _SPAN.match(text)
    if not match:
        raise ValueError("write it as HH:MM-HH:MM, e.g. 21:00-08:00 (empty: no quiet hours)")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError("hours run 00-23 and minutes 00-59, e.g. 21:00-08:00")
    start, end = dt.time(h1, m1), dt.time(h2, m2)
    if start == end:
        raise ValueError("the start and the end are the same; leave it empty for no quiet hours")
    return start, end


def in_quiet_hours(local: dt.time, span: Tuple[dt.time, dt.time]) -> bool:
    start, end = span
    if start < end:
        return start <= local < end
    return local >= start or local < end  # across midnight


def release_time(now: dt.datetime, quiet: Optional[Tuple[dt.time, dt.time]], tz: ZoneInfo) -> dt.datetime:
    """`now`, or when the quiet hours around it end (aware UTC)."""
    if quiet is None:
        return now
    local = now.astimezone(tz)
    if not in_quiet_hours(local.time(), quiet):
        return now
    end = quiet[1]
    release_day = local.date() if local.time() < end else local.date() + dt.timedelta(days=1)
    release = dt.datetime.combine(release_day, end, tzinfo=tz)
    return release.astimezone(dt.timezone.utc)


def shop_day_start(now: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """Midnight of `now`'s day in the shop's zone, as aware UTC (the daily cap counts from it)."""
    local = now.astimezone(tz)
    return dt.datetime.combine(local.date(), dt.time(0, 0), tzinfo=tz).astimezone(dt.timezone.utc)


# --- what a message says about updates --------------------------------------------------------

#: Words for the messages themselves ("stop sending me these" names them by pointing).
_UPDATE_WORDS = (r"updates?|notifications?|notifs?|messages?|msgs?|texts?|texting|alerts?|emails?|these|them|"
                 r"nachrichten|benachrichtigung\w*|mensajes|avisos|actualizaciones|notificaciones|alertes")
#: Saying no to them, in the words shoppers use (English first; a few German, French and Spanish).
_DECLINE = re.compile(
    r"\b(?:stop|quit|mute|cancel|end|pause|unsubscribe|opt[- ]?out|turn\s+(?:them\s+|it\s+)?off|switch\s+off)\b"
    r"|\bno\s+(?:more\s+)?(?:" + _UPDATE_WORDS + r")\b|\bdon'?t\s+(?:want|need|send|message|text)\b"
    r"|\bdo\s+not\s+(?:want|need|send|message|text)\b|\bnot\s+interested\b|\benough\b"
    r"|\bkeine?\b|\bnicht\b|\bpas\s+de\b|\barr[eê]te[rz]?\b|\bplus\s+de\b|\bno\s+m[aá]s\b|\bdeja\s+de\b|\bsin\b",
    re.I)
_ABOUT_UPDATES = re.compile(r"\b(?:" + _UPDATE_WORDS + r"|posted|informed|loop|ping|notify|au\s+courant)\b", re.I)
#: Asking for them.
_ASK = re.compile(
    r"\bkeep\s+me\s+(?:posted|updated|informed|in\s+the\s+loop)\b|\blet\s+me\s+know\s+(?:when|if|as\s+soon|once)\b"
    r"|\bnotify\s+me\b"
    r"|\b(?:message|text|ping|tell|alert|update)\s+me\s+(?:when|if|as\s+soon)\b|\bsend\s+me\s+(?:the\s+)?updates\b"
    r"|\b(?:turn|switch|put)\s+(?:the\s+)?(?:updates|notifications|them|it)\s+(?:back\s+)?on\b|\bupdates?\s+(?:back\s+)?on\b"
    r"|\b(?:start|resume|restart)\s+(?:the\s+)?updates\b|\btenez[- ]moi\s+au\s+courant\b|\bhalten\s+sie\s+mich\b"
    r"|\bmantenme\s+informad[oa]\b|\b(?:want|like|need|get)\s+(?:the\s+)?(?:updates|notifications)\b"
    r"|\b(?:updates|notifications)\s+(?:about|on|for)\s+(?:my|this|the|order|ws|#)",
    re.I)


def wants_updates(text: str) -> Optional[bool]:
    """True when `text` asks for updates, False when it refuses or stops them, None when it says neither.

    "keine Updates mehr bitte", "actually no, please stop sending me these" and
    "no updates please" refuse, whatever the classifier made of them; a refusal
    wins over a request in the same message ("I don't want you to keep me posted").
    """
    if _DECLINE.search(text) and _ABOUT_UPDATES.search(text):
        return False
    if _ASK.search(text):
        return True
    return None
