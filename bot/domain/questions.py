"""The follow-up questions a shopper asks about an order, read from their words.

"Will it arrive by Friday?", "is it lost?", "so what do I do now?", "can my
husband collect it?", "do I pay duties?", "did my redirect go through?", "can
I have a refund instead?", "I don't want it anymore".  The intent classifier
says that a message asks about an order; these patterns say which questions it
asks, in the order it asks them, so that a long message gets every answer it
can.  Each pattern is specific to parcels and orders: "I lost my password" asks
none of them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from bot.domain.enums import StrEnum


class Topic(StrEnum):
    """One question about an order that has its own answer."""

    ARRIVE_BY = "arrive_by"  # will it arrive by a given day
    IS_LOST = "is_lost"
    NEXT_STEP = "next_step"  # what do I do now
    PICKUP = "pickup"  # where and until when, who may collect it
    CUSTOMS = "customs"  # why customs, and do I pay duties
    REDIRECT = "redirect"  # did my address change go through
    SWITCH = "switch"  # a refund instead of the replacement, or the reverse
    RETURN = "return"  # I don't want it anymore
    NOT_HOME = "not_home"  # I won't be in: deliver another day, or elsewhere
    NEIGHBOUR = "neighbour"  # can a neighbour or my husband take it in, sign for it
    WHY = "why"  # why was it sent back, why did it get lost, why is it held
    TIME = "time"  # what time will it come (or was it delivered)
    SAFE_PLACE = "safe_place"  # can they leave it in the garden, a safe place
    WAS_HOME = "was_home"  # "I was home all day": the shopper disputes a missed delivery


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = r"(?:mon(?:day)?|tue(?:s|sday)?|wed(?:nesday)?|thu(?:rs|rsday)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?)"
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_ORDINAL = r"(?:st|nd|rd|th)?"
_DAY_WORDS = (rf"(?:this\s+|next\s+|the\s+)?(?:{_WEEKDAY}|weekend)\b|tomorrow|tmrw|today|tonight|"
              rf"christmas|xmas|\d{{1,2}}{_ORDINAL}\s+(?:of\s+)?{_MONTH}|{_MONTH}\s+\d{{1,2}}{_ORDINAL}\b|"
              rf"the\s+\d{{1,2}}{_ORDINAL}\b")
#: "by Friday", "before the weekend", "in time for Christmas", "on the 5th": the day a shopper needs it by.
_BY_DAY = re.compile(rf"\b(by|before|until|till|til|in\s+time\s+for|on|for)\s+({_DAY_WORDS})|"
                     r"\b()(tomorrow|tmrw|today|tonight|this\s+weekend)\b", re.I)
#: Words that make a day phrase a question about the arrival, not about when it was ordered.
_ARRIVAL = re.compile(
    r"\b(arriv\w*|come|coming|comes|get\s+(?:here|there|it|to\s+me)|be\s+(?:here|there|delivered)|deliver\w*|"
    r"make\s+it|reach\w*|receive|have\s+it|show\s+up|turn\s+up|land|in\s+time)\b", re.I)

_PATTERNS: Tuple[Tuple[Topic, re.Pattern[str]], ...] = (
    (Topic.IS_LOST, re.compile(
        r"\b(?:is|has|was)\s+(?:it|my\s+(?:order|parcel|package)|the\s+(?:order|parcel|package))\s+"
        r"(?:been\s+|actually\s+|really\s+)?(?:lost|gone\s+missing|missing|gone)\b|"
        r"\bdid\s+(?:you|they|\w+)\s+(?:lose|loose)\b|\b(?:got|get|gotten|been|go|went)\s+lost\b|"
        r"\blost\s+in\s+(?:the\s+)?(?:post|mail|transit)\b|^\s*(?:so\s+)?(?:it'?s\s+)?lost\s*\?", re.I)),
    (Topic.NEXT_STEP, re.compile(
        r"\bwhat\s+(?:do|should|can|shall|must|am)\s+i\s+(?:supposed\s+to\s+)?do\b|\bwhat\s+now\b|\bnow\s+what\b|"
        r"\bwhat\s+(?:happens|comes|is\s+happening)\s+next\b|\bwhat\s+are\s+my\s+options\b|"
        r"\bwhat'?s\s+the\s+next\s+step|\bhow\s+do\s+i\s+get\s+it\s+(?:now|back)\b|\bwhat\s+do\s+we\s+do\b", re.I)),
    (Topic.PICKUP, re.compile(
        r"\bpick\s*-?\s*(?:it\s+)?up\b|\bpickup\b|\bcollect\w*\b|\bparcel\s*(?:shop|locker|point)\b|"
        r"\bpost\s*office\b|\bhow\s+long\s+(?:will|do|does|can|is)\s+(?:they|it|you)\s+(?:keep|hold|stay|be\s+kept)",
        re.I)),
    (Topic.CUSTOMS, re.compile(
        r"\bcustoms\b|\bcustom\s+(?:check|clearance|fees?|charges?|duty|duties|office|hold)\b|\bdut(?:y|ies)\b|\bimport\s+(?:tax|taxes|fee|fees|charge|charges|vat)\b|"
        r"\bdo\s+i\s+(?:have\s+to\s+|need\s+to\s+)?pay\s+(?:anything|extra|any|tax|taxes|fees?|vat|more)\b|"
        r"\bextra\s+(?:fees?|charges?|costs?)\b", re.I)),
    (Topic.REDIRECT, re.compile(
        r"\b(?:did|has|have|is|was)\s+(?:my\s+|the\s+)?(?:redirect\w*|address\s+change|change\s+of\s+address)\b|"
        r"\bredirect\w*\s+(?:go|gone|went|work\w*|through|done|happen\w*|ok)\b|"
        r"\bdid\s+(?:it|that|the\s+change)\s+(?:go\s+through|work)\b|"
        r"\b(?:address|it)\s+(?:been\s+)?(?:changed|updated|redirected)\s*\?", re.I)),
    (Topic.SWITCH, re.compile(
        r"\b(?:refund|replacement|new\s+one|money\s+back)\s+instead\b|\binstead\s+of\s+(?:the\s+|a\s+)?"
        r"(?:refund|replacement)\b|\b(?:rather|prefer)\s+(?:have\s+|get\s+|take\s+)?(?:a\s+|the\s+|my\s+)?"
        r"(?:refund|replacement|money)\b|\b(?:change|switch|swap)\s+(?:it\s+|that\s+|this\s+|my\s+\w+\s+)?"
        r"(?:to|for|into)\s+(?:a\s+)?(?:refund|replacement)\b", re.I)),
    (Topic.NOT_HOME, re.compile(
        r"\b(?:i'?m|i\s+am|i\s+will|i'?ll|we'?re|we\s+are|we'?ll|nobody'?s|no\s*one'?s|nobody\s+will\s+be|"
        r"no\s*one\s+will\s+be)\s+(?:not\s+|be\s+)?(?:not\s+)?(?:be\s+)?(?:home|in|there|around|away|out)\b"
        r"(?<!\bi'm in)(?<!\bi am in)|\bnot\s+(?:be\s+)?(?:at\s+)?home\b|\bwon'?t\s+be\s+(?:home|in|there|around)\b|"
        r"\b(?:deliver|bring|send)\s+it\s+(?:tomorrow|another\s+day|later|on\s+\w+day)\b|"
        r"\b(?:reschedule|redeliver\w*|re-deliver\w*)\b|"
        r"\bif\s+(?:they|the\s+driver|the\s+courier)\s+miss(?:es)?\s+(?:me|us)\b|"
        r"\b(?:what\s+)?if\s+(?:i'?m|i\s+am|we'?re|we\s+are|nobody'?s|nobody\s+is|no\s*one\s+is)\s+(?:not\s+)?"
        r"(?:home|in|out|there|around|away)\b", re.I)),
    (Topic.WAS_HOME, re.compile(
        r"\bi\s+was\s+(?:at\s+)?home\b|\bi\s+was\s+(?:in|there|here)\s+all\s+day\b|\bwe\s+were\s+(?:at\s+)?home\b|"
        r"\b(?:nobody|no\s*one|they|the\s+driver|the\s+courier)\s+(?:never\s+)?(?:knocked|rang|came|showed\s+up)\b|"
        r"\bdidn'?t\s+(?:even\s+)?(?:knock|ring|try|come)\b", re.I)),
    (Topic.NEIGHBOUR, re.compile(
        r"\b(?:neighbou?r|husband|wife|partner|someone\s+else|somebody\s+else|flatmate|roommate|concierge|"
        r"reception|doorman)\b.{0,40}\b(?:take|sign|accept|receive|keep|hold)\b|"
        r"\b(?:take|sign|accept|receive)\b.{0,25}\b(?:neighbou?r|husband|wife|partner|someone\s+else|"
        r"somebody\s+else)\b|\bsign\s+for\s+it\b|\bleave\s+it\s+with\b", re.I)),
    (Topic.SAFE_PLACE, re.compile(
        r"\bleave\s+it\s+(?:at|in|on|outside|by|behind|under|next\s+to)\b|\bsafe\s*place\b|\bdrop\s+it\s+"
        r"(?:at|in|on|outside|behind)\b", re.I)),
    (Topic.WHY, re.compile(
        r"\bwhy\b.{0,40}\b(?:sent\s+back|returned|return(?:ed)?\s+to|lost|lose|loose|held|stuck|on\s+hold|damaged|"
        r"come\s+back|came\s+back|bounced)\b|\bwhat\s+happened\s+to\s+(?:it|my\s+(?:order|parcel|package))\b|"
        r"\bhow\s+did\s+(?:it|you|they)\s+(?:get\s+)?(?:lose|lost|damage)", re.I)),
    (Topic.TIME, re.compile(
        r"\bwhat\s+time\b|\bwhich\s+time\b|\btime\s*(?:slot|window|frame)\b|\bmorning\s+or\s+"
        r"(?:afternoon|evening)\b|\bwhat\s+hours?\b|\bhow\s+late\s+(?:today|tonight)\b|\bby\s+\d{1,2}\s*(?:am|pm)\b",
        re.I)),
    (Topic.RETURN, re.compile(
        r"\b(?:don'?t|dont|do\s+not|no\s+longer)\s+(?:want|need)\s+(?:it|this|them|the\s+(?:order|parcel|item|items|"
        r"package|thing)|my\s+(?:order|parcel|package))(?:\s+any\s*more|\s+anymore)?\b(?!\s+(?:to|changed|refund|"
        r"replacement))|\bchanged\s+my\s+mind\b(?!.*\b(?:refund|replacement)\b)|"
        r"\b(?:return|send\s+back)\s+(?:it|this|the\s+(?:order|parcel|item|items)|my\s+(?:order|parcel))\b|"
        r"\bsend\s+it\s+back\b|\bcancel\s+(?:my|the|this)\s+(?:order|replacement|refund)\b", re.I)),
)


@dataclass(frozen=True)
class Question:
    """One question found in a message; `by` is the last acceptable day for an arrive-by question."""

    topic: Topic
    by: Optional[dt.date] = None
    day_words: str = ""  # the shopper's words for that day ("by Friday", "before the weekend")
    for_someone_else: bool = False
    #: What a switch asks for: "refund" or "reship"; empty when the message names neither, or both.
    wants: str = ""


#: "can my husband collect it?": someone else picks it up.
_SOMEONE_ELSE = re.compile(
    r"\b(?:my\s+)?(?:husband|wife|partner|boyfriend|girlfriend|son|daughter|mum|mom|mother|dad|father|neighbou?r|"
    r"friend|flatmate|roommate|colleague|brother|sister|someone(?:\s+else)?|somebody(?:\s+else)?|"
    r"anyone(?:\s+else)?|another\s+person)\b", re.I)


def questions(text: str, today: dt.date) -> List[Question]:
    """The follow-up questions `text` asks, in the order it asks them (each once)."""
    if not text or text.startswith("/"):
        return []
    found: List[Tuple[int, Question]] = []
    # "it's for Sunday, will it arrive before Saturday?": the deadline word wins over "on" and "for".
    days = sorted(_BY_DAY.finditer(text), key=lambda m: (m.group(1) or "").lower() in ("", "on", "for"))
    by_day = days[0] if days else None
    if by_day and _ARRIVAL.search(text):
        word, day_words = (by_day.group(1), by_day.group(2)) if by_day.group(2) else ("", by_day.group(4))
        when = _day(day_words, today)
        if when is not None:
            before = word.lower() == "before"
            found.append((by_day.start(), Question(Topic.ARRIVE_BY, by=when - dt.timedelta(days=1) if before else when,
                                                   day_words=_clean(f"{word or 'by'} {day_words}"))))
    for topic, pattern in _PATTERNS:
        match = pattern.search(text)
        if match is None:
            continue
        if topic == Topic.PICKUP:
            found.append((match.start(), Question(topic, for_someone_else=bool(_SOMEONE_ELSE.search(text)))))
        elif topic == Topic.SWITCH:
            found.append((match.start(), Question(topic, wants=_wanted(match.group(0)))))
        else:
            found.append((match.start(), Question(topic)))
    asked = {question.topic for _, question in found}
    # "I'm not home, deliver it tomorrow" asks for another day, not whether it comes by then;
    # "why did it get lost" already takes the loss as given.
    dropped = ({Topic.ARRIVE_BY} if Topic.NOT_HOME in asked else set()) | (
        {Topic.IS_LOST} if Topic.WHY in asked else set())
    return [question for _, question in sorted(found, key=lambda pair: pair[0]) if question.topic not in dropped]


_REFUND = re.compile(r"\b(?:refund|money)", re.I)
_RESHIP = re.compile(r"\b(?:replacement|new\s+one|reship|resend)", re.I)


def _wanted(words: str) -> str:
    """"refund instead" -> refund; "instead of the refund" -> reship."""
    instead_of = re.search(r"instead\s+of", words, re.I)
    head = words[:instead_of.start()] if instead_of else words
    refund, reship = bool(_REFUND.search(head)), bool(_RESHIP.search(head))
    if instead_of and not (refund or reship):
        tail = words[instead_of.end():]
        refund, reship = bool(_RESHIP.search(tail)), bool(_REFUND.search(tail))
    return "refund" if refund and not reship else "reship" if reship and not refund else ""


def topics(text: str, today: dt.date) -> List[Topic]:
    return [question.topic for question in questions(text, today)]


def _clean(words: str) -> str:
    """The shopper's day phrase, tidied for an answer: "before Saturday", "in time for Christmas"."""
    names = {*_WEEKDAYS, "christmas"}
    return " ".join(word.capitalize() if word.lower() in names else word.lower() for word in words.split())


