"""Find order details in what a shopper typed.

Shoppers type details in every shape ("where's 1043, jane@x.com", "it's ws 1043",
"#WS-1043", "Order no. 1043 status?", "postcode 1015cw", a tracking number copied
with its spaces).  Slots are filled from these deterministic patterns rather
than only from the NLU model's entities, so a number is never half-read, and
whatever intent the model picked, the details in a message are the same.

Three strengths of reading an order number:

- **strict** (always): the shop's prefix (`WS-1043`, `ws1043`, `ws 1043`,
  `#WS-1043`), a hash (`#1043`), or a number after the word "order" in any of
  the shop's languages (`order 1043`, `Order no. 1043`, `commande 1043`,
  `pedido nº 1043`, `Bestellnummer 1043`).  Never a phone number, a price, a
  date, a postcode or a street number.
- **bare_ok** (the order number was asked for) and **loose** (the message is a
  question about an order): also a standalone number of 3-10 digits, as long as
  nothing around it says it is something else (a currency or unit next to it,
  a postcode word before it, a phone-number or date shape, a street name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, List, Optional, Pattern, Tuple

Span = Tuple[int, int]

# --- what an order number looks like ---------------------------------------------------------

#: One typed order number on its own: `#1043`, `1043`, `WS-1043`, `ws 1043`, `#WS-1043`, `order no. 1043`.
_ORDER_NUMBER = re.compile(
    r"^\s*(?:order\s*)?(?:(?:number|no|nr|num|id|ref|reference)\b\.?)?\s*(?:is\s+)?:?\s*#?\s*"
    r"(?:([A-Za-z]{1,4})\s*[-\u2010-\u2014_.:#/]?\s*)?#?\s*(\d{3,10})\s*[.!?]?\s*$",
    re.I,
)


def normalise_order_number(text: str, prefix: str) -> Optional[str]:
    """The shop's form of an order number typed as `#1043`, `1043`, `ws-1043`, `ws 1043` or `#WS-1043`.

    Returns None when the text cannot be an order number, or carries another
    shop's prefix.
    """
    match = _ORDER_NUMBER.match(text or "")
    if not match:
        return None
    letters, digits = match.groups()
    expected = _prefix_letters(prefix)
    if letters and letters.upper() != expected:
        return None
    return f"{prefix}{digits}" if prefix else digits


def _prefix_letters(prefix: str) -> str:
    """`WS-` -> `WS`: the part of the shop's prefix a shopper types."""
    return re.sub(r"[\s\-_.#:/]+$", "", prefix or "").upper()


@lru_cache(maxsize=8)
def _prefixed(prefix: str) -> Optional[Pattern[str]]:
    """The shop's prefix, any case, with or without a dash, space or hash: `WS-1043`, `ws 1043`, `#WS1043`."""
    letters = _prefix_letters(prefix)
    if not letters:
        return None
    return re.compile(
        rf"(?<![A-Za-z0-9])#?\s?{re.escape(letters)}\s?[-\u2010-\u2014_.:#/]?\s?(\d{{3,10}})(?!\d)", re.I
    )


#: `#1043`: a hash before the digits is how most shop systems print an order number.
_HASHED = re.compile(r"(?<![A-Za-z0-9&])#\s?(\d{3,10})(?!\d)(?![.,]\d)")

_ORDER_WORDS = (
    r"(?:orders?|ordernumber|ordernr|order-?no|commande|cde|pedido|encomenda|bestellung|bestellnummer|"
    r"bestellnr|bestelling|bestelnummer|ordine)"
)
_NUMBER_WORDS = r"(?:number|numbre|nummer|num|no|nr|n°|nº|n\.o|id|ref|reference|numéro|numero|número)"

#: A number after the word "order" (or its French, Spanish, German, Dutch, Italian form).
_WORDED = re.compile(
    rf"\b{_ORDER_WORDS}(?:\s*{_NUMBER_WORDS})?\.?\s*(?:is|was|=)?[\s:#]*(\d{{3,10}})(?!\d)(?![.,]\d)",
    re.I,
)

#: Any standalone number of 3-10 digits: an order number in a question about an order.
_STANDALONE = re.compile(r"(?<![\w@.,/:#+\-€$£])(\d{3,10})(?![\w@\-/])(?![.,:]\d)")

# Kept for callers that match a whole message: a message that is only a number.
BARE_NUMBER = re.compile(r"^\s*#?\s*(\d{3,10})\s*[.!?]?\s*$")

