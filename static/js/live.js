// Shared by the live pages: config, the #live-status hook, WHIP/WHEP requests, the /live room.
(function () {
  "use strict";
  const cfgEl = document.getElementById("live-config");
  const config = cfgEl ? JSON.parse(cfgEl.textContent) : {};

  /** Set #live-status data-state to waiting, live or ended (the tests' stable hook). */
  function setStatus(state, textKey) {
    const el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    const text = el.querySelector(".live-status-text");
    if (text) text.textContent = text.dataset[textKey || state] || state;
    document.body.dataset.liveState = state;
  }

  /** Headers that authenticate a WHIP/WHEP call: a screen's bearer token or the cookie + CSRF. */
  function authHeaders() {
    const headers = {};
    if (config.token) headers["Authorization"] = "Bearer " + config.token;
    else headers["X-CSRFToken"] = window.csrfToken || "";
    return headers;
  }

  /** aiortc does not trickle ICE: send the offer once gathering is complete (or after 3 s). */
  function iceGathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      const done = function () {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  /** POST an SDP offer (WHIP or WHEP); resolves {status, location, answer, body, retryAfter}. */
  async function postOffer(url, pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const headers = Object.assign({ "Content-Type": "application/sdp" }, authHeaders());
    const res = await fetch(url, { method: "POST", headers: headers, credentials: "same-origin",
                                   body: pc.localDescription.sdp });
    const text = await res.text();
    const out = { status: res.status, location: res.headers.get("Location"),
                  retryAfter: parseInt(res.headers.get("Retry-After") || "0", 10) };
    if (res.status === 201) {
      out.answer = text;
      await pc.setRemoteDescription({ type: "answer", sdp: text });
    } else {
      try { out.body = JSON.parse(text); } catch (e) { out.body = { message: text }; }
    }
    return out;
  }

  async function deleteResource(location) {
    if (!location) return;
    try {
      await fetch(location, { method: "DELETE", headers: authHeaders(), credentials: "same-origin",
                              keepalive: true });
    } catch (e) { /* leaving anyway */ }
  }

  async function fetchLive() {
    const headers = config.token ? { "Authorization": "Bearer " + config.token } : {};
    const res = await fetch(config.liveUrl, { headers: headers, credentials: "same-origin" });
    if (!res.ok) throw new Error("live state " + res.status);
    return res.json();
  }

  /** Join live:<occurrence> on /live; onState gets every {state, sites, stats}. */
  function joinRoom(onState) {
    if (typeof io === "undefined") return null;
    const socket = io("/live", { transports: ["websocket"] });
    socket.on("connect", function () {
      socket.emit("join", { occurrence_id: config.occurrenceId, token: config.token || null },
        function (ack) { if (ack && ack.ok) onState(ack); });
    });
    socket.on("state", onState);
    return socket;
  }

  window.Live = { config: config, setStatus: setStatus, postOffer: postOffer,
                  deleteResource: deleteResource, fetchLive: fetchLive, joinRoom: joinRoom,
                  authHeaders: authHeaders };
})();
