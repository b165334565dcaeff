"""Carrier code tables and normalisation (no database)."""

from __future__ import annotations

import pytest

from bot.domain.carriers import (
    BUILT_IN_CARRIERS,
    CANONICAL_STATUSES,
    REASONS,
    is_aftership_code,
    normalise_code,
    tracking_url,
)
from bot.store.demo import STEP_CODES

CARRIERS = {c.code: c for c in BUILT_IN_CARRIERS}


@pytest.mark.parametrize(
    "carrier, raw, status, reason",
    [
        ("dhl", "transit", "in_transit", None),  # words
        ("dhl", " Weather-Delay ", "in_transit", "weather"),  # case and padding ignored
        ("ups", "O/OT", "out_for_delivery", None),  # type letter / activity code
        ("ups", "x/48", "failed_attempt", "recipient_unavailable"),
        ("usps", "01", "delivered", None),  # two-character event codes
        ("usps", "22", "exception", "address_problem"),
        ("royalmail", "EVKLC", "available_for_pickup", None),  # EV codes
        ("royalmail", "evrts", "returned_to_sender", None),
    ],
)
def test_raw_codes_map_to_canonical_statuses(carrier, raw, status, reason):
    """Each carrier's own code style maps to the one canonical set."""
    mapping = CARRIERS[carrier].codes[normalise_code(raw)]
    assert (mapping.status, mapping.reason) == (status, reason)


def test_every_mapping_uses_known_statuses_and_reasons():
    """No table can introduce a status or reason the rules do not know."""
    for carrier in BUILT_IN_CARRIERS:
        for code, mapping in carrier.codes.items():
            assert mapping.status in CANONICAL_STATUSES, (carrier.code, code)
            assert mapping.reason is None or mapping.reason in REASONS, (carrier.code, code)
            assert code == normalise_code(code)


def test_every_carrier_covers_every_status_after_pickup():
    """Each carrier can express every state a parcel can be in once the label exists."""
    for carrier in BUILT_IN_CARRIERS:
        covered = {m.status for m in carrier.codes.values()}
        assert covered == set(CANONICAL_STATUSES) - {"pending"}, carrier.code


def test_at_least_three_code_styles_and_one_carrier_without_redirects():
    """The built-in carriers differ in code style and in redirect support."""
    def style(codes):
        return (all("/" in c for c in codes), all(len(c) == 2 for c in codes),
                all(c.startswith("EV") for c in codes), any("-" in c for c in codes))

    styles = {style([c for c in carrier.codes if not is_aftership_code(c)]) for carrier in BUILT_IN_CARRIERS}
    assert len(styles) >= 3
    assert {c.supports_redirect for c in BUILT_IN_CARRIERS} == {True, False}


def test_demo_steps_exist_in_each_carrier_table():
    """The demo timelines only use codes the carrier tables know."""
    for carrier, steps in STEP_CODES.items():
        for step, code in steps.items():
            assert normalise_code(code) in CARRIERS[carrier].codes, (carrier, step)


def test_tracking_url_quotes_the_tracking_number():
    """A tracking number cannot break out of the carrier's URL."""
    url = tracking_url(CARRIERS["ups"].tracking_url_template, " 1Z999&x=1 ")
    assert url == "https://www.ups.com/track?loc=en_US&tracknum=1Z999%26x%3D1"
