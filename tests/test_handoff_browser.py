"""Both sides of a hand-off in real headless Chromium: a shopper in the site widget, an agent in the console.

The shopper asks the assistant for a person on the demo shop page; an agent
logs in to the console, claims the conversation and replies; the shopper reads
the reply in the widget and answers; the agent sees the answer appear without
reloading; the agent hands back and the assistant answers the shopper again.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from bot.store import db
from bot.store.models import Handoff

from .test_console import BACK_WITH_BOT, PASSWORD, make_agent
from .test_widget import INJECTION, REPLY_TIMEOUT_MS, bot_bubbles, open_demo, say, stored

#: The console polls the open conversation every second.
CONSOLE_TIMEOUT_MS = 15_000


def open_handoff_id(database_url: str, conversation_id: str) -> int:
    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as session:
            return session.scalars(select(Handoff.id).where(Handoff.conversation_id == conversation_id,
                                                            Handoff.state == "queued")).one()
    finally:
        engine.dispose()


async def log_in(browser: Browser, console_url: str, username: str, errors: List[str]) -> Page:
    """The console in a fresh browser profile: the queue page sends it to the login form first."""
    page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{console_url}/")
    await expect(page).to_have_url(f"{console_url}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{console_url}/")
    await expect(page.locator("#me-name")).to_have_text("Maya Visser")
    return page


def transcript_lines(page: Page, who: str):
    return page.locator(f"#transcript .line--{who} .bubble")


async def test_a_widget_shopper_and_a_console_agent_talk_and_the_bot_takes_over_again(assistant, browser):
    """Shopper asks for a person; agent claims and replies; each sees the other's words; hand back: the bot answers."""
    console_url = assistant["console_url"]
    username = make_agent(assistant["database_url"], "Maya Visser")
    agent_errors: List[str] = []

    shopper = await open_demo(browser, assistant["url"])
    await say(shopper, "I want to talk to a real person")
    await expect(bot_bubbles(shopper).last).to_contain_text("passed your conversation", timeout=REPLY_TIMEOUT_MS)
    session_id = (await stored(shopper))["sessionId"]
    handoff_id = open_handoff_id(assistant["database_url"], f"widget:{session_id}")

    agent = await log_in(browser, console_url, username, agent_errors)
    card = agent.locator(f'.qcard[data-id="{handoff_id}"]')
    await expect(card).to_contain_text("The shopper asked for a person", timeout=CONSOLE_TIMEOUT_MS)
    await expect(card).to_contain_text("Site chat")
    await expect(card.locator(".wait")).to_have_text(re.compile(r"^waiting \d+ (s|min)$"))
    await card.get_by_role("button", name=re.compile("^Claim")).click()

    await expect(agent.locator("#conv-state")).to_have_text("With you", timeout=CONSOLE_TIMEOUT_MS)
    await expect(agent.locator("#claimed .qcard").filter(has_text="With you")).to_have_count(1)
    await expect(transcript_lines(agent, "shopper").first).to_have_text("I want to talk to a real person")
    await expect(transcript_lines(agent, "bot").last).to_contain_text("passed your conversation")
    box = agent.get_by_label("Message to the shopper", exact=True)
    await expect(box).to_be_enabled()
    reply = "Hi, I'm Maya from the shop. What can I do for you?"
    await box.fill(reply)
    await box.press("Enter")
    await expect(box).to_have_value("")
    await expect(agent.locator("#transcript .line--agent").last).to_contain_text(reply,
                                                                                 timeout=CONSOLE_TIMEOUT_MS)
    await expect(agent.locator("#transcript .line--agent .line-who").last).to_contain_text("Maya Visser")

    await expect(bot_bubbles(shopper).last).to_have_text(reply, timeout=CONSOLE_TIMEOUT_MS)
    # The shopper can tell a person wrote it: the agent's name stands above the bubble.
    await expect(shopper.locator(".wsw-msg--agent .wsw-author").last).to_have_text("Maya Visser")
    answers = await bot_bubbles(shopper).count()
    answer = f"My lamp arrived broken {INJECTION}"
    await say(shopper, answer)
    await expect(transcript_lines(agent, "shopper").last).to_have_text(answer, timeout=CONSOLE_TIMEOUT_MS)
    assert await agent.locator("#transcript img").count() == 0  # markup from a shopper stays text
    assert await agent.evaluate("window.__owned") is None
    # The widget's dots go on the server's "turn_done", sent after whatever the bot said in the turn.
    await expect(shopper.locator(".wsw-typing")).to_be_hidden(timeout=REPLY_TIMEOUT_MS)
    assert await bot_bubbles(shopper).count() == answers  # with a person: the bot is silent

    await agent.get_by_role("button", name="Hand back to assistant").click()
    dialog = agent.get_by_role("dialog")
    await expect(dialog).to_contain_text("Hand back to the assistant?")
    await dialog.get_by_role("button", name="Hand back").click()
    await expect(agent.locator("#conv-state")).to_have_text("Handed back", timeout=CONSOLE_TIMEOUT_MS)
    await expect(agent.locator(f'.qcard[data-id="{handoff_id}"]')).to_have_count(0)
    await expect(box).to_be_hidden()  # closed: nothing more to write here

    # The hand-back's greeting is the next thing the shopper sees: nothing came before it.
    await expect(bot_bubbles(shopper).nth(answers)).to_contain_text(BACK_WITH_BOT, timeout=REPLY_TIMEOUT_MS)
    await say(shopper, "where is my order?")
    await expect(bot_bubbles(shopper).last).to_contain_text("order number", timeout=REPLY_TIMEOUT_MS)
    await expect(transcript_lines(agent, "bot").last).to_contain_text("order number", timeout=CONSOLE_TIMEOUT_MS)
    assert not agent_errors


