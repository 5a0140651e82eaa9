// Attendance panels: room screen + roll call, viewer presence, trainer headcounts,
// organizer dashboard, make-up playback. Protocol: docs/socket-protocol.md.
(function () {
  "use strict";
  if (window.__attendanceLoaded) return;
  window.__attendanceLoaded = true;

  function newEventId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function connect(token) {
    const opts = { transports: ["websocket", "polling"], reconnection: true };
    if (token) opts.auth = { token: token };
    return window.io("/attendance", opts);
  }

  // Emit with an ack; retries the SAME payload (same event_id) until acknowledged,
  // so a blip never loses a fact and the server stores it once.
  function emitReliably(socket, name, payload, onAck, tries) {
    tries = tries || 0;
    socket.timeout(8000).emit(name, payload, function (err, ack) {
      if (err) {
        if (tries < 20) setTimeout(function () { emitReliably(socket, name, payload, onAck, tries + 1); }, 1000);
        return;
      }
      if (onAck) onAck(ack);
    });
  }

  function setConn(panel, up) {
    const el = panel.querySelector(".att-conn");
    if (el) { el.textContent = up ? el.dataset.online : el.dataset.offline; el.dataset.state = up ? "up" : "down"; }
  }

  function text(el, value) { if (el) el.textContent = value; }

  // An inline <svg> made standalone for an <img>: its namespace, and a viewBox so it scales.
  function standaloneSvg(svg) {
    return svg.replace(/^<svg([^>]*?) width="(\d+(?:\.\d+)?)" height="(\d+(?:\.\d+)?)"/, function (all, pre, w, h) {
      return '<svg xmlns="http://www.w3.org/2000/svg"' + pre + ' viewBox="0 0 ' + w + ' ' + h + '" width="' + w + '" height="' + h + '"';
    });
  }

  // --- a site's room screen: QR, headcount, names just checked in -------------------------
  function sitePanel(panel) {
    const occ = Number(panel.dataset.occurrence), site = Number(panel.dataset.site);
    const socket = connect(panel.dataset.token);
    const present = new Set();
    const names = {};
    const recent = [];
    let expected = 0, qrTimer = null;
    const headcount = panel.querySelector("#headcount") || panel.querySelector(".att-headcount");
    const banner = document.getElementById("offline-banner");

    function counts() {
      text(panel.querySelector(".att-present-count"), present.size);
      text(panel.querySelector(".att-expected-count"), expected);
      if (headcount) { headcount.dataset.present = present.size; headcount.dataset.expected = expected; }
    }

    function renderRecent() {
      const ol = panel.querySelector(".att-recent");
      if (!ol) return;
      ol.innerHTML = "";
      if (!recent.length) { ol.innerHTML = "<li class='muted'></li>"; ol.firstChild.textContent = ol.dataset.empty; return; }
      recent.slice(0, 8).forEach(function (r) {
        const li = document.createElement("li");
        li.dataset.member = r.id;
        li.textContent = "✓ " + (names[r.id] || ("#" + r.id)) + "  " + r.time;
        ol.appendChild(li);
      });
    }

    // "HH:MM" in the site's zone (the kiosk PC's own zone may be anything).
    function clock(at) {
      const d = at ? new Date(at) : new Date();
      try {
        return d.toLocaleTimeString("zh-CN", { timeZone: panel.dataset.tz || undefined, hour: "2-digit", minute: "2-digit", hour12: false });
      } catch (e) {
        return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
      }
    }

    function offline(down) {
      setConn(panel, !down);
      if (banner) banner.hidden = !down;
      document.body.classList.toggle("room-offline-now", down);
    }

    function refreshQr() {
      socket.emit("qr:token", { occurrence_id: occ, site_id: site }, function (ack) {
        const msg = panel.querySelector(".att-qr-message");
        if (!ack || !ack.ok) { text(msg, ack ? ack.message : ""); return; }
        text(msg, "");
        const img = panel.querySelector("#checkin-qr");
        img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(standaloneSvg(ack.svg));
        img.dataset.url = ack.url;
        const a = panel.querySelector(".att-qr-url");
        if (a) { a.href = ack.url; a.textContent = ack.url; }
        panel.dataset.qrUrl = ack.url;
        const codeBox = panel.querySelector(".att-qr-code-box");
        if (codeBox) { codeBox.hidden = !ack.code; text(codeBox.querySelector(".att-qr-code"), ack.code || ""); }
        const left = Math.max(1000, new Date(ack.expires_at) - Date.now());
        clearTimeout(qrTimer);
        qrTimer = setTimeout(refreshQr, left + 300);
      });
    }

    function join() {
      socket.emit("site:join", { occurrence_id: occ, site_id: site }, function (ack) {
        if (!ack || !ack.ok) { text(panel.querySelector(".att-qr-message"), ack ? ack.message : ""); return; }
        const s = ack.site || { expected: [], present: [], expected_count: 0 };
        present.clear();
        (s.expected || []).concat(s.present || []).forEach(function (m) { names[m.member_id] = m.name; });
        (s.present || []).forEach(function (m) { present.add(m.member_id); });
        expected = s.expected_count || 0;
        counts(); renderRecent();
        refreshQr();
      });
    }

    socket.on("connect", function () { offline(false); join(); });
    socket.on("disconnect", function () { offline(true); clearTimeout(qrTimer); });
    window.addEventListener("offline", function () { offline(true); });
    window.addEventListener("online", function () { if (socket.connected) offline(false); });
    // A room's updates come as a list, up to four times a second: drawn once per list.
    socket.on("attendance:updates", function (batch) {
      let unknown = false;
      batch.updates.forEach(function (u) {
        if (u.name) names[u.member_id] = u.name;
        const here = u.present && u.site_id === site;
        if (here && !present.has(u.member_id)) {
          recent.unshift({ id: u.member_id, time: clock(u.at) });
          recent.splice(20);
        }
        if (here) present.add(u.member_id);
        else {
          present.delete(u.member_id);
          // Gone again (checked out, or checked in elsewhere): not among the names just in.
          for (let i = recent.length - 1; i >= 0; i--) if (recent[i].id === u.member_id) recent.splice(i, 1);
        }
        // A walk-in's name is not in the roster we hold: a fresh snapshot brings it.
        if (here && !names[u.member_id]) unknown = true;
      });
      counts(); renderRecent();
      if (unknown) join();
    });
    renderRecent();
  }

  // --- a member watching alone --------------------------------------------------------------
  function viewerPanel(panel) {
    const occ = Number(panel.dataset.occurrence);
    const every = Number(panel.dataset.heartbeat || 15) * 1000;
    const socket = connect(null);
    const state = panel.querySelector(".att-viewer-state");
    let watching = false, timer = null;

    function video() { return document.querySelector("video"); }
    function playing() {
      const v = video();
      return document.visibilityState === "visible" && v && !v.paused && !v.ended && v.readyState > 2;
    }
    function send(name) {
      emitReliably(socket, name, { occurrence_id: occ, event_id: newEventId() }, function (ack) {
        if (!ack.ok) text(panel.querySelector(".att-message"), ack.message);
        else text(panel.querySelector(".att-message"), "");
        // Counted only with a live video connection: join again once the video runs.
        if (!ack.ok && ack.error === "no_media_session" && name !== "viewer:leave") watching = false;
      });
    }
    function tick() {
      const now = playing();
      if (now && !watching) { watching = true; send("viewer:join"); }
      else if (now) send("viewer:heartbeat");
      else if (!now && watching) { watching = false; send("viewer:leave"); }
      text(state, watching ? state.dataset.watching : state.dataset.paused);
    }
    socket.on("connect", function () { tick(); clearInterval(timer); timer = setInterval(tick, every); });
    socket.on("disconnect", function () { text(state, state.dataset.offline); });
    document.addEventListener("visibilitychange", function () { if (socket.connected) tick(); });
    document.addEventListener("play", function () { if (socket.connected) setTimeout(tick, 500); }, true);
    document.addEventListener("pause", function () { if (socket.connected) tick(); }, true);
    window.addEventListener("pagehide", function () { if (watching) socket.emit("viewer:leave", { occurrence_id: occ, event_id: newEventId() }); });
  }

  // --- per-site counts shared by the dashboard and the trainer's page ----------------------
  // The snapshot gives each site's present_ids; updates move one member at a time.
  function liveSites(panel, joinEvent, render) {
    const occ = Number(panel.dataset.occurrence);
    const socket = connect(null);
    let snap = null;
    function load() {
      socket.emit(joinEvent, { occurrence_id: occ }, function (ack) {
        if (!ack || !ack.ok) { text(panel.querySelector(".att-conn"), ack ? ack.message : ""); return; }
        snap = ack.snapshot;
        snap.names = {};
        snap.sites.forEach(function (s) {
          (s.expected || []).concat(s.present || []).forEach(function (m) { snap.names[m.member_id] = m.name; });
        });
        render(snap);
      });
    }
    socket.on("connect", function () { setConn(panel, true); load(); });
    socket.on("disconnect", function () { setConn(panel, false); });
    // Updates come as a list per room, up to four times a second: one drawing per list
    // (a roll call of the whole field is a thousand a second).
    socket.on("attendance:updates", function (batch) {
      if (!snap) return;
      const moved = {};
      batch.updates.forEach(function (u) { moved[u.member_id] = u; });  // the last counts
      snap.sites.forEach(function (s) {
        s.present_ids = s.present_ids.filter(function (id) { return !(id in moved); });
      });
      let unknownSite = false;
      Object.keys(moved).forEach(function (id) {
        const u = moved[id];
        if (!u.present) return;
        const key = u.site_id === null || u.site_id === undefined ? null : u.site_id;
        const target = snap.sites.find(function (s) { return s.site_id === key; }) ||
          snap.sites.find(function (s) { return s.site_id === null; });
        if (!target) { unknownSite = true; return; }
        target.present_ids.push(u.member_id);
        if (u.name) snap.names[u.member_id] = u.name;
      });
      if (unknownSite) load(); else render(snap);
    });
    socket.on("site:status", function (st) {
      if (!snap) return;
      snap.sites.forEach(function (x) { if (x.site_id === st.site_id) x.online = st.online; });
      render(snap);
    });
    socket.on("attendance:changed", function () { load(); });
    // Viewers whose heartbeats stopped leave after the grace period: refresh now and then.
    setInterval(function () { if (socket.connected) load(); }, 60000);
  }

  function totals(snap) {
    let present = 0, expected = 0;
    snap.sites.forEach(function (s) { present += s.present_ids.length; expected += s.expected_count; });
    return { present: present, expected: expected };
  }

  function broadcastPanel(panel) {
    liveSites(panel, "broadcast:join", function (snap) {
      const body = panel.querySelector(".att-headcounts");
      body.innerHTML = "";
      snap.sites.forEach(function (s) {
        const tr = document.createElement("tr");
        tr.dataset.site = s.site_id === null ? "" : s.site_id;
        tr.innerHTML = "<td></td><td></td><td class='att-site-present'></td><td></td>";
        tr.children[0].textContent = s.name;
        tr.children[1].textContent = s.site_id === null ? "" : (s.online ? "●" : "○");
        tr.children[2].textContent = s.present_ids.length;
        tr.children[3].textContent = s.expected_count;
        body.appendChild(tr);
      });
      const t = totals(snap);
      text(panel.querySelector(".att-present-count"), t.present);
      text(panel.querySelector(".att-expected-count"), t.expected);
    });
  }

  /** The lecture's recording stopped (its disk is full...): the organizer is told; the
   *  broadcast goes on. The live API's stats say so; asked every 10 s while the page is open. */
  function recordingNotice() {
    const notice = document.querySelector(".att-recording-notice");
    if (!notice) return;
    async function check() {
      let live = null;
      try { live = await window.apiFetch(notice.dataset.liveUrl); } catch (e) { return; }
      const stats = (live && live.stats) || {};
      const failed = live && live.state === "live" && stats.recording_state === "failed";
      notice.hidden = !failed;
      notice.dataset.error = failed ? (stats.recording_error || "write_failed") : "";
      if (failed) text(notice, stats.recording_error === "disk_full" ? notice.dataset.diskFull : notice.dataset.writeFailed);
    }
    check();
    setInterval(check, 10000);
  }

  function dashboardPanel(panel) {
    recordingNotice();
    const box = panel.querySelector(".att-sites");
    const labels = JSON.parse(panel.dataset.labels || "{}");
    const attended = ["present", "late", "left_early"];
    liveSites(panel, "dashboard:join", function (snap) {
      const t = totals(snap);
      const statuses = snap.statuses || {};
      text(panel.querySelector(".att-present-count"), t.present);
      text(panel.querySelector(".att-expected-count"), t.expected);
      text(panel.querySelector(".att-excused-count"), snap.excused_count || 0);
      text(panel.querySelector(".att-attended-count"), snap.attended_count || 0);
      box.innerHTML = "";
      snap.sites.forEach(function (s) {
        const card = document.createElement("div");
        card.className = "card att-site-card";
        card.dataset.site = s.site_id === null ? "" : s.site_id;
        card.dataset.online = s.online ? "true" : "false";
        const here = new Set(s.present_ids);
        card.innerHTML = "<h3></h3><p class='att-site-counts'></p><p class='att-site-offline muted'></p><ul class='att-names'></ul>";
        card.querySelector("h3").textContent = s.name + (s.site_id === null ? "" : " · " + (s.online ? box.dataset.online : box.dataset.offline));
        card.querySelector(".att-site-counts").textContent = box.dataset.here + " " + here.size + " / " + s.expected_count;
        const periods = (s.offline_periods || []).map(function (p) {
          return fmtTime(p[0]) + "–" + fmtTime(p[1]);
        });
        text(card.querySelector(".att-site-offline"), periods.length ? box.dataset.offlinePeriods + " " + periods.join("、") : "");
        const ul = card.querySelector(".att-names");
        const ids = (s.expected || []).map(function (m) { return m.member_id; });
        s.present_ids.forEach(function (id) { if (ids.indexOf(id) < 0) ids.push(id); });
        ids.forEach(function (id) {
          const li = document.createElement("li");
          const status = statuses[String(id)] || "";
          li.dataset.member = id;
          li.dataset.status = status;
          // Here now; else the record's status (leave and corrections applied).
          let label, cls;
          if (here.has(id)) { label = box.dataset.here; cls = "att-here"; }
          else if (status === "excused" || attended.indexOf(status) >= 0) { label = labels[status] || status; cls = "att-" + status; }
          else { label = labels[status] || box.dataset.away; cls = "att-away"; }
          li.className = cls;
          li.textContent = (snap.names[id] || String(id)) + " · " + label;
          ul.appendChild(li);
        });
        box.appendChild(card);
      });
    });
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // --- make-up playback: report played ranges while playing -------------------------------
  function makeupPanel(panel) {
    const v = panel.querySelector("video");
    let last = 0;
    function ranges() {
      const out = [];
      for (let i = 0; i < v.played.length; i++) out.push([v.played.start(i), v.played.end(i)]);
      return out;
    }
    function report() {
      if (!v.played.length) return;
      window.apiFetch(panel.dataset.progressUrl, { method: "POST", json: { ranges: ranges(), duration: isFinite(v.duration) ? v.duration : null } })
        .then(function (task) {
          text(panel.querySelector(".att-makeup-watched"), (task.seconds_watched / 60).toFixed(1));
          const st = panel.querySelector(".att-makeup-state");
          if (task.completed_at) text(st, st.dataset.done);
        }).catch(function () {});
    }
    setInterval(function () { if (!v.paused && Date.now() - last > 14000) { last = Date.now(); report(); } }, 1000);
    v.addEventListener("pause", report);
    v.addEventListener("ended", report);
  }

  // --- dashboard forms that call the API --------------------------------------------------
  function apiForms() {
    document.querySelectorAll("form.att-api-form").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        const body = {};
        new FormData(form).forEach(function (value, key) {
          if (value === "") return;
          body[key] = key === "member_id" ? Number(value) : key === "minutes" ? Number(value) : value;
        });
        window.apiFetch(form.dataset.url, { method: "POST", json: body })
          .then(function () { window.location.reload(); })
          .catch(function (err) { text(form.querySelector(".att-message"), err.message); });
      });
    });
    document.querySelectorAll("button.att-api-button").forEach(function (btn) {
      btn.addEventListener("click", function () {
        if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) return;
        const options = { method: "POST" };
        if (btn.dataset.early) {
          const reason = window.prompt(btn.dataset.prompt || "");
          if (!reason || !reason.trim()) return;
          options.json = { early: true, reason: reason.trim() };
        }
        window.apiFetch(btn.dataset.url, options)
          .then(function () { window.location.reload(); })
          .catch(function (err) { text(btn.parentElement.querySelector(".att-message"), err.message); });
      });
    });
  }

  function init() {
    const kinds = { site: sitePanel, viewer: viewerPanel, broadcast: broadcastPanel, dashboard: dashboardPanel, makeup: makeupPanel };
    document.querySelectorAll("[data-att]").forEach(function (panel) {
      if (panel.dataset.attReady) return;
      panel.dataset.attReady = "1";
      const fn = kinds[panel.dataset.att];
      if (fn) fn(panel);
    });
    apiForms();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
