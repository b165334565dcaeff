"""Personal data stays out of the logs: the masking rules, the log record factory, and the real servers' output.

The black-box tests hold a conversation with the running assistant in which a
shopper types their email address, their phone number and a widget session
id, a WhatsApp shopper writes from their phone number, and someone types a
password into the console's username field; then they read everything the
servers printed, and none of those may be in it.
"""

from __future__ import annotations

import io
import logging
import os
import random
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from bot.domain import redaction
from bot.domain.redaction import mask_conversation_id, mask_email, mask_phone, mask_session_id, redact

from .conftest import ACTION_TOKEN
from .helpers.servers import CHANNEL_ENV, MODEL, ROOT, Server, free_port
from .helpers.shopper import rest_say
from .helpers.waits import wait_until
from .test_whatsapp import Shopper as WhatsAppShopper

SESSION = "de3f6ad4c5f600a13138c1cb0821b7ff"


# --- the masking rules ----------------------------------------------------------------------


@pytest.mark.parametrize("email, masked", [
    ("julia.bakker@example.com", "j***@example.com"),
    ("O'Brien+orders@mail.example.co.uk", "O***@mail.example.co.uk"),
    ("x@y.io", "x***@y.io"),
    ("julia%40example.com", "j***%40example.com"),
])
def test_an_email_keeps_its_first_letter_and_its_domain(email, masked):
    assert mask_email(email) == masked
    assert redact(f"mail {email}, please") == f"mail {masked}, please"


@pytest.mark.parametrize("phone", ["+31 6 1234 5678", "+31612345678", "0612345678", "06-1234 5678",
                                   "+31 (0)6 1234 5678", "(+31) 6-12-34-56-78", "0031612345678"])
def test_a_phone_number_keeps_its_last_four_digits(phone):
    assert mask_phone(phone) == "…5678"
    assert redact(f"call me on {phone}.") == "call me on …5678."
    assert redact(f"phone={phone};") == "phone=…5678;"


def test_a_widget_session_id_keeps_its_first_four_characters():
    assert mask_session_id(SESSION) == "de3f…"
    assert redact(f"my session was {SESSION}!") == "my session was de3f…!"
    assert redact(f"message wamid.test{SESSION}") == f"message wamid.test{SESSION}"  # part of another id


@pytest.mark.parametrize("conversation, masked", [
    ("whatsapp:31612345678", "whatsapp:…5678"),
    ("messenger:24580312456789012", "messenger:…9012"),
    (f"widget:{SESSION}", "widget:de3f…"),
    ("rest:shopper-1234", "rest:shop…"),
    ("rest:julia.bakker@example.com", "rest:juli…"),
    ("rest:me", "rest:…"),
])
def test_a_conversation_id_is_masked_as_its_channel_ids_are(conversation, masked):
    assert mask_conversation_id(conversation) == masked
    assert redact(f"action failed for {conversation}") == f"action failed for {masked}"
    assert redact(f"sender_id '{conversation}'") == f"sender_id '{masked}'"
    channel, _, raw = conversation.partition(":")
    path = f"GET /conversations/{channel}%3A{raw}/tracker"
    assert redact(path) == f"GET /conversations/{channel}%3A{masked.partition(':')[2]}/tracker"


@pytest.mark.parametrize("text", [
    "whatsapp: could not send a text message to …5678: HTTP 500",
    "rest: refused a call without the REST token",
    "Order WS-1003, tracking JVGL4441521838388960 and 9400111899223856928499, UPS 1Z999AA10123456784",
    "at 2026-11-18 14:30:00,123 (2026-11-18T14:30:00+00:00), on 18-11-2026 14:30",
    "event 12345678-1234-1234-1234-123456789012 took 1764599990.123 s; confidence 0.98765432101",
    "Starting worker [9888] on http://127.0.0.1:5005, handoff 42, 153.00 EUR, interest:5",
    "verification: 3 failed checks with one email address (key 5f2c…) within an hour",
])
def test_what_is_not_personal_is_left_alone(text):
    assert redact(text) == text


def test_several_kinds_in_one_line():
    line = (f"user 'my mail is julia.bakker@example.com and my number +31 6 1234 5678' in widget:{SESSION} "
            "(was whatsapp:31687654321)")
    assert redact(line) == ("user 'my mail is j***@example.com and my number …5678' in widget:de3f… "
                            "(was whatsapp:…4321)")


# --- the log record factory -----------------------------------------------------------------


