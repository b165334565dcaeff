"""Carriers, their raw status codes and the canonical statuses they map to.

Every carrier speaks its own dialect: DHL sends words ("transit"), UPS sends a
type letter and an activity code ("I/AR"), USPS two-character event codes
("OF"), Royal Mail five-letter "EV" codes.  The assistant reasons only about the
canonical set below; the per-carrier tables here are what `python -m bot setup`
writes to the `carrier_status_codes` table, and a shop can add rows there for
codes a carrier introduces later.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple
from urllib.parse import quote

from bot.domain.enums import DelayReason, Status

CANONICAL_STATUSES: Tuple[str, ...] = Status.values()

#: Statuses after which the carrier will send nothing more that matters.
FINAL_STATUSES = frozenset({Status.DELIVERED, Status.LOST, Status.RETURNED_TO_SENDER})

#: Statuses in which the parcel has left the shop.
SHIPPED_STATUSES = frozenset(CANONICAL_STATUSES) - {Status.PENDING, Status.INFO_RECEIVED}

STATUS_LABELS: Dict[str, str] = {
    Status.PENDING: "not shipped yet",
    Status.INFO_RECEIVED: "label created, waiting for the carrier to pick it up",
    Status.IN_TRANSIT: "on its way",
    Status.OUT_FOR_DELIVERY: "out for delivery",
    Status.FAILED_ATTEMPT: "delivery attempted, nobody could take it",
    Status.AVAILABLE_FOR_PICKUP: "ready to collect at a pickup point",
    Status.DELIVERED: "delivered",
    Status.EXCEPTION: "held up by a problem",
    Status.LOST: "lost by the carrier",
    Status.RETURNED_TO_SENDER: "returned to us",
}

REASONS: Tuple[str, ...] = DelayReason.values()

REASON_LABELS: Dict[str, str] = {
    DelayReason.WEATHER: "bad weather",
    DelayReason.CUSTOMS: "a customs check",
    DelayReason.ADDRESS_PROBLEM: "a problem with the delivery address",
    DelayReason.DAMAGED: "damage to the parcel",
    DelayReason.RECIPIENT_UNAVAILABLE: "nobody being available to receive it",
    DelayReason.CAPACITY: "very high parcel volumes at the carrier",
    DelayReason.CARRIER_LOST: "the carrier losing track of it",
}


@dataclass(frozen=True)
class CodeMapping:
    """One raw carrier code and what it means."""

    status: str
    reason: Optional[str] = None
    description: str = ""


#: After a missed delivery, for a carrier without its own wording below.
MISSED_DELIVERY_FALLBACK = (
    "The carrier's card or the tracking link says how to book a new delivery or where to collect it."
)
#: Days a pickup point keeps a parcel, for a carrier without its own figure below.
PICKUP_HOLD_DAYS_FALLBACK = 7


@dataclass(frozen=True)
class CarrierDefinition:
    """A carrier the assistant knows out of the box.

    `missed_delivery` tells the shopper what to do after a failed delivery
    attempt (redelivery or collection, with the carrier's own page where it has
    one); `pickup_hold_days` is how long its pickup points keep a parcel.
    """

    code: str
    name: str
    tracking_url_template: str
    supports_redirect: bool
    codes: Dict[str, CodeMapping] = field(default_factory=dict)
    missed_delivery: str = MISSED_DELIVERY_FALLBACK
    pickup_hold_days: int = PICKUP_HOLD_DAYS_FALLBACK


def normalise_code(raw_code: str) -> str:
    """Carriers are inconsistent about case and padding; compare codes uppercased."""
    return raw_code.strip().upper()


def tracking_url(template: str, tracking_number: str) -> str:
    """The carrier's public tracking page for one parcel."""
    return template.replace("{tracking_number}", quote(tracking_number.strip(), safe=""))


