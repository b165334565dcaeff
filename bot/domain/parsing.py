"""Find order details in what a shopper typed.

Shoppers type details in every shape ("where's 1043, jane@x.com", "it's ws1043",
"postcode 1015cw").  Slots are filled from these deterministic patterns rather
than only from the NLU model's entities, so a number is never half-read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_ORDER_NUMBER = re.compile(r"^\s*(?:order\s*)?(?:no\.?\s*)?#?\s*([A-Za-z]{1,4})?[\s-]?(\d{3,10})\s*$", re.I)


def normalise_order_number(text: str, prefix: str) -> Optional[str]:
    """The shop's form of an order number typed as `#1043`, `1043` or `ws-1043`.

    Returns None when the text cannot be an order number, or carries another
    shop's prefix.
    """
    match = _ORDER_NUMBER.match(text or "")
    if not match:
        return None
    letters, digits = match.groups()
    expected = prefix.rstrip("-").upper()
    if letters and letters.upper() != expected:
        return None
    return f"{prefix}{digits}" if prefix else digits


EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
TRACKING = re.compile(
    r"\b(1Z[0-9A-Z]{16}|JVGL\d{16,20}|9[2-5]\d{18,24}|[A-Z]{2}\d{9}GB)\b", re.IGNORECASE
)
ORDER_PREFIXED = re.compile(r"(?:(?<=\s)|^|(?<=[(,:]))(#\s?\d{3,10}|[A-Za-z]{2}-?\d{3,10})\b")
ORDER_WORDED = re.compile(r"\border\s*(?:number|no\.?|nr\.?|#)?\s*(?:is\s*)?:?\s*#?(\d{3,10})\b", re.IGNORECASE)
BARE_NUMBER = re.compile(r"^\s*#?\s*(\d{3,10})\s*[.!]?\s*$")
LOOSE_NUMBER = re.compile(r"(?<![\w@.-])(\d{3,10})(?![\w@-])")

# Postcode shapes of the countries the shop ships to; exact rules per country
# are checked by bot.addresses when an address is written.
POSTCODE = re.compile(
    r"\b(\d{4}\s?[A-Za-z]{2}"  # NL
    r"|[A-Za-z]{1,2}\d[A-Za-z\d]?\s?\d[A-Za-z]{2}"  # GB
    r"|\d{5}(?:-\d{4})?"  # DE, FR, US, ES, IT
    r"|\d{4})\b"  # BE, AT, CH, DK
)


@dataclass(frozen=True)
class Details:
    order_number: Optional[str] = None
    email: Optional[str] = None
    postcode: Optional[str] = None
    tracking_number: Optional[str] = None


def find_email(text: str) -> Optional[str]:
    match = EMAIL.search(text or "")
    return match.group(0).lower().strip(".") if match else None


def find_tracking_number(text: str) -> Optional[str]:
    match = TRACKING.search(text or "")
    return match.group(1).upper() if match else None


def find_order_number(text: str, prefix: str, *, bare_ok: bool = False, loose: bool = False) -> Optional[str]:
    """An order number in `text`.

    `bare_ok`: a message that is only a number is one (it was asked for).
    `loose`: any standalone number of 3-10 digits is one (a question about an order).
    """
    text = EMAIL.sub(" ", text or "")
    text = TRACKING.sub(" ", text)
    for pattern in (ORDER_WORDED, ORDER_PREFIXED):
        for match in pattern.finditer(text):
            number = normalise_order_number(match.group(1), prefix)
            if number:
                return number
    if bare_ok:
        bare = BARE_NUMBER.match(text)
        if bare:
            return normalise_order_number(bare.group(1), prefix)
    if loose:
        for match in LOOSE_NUMBER.finditer(text):
            return normalise_order_number(match.group(1), prefix)
    return None


def find_postcode(text: str, *, exclude: Optional[str] = None) -> Optional[str]:
    """A postcode-shaped token, skipping the digits of an order number."""
    text = EMAIL.sub(" ", text or "")
    text = TRACKING.sub(" ", text)
    digits_to_skip = re.sub(r"\D", "", exclude or "")
    for match in POSTCODE.finditer(text):
        candidate = match.group(1)
        if digits_to_skip and re.sub(r"\D", "", candidate) == digits_to_skip:
            continue
        before = text[: match.start()].rstrip()
        if before.endswith("#") or re.search(r"(?i)\border\s*(number|no\.?|#)?\s*$", before):
            continue
        return normalise_postcode(candidate)
    return None


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
    order = find_order_number(text, prefix, loose=loose)
    return Details(
        order_number=order,
        email=find_email(text),
        postcode=find_postcode(text, exclude=order),
        tracking_number=find_tracking_number(text),
    )