# --- emails and tracking numbers --------------------------------------------------------------

EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")

#: Typed with spaces around the at sign, or with "(at)" for it: `jane.doe @ example.com`, `jane(at)example.com`.
_EMAIL_TOLERANT = re.compile(
    r"(?<![A-Za-z0-9._%+'-])([A-Za-z0-9][A-Za-z0-9._%+'-]*)\s*(?:@|\(at\)|\[at\])\s*"
    r"([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})(?![A-Za-z0-9-])"
)

#: The built-in carriers' tracking numbers, written without spaces: DHL (`JVGL` and 16-20 digits, DHL Paket's
#: 20 digits from 00340434), UPS (`1Z` and 16 letters or digits), USPS (20-26 digits from 92-95), Royal Mail
#: (two letters, nine digits, `GB`).  `TRACKING.fullmatch(reference)` tells a tracking number from an order number.
TRACKING = re.compile(
    r"\b(1Z[0-9A-Z]{16}|JVGL\d{16,20}|00340434\d{12}|9[2-5]\d{18,24}|[A-Z]{2}\d{9}GB)\b", re.IGNORECASE
)
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_TRACKING_GAP = re.compile(r"[ \-]{1,2}")

# --- postcodes --------------------------------------------------------------------------------

# Postcode shapes of the countries the shop ships to; exact rules per country
# are checked by bot.services.address when an address is written.
POSTCODE = re.compile(
    r"\b(\d{4}\s?[A-Za-z]{2}"  # NL
    r"|[A-Za-z]{1,2}\d[A-Za-z\d]?\s?\d[A-Za-z]{2}"  # GB
    r"|\d{5}(?:-\d{4})?"  # DE, FR, US, ES, IT
    r"|\d{4})\b"  # BE, AT, CH, DK
)
_NL = re.compile(r"(?<![\w-])([1-9]\d{3})(\s?)([A-Za-z]{2})(?![\w-])")
_GB = re.compile(r"(?<![\w-])([A-Za-z]{1,2}\d[A-Za-z\d]?)\s?(\d[A-Za-z]{2})(?![\w-])")
_FIVE = re.compile(r"(?<![\w\-.,/:#+€$£])(\d{5}(?:-\d{4})?)(?![\w\-/])(?![.,:]\d)")
_FOUR = re.compile(r"(?<![\w\-.,/:#+€$£])(\d{4})(?![\w\-/])(?![.,:]\d)")
_POSTCODE_WORD = re.compile(
    r"\b(?:post\s?codes?|postal\s?codes?|zip\s?codes?|zips?|plz|postleitzahl|code\s?postal|c\.?p\.?|"
    r"c[oó]digo\s?postal|postcode|postnummer)\b\s*(?:is|was|=|:|-)?\s*(?:is\s+)?:?\s*",
    re.I,
)
#: Two letters after four digits that are a word, not the letters of a Dutch postcode ("1043 is late").
_NOT_NL_LETTERS = frozenset(
    "is it in on at to or of as am an be by do go he if me my no ok so up us we pm hi ya ja en de la le el et "
    "es un ik je il tu da du im zu um ob wo eh oh ah uh th nd rd st we ur u2 xx gb eu km kg mm cm ml".split()
)