def _day(words: str, today: dt.date) -> Optional[dt.date]:
    """The date meant by "Friday", "next Friday", "the weekend", "tomorrow", "5 Dec", "the 5th"."""
    words = " ".join(words.lower().split())
    if words in ("today", "tonight"):
        return today
    if words in ("tomorrow", "tmrw"):
        return today + dt.timedelta(days=1)
    if words in ("christmas", "xmas"):
        christmas = dt.date(today.year, 12, 24)  # the presents are given on the eve in much of Europe
        return christmas if christmas >= today else dt.date(today.year + 1, 12, 24)
    next_week = words.startswith("next ")
    bare = re.sub(r"^(?:this|next|the)\s+", "", words)
    if bare == "weekend":
        return _next_weekday(today, 5) + (dt.timedelta(days=7) if next_week else dt.timedelta())
    for index, name in enumerate(_WEEKDAYS):
        if re.fullmatch(r"[a-z]+", bare) and len(bare) >= 3 and name.startswith(bare[:3]):
            when = _next_weekday(today, index)
            # "next Friday" said on a Monday is the Friday after this week's.
            same_week = when.isocalendar()[:2] == today.isocalendar()[:2]
            return when + dt.timedelta(days=7) if next_week and same_week else when
    number = re.search(r"\d{1,2}", bare)
    if number is None:
        return None
    day_of_month = int(number.group())
    month_name = re.search(r"[a-z]{3,}", re.sub(r"\d+(?:st|nd|rd|th)?|of", " ", bare))
    month = today.month
    if month_name is not None and month_name.group()[:3] in _MONTHS:
        month = _MONTHS.index(month_name.group()[:3]) + 1
    for year in (today.year, today.year + 1):
        for candidate_month in ([month] if month_name is not None else [month, month % 12 + 1]):
            candidate_year = year + (1 if month_name is None and candidate_month < month else 0)
            try:
                when = dt.date(candidate_year, candidate_month, day_of_month)
            except ValueError:
                continue
            if when >= today:
                return when
    return None


