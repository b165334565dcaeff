/*
 * The site chat widget: a launcher button and a chat panel that talk to the
 * order assistant over socket.io (websocket transport).
 *
 * A shop embeds it with one script tag and an optional config object:
 *
 *   <script>window.wismoWidget = { title: "Wild Sparrow Home", colors: { primary: "#2f5d50" } };</script>
 *   <script src="https://chat.example.com/widget/widget.js" defer></script>
 *
 * The server serves this file with the Socket.IO client in front of it, in a
 * private scope (the `io` below); nothing is added to the page's globals.
 *
 * Whatever the bot or the shopper writes is put on the page as text (text
 * nodes, textContent); only http(s) addresses become links, built as elements.
 */
(function (io) {
  "use strict";

  const HOST_ID = "wismo-chat-widget";
  if (document.getElementById(HOST_ID)) {
    return; // embedded twice: the first one wins
  }

  /** A session id as the server accepts it: 128 random bits in lower-case hex. */
  const SESSION_ID = /^[0-9a-f]{32}$/;
  const MAX_INPUT = 1000;
  const MAX_HISTORY = 200;
  const MAX_BUTTONS = 10;
  const TYPING_TIMEOUT_MS = 30000;
  const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  const COLOR_VARS = {
    primary: "--wsw-primary",
    primaryText: "--wsw-primary-text",
    background: "--wsw-background",
    text: "--wsw-text",
    botBubble: "--wsw-bot-bubble",
    botText: "--wsw-bot-text",
  };

  const script = document.currentScript;
  const scriptUrl = script && script.src ? script.src : location.href;

  // --- configuration ---------------------------------------------------------

  function text(value, fallback, max) {
    return typeof value === "string" && value.trim() ? value.trim().slice(0, max) : fallback;
  }

  function buttonsFrom(value) {
    if (!Array.isArray(value)) {
      return [];
    }
    return value
      .filter((b) => b && typeof b.title === "string" && typeof b.payload === "string" && b.title.trim())
      .slice(0, MAX_BUTTONS)
      .map((b) => ({ title: b.title.trim().slice(0, 80), payload: b.payload.slice(0, MAX_INPUT) }));
  }

  function readConfig(raw) {
    const given = raw && typeof raw === "object" ? raw : {};
    let server;
    try {
      server = new URL(typeof given.serverUrl === "string" ? given.serverUrl : "../", scriptUrl);
    } catch (error) {
      server = new URL("../", scriptUrl);
    }
    if (server.protocol !== "http:" && server.protocol !== "https:") {
      server = new URL("../", scriptUrl);
    }
    if (!server.pathname.endsWith("/")) {
      server.pathname += "/";
    }
    const colors = {};
    const givenColors = given.colors && typeof given.colors === "object" ? given.colors : {};
    for (const key of Object.keys(COLOR_VARS)) {
      const value = givenColors[key];
      if (typeof value === "string" && window.CSS && CSS.supports("color", value)) {
        colors[key] = value;
      }
    }
    return {
      server: server,
      title: text(given.title, "Chat with us", 60),
      subtitle: text(given.subtitle, "We usually answer straight away", 80),
      greeting: text(given.greeting, "Hi! Ask me where your order is.", 500),
      greetingButtons: buttonsFrom(given.greetingButtons),
      placeholder: text(given.placeholder, "Type your message…", 80),
      colors: colors,
      position: given.position === "left" ? "left" : "right",
      storage: given.storage === "local" ? "local" : "session",
    };
  }

  // --- the conversation, kept across page loads -------------------------------

  function openStore(kind, key) {
    let area = null;
    try {
      area = kind === "local" ? window.localStorage : window.sessionStorage;
      area.setItem(key + ":probe", "1");
      area.removeItem(key + ":probe");
    } catch (error) {
      area = null; // storage blocked: the conversation lasts as long as the page
    }
    return {
      load() {
        try {
          return JSON.parse((area && area.getItem(key)) || "null");
        } catch (error) {
          return null;
        }
      },
      save(value) {
        try {
          if (area) {
            area.setItem(key, JSON.stringify(value));
          }
        } catch (error) {
          // full or blocked: keep going without persistence
        }
      },
    };
  }

  function messageFrom(value) {
    if (!value || typeof value !== "object" || (value.from !== "bot" && value.from !== "user")) {
      return null;
    }
    const body = typeof value.text === "string" ? value.text : "";
    const buttons = value.from === "bot" ? buttonsFrom(value.buttons) : [];
    return body || buttons.length ? { from: value.from, text: body, buttons: buttons } : null;
  }

  function restore(saved) {
    const state = { sessionId: null, messages: [], open: false };
    if (saved && typeof saved === "object") {
      if (typeof saved.sessionId === "string" && SESSION_ID.test(saved.sessionId)) {
        state.sessionId = saved.sessionId;
      }
      if (Array.isArray(saved.messages)) {
        state.messages = saved.messages.map(messageFrom).filter(Boolean).slice(-MAX_HISTORY);
      }
      state.open = saved.open === true;
    }
    return state;
  }

  /** 128 bits from the browser's CSPRNG: nobody can guess another shopper's conversation. */
  function newSessionId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** A bot message from the server, keeping only what the widget shows. */
  function botMessage(data) {
    if (!data || typeof data !== "object") {
      return null;
    }
    let body = typeof data.text === "string" ? data.text : "";
    const attachment = data.attachment && data.attachment.payload;
    if (!body && attachment && typeof attachment.src === "string") {
      body = attachment.src; // an image: offered as a link
    }
    const buttons = buttonsFrom(Array.isArray(data.quick_replies) ? data.quick_replies : data.buttons);
    if (!body && !buttons.length) {
      return null;
    }
    const message = { from: "bot", text: body, buttons: buttons };
    if (Number.isInteger(data.update) && data.update > 0) {
      message.update = data.update; // a proactive update: the server is told it was shown
    }
    if (typeof data.agent === "string" && data.agent.trim()) {
      message.agent = data.agent.trim().slice(0, 80); // a person from the shop's team wrote this
    }
    return message;
  }

  // --- building the page ------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";

  function el(tag, className, attributes) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, value);
    }
    return node;
  }

  function icon(paths, className) {
    const svg = document.createElementNS(SVG_NS, "svg");
    if (className) {
      svg.setAttribute("class", className);
    }
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    for (const d of paths) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    }
    return svg;
  }

  const ICONS = {
    chat: ["M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.6A.5.5 0 0 1 5 19.2V16h-.5A.5.5 0 0 1 4 15.5z"],
    close: ["M6 6l12 12", "M18 6L6 18"],
    send: ["M4 12l16-8-6 16-2.5-6.5z", "M11.5 13.5L20 4"],
  };

  function safeHref(candidate) {
    try {
      const url = new URL(candidate);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  /** Put `body` into `node` as text, with http(s) addresses as links. */
  function appendText(node, body) {
    let last = 0;
    for (const match of body.matchAll(URL_IN_TEXT)) {
      let address = match[0];
      while (/[.,;:!?)\]}]$/.test(address) && !(address.endsWith(")") && address.includes("("))) {
        address = address.slice(0, -1);
      }
      const href = safeHref(address);
      if (!href) {
        continue;
      }
      node.appendChild(document.createTextNode(body.slice(last, match.index)));
      const link = el("a", "wsw-link", { target: "_blank", rel: "noopener noreferrer nofollow" });
      link.href = href;
      link.textContent = address;
      node.appendChild(link);
      last = match.index + address.length;
    }
    node.appendChild(document.createTextNode(body.slice(last)));
  }

  function start(io) {
    const config = readConfig(window.wismoWidget);
    const store = openStore(config.storage, "wismo-widget:" + config.server.href);
    const state = restore(store.load());
    const save = () => store.save(state);

    const host = el("div", "", { id: HOST_ID });
    for (const [key, value] of Object.entries(config.colors)) {
      host.style.setProperty(COLOR_VARS[key], value);
    }
    const shadow = host.attachShadow({ mode: "open" });
    const stylesheet = el("link", "", { rel: "stylesheet", href: new URL("widget/widget.css", config.server).href });
    const root = el("div", "wsw", { "data-position": config.position });
    root.hidden = true; // until the stylesheet is there, so nothing flashes unstyled
    stylesheet.addEventListener("load", () => { root.hidden = false; });
    stylesheet.addEventListener("error", () => { root.hidden = false; });
    shadow.append(stylesheet, root);

    const launcher = el("button", "wsw-launcher", { type: "button", "aria-controls": "wsw-panel", "aria-expanded": "false" });
    const badge = el("span", "wsw-badge", { "aria-hidden": "true" });
    badge.hidden = true;
    launcher.append(icon(ICONS.chat, "wsw-icon-chat"), icon(ICONS.close, "wsw-icon-close"), badge);

    const panel = el("section", "wsw-panel", { id: "wsw-panel", role: "dialog", "aria-labelledby": "wsw-title" });
    panel.hidden = true;
    const header = el("header", "wsw-header");
    const titles = el("div", "wsw-titles");
    const title = el("h2", "wsw-title", { id: "wsw-title" });
    title.textContent = config.title;
    const subtitle = el("p", "wsw-subtitle");
    subtitle.textContent = config.subtitle;
    titles.append(title, subtitle);
    const closeButton = el("button", "wsw-close", { type: "button", "aria-label": "Close chat" });
    closeButton.appendChild(icon(ICONS.close));
    header.append(titles, closeButton);

    const status = el("div", "wsw-status", { role: "status" });
    status.hidden = true;
    const log = el("div", "wsw-log", { role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0" });
    const typing = el("div", "wsw-msg wsw-msg--bot wsw-typing");
    typing.hidden = true;
    const dots = el("div", "wsw-bubble wsw-dots", { "aria-hidden": "true" });
    dots.append(el("span"), el("span"), el("span"));
    const typingText = el("span", "wsw-visually-hidden");
    typingText.textContent = config.title + " is typing";
    typing.append(dots, typingText);

    const form = el("form", "wsw-form");
    const input = el("input", "wsw-input", {
      type: "text", autocomplete: "off", enterkeyhint: "send", maxlength: String(MAX_INPUT),
      "aria-label": "Message", placeholder: config.placeholder,
    });
    const sendButton = el("button", "wsw-send", { type: "submit", "aria-label": "Send" });
    sendButton.appendChild(icon(ICONS.send));
    form.append(input, sendButton);
    panel.append(header, status, log, form);
    root.append(panel, launcher);

    // --- showing the conversation --------------------------------------------

    let unread = 0;
    let typingTimer = null;

    function scrollDown() {
      log.scrollTop = log.scrollHeight;
    }

    function renderMessage(message) {
      const row = el("div", "wsw-msg wsw-msg--" + message.from);
      if (message.agent) {
        row.classList.add("wsw-msg--agent");
        const author = el("div", "wsw-author");
        author.textContent = message.agent;
        row.appendChild(author);
      }
      if (message.text) {
        const bubble = el("div", "wsw-bubble");
        appendText(bubble, message.text);
        row.appendChild(bubble);
      }
      return row;
    }

    function renderReplies(buttons) {
      const group = el("div", "wsw-replies", { role: "group", "aria-label": "Suggested replies" });
      for (const button of buttons) {
        const reply = el("button", "wsw-reply", { type: "button" });
        reply.textContent = button.title;
        reply.addEventListener("click", () => {
          send(button.payload, button.title);
          input.focus(); // the buttons are gone now; keep the keyboard in the panel
        });
        group.appendChild(reply);
      }
      return group;
    }

    // The log is a live region: nodes are added, never rebuilt, so a screen
    // reader announces each new message once.  The typing indicator stays its
    // last child; the quick replies of the latest bot message sit just above it.
    let replies = null;

    function showReplies() {
      if (replies) {
        replies.remove();
        replies = null;
      }
      const last = state.messages[state.messages.length - 1];
      if (last && last.from === "bot" && last.buttons.length) {
        replies = renderReplies(last.buttons); // only the latest question's answers can be picked
        log.insertBefore(replies, typing);
      }
    }

    function renderAll() {
      log.replaceChildren(...state.messages.map(renderMessage), typing);
      replies = null;
      showReplies();
      scrollDown();
    }

    function addMessage(message) {
      state.messages.push(message);
      if (state.messages.length > MAX_HISTORY) {
        state.messages.shift();
        log.firstElementChild.remove();
      }
      save();
      log.insertBefore(renderMessage(message), replies || typing);
      showReplies();
      scrollDown();
    }

    function setTyping(on) {
      clearTimeout(typingTimer);
      typing.hidden = !on;
      if (on) {
        typingTimer = setTimeout(() => setTyping(false), TYPING_TIMEOUT_MS);
      }
      scrollDown();
    }

    function setStatus(message) {
      status.textContent = message;
      status.hidden = !message;
    }

    function setUnread(count) {
      unread = count;
      badge.hidden = count === 0;
      badge.textContent = count > 9 ? "9+" : String(count);
      const suffix = count ? ` (${count} new message${count === 1 ? "" : "s"})` : "";
      launcher.setAttribute("aria-label", (panel.hidden ? "Open chat: " : "Close chat: ") + config.title + suffix);
    }

    // --- talking to the server ------------------------------------------------

    let socket = null;
    let confirmed = false;
    const seenUpdates = new Set(); // proactive updates shown on this page
    const outbox = [];

    function flush() {
      while (confirmed && socket && socket.connected && outbox.length) {
        socket.emit("user_uttered", { message: outbox.shift(), session_id: state.sessionId });
      }
    }

    function connect() {
      if (socket) {
        return;
      }
      if (typeof io !== "function") {
        setStatus("The chat could not be loaded. Please try again later.");
        return;
      }
      setStatus("Connecting…");
      socket = io(config.server.origin, {
        path: config.server.pathname + "socket.io",
        transports: ["websocket"],
        reconnection: true,
        reconnectionDelay: 1000,
        reconnectionDelayMax: 5000,
        timeout: 10000,
      });
      socket.on("connect", () => {
        confirmed = false;
        if (!state.sessionId) {
          state.sessionId = newSessionId();
          save();
        }
        socket.emit("session_request", { session_id: state.sessionId });
      });
      socket.on("session_confirm", (sessionId) => {
        if (typeof sessionId !== "string" || !SESSION_ID.test(sessionId)) {
          return;
        }
        if (sessionId !== state.sessionId) {
          state.sessionId = sessionId;
          save();
        }
        confirmed = true;
        setStatus("");
        flush();
      });
      socket.on("bot_uttered", (data) => {
        const message = botMessage(data);
        if (!message) {
          return;
        }
        if (message.update) {
          socket.emit("update_seen", { ids: [message.update] });
          if (seenUpdates.has(message.update)) {
            return; // shown already (sent live, then again when the page reconnected)
          }
          seenUpdates.add(message.update);
          delete message.update;
        } else {
          setTyping(false);
        }
        addMessage(message);
        if (panel.hidden) {
          setUnread(unread + 1);
        }
      });
      socket.on("turn_done", () => {
        // Handled without an answer (a person has the conversation): no dots.
        setTyping(false);
      });
      socket.on("disconnect", (reason) => {
        confirmed = false;
        setStatus("Connection lost. Reconnecting…");
        if (reason === "io server disconnect") {
          socket.connect(); // the server hung up on purpose; a new connection gets a new chance
        }
      });
      socket.on("connect_error", () => {
        confirmed = false;
        setStatus("Can't reach the chat right now. Reconnecting…");
      });
    }

    function send(message, shown) {
      const body = message.trim().slice(0, MAX_INPUT);
      if (!body) {
        return;
      }
      addMessage({ from: "user", text: (shown || body).slice(0, MAX_INPUT), buttons: [] });
      setTyping(true);
      outbox.push(body);
      connect();
      flush();
    }

    // --- opening, closing, typing --------------------------------------------

    function open() {
      panel.hidden = false;
      root.classList.add("is-open");
      launcher.setAttribute("aria-expanded", "true");
      setUnread(0);
      if (!state.messages.length) {
        addMessage({ from: "bot", text: config.greeting, buttons: config.greetingButtons });
      }
      state.open = true;
      save();
      connect();
      input.focus();
    }

    function close() {
      panel.hidden = true;
      root.classList.remove("is-open");
      launcher.setAttribute("aria-expanded", "false");
      state.open = false;
      save();
      setUnread(unread);
      launcher.focus();
    }

    launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
    closeButton.addEventListener("click", close);
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        close();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = input.value;
      input.value = "";
      send(body);
      input.focus();
    });

    document.body.appendChild(host);
    setUnread(0);
    renderAll();
    if (state.open) {
      panel.hidden = false; // reopened after a reload, without stealing the page's focus
      root.classList.add("is-open");
      launcher.setAttribute("aria-expanded", "true");
      setUnread(0);
      connect();
    }
  }

  if (document.body) {
    start(io);
  } else {
    document.addEventListener("DOMContentLoaded", () => start(io));
  }
})(typeof io === "function" ? io : undefined);