# --- what a number can be instead of an order number ---------------------------------------------

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_LINKS_AND_PHONES: Tuple[Pattern[str], ...] = (
    # a number in a link is part of the link
    re.compile(r"https?://\S+|www\.\S+", re.I),
    # phone numbers: international, national with a leading zero, North American, or after a phone word
    re.compile(r"(?:\+|\b00)\d{1,3}(?:[\s.()\-]*\d){6,}"),
    re.compile(r"(?<![\d\w])0\d(?:[\s.\-]?\d){7,11}(?!\d)"),
    re.compile(r"(?<!\w)\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}(?!\d)"),
    re.compile(r"\b(?:phone|tel|telephone|mobile|cell|gsm|whatsapp|call me|ring me|text me|sms)\b"
               r"\D{0,20}\d[\d\s.\-]{4,}\d", re.I),
)
_DATES: Tuple[Pattern[str], ...] = (
    re.compile(r"(?<!\d)\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}(?!\d)"),
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I),
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}\b", re.I),
    re.compile(rf"\b{_MONTH},?\s+(?:19|20)\d{{2}}\b", re.I),
    re.compile(r"\b(?:in|since|year|until|till|before|after)\s+(?:19|20)\d{2}\b", re.I),
    re.compile(r"\b\d{1,2}[:h]\d{2}\b", re.I),
)
_MONEY: Tuple[Pattern[str], ...] = (
    re.compile(r"(?:[€$£¥]|\b(?:eur|usd|gbp|chf|aud|cad|inr|rs|sek|dkk|pln)\b\.?)\s?\d[\d.,]*", re.I),
    re.compile(r"\d[\d.,]*\s?(?:[€$£¥]|(?:euros?|eur|dollars?|usd|bucks|pounds?|gbp|quid|chf|francs?|cents?|pence|"
               r"kr|sek|dkk|zloty|pln)\b|,-)", re.I),
    re.compile(r"\d+[.,]\d{1,2}(?!\d)"),  # 149.99, 19,95
    re.compile(r"(?<!\d)\d{1,3}(?:[.,]\d{3})+(?!\d)"),  # 1,250 or 1.250
)
_QUANTITIES: Tuple[Pattern[str], ...] = (
    re.compile(r"\b\d+\s?(?:%|percent\b|per\s?cent\b|kgs?\b|g\b|gr\b|grams?\b|lbs?\b|oz\b|km\b|kms\b|miles?\b|m\b|"
               r"cm\b|mm\b|ml\b|l\b|lit(?:re|er)s?\b|gb\b|mb\b|tb\b|w\b|watts?\b|v\b|mah\b|pcs\b|pieces?\b|"
               r"items?\b|units?\b|x\b|days?\b|hours?\b|hrs?\b|minutes?\b|mins?\b|weeks?\b|months?\b|years?\b|"
               r"times\b|calories\b|kcal\b|steps\b|people\b|followers\b|points\b|pages?\b|words\b)", re.I),
)
_STREETS: Tuple[Pattern[str], ...] = (
    # "Keizersgracht 112", "Bergmannstraße 14", "Park Road 5"
    re.compile(r"\b[\w'\-]*(?:straat|gracht|kade|laan|weg|plein|singel|dijk|markt|straße|strasse|gasse|allee|street|"
               r"road|avenue|boulevard)\.?\s+\d{1,5}[A-Za-z]?\b", re.I),
    # "350 Valencia St", "22 deansgate road", "18 Park Way"
    re.compile(r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Za-z][\w'\-]*\s+){0,3}(?:(?i:street|st|road|rd|avenue|ave|boulevard|blvd)|"
               r"Way|Drive|Dr|Lane|Ln|Close|Crescent|Place|Square|Terrace|Court)\b\.?"),
    # "12 rue Oberkampf", "5 calle Mayor"
    re.compile(r"\b\d{1,5}[A-Za-z]?,?\s+(?:rue|avenue|av|boulevard|bd|place|calle|avenida|via|chemin|allée|"
               r"carrer|rua|paseo)\b", re.I),
    re.compile(r"\b(?:apartment|apt|flat|unit|suite|room|po\s?box|house\s?number|huisnummer|hausnummer)\.?\s*#?\s*\d+\w?",
               re.I),
    # the postcode and town of an address line: ", 10961 Berlin"
    re.compile(r",\s*\d{4,5}\s+[A-Z][a-zà-ÿ]+"),
)
#: What a standalone number can be instead of an order number.
_NOT_AN_ORDER = _LINKS_AND_PHONES + _DATES + _MONEY + _QUANTITIES + _STREETS


@dataclass(frozen=True)
class Details:
    order_number: Optional[str] = None
    email: Optional[str] = None
    postcode: Optional[str] = None
    tracking_number: Optional[str] = None