def _codes(table: Dict[str, Tuple[str, Optional[str], str]]) -> Dict[str, CodeMapping]:
    return {normalise_code(code): CodeMapping(*row) for code, row in table.items()}


#: Raw codes of events that came through AfterShip start with this, so they never clash with a carrier's own.
AFTERSHIP_PREFIX = "AS:"

#: AfterShip's delivery tags and sub-tags ("subtags"), which AfterShip puts on every checkpoint of
#: every courier it tracks.  Events received through AfterShip keep `AS:<subtag>` (or `AS:<tag>` for a
#: checkpoint without one) as their raw code; this table is merged into each built-in carrier's codes
#: below, so `python -m bot setup` writes it to each carrier's rows and a shop can still edit a row.
#: AfterShip's "Pending" means it has the tracking number but the carrier has reported nothing yet:
#: for us that is a label waiting for collection (info_received, watched for silence), not an order
#: still in the warehouse.  "Returning to sender" stays an exception (the parcel still moves and can
#: stall); only "returned to sender" is final.  Sub-tags not listed here are read by their tag
#: (`bot.domain.aftership.raw_code`).
AFTERSHIP_CODES: Dict[str, CodeMapping] = _codes(
    {
        f"{AFTERSHIP_PREFIX}{code}": row
        for code, row in {
            "Pending": (Status.INFO_RECEIVED, None, "Tracking registered, no news from the carrier yet"),
            "Pending_001": (Status.INFO_RECEIVED, None, "The carrier has no information on the parcel yet"),
            "InfoReceived": (Status.INFO_RECEIVED, None, "The carrier has the shipment details"),
            "InfoReceived_001": (Status.INFO_RECEIVED, None, "The carrier has the details and will collect the parcel"),
            "InTransit": (Status.IN_TRANSIT, None, "On its way"),
            "InTransit_001": (Status.IN_TRANSIT, None, "On its way"),
            "InTransit_002": (Status.IN_TRANSIT, None, "Accepted by the carrier"),
            "InTransit_003": (Status.IN_TRANSIT, None, "Arrived at a hub or sorting centre"),
            "InTransit_004": (Status.IN_TRANSIT, None, "Arrived in the destination country"),
            "InTransit_005": (Status.IN_TRANSIT, None, "Cleared customs"),
            "InTransit_006": (Status.IN_TRANSIT, None, "Handed to customs for clearance"),
            "InTransit_007": (Status.IN_TRANSIT, None, "Left a carrier facility"),
            "InTransit_008": (Status.IN_TRANSIT, None, "Earlier problem solved, moving again"),
            "InTransit_009": (Status.IN_TRANSIT, None, "Sent on to a different delivery address"),
            "OutForDelivery": (Status.OUT_FOR_DELIVERY, None, "Out for delivery"),
            "OutForDelivery_001": (Status.OUT_FOR_DELIVERY, None, "Out for delivery"),
            # An older sub-tag, now AvailableForPickup_001: waiting at the carrier's depot.
            "OutForDelivery_002": (Status.AVAILABLE_FOR_PICKUP, None, "Waiting at the carrier's depot to be collected"),
            "OutForDelivery_003": (Status.OUT_FOR_DELIVERY, None, "The driver called the recipient before delivering"),
            # A booked appointment may be days away: on its way, not on the van today.
            "OutForDelivery_004": (Status.IN_TRANSIT, None, "Delivery appointment booked"),
            "AttemptFail": (Status.FAILED_ATTEMPT, None, "Delivery attempted without success"),
            "AttemptFail_001": (Status.FAILED_ATTEMPT, None, "Delivery attempted; a card left or another try due"),
            "AttemptFail_002": (
                Status.FAILED_ATTEMPT,
                DelayReason.RECIPIENT_UNAVAILABLE,
                "Delivery attempted, nobody available at the address",
            ),
            "AttemptFail_003": (
                Status.FAILED_ATTEMPT,
                DelayReason.RECIPIENT_UNAVAILABLE,
                "Delivery attempted, the business was closed",
            ),
            "AvailableForPickup": (Status.AVAILABLE_FOR_PICKUP, None, "Ready to collect at a pickup point"),
            "AvailableForPickup_001": (Status.AVAILABLE_FOR_PICKUP, None, "Ready to collect at a pickup point"),
            "Delivered": (Status.DELIVERED, None, "Delivered"),
            "Delivered_001": (Status.DELIVERED, None, "Delivered"),
            "Delivered_002": (Status.DELIVERED, None, "Collected by the recipient"),
            "Delivered_003": (Status.DELIVERED, None, "Delivered and signed for"),
            "Delivered_004": (Status.DELIVERED, None, "Delivered, cash on delivery collected"),
            "Delivered_005": (Status.DELIVERED, None, "Delivered to a neighbour"),
            "Exception": (Status.EXCEPTION, None, "Held up by a delivery problem"),
            "Exception_001": (Status.EXCEPTION, None, "Held up by a delivery problem"),
            "Exception_002": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "Not delivered: the recipient has moved"),
            "Exception_003": (Status.EXCEPTION, None, "The recipient refused the parcel"),
            "Exception_004": (Status.EXCEPTION, DelayReason.CUSTOMS, "Delayed in customs clearance"),
            "Exception_005": (Status.EXCEPTION, None, "Delayed by circumstances outside the carrier's control"),
            # Almost always import duties or taxes the recipient has to pay before release.
            "Exception_006": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held until the recipient pays charges due"),
            "Exception_007": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "Not delivered: the address is wrong"),
            "Exception_008": (
                Status.EXCEPTION,
                DelayReason.RECIPIENT_UNAVAILABLE,
                "Not collected from the pickup point in time",
            ),
            "Exception_009": (Status.EXCEPTION, None, "Refused by the carrier as outside its rules"),
            "Exception_010": (Status.EXCEPTION, None, "On its way back to the sender"),
            "Exception_011": (Status.RETURNED_TO_SENDER, None, "Returned to the sender"),
            "Exception_012": (Status.EXCEPTION, DelayReason.DAMAGED, "Damaged in transit"),
            "Exception_013": (Status.LOST, DelayReason.CARRIER_LOST, "Lost by the carrier"),
            "Exception_016": (Status.EXCEPTION, None, "Delayed by a problem in the carrier's network"),
            "Exception_017": (Status.IN_TRANSIT, DelayReason.WEATHER, "Delayed by severe weather"),
            "Exception_018": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held: documents for customs missing or wrong"),
            "Exception_019": (Status.IN_TRANSIT, None, "Delayed by a late or rescheduled flight"),
            "Exception_020": (Status.EXCEPTION, None, "Shipment cancelled by the sender or the carrier"),
            "Exception_021": (Status.EXCEPTION, None, "Destroyed or discarded by the carrier"),
            "Expired": (Status.EXCEPTION, None, "No tracking news for a long time; AfterShip stopped tracking"),
            "Expired_001": (Status.EXCEPTION, None, "No tracking news for a long time; AfterShip stopped tracking"),
        }.items()
    }
)


