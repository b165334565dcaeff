"""Carriers, their raw status codes and the canonical statuses they map to.

Every carrier speaks its own dialect: DHL sends words ("transit"), UPS sends a
type letter and an activity code ("I/AR"), USPS two-character event codes
("OF"), Royal Mail five-letter "EV" codes.  The assistant reasons only about the
canonical set below; the per-carrier tables here are what `python -m bot setup`
writes to the `carrier_status_codes` table, and a shop can add rows there for
codes a carrier introduces later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple
from urllib.parse import quote

# The industry's usual shipment states, in the order a parcel normally goes through them.
PENDING = "pending"
INFO_RECEIVED = "info_received"
IN_TRANSIT = "in_transit"
OUT_FOR_DELIVERY = "out_for_delivery"
FAILED_ATTEMPT = "failed_attempt"
AVAILABLE_FOR_PICKUP = "available_for_pickup"
DELIVERED = "delivered"
EXCEPTION = "exception"
LOST = "lost"
RETURNED_TO_SENDER = "returned_to_sender"

CANONICAL_STATUSES: Tuple[str, ...] = (
    PENDING,
    INFO_RECEIVED,
    IN_TRANSIT,
    OUT_FOR_DELIVERY,
    FAILED_ATTEMPT,
    AVAILABLE_FOR_PICKUP,
    DELIVERED,
    EXCEPTION,
    LOST,
    RETURNED_TO_SENDER,
)

#: Statuses after which the carrier will send nothing more that matters.
FINAL_STATUSES = frozenset({DELIVERED, LOST, RETURNED_TO_SENDER})

#: Statuses in which the parcel has left the shop.
SHIPPED_STATUSES = frozenset(CANONICAL_STATUSES) - {PENDING, INFO_RECEIVED}

STATUS_LABELS: Dict[str, str] = {
    PENDING: "not shipped yet",
    INFO_RECEIVED: "label created, waiting for the carrier to pick it up",
    IN_TRANSIT: "on its way",
    OUT_FOR_DELIVERY: "out for delivery",
    FAILED_ATTEMPT: "delivery attempted, nobody could take it",
    AVAILABLE_FOR_PICKUP: "ready to collect at a pickup point",
    DELIVERED: "delivered",
    EXCEPTION: "held up by a problem",
    LOST: "lost by the carrier",
    RETURNED_TO_SENDER: "returned to us",
}

# Why a parcel is late or stuck, as far as the carrier tells.
WEATHER = "weather"
CUSTOMS = "customs"
ADDRESS_PROBLEM = "address_problem"
DAMAGED = "damaged"
RECIPIENT_UNAVAILABLE = "recipient_unavailable"
CAPACITY = "capacity"
CARRIER_LOST = "lost"

REASONS: Tuple[str, ...] = (
    WEATHER,
    CUSTOMS,
    ADDRESS_PROBLEM,
    DAMAGED,
    RECIPIENT_UNAVAILABLE,
    CAPACITY,
    CARRIER_LOST,
)

REASON_LABELS: Dict[str, str] = {
    WEATHER: "bad weather",
    CUSTOMS: "a customs check",
    ADDRESS_PROBLEM: "a problem with the delivery address",
    DAMAGED: "damage to the parcel",
    RECIPIENT_UNAVAILABLE: "nobody being available to receive it",
    CAPACITY: "very high parcel volumes at the carrier",
    CARRIER_LOST: "the carrier losing track of it",
}


@dataclass(frozen=True)
class CodeMapping:
    """One raw carrier code and what it means."""

    status: str
    reason: Optional[str] = None
    description: str = ""


@dataclass(frozen=True)
class CarrierDefinition:
    """A carrier the assistant knows out of the box."""

    code: str
    name: str
    tracking_url_template: str
    supports_redirect: bool
    codes: Dict[str, CodeMapping] = field(default_factory=dict)


def normalise_code(raw_code: str) -> str:
    """Carriers are inconsistent about case and padding; compare codes uppercased."""
    return raw_code.strip().upper()


def tracking_url(template: str, tracking_number: str) -> str:
    """The carrier's public tracking page for one parcel."""
    return template.replace("{tracking_number}", quote(tracking_number.strip(), safe=""))


def _codes(table: Dict[str, Tuple[str, Optional[str], str]]) -> Dict[str, CodeMapping]:
    return {normalise_code(code): CodeMapping(*row) for code, row in table.items()}


