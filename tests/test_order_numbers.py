"""Order numbers, tracking numbers, emails and postcodes in the forms shoppers type them."""

import pytest

from bot.domain.parsing import (
    TRACKING,
    find_details,
    find_email,
    find_order_number,
    find_order_reference,
    find_postcode,
    find_tracking_number,
    normalise_order_number,
    normalise_postcode,
)

PREFIX = "WS-"


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("WS-1043", "WS-1043"),
        ("ws-1043", "WS-1043"),  # lower case
        ("#1043", "WS-1043"),  # hash
        ("1043", "WS-1043"),  # bare digits
        ("ws1043", "WS-1043"),  # no dash
        ("ws 1043", "WS-1043"),  # a space for the dash
        ("WS 1043", "WS-1043"),
        ("#WS-1043", "WS-1043"),  # hash and prefix
        ("WS#1043", "WS-1043"),
        ("WS\u20131043", "WS-1043"),  # an en dash, as phones type it
        ("ws_1043", "WS-1043"),
        (" # 1043 ", "WS-1043"),  # stray spaces
        ("order #1043", "WS-1043"),
        ("order no. 1043", "WS-1043"),
        ("Order number: 1043", "WS-1043"),
        ("AB-1043", None),  # another shop's prefix
        ("12", None),  # too short to be an order number
        ("WS-12345678901", None),  # too long
        ("hello", None),
        ("", None),
    ],
)
def test_order_number_forms(typed, expected):
    """Every common form maps to the shop's stored number; anything else is refused."""
    assert normalise_order_number(typed, PREFIX) == expected


def test_order_number_without_a_prefix():
    """A shop without a prefix keeps the digits and refuses any letters."""
    assert normalise_order_number("#1043", "") == "1043"
    assert normalise_order_number("WS-1043", "") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("where is WS-1003", "WS-1003"),  # the findings
        ("where is WS-1009", "WS-1009"),
        ("where's WS-1003?", "WS-1003"),
        ("where is WS-1008", "WS-1008"),
        ("ws 1012", "WS-1012"),
        ("WS 1012", "WS-1012"),
        ("#WS-1012", "WS-1012"),
        ("ws1012", "WS-1012"),
        ("wheres my order ws 1004", "WS-1004"),  # no apostrophe, no punctuation
        ("Order no. 1234 status?", "WS-1234"),
        ("order 1012", "WS-1012"),  # the word "order" makes a number an order number
        ("order #: 1043", "WS-1043"),
        ("order nr 1043 any news", "WS-1043"),
        ("status of ws-1043.", "WS-1043"),  # punctuation after it
        ("(WS-1043)", "WS-1043"),
        ("where is order WS - 1043", "WS-1043"),
        ("oh sorry it's ws-8821 not ws-8812", "WS-8821"),  # the first one given
        ("où est ma commande WS-1003 ?", "WS-1003"),  # any language around the number
        ("numéro de commande 1043", "WS-1043"),
        ("¿dónde está mi pedido nº 1043?", "WS-1043"),
        ("wo ist meine Bestellnummer 1043", "WS-1043"),
        ("mijn bestelling 1043 is niet aangekomen", "WS-1043"),
    ],
)
def test_order_number_anywhere_in_a_message(text, expected):
    """Written as an order number (prefix, hash, or after "order"), it is read in any sentence."""
    assert find_order_number(text, PREFIX) == expected


@pytest.mark.parametrize(
    "text",
    [
        "news 1012",  # the prefix's letters inside a word
        "AB-1043 where is it",  # another shop's number
        "where is 1043",  # a bare number is only read when asked for, or loosely
        "I ordered 300 mugs",  # "ordered" is not "order"
        "order 1500 euros worth of stuff",  # an amount after "order"
        "&#1234; is an html entity",
    ],
)
def test_not_an_order_number_when_strict(text):
    assert find_order_number(text, PREFIX) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("where's 1043, jane@x.com", "WS-1043"),
        ("it's 1043 i think", "WS-1043"),
        ("1043 by the way where is it", "WS-1043"),
        ("10 am tomorrow 1043", "WS-1043"),
        ("1Z999AA10123456784 1043", "WS-1043"),  # the tracking number's digits are not it
        ("got charged 2x 49,95 for ws 1186, where is it", "WS-1186"),
    ],
)
def test_loose_reads_a_standalone_number(text, expected):
    """In a question about an order, a standalone number is its number."""
    assert find_order_number(text, PREFIX, loose=True) == expected
    assert find_order_number(text, PREFIX, bare_ok=True) == expected


