// Shared helpers for our pages: CSRF-aware fetch, copy buttons, local times.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.csrfToken = meta ? meta.content : "";

  /** fetch() that sends the CSRF token and JSON, and throws the API's message on error. */
  window.apiFetch = async function (url, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ "X-CSRFToken": window.csrfToken }, opts.headers);
    if (opts.json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.json);
      delete opts.json;
    }
    const res = await fetch(url, opts);
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
    if (!res.ok) {
      const err = new Error((body && body.message) || res.statusText);
      err.status = res.status;
      err.body = body;
      throw err;
    }
    return body;
  };

  // Print buttons (no inline onclick: the CSP allows scripts from files only).
  document.addEventListener("click", function (ev) {
    if (ev.target.closest("[data-print]")) window.print();
  });

  document.addEventListener("click", function (ev) {
    const btn = ev.target.closest("[data-copy]");
    if (!btn) return;
    const target = document.querySelector(btn.dataset.copy);
    const text = target ? (target.value || target.textContent) : btn.dataset.copy;
    navigator.clipboard.writeText(text).then(function () {
      const old = btn.textContent;
      btn.textContent = btn.dataset.copied || "已复制";
      setTimeout(function () { btn.textContent = old; }, 1500);
    });
  });
})();
