/* Agent console: the login form.  Sends JSON (the API accepts nothing else) and goes to the queue. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");
  const username = document.getElementById("username");
  const password = document.getElementById("password");
  username.focus();

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!username.value.trim() || !password.value) {
      showError("Give your username and password.");
      return;
    }
    button.disabled = true;
    button.textContent = "Logging in…";
    try {
      const answer = await fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: username.value, password: password.value }),
      });
      if (answer.ok) {
        window.location.assign("/");
        return;
      }
      const body = await answer.json().catch(() => ({}));
      showError(body.error || "Logging in failed (HTTP " + answer.status + ").");
      password.value = "";
      password.focus();
    } catch (failure) {
      showError("The console could not be reached. Check your connection and try again.");
    } finally {
      button.disabled = false;
      button.textContent = "Log in";
    }
  });
});
