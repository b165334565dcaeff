"""What the WhatsApp and Messenger channels share with Meta: signatures, the subscription
handshake, text within Meta's limits, which Graph failures are retried, and the grouping of a
webhook's messages per shopper.  The channels' own tests check these pieces in place, over HTTP."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional

import httpx
import pytest

from connectors.meta import (
    MAX_RETRY_AFTER_S,
    by_shopper,
    handshake_answer,
    retry_after,
    retryable,
    shorten,
    signature_is_valid,
    split_text,
)

from .helpers.signing import signature

SECRET = "meta-app-secret"
VERIFY_TOKEN = "meta-verify-token"
BODY = b'{"object":"page","entry":[]}'
PARCEL = "\U0001F4E6"  # an emoji outside the BMP: two UTF-16 units


# --- signatures and the handshake -----------------------------------------------------------


@pytest.mark.parametrize("header, valid", [
    (signature(BODY, SECRET), True),                                        # Meta's exact header
    (signature(BODY, SECRET).upper().replace("SHA256=", "sha256="), True),  # hex digits in capitals
    (None, False),                                                          # no header at all
    ("", False),                                                            # an empty header
    ("sha256=", False),                                                     # the scheme without a digest
    (signature(BODY, "another-secret"), False),                             # signed with another app's secret
    (signature(BODY + b" ", SECRET), False),                                # body changed after signing
    ("sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(), False),  # the legacy SHA-1 header
    ("md5=" + hmac.new(SECRET.encode(), BODY, hashlib.md5).hexdigest(), False),    # the header may not pick the hash
    (signature(BODY, SECRET)[:-2], False),                                  # a truncated digest
    ("sha256=zz" + signature(BODY, SECRET)[9:], False),                     # not hex
    ("sha256=zz\u00e9", False),                                             # not even ASCII
])
def test_the_signature_check_accepts_only_the_hmac_of_the_body(header, valid):
    """Only the HMAC-SHA256 of the exact body under the app secret passes."""
    assert signature_is_valid(SECRET, BODY, header) is valid


def test_no_app_secret_means_nothing_is_accepted():
    """An unset secret never validates a body, even one 'signed' with the empty key."""
    assert not signature_is_valid("", BODY, signature(BODY, ""))


@pytest.mark.parametrize("mode, token, challenge, expected", [
    ("subscribe", VERIFY_TOKEN, "1158201444", (200, "1158201444")),     # Meta's check: challenge echoed
    ("subscribe", "guessed", "1158201444", (403, "verification failed")),  # wrong token
    ("unsubscribe", VERIFY_TOKEN, "1158201444", (403, "verification failed")),  # not a subscription
    (None, VERIFY_TOKEN, "1158201444", (400, None)),                    # no mode
    ("subscribe", None, "1158201444", (400, None)),                     # no token
    ("subscribe", VERIFY_TOKEN, None, (400, None)),                     # no challenge
    ("subscribe", VERIFY_TOKEN, "", (400, None)),                       # an empty challenge: nothing to echo
])
def test_the_handshake_echoes_the_challenge_only_for_the_right_token(mode, token, challenge, expected):
    """Meta's subscription check succeeds with the verify token and nothing else."""
    status, text = handshake_answer(mode, token, challenge, VERIFY_TOKEN)
    assert status == expected[0]
    if expected[1] is not None:
        assert text == expected[1]
    if status != 200:
        assert not challenge or challenge not in text


# --- text within Meta's limits ----------------------------------------------------------------