def _next_weekday(today: dt.date, weekday: int) -> dt.date:
    return today + dt.timedelta(days=(weekday - today.weekday()) % 7)


#: Why a shopper wants a refund or a replacement, in their words (claim reasons, bot.domain.enums.ClaimReason).
_CLAIM_REASONS: Tuple[Tuple[str, re.Pattern[str]], ...] = (
    ("damaged", re.compile(r"\b(?:damaged|broken|smashed|crushed|dented|torn|ripped|wet|leak\w*|cracked|"
                           r"shattered|destroyed|arrived\s+(?:in\s+pieces|broken))\b", re.I)),
    ("not_received", re.compile(
        r"\bnever\s+(?:arrived|came|come|got\s+(?:it|here)|received|showed\s+up|turned\s+up|delivered)|"
        r"\b(?:didn'?t|did\s+not|haven'?t|have\s+not|hasn'?t|has\s+not|never)\s+(?:get|got|arrive\w*|receive\w*|"
        r"come|came|turn\w*\s+up|show\w*\s+up)\b|\bnot\s+(?:received|arrived|here|there)\b|"
        r"\b(?:isn'?t|is\s+not|wasn'?t|was\s+not)\s+(?:here|there)\b|\bnowhere\s+to\s+be\s+found\b|"
        r"\b(?:stolen|missing)\b", re.I)),
    ("lost", re.compile(r"\blost\b", re.I)),
    ("late", re.compile(r"\b(?:late|delayed|taking\s+(?:forever|ages|too\s+long)|overdue)\b", re.I)),
)