@pytest.mark.parametrize(
    "text",
    [
        "call me on 0612345678",  # phone numbers
        "my number is +31 6 5555 0123",
        "ring me at 06-12345678",
        "phone: 020 123 4567",
        "my number is (415) 555-0134",
        "it cost €149.99",  # prices
        "I paid 120 euros for it",
        "I paid 1,250 for the sofa",
        "that's $300 down the drain",
        "45.00 GBP",
        "I waited 100 days",  # quantities
        "ordered 500 g of coffee",
        "a 1000 ml bottle",
        "ordered on 12/03/2024",  # dates and times
        "it was 2024-11-03 when I ordered",
        "I ordered on march 3, 2024",
        "since 2024 nothing",
        "around 14:30 yesterday",
        "I moved to Keizersgracht 112",  # street numbers
        "send it to 350 Valencia St",
        "deliver to 12 rue Oberkampf",
        "I'm in apartment 204",
        "Hauptstraße 5, 10961 Berlin",  # the postcode of an address line
        "postcode 1015 CW",  # postcodes
        "my zip is 10961",
        "my postcode is 3511ab",
        "see https://shop.example/orders/1043",  # a link
        "hello",
    ],
)
def test_loose_never_reads_phone_numbers_prices_dates_or_postcodes(text):
    """A number that is something else is never taken for an order number, however loosely we read."""
    assert find_order_number(text, PREFIX, loose=True) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tracking 1Z999AA10123456784", "1Z999AA10123456784"),  # UPS
        ("tracking 1Z 999 AA1 01 2345 6784 where is it", "1Z999AA10123456784"),  # copied with its spaces
        ("1z999aa10123456784", "1Z999AA10123456784"),  # lower case
        ("JVGL06290145678912345678", "JVGL06290145678912345678"),  # DHL
        ("JVGL 1234 5678 9012 3456 7890", "JVGL12345678901234567890"),
        ("00340434161234567890", "00340434161234567890"),  # DHL Paket
        ("9400 1118 9922 3817 2839 40", "9400111899223817283940"),  # USPS
        ("my royal mail number is KT 482 019 377 GB", "KT482019377GB"),  # Royal Mail
        ("WS123456789GB", "WS123456789GB"),  # a Royal Mail number starting like our prefix
        ("9400111899223817283940 1043", "9400111899223817283940"),  # typed in one piece: not glued to what follows
        ("1Z7K4E21680912334", None),  # one character short
        ("CH123456789NL", None),  # not a built-in carrier's
        ("call 0612345678", None),
    ],
)
def test_tracking_numbers(text, expected):
    """The built-in carriers' tracking numbers, with or without spaces, upper case and compact."""
    assert find_tracking_number(text) == expected
    if expected:
        assert TRACKING.fullmatch(expected)  # what the verification uses to tell it from an order number


def test_a_tracking_number_is_not_an_order_number():
    assert find_order_number("WS123456789GB", PREFIX, loose=True) is None
    assert find_order_number("JVGL 1234 5678 9012 3456 7890", PREFIX, loose=True) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("jane.doe@example.com", "jane.doe@example.com"),
        ("my emial is Jane.Doe@Example.com.", "jane.doe@example.com"),  # typo around it, trailing dot, capitals
        ("its anna_devries@example.com sorry for the typo", "anna_devries@example.com"),
        ("orders+shop@example.co.uk, thanks", "orders+shop@example.co.uk"),
        ("jane.doe @ example.com pls", "jane.doe@example.com"),  # spaces around the at sign
        ("jane(at)example.com", "jane@example.com"),
        ("mailto:x@y.nl", "x@y.nl"),
        ("find me @ the shop", None),
        ("no email here", None),
    ],
)
def test_emails(text, expected):
    assert find_email(text) == expected


