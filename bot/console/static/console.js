/* Agent console: the queue and one conversation at a time.
 *
 * Plain JavaScript.  Everything shoppers, the assistant or the store wrote is
 * put on the page with textContent (never as HTML), so a message cannot add
 * markup or script to an agent's page.  The queue is polled every few seconds
 * and the open conversation every second, so new shopper messages appear
 * without reloading.
 */
"use strict";

(function () {
  // Meta's channels accept a free-form reply only this long after the shopper last wrote.
  const REPLY_WINDOW_MS = 24 * 60 * 60 * 1000;
  const QUEUE_EVERY_MS = 2500;
  const DETAIL_EVERY_MS = 1000;
  const HIDDEN_EVERY_MS = 5000;
  const LONG_WAIT_S = 300;
  const CHANNELS = { widget: "Site chat", whatsapp: "WhatsApp", messenger: "Messenger", rest: "REST API" };
  const STATES = { queued: "Waiting", claimed: "In progress", resolved: "Resolved", returned: "Handed back" };

  const state = {
    me: null,
    timezone: undefined,
    clockOffsetMs: 0,
    queue: [],
    selected: null,
    detail: null,
    rendered: [],
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- talking to the console's API -----------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, body) {
    const options = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let answer;
    try {
      answer = await fetch(path, options);
    } catch (failure) {
      throw new ApiError(0, "The console could not be reached. Check your connection.");
    }
    if (answer.status === 401) {
      window.location.assign("/login");
      throw new ApiError(401, "Your login has ended.");
    }
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new ApiError(answer.status, data.error || "Something went wrong (HTTP " + answer.status + ").");
    return data;
  }

  let toastTimer = null;
  function toast(text) {
    const box = $("toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  // --- times ----------------------------------------------------------------------------

  function serverNow() {
    return Date.now() + state.clockOffsetMs;
  }

  function syncClock(isoNow) {
    const server = Date.parse(isoNow);
    if (!Number.isNaN(server)) state.clockOffsetMs = server - Date.now();
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return minutes + " min";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " days";
  }

  function waitedSeconds(handoff) {
    if (handoff.state === "queued") return (serverNow() - Date.parse(handoff.created_at)) / 1000;
    return handoff.waiting_seconds;
  }

  function clock(iso, withDay) {
    if (!iso) return "";
    const when = new Date(iso);
    const options = { hour: "2-digit", minute: "2-digit", timeZone: state.timezone };
    if (withDay) Object.assign(options, { weekday: "short", day: "numeric", month: "short" });
    try {
      return new Intl.DateTimeFormat(undefined, options).format(when);
    } catch (failure) {
      return when.toLocaleString();
    }
  }

  function day(isoDate) {
    if (!isoDate) return "";
    const [y, m, d] = isoDate.split("-").map(Number);
    return new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" })
      .format(new Date(Date.UTC(y, m - 1, d)));
  }

  // --- the queue ------------------------------------------------------------------------

  function channelBadge(channel) {
    return el("span", "badge badge--" + (CHANNELS[channel] ? channel : "other"), CHANNELS[channel] || channel);
  }

  function queueCard(handoff) {
    const item = el("li", "qcard qcard--" + handoff.state);
    item.dataset.id = String(handoff.id);
    item.setAttribute("aria-current", String(state.selected === handoff.id));
    const open = el("button", "qcard-open");
    open.type = "button";
    const top = el("div", "qcard-top");
    const wait = el("span", "wait");
    wait.dataset.wait = String(handoff.id);
    top.append(channelBadge(handoff.channel), wait);
    open.append(top, el("div", "qcard-reason", handoff.reason_text));
    open.append(el("div", "qcard-line", handoff.order_number ? "Order " + handoff.order_number : "No verified order"));
    if (handoff.state === "claimed") {
      const mine = state.me && handoff.agent_id === state.me.id;
      open.append(el("div", "qcard-line", mine ? "With you" : "With " + (handoff.agent_name || "another agent")));
    }
    open.setAttribute("aria-label", [handoff.reason_text, CHANNELS[handoff.channel] || handoff.channel,
      handoff.order_number ? "order " + handoff.order_number : "no verified order"].join(", "));
    open.addEventListener("click", () => select(handoff.id));
    item.append(open);
    if (handoff.state === "queued") {
      const take = el("button", "btn btn-primary btn-small qcard-claim", "Claim");
      take.type = "button";
      take.setAttribute("aria-label", "Claim: " + handoff.reason_text);
      take.addEventListener("click", () => claim(handoff.id));
      const foot = el("div", "qcard-foot");
      foot.append(take);
      item.append(foot);
    }
    return item;
  }

  function tickWaits() {
    for (const handoff of state.queue) {
      const node = document.querySelector('[data-wait="' + handoff.id + '"]');
      if (!node) continue;
      const seconds = waitedSeconds(handoff);
      node.textContent = handoff.state === "queued" ? "waiting " + duration(seconds) : "waited " + duration(seconds);
      node.classList.toggle("wait--long", handoff.state === "queued" && seconds >= LONG_WAIT_S);
    }
    if (state.detail) renderMeta(state.detail);
  }

  function renderQueue(data) {
    state.queue = data.handoffs;
    const waiting = data.handoffs.filter((h) => h.state === "queued");
    const claimed = data.handoffs.filter((h) => h.state === "claimed");
    // Rebuilt whole on every poll; keep keyboard focus on the same card when it is still there.
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(".qcard");
    const focusId = focused ? focused.dataset.id : null;
    const focusClaim = document.activeElement && document.activeElement.classList.contains("qcard-claim");
    $("waiting").replaceChildren(...waiting.map(queueCard));
    $("claimed").replaceChildren(...claimed.map(queueCard));
    $("waiting-empty").hidden = waiting.length > 0;
    $("claimed-empty").hidden = claimed.length > 0;
    $("waiting-count").textContent = String(waiting.length);
    $("waiting-count").classList.toggle("count--busy", waiting.length > 0);
    $("claimed-count").textContent = String(claimed.length);
    const online = data.online || [];
    $("presence").textContent = online.length === 1 ? "1 agent online" : online.length + " agents online";
    $("presence").title = online.join(", ");
    document.title = (waiting.length ? "(" + waiting.length + ") " : "") + "Agent console";
    if (focusId) {
      const again = document.querySelector('.qcard[data-id="' + focusId + '"] ' + (focusClaim ? ".qcard-claim" : ".qcard-open"));
      if (again) again.focus();
    }
    tickWaits();
  }

  async function pollQueue() {
    try {
      const data = await api("/api/queue");
      syncClock(data.now);
      renderQueue(data);
    } catch (failure) {
      if (failure.status !== 401) toast(failure.message);
    } finally {
      setTimeout(pollQueue, document.hidden ? HIDDEN_EVERY_MS : QUEUE_EVERY_MS);
    }
  }

  // --- one conversation -----------------------------------------------------------------

  function select(id) {
    if (state.selected !== id) {
      state.selected = id;
      state.detail = null;
      state.rendered = [];
      $("transcript").replaceChildren();
      $("reply-text").value = "";
      history.replaceState(null, "", "#handoff-" + id);
    }
    for (const card of document.querySelectorAll(".qcard")) {
      card.setAttribute("aria-current", String(card.dataset.id === String(id)));
    }
    loadDetail();
  }

  let detailTimer = null;
  let detailRequest = 0;
  async function loadDetail() {
    clearTimeout(detailTimer);
    const id = state.selected;
    if (id === null) return;
    const request = ++detailRequest;
    try {
      const data = await api("/api/handoffs/" + id);
      if (request !== detailRequest || id !== state.selected) return;
      syncClock(data.now);
      renderDetail(data.handoff);
    } catch (failure) {
      if (failure.status === 404) {
        toast(failure.message);
        state.selected = null;
        showPlaceholder();
        return;
      }
      if (failure.status !== 401) toast(failure.message);
    }
    if (id === state.selected) {
      detailTimer = setTimeout(loadDetail, document.hidden ? HIDDEN_EVERY_MS : DETAIL_EVERY_MS);
    }
  }

  function showPlaceholder() {
    $("conversation").hidden = true;
    $("placeholder").hidden = false;
    history.replaceState(null, "", window.location.pathname);
  }

  function renderMeta(handoff) {
    const waited = duration(waitedSeconds(handoff));
    const parts = ["Hand-off #" + handoff.id, handoff.reason_text,
      handoff.state === "queued" ? "waiting " + waited : "waited " + waited + " for a person"];
    $("conv-meta").textContent = parts.join(" · ");
  }

  function stateLabel(handoff) {
    if (handoff.state === "claimed") return handoff.mine ? "With you" : "With " + (handoff.agent_name || "another agent");
    return STATES[handoff.state] || handoff.state;
  }

  function renderDetail(handoff) {
    state.detail = handoff;
    $("placeholder").hidden = true;
    $("conversation").hidden = false;
    $("conv-title").textContent = (CHANNELS[handoff.channel] || handoff.channel) + " · " + shortId(handoff);
    renderMeta(handoff);

    const pill = $("conv-state");
    pill.textContent = stateLabel(handoff);
    pill.className = "pill" + (handoff.state === "queued" ? " pill--queued" : handoff.mine ? " pill--mine"
      : handoff.state === "claimed" ? "" : " pill--closed");

    $("claim").hidden = handoff.state !== "queued";
    $("hand-back").hidden = !handoff.mine;
    $("resolve").hidden = !handoff.mine;

    const closed = handoff.state === "resolved" || handoff.state === "returned";
    $("reply-form").hidden = closed;
    const box = $("reply-text");
    const wasDisabled = box.disabled;
    box.disabled = !handoff.mine || state.busy;
    $("send").disabled = !handoff.mine || state.busy;
    box.placeholder = handoff.mine
      ? "Write to the shopper as " + (state.me ? state.me.name : "yourself") + "…"
      : handoff.state === "queued" ? "Claim this conversation to reply."
        : (handoff.agent_name || "Another agent") + " is handling this conversation.";
    if (wasDisabled && !box.disabled && !state.busy) box.focus();

    const notices = [];
    if (handoff.transcript === null) {
      notices.push((handoff.transcript_error || "The live conversation is not available.") +
        " Showing the transcript saved at the hand-off.");
    }
    if (handoff.channel === "rest" && handoff.state === "claimed") {
      notices.push("This shopper uses the REST API: replies are recorded in the conversation but cannot be pushed to them.");
    }
    const lastShopper = (handoff.transcript || []).filter((line) => line.from === "shopper").pop();
    if ((handoff.channel === "whatsapp" || handoff.channel === "messenger") && handoff.state === "claimed" &&
        lastShopper && lastShopper.at && Date.now() - Date.parse(lastShopper.at) > REPLY_WINDOW_MS) {
      notices.push((handoff.channel === "whatsapp" ? "WhatsApp" : "Messenger") +
        " delivers free-form replies only within 24 hours of the shopper's last message, which is older:" +
        " this reply may not reach them. Contact them by email instead.");
    }
    if (handoff.state === "claimed" && handoff.mine && handoff.paused === false) {
      notices.push("The assistant is not paused in this conversation, so it may answer the shopper too.");
    }
    $("conv-notice").textContent = notices.join(" ");
    $("conv-notice").hidden = notices.length === 0;

    renderTranscript(handoff.transcript || handoff.transcript_at_handoff || []);
    renderContext(handoff);
  }

  function shortId(handoff) {
    const id = String(handoff.conversation_id);
    if (handoff.channel === "whatsapp") return "+" + id;
    return id.length > 14 ? id.slice(0, 6) + "…" + id.slice(-4) : id;
  }

  function lineKey(line) {
    return [line.from, line.at, line.text].join("\u0001");
  }

  function transcriptLine(line) {
    const from = ["shopper", "bot", "agent", "system"].includes(line.from) ? line.from : "system";
    const item = el("li", "line line--" + from);
    if (from !== "system") {
      let who = from === "shopper" ? "Shopper" : from === "bot" ? "Assistant" : (line.agent || "Agent");
      if (from === "bot" && line.update === true) {
        who = "Proactive update";
        item.classList.add("line--update");
      }
      item.append(el("span", "line-who", line.at ? who + " · " + clock(line.at) : who));
    }
    item.append(el("div", "bubble", line.text));
    if (Array.isArray(line.buttons) && line.buttons.length) {
      const chips = el("div", "chips");
      chips.setAttribute("aria-label", "Buttons offered");
      for (const title of line.buttons) chips.append(el("span", "chip", title));
      item.append(chips);
    }
    return item;
  }

  function renderTranscript(lines) {
    const list = $("transcript");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    const keys = lines.map(lineKey);
    const old = state.rendered;
    const extends_ = keys.length >= old.length && old.every((key, i) => key === keys[i]);
    if (extends_) {
      // Append only what is new, so a screen reader announces each new message once.
      for (let i = old.length; i < lines.length; i++) list.append(transcriptLine(lines[i]));
    } else {
      list.replaceChildren(...lines.map(transcriptLine));
    }
    state.rendered = keys;
    if (nearBottom || !extends_ || old.length === 0) list.scrollTop = list.scrollHeight;
  }

  function fact(list, term, value) {
    if (value === undefined || value === null || value === "") return;
    list.append(el("dt", null, term), el("dd", null, value));
  }

  function renderContext(handoff) {
    const facts = $("handoff-facts");
    facts.replaceChildren();
    fact(facts, "Reason", handoff.reason_text);
    fact(facts, "Summary", handoff.summary);
    fact(facts, "Handed over", clock(handoff.created_at, true));
    if (handoff.claimed_at) fact(facts, "Claimed", clock(handoff.claimed_at, true) + " by " + (handoff.agent_name || "an agent"));
    if (handoff.closed_at) fact(facts, STATES[handoff.state] || "Closed", clock(handoff.closed_at, true));
    fact(facts, "Conversation", handoff.conversation_id);

    const order = handoff.order;
    const box = $("order");
    box.replaceChildren();
    const shipments = $("shipments");
    shipments.replaceChildren();
    if (!order) {
      box.append(el("p", "muted", "The shopper did not verify an order before the hand-off."));
      return;
    }
    const list = el("dl", "facts");
    fact(list, "Number", order.number);
    fact(list, "Customer", order.customer);
    fact(list, "Email", order.email);
    fact(list, "Phone", order.phone);
    fact(list, "Placed", clock(order.placed_at, true));
    fact(list, "Promised", day(order.promised_date));
    fact(list, "Value", order.value + " " + order.currency);
    box.append(list);
    const address = el("address", "address");
    address.textContent = order.address.join("\n");
    box.append(el("h3", "visually-hidden", "Delivery address"), address);
    if (order.items.length) {
      const items = el("ul", "items");
      for (const item of order.items) items.append(el("li", null, item.quantity + " × " + item.name));
      box.append(items);
    }
    for (const shipment of order.shipments) shipments.append(shipmentCard(shipment));
  }

  function safeLink(url, text) {
    try {
      const parsed = new URL(url);
      if (parsed.protocol === "https:" || parsed.protocol === "http:") {
        const link = el("a", null, text);
        link.href = parsed.href;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        return link;
      }
    } catch (failure) { /* not a URL: shown as text */ }
    return el("span", null, text);
  }

  function shipmentCard(shipment) {
    const card = el("section", "card");
    const head = el("div", "ship-head");
    head.append(el("h3", null, shipment.carrier), safeLink(shipment.tracking_url, shipment.tracking_number));
    card.append(el("h2", null, "Shipment"), head);
    let status = shipment.status_text;
    if (shipment.presumed_lost) status += " · presumed lost";
    else if (shipment.stalled) status += " · no scans lately";
    if (shipment.is_late && shipment.days_late > 0) status += " · " + shipment.days_late + (shipment.days_late === 1 ? " day late" : " days late");
    card.append(el("p", "ship-status" + (shipment.is_late || shipment.presumed_lost ? " ship-status--late" : ""), status));
    const facts = el("dl", "facts");
    fact(facts, "Delay", shipment.delay_reason);
    fact(facts, "Expected", day(shipment.eta));
    fact(facts, "Delivered", day(shipment.delivered_on));
    card.append(facts);
    if (shipment.events.length) {
      const timeline = el("ol", "timeline");
      timeline.setAttribute("aria-label", "Carrier scans, newest first");
      for (const scan of shipment.events) {
        const item = el("li");
        const time = el("time", null, clock(scan.at, true));
        time.dateTime = scan.at || "";
        item.append(time, el("span", null, [scan.text || scan.status_text || scan.code, scan.location].filter(Boolean).join(" · ")));
        timeline.append(item);
      }
      card.append(timeline);
    } else {
      card.append(el("p", "muted small", "No carrier scans yet."));
    }
    return card;
  }

  // --- actions --------------------------------------------------------------------------

  async function act(work) {
    if (state.busy) return;
    state.busy = true;
    for (const id of ["claim", "hand-back", "resolve", "send"]) $(id).disabled = true;
    try {
      await work();
    } catch (failure) {
      if (failure.status !== 401) toast(failure.message);
    } finally {
      state.busy = false;
      for (const id of ["claim", "hand-back", "resolve"]) $(id).disabled = false;
      await Promise.all([loadDetail(), refreshQueueNow()]);
    }
  }

  async function refreshQueueNow() {
    try {
      const data = await api("/api/queue");
      syncClock(data.now);
      renderQueue(data);
    } catch (failure) { /* the regular poll reports it */ }
  }

  function claim(id) {
    return act(async () => {
      await api("/api/handoffs/" + id + "/claim", {});
      if (state.selected !== id) select(id);
    });
  }

  function sendReply() {
    const box = $("reply-text");
    const text = box.value.trim();
    if (!text || !state.detail || !state.detail.mine) return;
    const id = state.selected;
    return act(async () => {
      await api("/api/handoffs/" + id + "/reply", { text });
      if (state.selected === id) box.value = "";
    }).then(() => box.focus());
  }

  function confirmDialog({ title, text, ok, closing }) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = ok;
    $("closing-field").hidden = !closing;
    $("closing-text").value = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "ok" ? { closing: $("closing-text").value.trim() } : null);
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      (closing ? $("closing-text") : $("confirm-ok")).focus();
    });
  }

  async function resolveConversation() {
    const id = state.selected;
    const answer = await confirmDialog({
      title: "Resolve this conversation?",
      text: "The shopper's next message goes to the assistant again.",
      ok: "Resolve",
      closing: true,
    });
    if (!answer) return;
    await act(() => api("/api/handoffs/" + id + "/resolve", answer.closing ? { text: answer.closing } : {}));
  }

  async function handBack() {
    const id = state.selected;
    const answer = await confirmDialog({
      title: "Hand back to the assistant?",
      text: "The assistant tells the shopper it is back and answers from here on.",
      ok: "Hand back",
      closing: false,
    });
    if (!answer) return;
    await act(() => api("/api/handoffs/" + id + "/hand-back", {}));
  }

  async function logout() {
    try {
      await api("/api/logout", {});
    } finally {
      window.location.assign("/login");
    }
  }

  // --- start ----------------------------------------------------------------------------

  async function start() {
    $("logout").addEventListener("click", logout);
    $("claim").addEventListener("click", () => { if (state.selected !== null) claim(state.selected); });
    $("resolve").addEventListener("click", resolveConversation);
    $("hand-back").addEventListener("click", handBack);
    $("reply-form").addEventListener("submit", (event) => { event.preventDefault(); sendReply(); });
    $("reply-text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        sendReply();
      }
    });
    try {
      const me = await api("/api/me");
      state.me = me.agent;
      state.timezone = me.timezone;
      $("me-name").textContent = me.agent.name;
      $("shop-name").textContent = me.shop;
      $("reply-text").maxLength = me.max_reply_chars;
      $("closing-text").maxLength = me.max_reply_chars;
    } catch (failure) {
      if (failure.status !== 401) toast(failure.message);
      return;
    }
    pollQueue();
    setInterval(tickWaits, 1000);
    // A link to one conversation (#handoff-12) opens it, on load or when followed.
    const openLinked = () => {
      const match = /^#handoff-(\d+)$/.exec(window.location.hash);
      if (match) select(Number(match[1]));
    };
    window.addEventListener("hashchange", openLinked);
    openLinked();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