def is_aftership_code(raw_code: str) -> bool:
    """Whether a raw code came through AfterShip rather than from the carrier's own feed."""
    return normalise_code(raw_code).startswith(AFTERSHIP_PREFIX)


def _with_aftership_codes(carrier: CarrierDefinition) -> CarrierDefinition:
    return replace(carrier, codes={**carrier.codes, **AFTERSHIP_CODES})


BUILT_IN_CARRIERS: Tuple[CarrierDefinition, ...] = tuple(map(_with_aftership_codes, (
    CarrierDefinition(
        code="dhl",
        name="DHL",
        tracking_url_template=(
            "https://www.dhl.com/global-en/home/tracking/tracking-parcel.html"
            "?submit=1&tracking-id={tracking_number}"
        ),
        supports_redirect=True,
        missed_delivery=(
            "DHL usually tries again the next working day or leaves it at a nearby DHL ServicePoint; "
            "you can choose a new day or a ServicePoint from the tracking link."
        ),
        pickup_hold_days=7,
        codes=_codes(
            {
                "pre-transit": (Status.INFO_RECEIVED, None, "Shipment information received"),
                "picked-up": (Status.IN_TRANSIT, None, "Picked up by DHL"),
                "transit": (Status.IN_TRANSIT, None, "In transit"),
                "arrived-facility": (Status.IN_TRANSIT, None, "Arrived at DHL facility"),
                "departed-facility": (Status.IN_TRANSIT, None, "Departed DHL facility"),
                "weather-delay": (Status.IN_TRANSIT, DelayReason.WEATHER, "Delayed by adverse weather"),
                "volume-delay": (Status.IN_TRANSIT, DelayReason.CAPACITY, "Delayed due to high volumes"),
                "customs-hold": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held for customs inspection"),
                "customs-cleared": (Status.IN_TRANSIT, None, "Cleared customs"),
                "out-for-delivery": (Status.OUT_FOR_DELIVERY, None, "Out for delivery"),
                "delivery-failed": (
                    Status.FAILED_ATTEMPT,
                    DelayReason.RECIPIENT_UNAVAILABLE,
                    "Delivery attempted, recipient not home",
                ),
                "address-issue": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "Address incomplete or incorrect"),
                "damaged": (Status.EXCEPTION, DelayReason.DAMAGED, "Shipment damaged"),
                "servicepoint-ready": (Status.AVAILABLE_FOR_PICKUP, None, "Ready at DHL ServicePoint"),
                "delivered": (Status.DELIVERED, None, "Delivered"),
                "lost": (Status.LOST, DelayReason.CARRIER_LOST, "Shipment could not be located"),
                "returned": (Status.RETURNED_TO_SENDER, None, "Returned to sender"),
            }
        ),
    ),
    CarrierDefinition(
        code="ups",
        name="UPS",
        tracking_url_template="https://www.ups.com/track?loc=en_US&tracknum={tracking_number}",
        supports_redirect=True,
        missed_delivery=(
            "UPS tries again the next business day (three tries in all); to choose a day or send it "
            "to a UPS Access Point, use the tracking link."
        ),
        pickup_hold_days=7,
        codes=_codes(
            {
                "M/MP": (Status.INFO_RECEIVED, None, "Shipper created a label"),
                "P/PU": (Status.IN_TRANSIT, None, "Pickup scan"),
                "I/OR": (Status.IN_TRANSIT, None, "Origin scan"),
                "I/AR": (Status.IN_TRANSIT, None, "Arrival scan"),
                "I/DP": (Status.IN_TRANSIT, None, "Departure scan"),
                "I/WX": (Status.IN_TRANSIT, DelayReason.WEATHER, "Weather conditions delayed delivery"),
                "I/VD": (Status.IN_TRANSIT, DelayReason.CAPACITY, "Delayed by high package volume"),
                "X/CH": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held in customs, clearance pending"),
                "O/OT": (Status.OUT_FOR_DELIVERY, None, "Out for delivery today"),
                "X/48": (
                    Status.FAILED_ATTEMPT,
                    DelayReason.RECIPIENT_UNAVAILABLE,
                    "The receiver was not available for delivery",
                ),
                "X/AD": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "The address is incorrect"),
                "X/DM": (Status.EXCEPTION, DelayReason.DAMAGED, "Package damaged"),
                "X/LS": (Status.LOST, DelayReason.CARRIER_LOST, "Package cannot be located"),
                "P/AP": (Status.AVAILABLE_FOR_PICKUP, None, "Delivered to UPS Access Point"),
                "D/KB": (Status.DELIVERED, None, "Delivered"),
                "D/FS": (Status.DELIVERED, None, "Delivered, left at front door"),
                "RS/RS": (Status.RETURNED_TO_SENDER, None, "Returned to shipper"),
            }
        ),
    ),
    CarrierDefinition(
        code="usps",
        name="USPS",
        tracking_url_template="https://tools.usps.com/go/TrackConfirmAction?tLabels={tracking_number}",
        supports_redirect=True,
        missed_delivery=(
            "Book a redelivery at https://tools.usps.com/redelivery.htm, or collect it from the "
            "post office named on the notice, with photo ID."
        ),
        pickup_hold_days=15,
        codes=_codes(
            {
                "GX": (Status.INFO_RECEIVED, None, "Shipping label created"),
                "03": (Status.IN_TRANSIT, None, "Accepted at USPS origin facility"),
                "10": (Status.IN_TRANSIT, None, "Processed through facility"),
                "07": (Status.IN_TRANSIT, None, "Arrived at post office"),
                "WX": (Status.IN_TRANSIT, DelayReason.WEATHER, "Delayed due to weather"),
                "OF": (Status.OUT_FOR_DELIVERY, None, "Out for delivery"),
                "02": (
                    Status.FAILED_ATTEMPT,
                    DelayReason.RECIPIENT_UNAVAILABLE,
                    "Notice left, no authorized recipient",
                ),
                "21": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "No such number"),
                "22": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "Insufficient address"),
                "DM": (Status.EXCEPTION, DelayReason.DAMAGED, "Damaged in handling"),
                "CH": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held by customs"),
                "16": (Status.AVAILABLE_FOR_PICKUP, None, "Available for pickup"),
                "01": (Status.DELIVERED, None, "Delivered"),
                "ML": (Status.LOST, DelayReason.CARRIER_LOST, "Missing mail search closed, item not found"),
                "09": (Status.RETURNED_TO_SENDER, None, "Returned to sender"),
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
        missed_delivery=(
            "Book a redelivery at https://www.royalmail.com/receiving-mail/redelivery, or collect it "
            "from the delivery office named on the card, with the card and photo ID."
        ),
        pickup_hold_days=18,
        codes=_codes(
            {
                "EVGPD": (Status.INFO_RECEIVED, None, "Sender has let us know your item is coming"),
                "EVAIP": (Status.IN_TRANSIT, None, "Item received at Post Office"),
                "EVIMC": (Status.IN_TRANSIT, None, "Item processed at mail centre"),
                "EVDAV": (Status.IN_TRANSIT, DelayReason.WEATHER, "Delayed by severe weather"),
                "EVCUS": (Status.EXCEPTION, DelayReason.CUSTOMS, "Held at customs"),
                "EVKOP": (Status.OUT_FOR_DELIVERY, None, "Out for delivery"),
                "EVKNR": (
                    Status.FAILED_ATTEMPT,
                    DelayReason.RECIPIENT_UNAVAILABLE,
                    "We tried to deliver, a card has been left",
                ),
                "EVKAD": (Status.EXCEPTION, DelayReason.ADDRESS_PROBLEM, "Address could not be found"),
                "EVDMG": (Status.EXCEPTION, DelayReason.DAMAGED, "Item damaged in our network"),
                "EVKLC": (Status.AVAILABLE_FOR_PICKUP, None, "Ready for collection at delivery office"),
                "EVKSP": (Status.DELIVERED, None, "Delivered"),
                "EVLST": (Status.LOST, DelayReason.CARRIER_LOST, "Item could not be traced"),
                "EVRTS": (Status.RETURNED_TO_SENDER, None, "Returned to sender"),
            }
        ),
    ),
)))


def built_in_carrier(code: str) -> Optional[CarrierDefinition]:
    """The built-in definition of the carrier with `code`, if it is one of ours."""
    return next((carrier for carrier in BUILT_IN_CARRIERS if carrier.code == code), None)
