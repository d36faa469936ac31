// lorahub serve: small enhancements over pages that work without JavaScript.
// Copy buttons, "verify now" in place, filters that apply when a choice changes. No data from the page is ever
// inserted as HTML: every text goes in through textContent.
"use strict";

(function () {
  const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

  function flash(button, text) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = text;
    button.classList.add("done");
    setTimeout(() => { button.textContent = before; button.classList.remove("done"); }, 1500);
  }

  function copyWithSelection(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }

  async function copy(button) {
    const text = button.dataset.copy;
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); copied = true; } catch (error) { copied = false; }
    }
    if (!copied) { copied = copyWithSelection(text); }
    flash(button, copied ? "Copied" : "Copy failed");
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function showReport(target, report) {
    target.replaceChildren();
    if (report.error) {
      target.dataset.state = "error";
      target.appendChild(element("h2", "", "Verify could not run"));
      target.appendChild(element("p", "", report.error.message));
      if (report.error.hint) { target.appendChild(element("p", "hint", report.error.hint)); }
      return;
    }
    target.dataset.state = report.ok ? "ok" : "failed";
    target.appendChild(element("h2", "", report.ok ? "Verify: all checks passed" : "Verify: a check failed"));
    const list = element("ul", "checks");
    for (const check of report.checks) {
      const item = element("li", check.ok ? "ok" : "failed");
      item.appendChild(element("span", "mark", check.ok ? "✓" : "✗"));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(element("strong", "", check.name));
      item.appendChild(document.createTextNode(" " + check.detail));
      list.appendChild(item);
    }
    target.appendChild(list);
  }

  async function verify(form) {
    const target = document.getElementById("verify-result");
    const button = form.querySelector("button");
    button.disabled = true;
    target.dataset.state = "running";
    target.replaceChildren(element("p", "muted", "Verifying…"));
    try {
      const response = await fetch(form.dataset.api, {
        method: "POST",
        headers: { "X-CSRF-Token": csrfToken(), "Accept": "application/json" },
        credentials: "same-origin",
      });
      showReport(target, await response.json());
    } catch (error) {
      showReport(target, { error: { message: String(error) } });
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.hidden = false;
      button.addEventListener("click", () => copy(button));
    }
    const verifyForm = document.getElementById("verify-form");
    if (verifyForm) {
      verifyForm.addEventListener("submit", (event) => { event.preventDefault(); verify(verifyForm); });
    }
    const filters = document.getElementById("filters");
    if (filters) {
      filters.addEventListener("change", (event) => {
        if (event.target.tagName === "SELECT") { filters.requestSubmit(); }
      });
    }
    document.documentElement.classList.add("js");
  });
})();
