// The operator's roll call (点名) on a phone or tablet: one tap per member, walk-ins, check all.
// It keeps working without network: every mark goes first into IndexedDB with its event id
// (a UUID) and the device time corrected by the clock offset measured at connect; the
// queue is sent on reconnect ({queued: true, at}) and the server stores each mark once.
// A service worker (roll_call_sw.js) keeps the page and its assets for a reload offline.
(function () {
  "use strict";
  const root = document.getElementById("roll-call");
  if (!root) return;
  const occ = Number(root.dataset.occurrence), site = Number(root.dataset.site);
  const T = root.dataset;
  const list = document.getElementById("rc-list");
  const search = document.getElementById("rc-search");
  const CACHE = "yuanjiao-roll-call-v1";
  const OFFSET_KEY = "yuanjiao.clockOffset";

  const expected = [];           // [{member_id, name, member_no}]
  const names = {};              // member_id -> {name, member_no}
  const present = new Set();     // who is here, as far as this page knows
  const walkIns = new Set();     // shown although not on the roster
  let marks = [];                // this site's marks on this device (IndexedDB rows)
  let stateTime = 0;             // server time (ms) of the roster we hold
  let offset = Number(localStorage.getItem(OFFSET_KEY) || 0);
  let socket = null, flushing = false, everConnected = false;
  const LATE_MS = 15000;

  function text(el, value) { if (el) el.textContent = value; }
  function newEventId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      const r = Math.random() * 16 | 0;
      return (c === "x" ? r : (r & 3 | 8)).toString(16);
    });
  }
  function online() { return !!(socket && socket.connected && navigator.onLine); }

  // --- IndexedDB: the queue of marks --------------------------------------------------------
  let dbPromise = null;
  function idb() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        const req = indexedDB.open("yuanjiao-roll-call", 1);
        req.onupgradeneeded = function () {
          req.result.createObjectStore("marks", { keyPath: "event_id" });
        };
        req.onsuccess = function () { resolve(req.result); };
        req.onerror = function () { reject(req.error); };
      });
    }
    return dbPromise;
  }
  function tx(mode, fn) {
    return idb().then(function (db) {
      return new Promise(function (resolve, reject) {
        const t = db.transaction("marks", mode);
        const out = fn(t.objectStore("marks"));
        t.oncomplete = function () { resolve(out && out.result !== undefined ? out.result : out); };
        t.onerror = function () { reject(t.error); };
      });
    });
  }
  function saveMark(mark) { return tx("readwrite", function (store) { store.put(mark); }); }
  const KEEP_MS = 3 * 24 * 3600 * 1000;
  function loadMarks() {
    return tx("readonly", function (store) { return store.getAll(); }).then(function (rows) {
      // Settled marks are kept a few days (their 已同步 shows), queued ones until sent.
      const old = (rows || []).filter(function (m) { return m.status !== "pending" && m.device_at < Date.now() - KEEP_MS; });
      if (old.length) tx("readwrite", function (store) { old.forEach(function (m) { store.delete(m.event_id); }); });
      return (rows || []).filter(function (m) { return m.occurrence_id === occ && m.site_id === site; })
        .sort(function (a, b) { return a.device_at - b.device_at; });
    });
  }

  // --- the roster and the list ----------------------------------------------------------------
  function applyState(state) {
    expected.length = 0;
    present.clear();
    (state.expected || []).forEach(function (m) { expected.push(m); names[m.member_id] = m; });
    (state.present || []).forEach(function (m) {
      names[m.member_id] = names[m.member_id] || m;
      present.add(m.member_id);
    });
    stateTime = Date.parse(state.server_time) || 0;
    // Marks the roster does not include yet (made after it, or still queued) apply on top.
    marks.forEach(function (m) {
      if (m.status !== "refused" && (m.status === "pending" || m.device_at + offset > stateTime)) applyMark(m);
    });
    render();
  }

  function applyMark(mark) {
    mark.member_ids.forEach(function (id) {
      if (mark.state === "present") present.add(id); else present.delete(id);
      if (mark.names && mark.names[id]) names[id] = names[id] || mark.names[id];
    });
  }

  function expectedIds() { return new Set(expected.map(function (m) { return m.member_id; })); }

  function lastMarkOf(id) {
    for (let i = marks.length - 1; i >= 0; i--) if (marks[i].member_ids.indexOf(id) >= 0) return marks[i];
    return null;
  }

  function row(id) {
    let li = list.querySelector('[data-member-id="' + id + '"]');
    if (li) return li;
    li = document.createElement("li");
    li.className = "rc-member";
    li.dataset.memberId = id;
    li.innerHTML = "<div class='rc-who'><span class='rc-name'></span> <span class='rc-no'></span>" +
      " <span class='rc-tag'></span> <span class='rc-sync'></span></div>" +
      "<div class='rc-buttons'><button type='button' class='check-in'></button>" +
      "<button type='button' class='check-out'></button></div>";
    text(li.querySelector(".check-in"), T.tCheckIn);
    text(li.querySelector(".check-out"), T.tCheckOut);
    return li;
  }

  function render() {
    const ids = expected.map(function (m) { return m.member_id; });
    const onRoster = new Set(ids);
    present.forEach(function (id) { if (!onRoster.has(id)) walkIns.add(id); });
    walkIns.forEach(function (id) { if (!onRoster.has(id)) ids.push(id); });
    const keep = new Set(ids.map(String));
    list.querySelectorAll("[data-member-id]").forEach(function (li) {
      if (!keep.has(li.dataset.memberId)) li.remove();
    });
    ids.forEach(function (id) {
      const li = row(id);
      const who = names[id] || {};
      text(li.querySelector(".rc-name"), who.name || ("#" + id));
      text(li.querySelector(".rc-no"), who.member_no || "");
      const walkIn = !onRoster.has(id);
      li.classList.toggle("rc-walk-in-row", walkIn);
      text(li.querySelector(".rc-tag"), walkIn ? T.tWalkIn : "");
      li.dataset.present = present.has(id) ? "true" : "false";
      const mark = lastMarkOf(id);
      li.dataset.sync = mark ? mark.status : "";
      text(li.querySelector(".rc-sync"), !mark ? "" : mark.status === "pending" ? T.tPending
        : mark.status === "synced" ? T.tSynced : (mark.message || ""));
      list.appendChild(li);  // keeps the roster's order; walk-ins last
    });
    if (!ids.length && !list.querySelector(".rc-empty")) {
      const li = document.createElement("li");
      li.className = "rc-empty muted";
      li.textContent = T.tEmpty;
      list.appendChild(li);
    } else if (ids.length) {
      const empty = list.querySelector(".rc-empty");
      if (empty) empty.remove();
    }
    const extra = present.size - expected.filter(function (m) { return present.has(m.member_id); }).length;
    root.querySelector(".rc-walk-ins").hidden = !extra;
    text(root.querySelector(".rc-walk-in-count"), extra);
    const hc = document.getElementById("headcount");
    hc.dataset.present = present.size;
    hc.dataset.expected = expected.length;
    text(root.querySelector(".rc-present"), present.size);
    text(root.querySelector(".rc-expected"), expected.length);
    const pending = marks.filter(function (m) { return m.status === "pending"; }).length;
    root.querySelector(".rc-queue").hidden = !pending;
    text(root.querySelector(".rc-queue-count"), pending);
    filter();
  }

  function filter() {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    list.querySelectorAll("[data-member-id]").forEach(function (li) {
      const hit = !q || li.querySelector(".rc-who").textContent.toLowerCase().indexOf(q) >= 0;
      li.hidden = !hit;
      if (hit) shown++;
    });
    root.querySelector(".rc-walk-in").hidden = !q;
    if (!q) root.querySelector(".rc-found").innerHTML = "";
    return shown;
  }

  // --- marking ----------------------------------------------------------------------------------
  function mark(memberIds, state, extraNames) {
    const m = {
      event_id: newEventId(), occurrence_id: occ, site_id: site, member_ids: memberIds,
      // Offline when made: without network, or after the socket had been up and dropped
      // (a tap in the first moment before the socket connects is not an offline mark).
      state: state, device_at: Date.now(), offset: offset,
      queued: !navigator.onLine || (everConnected && !online()),
      status: "pending", names: extraNames || null,
    };
    marks.push(m);
    applyMark(m);
    render();
    return saveMark(m).then(flush);
  }

  function payloadOf(m) {
    const p = { occurrence_id: m.occurrence_id, site_id: m.site_id, member_ids: m.member_ids,
                state: m.state, event_id: m.event_id };
    // A mark sent late (queued offline, or held up) carries its own time; a mark sent at
    // once is timed by the server.
    if (m.queued || Date.now() - m.device_at > LATE_MS) {
      p.queued = true;
      p.at = new Date(m.device_at + (m.offset || 0)).toISOString();
    }
    if (m.names) p.walk_in = true;
    return p;
  }

  const RETRY = ["attendance_busy", "write_failed", "internal_error"];
  // Send what is queued, oldest first, one at a time: the server keeps arrival order.
  function flush() {
    if (flushing || !online()) return Promise.resolve();
    const next = marks.find(function (m) { return m.status === "pending"; });
    if (!next) return Promise.resolve();
    flushing = true;
    return new Promise(function (resolve) {
      socket.timeout(10000).emit("roll_call:mark", payloadOf(next), function (err, ack) {
        flushing = false;
        if (err || !ack || (!ack.ok && RETRY.indexOf(ack.error) >= 0)) {
          // No answer: the mark stays queued and goes again (same event id) as a late mark.
          next.queued = true;
          saveMark(next).then(function () { setTimeout(flush, 3000); resolve(); });
          return;
        }
        next.status = ack.ok ? "synced" : "refused";
        if (!ack.ok) {
          next.message = ack.message;
          text(root.querySelector(".rc-message"), ack.message);
        }
        saveMark(next).then(function () {
          if (!ack.ok) reload(); else render();
          resolve(flush());
        });
      });
    });
  }

  list.addEventListener("click", function (ev) {
    const btn = ev.target.closest("button");
    const li = ev.target.closest("[data-member-id]");
    if (!btn || !li) return;
    const id = Number(li.dataset.memberId);
    if (btn.classList.contains("check-in")) mark([id], "present");
    else if (btn.classList.contains("check-out")) mark([id], "checked_out");
  });

  const all = root.querySelector(".rc-check-all");
  let armed = null;
  all.addEventListener("click", function () {
    if (!armed) {
      all.textContent = T.tConfirmAll;
      armed = setTimeout(function () { armed = null; all.textContent = all.dataset.label; }, 4000);
      return;
    }
    clearTimeout(armed); armed = null; all.textContent = all.dataset.label;
    const ids = expected.map(function (m) { return m.member_id; })
      .filter(function (id) { return !present.has(id); });
    if (ids.length) mark(ids, "present");
  });

  search.addEventListener("input", filter);
  root.querySelector(".rc-find").addEventListener("click", function () {
    const q = search.value.trim();
    const out = root.querySelector(".rc-found");
    if (!q) return;
    if (!navigator.onLine) { out.innerHTML = "<li class='muted'></li>"; text(out.firstChild, T.tNeedNetwork); return; }
    window.apiFetch(T.membersUrl + "?q=" + encodeURIComponent(q)).then(function (found) {
      out.innerHTML = "";
      const here = expectedIds();
      found.filter(function (m) { return !here.has(m.member_id); }).forEach(function (m) {
        const li = document.createElement("li");
        li.dataset.foundId = m.member_id;
        li.innerHTML = "<span></span> <button type='button' class='rc-add'></button>";
        text(li.querySelector("span"), m.name + " " + m.member_no + " · " + m.org_unit);
        text(li.querySelector("button"), T.tCheckIn);
        li.querySelector("button").addEventListener("click", function () {
          names[m.member_id] = m;
          walkIns.add(m.member_id);
          const extra = {};
          extra[m.member_id] = { name: m.name, member_no: m.member_no };
          mark([m.member_id], "present", extra);
          li.remove();
        });
        out.appendChild(li);
      });
      if (!out.children.length) { out.innerHTML = "<li class='muted'></li>"; text(out.firstChild, T.tNone); }
    }).catch(function (err) { text(root.querySelector(".rc-message"), err.message); });
  });

  // --- the server: roster, clock, socket ----------------------------------------------------------
  // Fetch the roster; a live answer also measures the device's clock offset.
  function reload() {
    const t0 = Date.now();
    return fetch(T.stateUrl, { credentials: "same-origin", cache: "no-store" }).then(function (res) {
      const t1 = Date.now();
      if (!res.ok) throw new Error(res.statusText);
      const cached = res.headers.get("X-Yuanjiao-Offline") === "1";
      return res.json().then(function (state) {
        if (!cached) {
          offset = Math.round(Date.parse(state.server_time) - (t0 + t1) / 2);
          localStorage.setItem(OFFSET_KEY, String(offset));
        }
        applyState(state);
      });
    });
  }

  function setConn(up) {
    const el = root.querySelector(".rc-conn");
    el.dataset.state = up ? "up" : "down";
    text(el, up ? T.tOnline : T.tOffline);
  }

  function connect() {
    socket = window.io("/attendance", { transports: ["websocket", "polling"], reconnection: true });
    socket.on("connect", function () {
      everConnected = true;
      socket.emit("site:join", { occurrence_id: occ, site_id: site }, function (ack) {
        if (!ack || !ack.ok) { text(root.querySelector(".rc-message"), ack ? ack.message : ""); return; }
        setConn(navigator.onLine);
        reload().catch(function () {}).then(flush);
      });
    });
    socket.on("disconnect", function () { setConn(false); });
    socket.on("connect_error", function () { setConn(false); });
    if (!navigator.onLine) setConn(false);
    // The room's updates come as a list, up to four times a second: drawn once per list.
    socket.on("attendance:updates", function (batch) {
      if (batch.occurrence_id !== occ) return;
      let unknown = false;
      batch.updates.forEach(function (u) {
        if (u.present && u.site_id === site) present.add(u.member_id); else present.delete(u.member_id);
        if (u.name) names[u.member_id] = names[u.member_id] || { name: u.name, member_no: "" };
        if (!names[u.member_id]) unknown = true;
      });
      if (unknown) reload().catch(function () {});
      render();
    });
  }
  // Chromium tells the page when the link goes; do not wait for the socket's ping timeout.
  window.addEventListener("offline", function () { setConn(false); if (socket) socket.disconnect(); });
  window.addEventListener("online", function () { if (socket && !socket.connected) socket.connect(); });

  function offlineReady() {
    if (!("serviceWorker" in navigator) || !window.caches) return Promise.resolve(false);
    return navigator.serviceWorker.register(T.workerUrl).then(function () {
      return navigator.serviceWorker.ready;
    }).then(function () {
      const urls = [location.pathname, T.stateUrl].concat(JSON.parse(T.assets));
      return caches.open(CACHE).then(function (cache) {
        return Promise.all(urls.map(function (u) {
          return fetch(u, { credentials: "same-origin", cache: "no-store" }).then(function (res) {
            if (res.ok && !res.headers.get("X-Yuanjiao-Offline")) return cache.put(u, res);
          }).catch(function () {});
        }));
      });
    }).then(function () { return true; });
  }

  // Ready for offline as early as possible: the worker and the cache do not wait for the roster.
  offlineReady().then(function (ready) {
    root.dataset.offlineReady = ready ? "true" : "false";
  }).catch(function () { root.dataset.offlineReady = "false"; });
  loadMarks().then(function (rows) {
    marks = rows;
    return reload().catch(function () { render(); });
  }).then(connect).catch(function (err) {
    text(root.querySelector(".rc-message"), String(err));
    if (!socket) connect();
  });
  window.rollCall = { flush: flush, marks: function () { return marks; } };
})();
