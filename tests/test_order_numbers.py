"""Order numbers in the forms shoppers type them."""

import pytest

from bot.domain.parsing import normalise_order_number


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("WS-1043", "WS-1043"),
        ("ws-1043", "WS-1043"),  # lower case
        ("#1043", "WS-1043"),  # hash
        ("1043", "WS-1043"),  # bare digits
        ("ws1043", "WS-1043"),  # no dash
        (" # 1043 ", "WS-1043"),  # stray spaces
        ("order #1043", "WS-1043"),
        ("AB-1043", None),  # another shop's prefix
        ("12", None),  # too short to be an order number
        ("hello", None),
        ("", None),
    ],
)
def test_order_number_forms(typed, expected):
    """Every common form maps to the shop's stored number; anything else is refused."""
    assert normalise_order_number(typed, "WS-") == expected