async def test_the_console_page_needs_a_login_and_logging_out_ends_it(assistant, browser):
    """The queue page sends a stranger to the login form; after Log out, Back shows the form again."""
    username = make_agent(assistant["database_url"], "Maya Visser")
    errors: List[str] = []
    page = await log_in(browser, assistant["console_url"], username, errors)
    cookies: Dict[str, Any] = {c["name"]: c for c in await page.context.cookies()}
    login = cookies["wismo_agent"]
    assert login["httpOnly"] and login["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # scripts cannot read the login
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{assistant['console_url']}/login")
    await page.goto(f"{assistant['console_url']}/")
    await expect(page).to_have_url(f"{assistant['console_url']}/login")
    assert not errors


async def test_the_agent_is_warned_when_a_whatsapp_shopper_wrote_more_than_a_day_ago(assistant, browser):
    """Meta drops free-form replies outside its 24-hour window: the console says so before the agent types."""
    import time
    import uuid

    import httpx

    wa_id = f"3161{uuid.uuid4().int % 10**7:07d}"
    two_days_ago = time.time() - 2 * 24 * 3600
    events = [{"event": "user", "text": "is anyone there? my parcel never came", "timestamp": two_days_ago,
               "input_channel": "whatsapp", "parse_data": {"intent": {"name": "human_handoff", "confidence": 1.0}}},
              {"event": "pause", "timestamp": two_days_ago + 1}]
    answer = httpx.post(f"{assistant['url']}/conversations/whatsapp:{wa_id}/tracker/events",
                        params={"token": assistant["token"]}, json=events, timeout=30)
    assert answer.status_code == 200, answer.text
    engine = db.make_engine(assistant["database_url"])
    try:
        with db.session_scope(engine) as session:
            handoff = Handoff(conversation_id=f"whatsapp:{wa_id}", channel="whatsapp", reason="asked",
                              summary="Asked for a person.",
                              context={}, transcript=[], state="queued")
            session.add(handoff)
            session.flush()
            handoff_id = handoff.id
    finally:
        engine.dispose()

    username = make_agent(assistant["database_url"], "Maya Visser")
    errors: List[str] = []
    agent = await log_in(browser, assistant["console_url"], username, errors)
    card = agent.locator(f'.qcard[data-id="{handoff_id}"]')
    await card.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-notice")).to_contain_text("within 24 hours", timeout=CONSOLE_TIMEOUT_MS)
    assert not errors