def _blank(text: str, spans: Iterable[Span]) -> str:
    """`text` with every span replaced by spaces: positions stay where they were."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _spans(patterns: Iterable[Pattern[str]], text: str) -> List[Span]:
    return [match.span() for pattern in patterns for match in pattern.finditer(text)]


def _overlaps(span: Span, spans: Iterable[Span]) -> bool:
    return any(start < span[1] and span[0] < end for start, end in spans)


# --- emails ---------------------------------------------------------------------------------


def _email_matches(text: str) -> List[Tuple[Span, str]]:
    found: List[Tuple[Span, str]] = []
    for match in EMAIL.finditer(text):
        found.append((match.span(), match.group(0)))
    for match in _EMAIL_TOLERANT.finditer(text):
        if not _overlaps(match.span(), [span for span, _ in found]):
            found.append((match.span(), f"{match.group(1)}@{match.group(2)}"))
    return sorted(found)


def find_email(text: str) -> Optional[str]:
    """The first email address in `text`, lower case, also when typed as `jane @ example.com`."""
    matches = _email_matches(text or "")
    if not matches:
        return None
    value = matches[0][1].lower().strip(".'")
    return value.removeprefix("mailto:")


# --- tracking numbers -------------------------------------------------------------------------


def _tracking_matches(text: str) -> List[Tuple[Span, str]]:
    """Tracking numbers of the built-in carriers, also copied with spaces or dashes ("1Z 999 AA1 01 2345 6784")."""
    tokens = list(_TOKEN.finditer(text))
    found: List[Tuple[Span, str]] = []
    index = 0
    while index < len(tokens):
        first = tokens[index]
        best: Optional[Tuple[int, str]] = None
        if TRACKING.fullmatch(first.group(0)):
            best = (index, first.group(0).upper())  # typed in one piece: never glued to what follows
        else:
            joined = first.group(0)
            for last in range(index + 1, min(index + 10, len(tokens))):
                gap = text[tokens[last - 1].end():tokens[last].start()]
                if not _TRACKING_GAP.fullmatch(gap):
                    break
                joined += tokens[last].group(0)
                if len(joined) > 30:
                    break
                if TRACKING.fullmatch(joined):
                    best = (last, joined.upper())
        if best:
            found.append(((first.start(), tokens[best[0]].end()), best[1]))
            index = best[0] + 1
        else:
            index += 1
    return found


def find_tracking_number(text: str) -> Optional[str]:
    """The first built-in carrier tracking number in `text`, upper case and without spaces."""
    matches = _tracking_matches(text or "")
    return matches[0][1] if matches else None


# --- order numbers ----------------------------------------------------------------------------


def _order_candidates(text: str, prefix: str) -> List[Tuple[int, str]]:
    """(position, digits) of every strictly written order number: prefixed, hashed or after "order"."""
    found: List[Tuple[int, str]] = []
    prefixed = _prefixed(prefix)
    if prefixed:
        found += [(match.start(), match.group(1)) for match in prefixed.finditer(text)]
    found += [(match.start(), match.group(1)) for match in _HASHED.finditer(text)]
    amounts = _spans(_NOT_AN_ORDER, text)
    for match in _WORDED.finditer(text):
        if not _overlaps(match.span(1), amounts):  # "order 1500 euros" is an amount
            found.append((match.start(), match.group(1)))
    return sorted(found)


def _details_spans(text: str) -> List[Span]:
    """Where the emails and tracking numbers are: their digits are never an order number or a postcode."""
    return [span for span, _ in _email_matches(text)] + [span for span, _ in _tracking_matches(text)]


def _postcode_spans(text: str) -> List[Span]:
    """Postcodes that a standalone number must not be read from: Dutch and British shapes, or after a postcode word."""
    spans = [match.span() for match in _NL.finditer(text) if _looks_dutch(match)]
    spans += [match.span() for match in _GB.finditer(text) if re.search(r"[A-Za-z]", match.group(1))]
    for word in _POSTCODE_WORD.finditer(text):
        rest = text[word.end():]
        shape = re.match(r"[A-Za-z0-9]{1,4}\s?[A-Za-z0-9]{2,4}|\d{4,5}(?:-\d{4})?", rest)
        if shape:
            spans.append((word.end(), word.end() + shape.end()))
    return spans


def _looks_dutch(match: re.Match[str]) -> bool:
    """`1015 CW`, `1015cw`: four digits and two letters; "1043 is" is a number and a word."""
    _, space, letters = match.groups()
    return not space or letters.isupper() or letters.lower() not in _NOT_NL_LETTERS


def find_order_number(text: str, prefix: str, *, bare_ok: bool = False, loose: bool = False) -> Optional[str]:
    """An order number in `text`, in the shop's form (`WS-1043`).

    Always read: the shop's prefix in any case and spacing (`WS-1043`, `ws1043`,
    `ws 1043`, `#WS-1043`), a hash (`#1043`), or a number after "order" ("order
    no. 1043", "commande 1043").
    `bare_ok`: the order number was asked for, so a standalone number is one
    ("1043", "it's 1043 i think").
    `loose`: the message is a question about an order, so a standalone number is one.
    With either, a number that is a price, a quantity, a phone number, a date, a
    street number or a postcode is not.
    """
    text = _blank(text or "", _details_spans(text or ""))
    candidates = _order_candidates(text, prefix)
    if candidates:
        return normalise_order_number(candidates[0][1], prefix)
    if bare_ok or loose:
        number = _standalone_number(text)
        if number:
            return normalise_order_number(number, prefix)
    return None


def _standalone_number(text: str) -> Optional[str]:
    masked = _blank(text, _spans(_NOT_AN_ORDER, text) + _postcode_spans(text))
    match = _STANDALONE.search(masked)
    return match.group(1) if match else None


def find_order_reference(text: str, prefix: str) -> Optional[str]:
    """An order number written as one (strict forms), else a tracking number, else None.

    For deciding, whatever intent the model picked, that a message names an
    order: "where is WS-1003", "Order no. 1003 status?", "1Z 999 AA1 01 2345 6784".
    A message that is only a number counts too ("1003", "#1003").  A number in
    other words ("what is 15 times 230") does not.
    """
    return (find_order_number(text, prefix) or find_tracking_number(text)
            or (normalise_order_number(text, prefix) if BARE_NUMBER.match(text or "") else None))


# --- postcodes --------------------------------------------------------------------------------


def find_postcode(text: str, *, exclude: Optional[str] = None) -> Optional[str]:
    """A postcode in `text`, skipping the digits of the order number `exclude`.

    The most telling one wins: one after a postcode word ("zip 10961"), then a
    Dutch (`1015 CW`) or British (`BS1 3PR`) shape, then five digits (DE, FR,
    US, ES, IT), then four (BE, AT, CH, DK).  Never the digits of an order
    number, a phone number, a price or a date.
    """
    text = text or ""
    text = _blank(text, _details_spans(text) + _phone_date_money_spans(text) + _order_spans(text))
    digits_to_skip = re.sub(r"\D", "", exclude or "")

    def allowed(candidate: str) -> bool:
        return not (digits_to_skip and re.sub(r"\D", "", candidate) == digits_to_skip)

    for word in _POSTCODE_WORD.finditer(text):
        rest = text[word.end():]
        for shape in (_NL, _GB, _FIVE, _FOUR):
            match = shape.match(rest)
            if match and allowed(match.group(0)):
                return normalise_postcode(match.group(0))
    for match in _NL.finditer(text):
        if _looks_dutch(match) and allowed(match.group(0)):
            return normalise_postcode(match.group(0))
    for match in _GB.finditer(text):
        if re.search(r"[A-Za-z]", match.group(1)) and re.search(r"\d", match.group(1)) and allowed(match.group(0)):
            return normalise_postcode(match.group(0))
    for shape in (_FIVE, _FOUR):
        for match in shape.finditer(text):
            if allowed(match.group(1)):
                return normalise_postcode(match.group(1))
    return None


def _phone_date_money_spans(text: str) -> List[Span]:
    """Spans a postcode is never read from (the street-number patterns stay: "Hauptstraße 5, 10961 Berlin")."""
    return _spans(_LINKS_AND_PHONES + _DATES + _MONEY + _QUANTITIES, text)


def _order_spans(text: str) -> List[Span]:
    """Order numbers written as one whatever the shop's prefix: "#1043", "order 1043", "WS-1043"."""
    spans = _spans((_HASHED, _WORDED), text)
    spans += [m.span() for m in re.finditer(r"(?<![A-Za-z0-9])[A-Za-z]{2,4}-\d{3,10}(?!\d)", text)]
    return spans


def normalise_postcode(text: str) -> str:
    """Upper case and one space where NL and GB postcodes have it."""
    compact = re.sub(r"\s+", "", text or "").upper()
    if re.fullmatch(r"\d{4}[A-Z]{2}", compact):
        return f"{compact[:4]} {compact[4:]}"
    if re.fullmatch(r"[A-Z]{1,2}\d[A-Z\d]?\d[A-Z]{2}", compact):
        return f"{compact[:-3]} {compact[-3:]}"
    return compact


def compact_postcode(text: str) -> str:
    """A postcode without spaces or dashes, upper case: how two postcodes are compared."""
    return re.sub(r"[\s-]", "", text or "").upper()


def find_details(text: str, prefix: str, *, loose: bool = False) -> Details:
    """Everything `text` says about an order: its number, the email, the postcode and a tracking number."""
    order = find_order_number(text, prefix, loose=loose)
    return Details(
        order_number=order,
        email=find_email(text),
        postcode=find_postcode(text, exclude=order),
        tracking_number=find_tracking_number(text),
    )