@pytest.mark.parametrize(
    "text, exclude, expected",
    [
        ("1015 CW", None, "1015 CW"),  # NL
        ("1015cw", None, "1015 CW"),
        ("it's 3511 ab", None, "3511 AB"),
        ("BS1 3PR", None, "BS1 3PR"),  # UK
        ("postcode m3 2bw", None, "M3 2BW"),
        ("10961", None, "10961"),  # DE
        ("75011", None, "75011"),  # FR
        ("1000", None, "1000"),  # BE
        ("my zip is 10961", None, "10961"),
        ("where is 1043 my postcode is 3511 AB", None, "3511 AB"),  # the postcode word wins over a bare number
        ("1043 is late, 3511 AB", None, "3511 AB"),  # "1043 is" is no Dutch postcode
        ("WS-1043", None, None),  # an order number's digits
        ("#1043", None, None),
        ("order 1043", None, None),
        ("where is 1043, postcode 1000", "WS-1043", "1000"),
        ("1043", "WS-1043", None),
        ("call me on 06 1234 5678", None, None),  # a phone number's digits
        ("it cost €1043", None, None),  # a price
        ("on 12/03/2024", None, None),  # a date
        ("hello", None, None),
    ],
)
def test_postcodes(text, exclude, expected):
    """NL, UK, DE, FR and BE shapes, normalised; never an order number, phone number, price or date."""
    assert find_postcode(text, exclude=exclude) == expected


def test_postcodes_are_normalised():
    assert normalise_postcode("1015cw") == "1015 CW"
    assert normalise_postcode("bs13pr") == "BS1 3PR"
    assert normalise_postcode(" 10961 ") == "10961"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("where's 1043, jane@x.com", ("WS-1043", "jane@x.com", None, None)),
        ("ws 1021 postcode 3511 AB where is it", ("WS-1021", None, "3511 AB", None)),
        ("is WS-1030 coming today, zip is 10961", ("WS-1030", None, "10961", None)),
        ("order 1043 postcode 1000", ("WS-1043", None, "1000", None)),
        ("parcel 1Z84A9W20391847562 where is it, email a.b@c.de", (None, "a.b@c.de", None, "1Z84A9W20391847562")),
        ("my order 1043 hasn't come, call me on 06-12345678", ("WS-1043", None, None, None)),
        ("I live at Keizersgracht 112 and order 1180 still hasn't arrived", ("WS-1180", None, None, None)),
    ],
)
def test_all_details_of_one_message(text, expected):
    """A shopper may give the number and the proof in their first message."""
    details = find_details(text, PREFIX, loose=True)
    assert (details.order_number, details.email, details.postcode, details.tracking_number) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("where is WS-1003", "WS-1003"),
        ("Order no. 1234 status?", "WS-1234"),
        ("1043", "WS-1043"),  # a message that is only a number
        ("#1043.", "WS-1043"),
        ("tracking 1Z 999 AA1 01 2345 6784", "1Z999AA10123456784"),
        ("où est ma commande ws 1003", "WS-1003"),
        ("what is 15 times 230", None),  # numbers in other words are no reference
        ("is 1009 a prime number", None),
        ("where do penguins live", None),
    ],
)
def test_order_reference_whatever_the_intent(text, expected):
    """What tells, whatever intent the model picked, that a message names an order."""
    assert find_order_reference(text, PREFIX) == expected


def test_another_prefix():
    """The patterns follow the shop's prefix setting."""
    assert find_order_number("where is shop 2041", "SHOP-") == "SHOP-2041"
    assert find_order_number("where is ws 2041", "SHOP-") is None
