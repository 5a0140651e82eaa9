// Session pages: the recurrence picker with a live preview and conflict check, moving and
// cancelling single occurrences, .ics import, and resetting feed URLs.
(function () {
  "use strict";

  /** "+08:00" for a wall time in an IANA zone (DST-aware, via Intl). */
  function zoneOffset(date, time, tz) {
    const [y, m, d] = date.split("-").map(Number);
    const [hh, mm] = time.split(":").map(Number);
    const guess = Date.UTC(y, m - 1, d, hh, mm);
    const fmt = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    function offsetAt(ms) {
      const p = {};
      fmt.formatToParts(new Date(ms)).forEach(function (x) { p[x.type] = x.value; });
      return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second) - ms;
    }
    let off = offsetAt(guess);
    off = offsetAt(guess - off);
    const mins = Math.round(off / 60000);
    const sign = mins < 0 ? "-" : "+";
    const a = Math.abs(mins);
    return sign + String(Math.floor(a / 60)).padStart(2, "0") + ":" + String(a % 60).padStart(2, "0");
  }

  function isoLocal(date, time, tz) {
    return date + "T" + time + ":00" + zoneOffset(date, time, tz);
  }

  function showLocal(iso, tz) {
    return new Intl.DateTimeFormat("zh-CN", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", weekday: "short",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }).format(new Date(iso));
  }

  // --- the session form ------------------------------------------------------------------
  const form = document.getElementById("session-form");
  if (form) {
    const repeat = form.querySelector("#repeat");
    const val = function (name) { const el = form.elements[name]; return el ? el.value.trim() : ""; };
    const checked = function (name) {
      return Array.from(form.querySelectorAll('input[name="' + name + '"]:checked')).map(function (x) { return x.value; });
    };

    function syncRepeat() {
      form.querySelectorAll("[data-repeat]").forEach(function (el) {
        el.hidden = el.dataset.repeat.split(" ").indexOf(repeat.value) < 0;
      });
    }

    /** The RRULE the picker describes (mirrors schemas.form_rrule on the server). */
    function buildRule() {
      const mode = repeat.value;
      if (mode === "none") return null;
      if (mode === "custom") return val("custom_rrule") || null;
      const parts = [];
      if (mode === "weekly") parts.push("FREQ=WEEKLY", "BYDAY=" + checked("weekdays").join(","));
      if (mode === "monthly_day") parts.push("FREQ=MONTHLY", "BYMONTHDAY=" + val("month_day"));
      if (mode === "monthly_nth") parts.push("FREQ=MONTHLY", "BYDAY=" + val("nth") + val("nth_weekday"));
      const interval = parseInt(val("interval") || "1", 10);
      if (interval > 1) parts.splice(1, 0, "INTERVAL=" + interval);
      if (val("end") === "until" && val("until")) parts.push("UNTIL=" + val("until").replace(/-/g, ""));
      if (val("end") === "count" && val("count")) parts.push("COUNT=" + val("count"));
      return parts.join(";");
    }

    const list = document.getElementById("preview-list");
    const conflicts = document.getElementById("preview-conflicts");
    let timer = null;

    async function preview() {
      const tz = val("timezone") || "Asia/Shanghai";
      if (!val("start_date") || !val("start_time")) return;
      let body;
      try {
        body = {
          title: val("title") || form.dataset.msgPreviewTitle, kind: val("kind"),
          starts_at: isoLocal(val("start_date"), val("start_time"), tz),
          duration_minutes: parseInt(val("duration_minutes") || "0", 10), timezone: tz,
          rrule: buildRule(), site_ids: checked("site_ids").map(Number),
          org_unit_ids: checked("org_unit_ids").map(Number),
          trainer_id: val("trainer_id") ? Number(val("trainer_id")) : null,
        };
      } catch (e) {
        list.innerHTML = "";
        const bad = document.createElement("li");
        bad.textContent = form.dataset.msgBadTimezone;
        list.appendChild(bad);
        return;
      }
      if (form.dataset.sessionId) body.session_id = Number(form.dataset.sessionId);
      try {
        const res = await window.apiFetch("/api/v1/sessions/preview", { method: "POST", json: body });
        list.innerHTML = "";
        res.occurrences.forEach(function (o) {
          const li = document.createElement("li");
          li.textContent = showLocal(o.starts_at, res.timezone);
          list.appendChild(li);
        });
        if (res.total > res.occurrences.length) {
          const li = document.createElement("li");
          li.className = "muted";
          li.textContent = form.dataset.msgTotal.replace("{n}", res.total);
          list.appendChild(li);
        }
        conflicts.innerHTML = "";
        if (res.changes && res.changes.message) {
          const div = document.createElement("div");
          div.className = "flash warn preview-changes";
          div.setAttribute("role", "status");
          div.textContent = res.changes.message;
          conflicts.appendChild(div);
        }
        res.conflicts.forEach(function (c) {
          const div = document.createElement("div");
          div.className = "flash error conflict";
          div.setAttribute("role", "alert");
          div.textContent = c.message;
          conflicts.appendChild(div);
        });
      } catch (err) {
        conflicts.innerHTML = "";
        list.innerHTML = "";
        const li = document.createElement("li");
        li.className = "field-error";
        li.textContent = err.message;
        list.appendChild(li);
      }
    }

    // The pickers follow the start date while they still say what the old date said: a
    // weekly series starts on the chosen day, not on the default date's weekday.
    const CODES = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"];
    function dateParts(value) {
      if (!/^\d{4}-\d{2}-\d{2}$/.test(value || "")) return null;
      const [y, m, d] = value.split("-").map(Number);
      const date = new Date(Date.UTC(y, m - 1, d));
      const n = Math.ceil(d / 7);
      return { weekday: CODES[date.getUTCDay()], day: d, nth: n >= 5 ? "-1" : String(n) };
    }
    let lastDate = dateParts(val("start_date"));
    const startInput = form.elements.start_date;
    if (startInput) {
      startInput.addEventListener("change", function () {
        const now = dateParts(startInput.value);
        if (!now) return;
        const was = lastDate;
        lastDate = now;
        const boxes = Array.from(form.querySelectorAll('input[name="weekdays"]'));
        const ticked = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
        if (!ticked.length || (was && ticked.length === 1 && ticked[0] === was.weekday)) {
          boxes.forEach(function (b) { b.checked = b.value === now.weekday; });
        }
        const md = form.elements.month_day;
        if (md && (!md.value || (was && Number(md.value) === was.day))) md.value = now.day;
        const nth = form.elements.nth, nthDay = form.elements.nth_weekday;
        if (nth && nthDay && (!was || (nth.value === was.nth && nthDay.value === was.weekday))) {
          nth.value = now.nth; nthDay.value = now.weekday;
        }
      });
    }

    form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(preview, 400); });
    form.addEventListener("change", function () { syncRepeat(); clearTimeout(timer); timer = setTimeout(preview, 200); });
    syncRepeat();
    preview();
  }

  // --- occurrences: move, cancel, restore -------------------------------------------------
  const table = document.getElementById("occurrences");
  if (table) {
    const tz = table.dataset.timezone;
    const errorBox = document.getElementById("occ-error");
    table.addEventListener("click", async function (ev) {
      const btn = ev.target.closest("button.move, button.cancel, button.restore");
      if (!btn) return;
      const row = btn.closest("tr");
      const body = {};
      if (btn.classList.contains("move")) {
        const v = row.querySelector(".move-input").value;
        if (!v) return;
        const [date, time] = v.split("T");
        body.starts_at = isoLocal(date, time.slice(0, 5), tz);
      } else {
        body.status = btn.classList.contains("cancel") ? "cancelled" : "scheduled";
      }
      try {
        await window.apiFetch("/api/v1/occurrences/" + row.dataset.occurrenceId, { method: "PATCH", json: body });
        window.location.reload();
      } catch (err) {
        errorBox.hidden = false;
        errorBox.textContent = err.message;
      }
    });
  }

  // --- import ------------------------------------------------------------------------------
  const importForm = document.getElementById("import-form");
  if (importForm) {
    importForm.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const out = document.getElementById("import-result");
      try {
        const res = await window.apiFetch("/api/v1/sessions/import", { method: "POST", body: new FormData(importForm) });
        out.className = "flash";
        out.innerHTML = "";
        const p = document.createElement("p");
        p.textContent = importForm.dataset.msgImported.replace("{n}", res.ids.length);
        out.appendChild(p);
        res.sessions.forEach(function (s) {
          const a = document.createElement("a");
          a.href = "/sessions/" + s.id;
          a.textContent = s.title;
          out.appendChild(a);
          out.appendChild(document.createElement("br"));
        });
        (res.notes || []).forEach(function (n) {
          const d = document.createElement("div");
          d.className = "muted";
          d.textContent = n;
          out.appendChild(d);
        });
      } catch (err) {
        out.className = "flash error";
        out.textContent = err.message;
      }
    });
  }

  // --- 工作台: today's lessons with their live headcount ------------------------------------
  const counts = document.querySelectorAll(".live-headcount[data-url]");
  if (counts.length) {
    const refresh = function () {
      counts.forEach(async function (el) {
        try {
          const res = await window.apiFetch(el.dataset.url);
          el.textContent = el.dataset.label.replace("{present}", res.present_count)
            .replace("{expected}", res.expected_count);
          el.dataset.present = res.present_count;
          el.dataset.expected = res.expected_count;
        } catch (err) { el.hidden = true; }
      });
    };
    refresh();
    setInterval(refresh, 30000);
  }

  // --- feed URLs: reset ------------------------------------------------------------------
  document.addEventListener("click", async function (ev) {
    const btn = ev.target.closest("button.revoke");
    if (!btn || !window.confirm(btn.dataset.confirm)) return;
    try {
      const res = await window.apiFetch(btn.dataset.revoke, { method: "POST" });
      document.querySelector(btn.dataset.target).value = res.url;
    } catch (err) {
      window.alert(err.message);
    }
  });
})();