def claim_reason_in(text: str) -> Optional[str]:
    """The claim reason a message gives ("it arrived broken" -> damaged), or None."""
    if not text or text.startswith("/"):
        return None
    for reason, pattern in _CLAIM_REASONS:
        if pattern.search(text):
            return reason
    return None


#: "yes I checked, it's not there", "asked the neighbours": the checks after a delivery scan are done.
_CHECKED = re.compile(r"\b(?:checked|looked|searched|asked\s+(?:the\s+|my\s+|all\s+)?neighbou?rs|nowhere|"
                      r"everywhere|not\s+with\s+(?:the\s+)?neighbou?rs|no\s*one\s+has\s+it|nobody\s+has\s+it)\b",
                      re.I)
#: "not yet", "I'll look", "haven't checked": the shopper looks first.
_NOT_CHECKED = re.compile(r"\b(?:not\s+yet|i'?ll\s+(?:look|check|ask)|haven'?t|have\s+not|didn'?t\s+(?:check|look)|"
                          r"did\s+not\s+(?:check|look)|will\s+(?:look|check|ask)|let\s+me\s+(?:look|check|ask))\b",
                          re.I)


def says_checked(text: str) -> Optional[bool]:
    """True when the message says the neighbours and safe places were checked, False when not yet, else None."""
    if not text or text.startswith("/"):
        return None
    if _NOT_CHECKED.search(text):
        return False
    if _CHECKED.search(text):
        return True
    return None


_CHOICE_REFUND = re.compile(r"\b(?:refund|money|reimburse|pay(?:ment)?\s+back|cash)", re.I)
_CHOICE_RESHIP = re.compile(r"\b(?:reship|replace|replacement|new\s+one|another\s+one|send\s+(?:it\s+)?again|resend|"
                            r"re-send)", re.I)


def resolution_in(text: str) -> Optional[str]:
    """"refund" or "reship" when a message asks for exactly one of them, else None ("refund or a new one")."""
    refund, reship = bool(_CHOICE_REFUND.search(text or "")), bool(_CHOICE_RESHIP.search(text or ""))
    if refund != reship:
        return "refund" if refund else "reship"
    return None