BUILT_IN_CARRIERS: Tuple[CarrierDefinition, ...] = (
    CarrierDefinition(
        code="dhl",
        name="DHL",
        tracking_url_template=(
            "https://www.dhl.com/global-en/home/tracking/tracking-parcel.html"
            "?submit=1&tracking-id={tracking_number}"
        ),
        supports_redirect=True,
        codes=_codes(
            {
                "pre-transit": (INFO_RECEIVED, None, "Shipment information received"),
                "picked-up": (IN_TRANSIT, None, "Picked up by DHL"),
                "transit": (IN_TRANSIT, None, "In transit"),
                "arrived-facility": (IN_TRANSIT, None, "Arrived at DHL facility"),
                "departed-facility": (IN_TRANSIT, None, "Departed DHL facility"),
                "weather-delay": (IN_TRANSIT, WEATHER, "Delayed by adverse weather"),
                "volume-delay": (IN_TRANSIT, CAPACITY, "Delayed due to high volumes"),
                "customs-hold": (EXCEPTION, CUSTOMS, "Held for customs inspection"),
                "customs-cleared": (IN_TRANSIT, None, "Cleared customs"),
                "out-for-delivery": (OUT_FOR_DELIVERY, None, "Out for delivery"),
                "delivery-failed": (
                    FAILED_ATTEMPT,
                    RECIPIENT_UNAVAILABLE,
                    "Delivery attempted, recipient not home",
                ),
                "address-issue": (EXCEPTION, ADDRESS_PROBLEM, "Address incomplete or incorrect"),
                "damaged": (EXCEPTION, DAMAGED, "Shipment damaged"),
                "servicepoint-ready": (AVAILABLE_FOR_PICKUP, None, "Ready at DHL ServicePoint"),
                "delivered": (DELIVERED, None, "Delivered"),
                "lost": (LOST, CARRIER_LOST, "Shipment could not be located"),
                "returned": (RETURNED_TO_SENDER, None, "Returned to sender"),
            }
        ),
    ),
    CarrierDefinition(
        code="ups",
        name="UPS",
        tracking_url_template="https://www.ups.com/track?loc=en_US&tracknum={tracking_number}",
        supports_redirect=True,
        codes=_codes(
            {
                "M/MP": (INFO_RECEIVED, None, "Shipper created a label"),
                "P/PU": (IN_TRANSIT, None, "Pickup scan"),
                "I/OR": (IN_TRANSIT, None, "Origin scan"),
                "I/AR": (IN_TRANSIT, None, "Arrival scan"),
                "I/DP": (IN_TRANSIT, None, "Departure scan"),
                "I/WX": (IN_TRANSIT, WEATHER, "Weather conditions delayed delivery"),
                "I/VD": (IN_TRANSIT, CAPACITY, "Delayed by high package volume"),
                "X/CH": (EXCEPTION, CUSTOMS, "Held in customs, clearance pending"),
                "O/OT": (OUT_FOR_DELIVERY, None, "Out for delivery today"),
                "X/48": (
                    FAILED_ATTEMPT,
                    RECIPIENT_UNAVAILABLE,
                    "The receiver was not available for delivery",
                ),
                "X/AD": (EXCEPTION, ADDRESS_PROBLEM, "The address is incorrect"),
                "X/DM": (EXCEPTION, DAMAGED, "Package damaged"),
                "X/LS": (LOST, CARRIER_LOST, "Package cannot be located"),
                "P/AP": (AVAILABLE_FOR_PICKUP, None, "Delivered to UPS Access Point"),
                "D/KB": (DELIVERED, None, "Delivered"),
                "D/FS": (DELIVERED, None, "Delivered, left at front door"),
                "RS/RS": (RETURNED_TO_SENDER, None, "Returned to shipper"),
            }
        ),
    ),
    CarrierDefinition(
        code="usps",
        name="USPS",
        tracking_url_template="https://tools.usps.com/go/TrackConfirmAction?tLabels={tracking_number}",
        supports_redirect=True,
        codes=_codes(
            {
                "GX": (INFO_RECEIVED, None, "Shipping label created"),
                "03": (IN_TRANSIT, None, "Accepted at USPS origin facility"),
                "10": (IN_TRANSIT, None, "Processed through facility"),
                "07": (IN_TRANSIT, None, "Arrived at post office"),
                "WX": (IN_TRANSIT, WEATHER, "Delayed due to weather"),
                "OF": (OUT_FOR_DELIVERY, None, "Out for delivery"),
                "02": (FAILED_ATTEMPT, RECIPIENT_UNAVAILABLE, "Notice left, no authorized recipient"),
                "21": (EXCEPTION, ADDRESS_PROBLEM, "No such number"),
                "22": (EXCEPTION, ADDRESS_PROBLEM, "Insufficient address"),
                "DM": (EXCEPTION, DAMAGED, "Damaged in handling"),
                "CH": (EXCEPTION, CUSTOMS, "Held by customs"),
                "16": (AVAILABLE_FOR_PICKUP, None, "Available for pickup"),
                "01": (DELIVERED, None, "Delivered"),
                "ML": (LOST, CARRIER_LOST, "Missing mail search closed, item not found"),
                "09": (RETURNED_TO_SENDER, None, "Returned to sender"),
            }
        ),
    ),
    CarrierDefinition(
        code="royalmail",
        name="Royal Mail",
        tracking_url_template=(
            "https://www.royalmail.com/track-your-item#/tracking-results/{tracking_number}"
        ),
        supports_redirect=False,
        codes=_codes(
            {
                "EVGPD": (INFO_RECEIVED, None, "Sender has let us know your item is coming"),
                "EVAIP": (IN_TRANSIT, None, "Item received at Post Office"),
                "EVIMC": (IN_TRANSIT, None, "Item processed at mail centre"),
                "EVDAV": (IN_TRANSIT, WEATHER, "Delayed by severe weather"),
                "EVCUS": (EXCEPTION, CUSTOMS, "Held at customs"),
                "EVKOP": (OUT_FOR_DELIVERY, None, "Out for delivery"),
                "EVKNR": (
                    FAILED_ATTEMPT,
                    RECIPIENT_UNAVAILABLE,
                    "We tried to deliver, a card has been left",
                ),
                "EVKAD": (EXCEPTION, ADDRESS_PROBLEM, "Address could not be found"),
                "EVDMG": (EXCEPTION, DAMAGED, "Item damaged in our network"),
                "EVKLC": (AVAILABLE_FOR_PICKUP, None, "Ready for collection at delivery office"),
                "EVKSP": (DELIVERED, None, "Delivered"),
                "EVLST": (LOST, CARRIER_LOST, "Item could not be traced"),
                "EVRTS": (RETURNED_TO_SENDER, None, "Returned to sender"),
            }
        ),
    ),
)