class Captured:
    """A logger of its own, set up after install() as Rasa's and Sanic's are, and what it wrote."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.log = logging.getLogger(f"redaction-test-{uuid.uuid4().hex[:6]}")
        self.log.addHandler(self.handler)
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def redacting() -> Iterator[Captured]:
    """install() for this test only."""
    previous, access = logging.getLogRecordFactory(), logging.getLogger("sanic.access")
    filters = list(access.filters)
    redaction.install()
    captured = Captured()
    try:
        yield captured
    finally:
        logging.setLogRecordFactory(previous)
        access.filters[:] = filters
        captured.log.removeHandler(captured.handler)


def test_install_masks_every_record_its_arguments_and_its_traceback(redacting):
    log = redacting.log
    log.info("verified %s for %s", "julia.bakker@example.com", f"widget:{SESSION}")
    log.warning("could not send to %(to)s", {"to": "whatsapp:31612345678"})
    log.debug(ValueError("+31 6 1234 5678"))  # a message that is not a string
    try:
        raise KeyError(f"no tracker for messenger:24580312456789012 ({SESSION})")
    except KeyError:
        log.exception("action failed for %s", "rest:julia.bakker@example.com")
    text = redacting.text()
    for secret in ("julia.bakker@example.com", SESSION, "31612345678", "1234 5678", "24580312456789012", "julia.b"):
        assert secret not in text, text
    assert "verified j***@example.com for widget:de3f…" in text
    assert "could not send to whatsapp:…5678" in text
    assert "DEBUG" in text and "…5678" in text
    assert "action failed for rest:juli…" in text and "KeyError: 'no tracker for messenger:…9012 (de3f…)'" in text


def test_install_masks_the_request_line_of_sanics_access_log(redacting):
    access = logging.getLogger("sanic.access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(host)s %(request)s %(message)s %(status)d"))
    access.addHandler(handler)
    level, propagate = access.level, access.propagate
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        access.info("", extra={"host": "127.0.0.1:5005", "status": 200,
                               "request": "GET http://127.0.0.1:5005/conversations/whatsapp%3A31612345678/tracker"})
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
        access.propagate = propagate
    assert stream.getvalue() == "127.0.0.1:5005 GET http://127.0.0.1:5005/conversations/whatsapp%3A…5678/tracker  200\n"


def test_install_is_idempotent_and_keeps_a_broken_log_call_quiet(redacting):
    factory = logging.getLogRecordFactory()
    redaction.install()
    assert logging.getLogRecordFactory() is factory and redaction.installed()
    assert len([f for f in logging.getLogger("sanic.access").filters if isinstance(f, redaction.ExtrasFilter)]) == 1
    redacting.log.info("two %s %s", "julia.bakker@example.com")  # one argument short
    assert "julia.bakker" not in redacting.text() and "could not be formatted" in redacting.text()


def test_the_domain_module_imports_only_the_standard_library():
    import ast

    tree = ast.parse((ROOT / "bot" / "domain" / "redaction.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "logging", "re", "typing", "warnings"}, imported


# --- the real servers -----------------------------------------------------------------------


def random_phone() -> str:
    """A Dutch mobile number as people type it: +31 6 1234 5678."""
    digits = "".join(random.choices("0123456789", k=8))
    return f"+31 6 {digits[:4]} {digits[4:]}"


def converse(server: Dict[str, Any], graph: Any) -> List[str]:
    """A shopper types personal details, a WhatsApp shopper writes, passwords go into the username field.

    Returns everything that must not be in the servers' output, in the forms it could take there.
    """
    url, order = server["url"], server["orders"]["in_transit_on_time"]
    phone, session, email = random_phone(), secrets.token_hex(16), f"sam.{uuid.uuid4().hex[:8]}@example.org"
    sender = f"redact-{uuid.uuid4().hex[:8]}"
    assert "email address" in " ".join(rest_say(url, sender, f"where is my order {order['order_number']}?"))
    assert "on its way" in " ".join(rest_say(url, sender, f"it's {order['email']}"))
    rest_say(url, sender, f"you can call me on {phone} or mail {email}")
    rest_say(url, sender, f"my chat session on the website was {session}")
    rest_say(url, phone.replace(" ", ""), "hello")  # a REST caller that uses the phone number as sender id
    shopper = WhatsAppShopper(server, graph)
    shopper.say(f"hi, where is {order['order_number']}? it's {order['email']}")
    shopper.expect("on its way", timeout=60)
    # Someone types their password where the username goes, in two shapes.
    passwords = [f"Tr0ub4dor&{secrets.token_hex(4)}", f"summer-{secrets.token_hex(4)}-sunshine"]
    before = len(server["output"])
    for typed in passwords:
        answer = httpx.post(f"{server['console_url']}/api/login", json={"username": typed, "password": "x" * 12},
                            timeout=30)
        assert answer.status_code == 401, answer.text
    wait_until(lambda: sum("failed login" in line for line in server["output"][before:]) >= 2,
               what="the console's log of the failed logins", timeout=20)
    compact = phone.replace(" ", "")
    return [order["email"], email, phone, compact, compact[1:], shopper.wa_id, session, *passwords]


def leaks(output: List[str], secrets_: List[str]) -> List[str]:
    text = "".join(output).lower()
    return [secret for secret in secrets_ if secret.lower() in text]


def test_the_assistants_logs_carry_no_personal_data(assistant, fake_graph):
    """`python -m bot run` as the suite runs it: nothing typed above is in what its servers printed."""
    typed = converse(assistant, fake_graph)
    found = leaks(assistant["output"], typed)
    assert not found, f"in the logs: {found}\n" + "".join(
        line for line in assistant["output"] if any(s.lower() in line.lower() for s in found))[-3000:]


@pytest.fixture(scope="module")
def debug_assistant(tmp_path_factory, fake_graph) -> Iterator[Dict[str, Any]]:
    """`python -m bot run` with Rasa logging at DEBUG, which prints every message and slot it handles."""
    import json

    assert MODEL.is_file(), "no trained model: `make test` trains it first (or run `make train`)"
    tmp = tmp_path_factory.mktemp("debug-assistant")
    endpoints = tmp / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: ${ACTION_ENDPOINT_URL}\n"
                         "  headers:\n    Authorization: Bearer ${ACTION_SERVER_TOKEN}\n")
    env = {**os.environ, **CHANNEL_ENV, "LOG_LEVEL": "DEBUG",
           "DATABASE_URL": f"sqlite:///{tmp / 'store.db'}", "RASA_PORT": str(free_port()),
           "ACTION_PORT": str(free_port()), "CONSOLE_PORT": str(free_port()), "RASA_AUTH_TOKEN": "debug-token",
           "ACTION_SERVER_TOKEN": ACTION_TOKEN, "RASA_ENDPOINTS": str(endpoints),
           "WHATSAPP_API_BASE_URL": fake_graph.url, "MESSENGER_API_BASE_URL": fake_graph.url}
    subprocess.run([sys.executable, "-m", "bot", "setup"], cwd=ROOT, env=env, check=True, capture_output=True)
    listed = subprocess.run([sys.executable, "-m", "bot", "demo-orders", "--json"], cwd=ROOT, env=env, check=True,
                            capture_output=True, text=True)
    with Server(env=env, name="the assistant at DEBUG").start() as server:
        yield {"url": f"http://127.0.0.1:{env['RASA_PORT']}", "output": server.output,
               "orders": {r["scenario"]: r for r in json.loads(listed.stdout)},
               "console_url": f"http://127.0.0.1:{env['CONSOLE_PORT']}"}


@pytest.mark.slow  # starts its own `python -m bot run`
def test_rasas_debug_log_carries_no_personal_data(debug_assistant, fake_graph):
    """At DEBUG Rasa logs each message, its entities and the slots set: all of it reaches the log masked."""
    typed = converse(debug_assistant, fake_graph)
    output = debug_assistant["output"]
    parsed = [line for line in output if "processor.message.parse" in line]
    assert parsed, "Rasa did not log the messages it parsed (is LOG_LEVEL=DEBUG still honoured?)"
    found = leaks(output, typed)
    assert not found, f"in the logs: {found}\n" + "".join(
        line for line in output if any(s.lower() in line.lower() for s in found))[-3000:]
    # The messages are still there, masked.
    assert any("it's j***@example.com" in line for line in parsed), parsed
    assert any("you can call me on …" in line for line in parsed), parsed


def test_python_warnings_are_redacted_too():
    """Rasa reports a shorthand it cannot parse as a warning quoting the shopper's text: masked on stderr."""
    import subprocess
    import sys

    code = ("import warnings; from bot.domain import redaction; redaction.install(); "
            "warnings.warn(\"Failed to parse arguments in line '/order_status{\\\"email\\\": "
            "\\\"leaky.person@example.com\\\"}'\")")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert "Failed to parse arguments" in result.stderr
    assert "leaky.person@example.com" not in result.stderr and "@example.com" in result.stderr
