"""The shop's rules for delays, claims, address changes and verification.

Read from the `POLICY_*` settings (bot.config); the domain and the services
take a `Policy` as an argument and never read the environment themselves.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Dict, FrozenSet, Optional

from pydantic import BaseModel, Field, validator

from bot.domain.carriers import CANONICAL_STATUSES
from bot.domain.enums import Status


def _status_set(value: object) -> FrozenSet[str]:
    if isinstance(value, (set, frozenset, list, tuple)):
        items = [str(v).strip() for v in value]
    else:
        items = [part.strip() for part in str(value).split(",")]
    statuses = frozenset(item for item in items if item)
    unknown = sorted(statuses - set(CANONICAL_STATUSES))
    if unknown:
        raise ValueError(
            f"unknown status {', '.join(unknown)}; "
            f"use any of {', '.join(CANONICAL_STATUSES)}"
        )
    return statuses


class Policy(BaseModel):
    """The shop's rules for delays, claims and address changes."""

    grace_days: int = Field(default=1, ge=0, le=30)
    stalled_business_days: int = Field(default=3, ge=1, le=60)
    lost_business_days: int = Field(default=10, ge=2, le=120)
    delivered_wait_days: int = Field(default=2, ge=0, le=60)
    late_claim_days: int = Field(default=7, ge=1, le=120)
    goodwill_after_days_late: int = Field(default=3, ge=0, le=120)
    goodwill_code: str = "SORRY10"
    #: Days a pickup point keeps a parcel; None: each carrier's own (bot.domain.carriers).
    pickup_hold_days: Optional[int] = Field(default=None, ge=1, le=90)
    #: What the shop tells a shopper whose parcel is at customs about import duties.
    duties: str = "Prices include import duties; you won't be asked to pay anything on delivery."
    #: Days after delivery an order may be sent back (the EU right of withdrawal is 14).
    return_days: int = Field(default=14, ge=0, le=365)
    #: Hours after booking during which a refund can become a replacement, or the reverse, before
    #: the warehouse and payments act on it.
    resolution_change_hours: int = Field(default=2, ge=0, le=168)
    human_value_threshold: Decimal = Field(default=Decimal("250"), ge=0)
    repeat_claim_window_days: int = Field(default=90, ge=0, le=3650)
    address_change_direct_statuses: FrozenSet[str] = frozenset({Status.PENDING.value})
    address_redirect_statuses: FrozenSet[str] = frozenset(
        {Status.INFO_RECEIVED.value, Status.IN_TRANSIT.value, Status.FAILED_ATTEMPT.value}
    )
    verify_max_failures_per_conversation: int = Field(default=3, ge=1, le=20)
    verify_max_failures_per_order_hour: int = Field(default=5, ge=1, le=100)
    verify_max_failures_per_email_hour: int = Field(default=10, ge=1, le=1000)
    verify_max_failures_per_postcode_hour: int = Field(default=10, ge=1, le=1000)
    verify_max_postcode_failures_shop_hour: int = Field(default=100, ge=1, le=100000)

    class Config:
        frozen = True

    _statuses = validator(
        "address_change_direct_statuses", "address_redirect_statuses", pre=True, allow_reuse=True
    )(_status_set)

    @validator("lost_business_days")
    def _lost_after_stalled(cls, value: int, values: Dict[str, object]) -> int:
        stalled = values.get("stalled_business_days")
        if isinstance(stalled, int) and value <= stalled:
            raise ValueError(
                f"must be greater than POLICY_STALLED_BUSINESS_DAYS ({stalled}): "
                "a parcel is stalled before it is presumed lost"
            )
        return value

    @validator("pickup_hold_days", pre=True)
    def _blank_is_carriers_own(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @validator("duties")
    def _duties(cls, value: str) -> str:
        text = " ".join(value.split())
        if not 1 <= len(text) <= 400:
            raise ValueError("one or two sentences for the shopper (at most 400 characters)")
        return text

    @validator("goodwill_code")
    def _goodwill_code(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{0,40}", value):
            raise ValueError("letters, digits, '-' and '_' only, at most 40 characters")
        return value