def test_long_text_is_split_under_the_limit_at_word_ends_without_losing_anything():
    """A 10,000-character answer goes out in pieces within WhatsApp's 4096, every word intact."""
    words = [f"word{i}" for i in range(1400)]
    text = " ".join(words[:700]) + "\n\n" + " ".join(words[700:])
    pieces = split_text(text, 4096)
    assert len(pieces) > 1 and all(0 < len(piece) <= 4096 for piece in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_long_text_is_cut_between_paragraphs_when_it_can_be():
    """Text over Messenger's 2000 is cut between paragraphs, nothing lost."""
    paragraphs = [f"Paragraph {n}: " + "word " * 150 for n in range(6)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    pieces = split_text(text, 2000)
    assert len(pieces) > 1 and all(len(p) <= 2000 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


@pytest.mark.parametrize("text, limit, pieces", [
    ("Your parcel left. It arrives Monday", 20, ["Your parcel left.", "It arrives Monday"]),  # a sentence end
    ("aaaa bbbb", 4, ["aaaa", "bbbb"]),                  # a break right after the last character that fits
    ("  short  ", 2000, ["short"]),                      # short text is only trimmed
    ("", 2000, []),                                      # nothing to send
])
def test_text_is_cut_at_natural_breaks(text, limit, pieces):
    """A cut falls at a sentence or word end, and the whitespace there is dropped."""
    assert split_text(text, limit) == pieces


def test_text_without_breaks_and_emoji_are_still_cut_within_the_limit():
    """One 5000-character word is cut hard; emoji count twice, as Meta counts them."""
    assert [len(p) for p in split_text("x" * 5000, 2000)] == [2000, 2000, 1000]
    assert [len(p) for p in split_text("x" * 4106, 4096)] == [4096, 10]
    assert [len(p) for p in split_text(PARCEL * 1500, 2000)] == [1000, 500]


@pytest.mark.parametrize("text, limit, expected", [
    ("Refund or replacement", 20, "Refund or replaceme\u2026"),   # cut, and the cut shows
    (" Where  is\nmy order? ", 20, "Where is my order?"),         # one line, fits: untouched
    (PARCEL * 12, 20, PARCEL * 9 + "\u2026"),                     # emoji count twice: 9 and the ellipsis fit
])
def test_titles_are_shortened_to_the_limit_with_an_ellipsis(text, limit, expected):
    """A title over Meta's limit is cut to fit and marked, counted in UTF-16 units."""
    assert shorten(text, limit) == expected


# --- which Graph failures are retried ---------------------------------------------------------


def graph_answer(status: int, error: Optional[dict] = None) -> httpx.Response:
    return httpx.Response(status, json={"error": error} if error else {},
                          request=httpx.Request("POST", "http://graph.test/v21.0/me/messages"))


@pytest.mark.parametrize("outcome, retried", [
    (graph_answer(429), True),                                       # rate limited
    (graph_answer(503), True),                                       # Meta having a bad moment
    (graph_answer(400, {"code": 4, "message": "Application request limit reached"}), True),  # a rate limit as 400
    (graph_answer(400, {"code": 1, "is_transient": True}), True),    # Graph says: try again
    (graph_answer(400, {"code": 100, "message": "Invalid parameter"}), False),  # our message is wrong
    (graph_answer(401), False),                                      # the token is wrong
    (graph_answer(200), False),                                      # it worked
    (httpx.ConnectError("refused"), True),                           # network trouble
    (httpx.ReadTimeout("slow"), True),                               # no answer in time
    (ValueError("a bug"), False),                                    # not a network error: retrying won't help
])
def test_only_temporary_failures_are_retried(outcome, retried):
    """429, 5xx, Graph's transient codes and transport errors are retried; other refusals are not."""
    assert retryable(outcome) is retried


@pytest.mark.parametrize("header, pause", [
    ("2", 2.0),                                   # honoured as asked
    ("120", MAX_RETRY_AFTER_S),                   # a shopper is waiting: capped
    (None, None),                                 # no header: the usual backoff
    ("Wed, 21 Oct 2025 07:28:00 GMT", None),      # a date is not honoured
    ("-1", None),                                 # nonsense
])
def test_a_retry_after_header_sets_the_pause_within_bounds(header, pause):
    """Graph's Retry-After decides the next pause, never longer than a shopper can wait."""
    answer = httpx.Response(429, headers={"Retry-After": header} if header is not None else {})
    assert retry_after(answer) == pause


# --- a webhook's messages per shopper ---------------------------------------------------------


@dataclass(frozen=True)
class Message:
    shopper_id: str
    delivery_id: str


def test_a_batch_is_grouped_per_shopper_in_arrival_order():
    """Each shopper's messages stay in the order Meta sent them; shoppers in order of first message."""
    batch = [Message("1", "a"), Message("2", "b"), Message("2", "c"), Message("1", "d"), Message("3", "e")]
    assert [[m.delivery_id for m in group] for group in by_shopper(batch)] == [["a", "d"], ["b", "c"], ["e"]]
    assert by_shopper([]) == []
