// The site screen and the viewer page: WHEP player that waits, reconnects and ends by itself.
(function () {
  "use strict";
  const Live = window.Live;
  const cfg = Live.config;
  const video = document.getElementById("live-video");
  let pc = null;
  let location = null;
  let connecting = false;
  let retryTimer = null;
  let backoff = 1;
  let ended = document.getElementById("live-status").dataset.state === "ended";
  let edgeLost = false;  // the edge stopped sending: reconnect without backing off
  let failures = 0;  // WebRTC connections that failed in a row (the HLS fallback counts them)
  const hlsFallback = window.LiveHls || null;  // the watch page's (live_hls.js)

  function teardown() {
    if (location && location.indexOf("/edge/") >= 0) Live.deleteResource(location);
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.close();
    }
    pc = null;
    location = null;
  }

  function scheduleRetry(seconds) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, Math.max(0.5, seconds) * 1000);
  }

  async function onDrop() {
    teardown();
    let state = "waiting";
    try { state = (await Live.fetchLive()).state; } catch (e) { state = "waiting"; }
    if (state === "ended") {
      ended = true;
      Live.setStatus("ended");
      scheduleRetry(15);  // a broadcast restart is announced on the socket; this is a fallback
      return;
    }
    if (edgeLost) {
      edgeLost = false;
      Live.setStatus("waiting", "reconnecting");
      scheduleRetry(0.3);
      return;
    }
    failures += 1;
    if (failures >= 3 && hlsFallback && hlsFallback.start()) return;
    Live.setStatus("waiting", "reconnecting");
    backoff = Math.min(backoff * 2, 10);
    scheduleRetry(backoff);
  }

  let keepaliveTimer = null;
  let stallTimer = null;

  /** From an edge, a dead edge shows as packets that stop long before ICE gives up: after
   *  1.5 s without a new video packet, drop and ask for an edge again (at once). */
  function watchStall(mine) {
    let last = -1;
    let still = 0;
    clearInterval(stallTimer);
    stallTimer = setInterval(async function () {
      if (pc !== mine) { clearInterval(stallTimer); return; }
      if (mine.connectionState !== "connected") return;
      let packets = 0;
      try {
        (await mine.getStats()).forEach(function (r) {
          if (r.type === "inbound-rtp" && r.kind === "video") packets += r.packetsReceived || 0;
        });
      } catch (e) { return; }
      if (packets === last) {
        still += 0.5;
        if (still >= 1.5 && pc === mine) { clearInterval(stallTimer); edgeLost = true; onDrop(); }
      } else {
        still = 0;
        last = packets;
      }
    }, 500);
  }

  /** Wait for ICE gathering (the answer to an edge carries its candidates), at most 3 s. */
  function gathered(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(function (resolve) {
      peer.addEventListener("icegatheringstatechange", function () {
        if (peer.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, 3000);
    });
  }

  /** A site's or a member's page asks where to watch from; a Janus edge sends its offer,
   *  we answer. Resolves null when the origin serves this page (then WHEP as before). */
  async function viaEdge(mine) {
    if (!cfg.occurrenceId) return null;
    const query = cfg.siteId ? "?site=" + cfg.siteId : "";
    let body;
    try {
      const res = await fetch("/live/" + cfg.occurrenceId + "/play" + query, {
        method: "POST", headers: Live.authHeaders(), credentials: "same-origin" });
      if (res.status >= 500 || res.status === 429) {
        // Not live yet, or the edge could not take the page now: try /play again later
        // (not WHEP: the origin would serve a site that an edge should).
        const refused = await res.json().catch(function () { return {}; });
        return { status: res.status, body: refused,
                 retryAfter: parseInt(res.headers.get("Retry-After") || "0", 10) || null };
      }
      if (!res.ok) return null;
      body = await res.json();
    } catch (e) { return null; }
    if (body.via !== "edge") return null;
    await mine.setRemoteDescription({ type: "offer", sdp: body.offer });
    await mine.setLocalDescription(await mine.createAnswer());
    await gathered(mine);
    const headers = Object.assign({ "Content-Type": "application/sdp" }, Live.authHeaders());
    const res = await fetch(body.location + "/answer", {
      method: "POST", headers: headers, credentials: "same-origin",
      body: mine.localDescription.sdp });
    document.body.dataset.servedBy = body.edge;
    watchStall(mine);
    clearInterval(keepaliveTimer);
    keepaliveTimer = setInterval(async function () {
      if (pc !== mine) { clearInterval(keepaliveTimer); return; }
      try {
        const k = await fetch(body.location + "/keepalive", {
          method: "POST", headers: Live.authHeaders(), credentials: "same-origin" });
        if (k.status === 404) onDrop();
      } catch (e) { /* the next one, or ICE, tells */ }
    }, (body.keepalive_seconds || 20) * 1000);
    return { status: res.ok ? 201 : res.status, location: body.location, body: {} };
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (pc || connecting || (hlsFallback && hlsFallback.active)) return;
    connecting = true;
    const mine = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
    pc = mine;
    const stream = new MediaStream();
    mine.ontrack = function (ev) {
      stream.addTrack(ev.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      play();
    };
    mine.onconnectionstatechange = function () {
      if (pc !== mine) return;
      if (mine.connectionState === "connected") {
        backoff = 1;
        failures = 0;
        ended = false;
        Live.setStatus("live");
      } else if (["failed", "closed", "disconnected"].indexOf(mine.connectionState) >= 0) {
        onDrop();
      }
    };
    let result = null;
    try {
      result = await viaEdge(mine);
    } catch (e) {
      result = { status: 0, body: { message: String(e) } };
    }
    if (result === null) {
      delete document.body.dataset.servedBy;
      mine.addTransceiver("video", { direction: "recvonly" });
      mine.addTransceiver("audio", { direction: "recvonly" });
      try {
        const url = cfg.whepUrl + (cfg.siteId ? "?site=" + cfg.siteId : "");
        result = await Live.postOffer(url, mine);
      } catch (e) {
        result = { status: 0, body: { message: String(e) } };
      }
    }
    connecting = false;
    if (pc !== mine) return;
    if (result.status === 201) {
      location = result.location;
      watchLink(mine);
      return;
    }
    teardown();
    if (result.body && result.body.error === "not_live") {
      if (!ended) Live.setStatus("waiting");
      scheduleRetry(ended ? 15 : (result.retryAfter || cfg.retryAfter || 3));
    } else {
      Live.setStatus(ended ? "ended" : "waiting", ended ? "ended" : "reconnecting");
      backoff = Math.min(backoff * 2, 10);
      scheduleRetry(backoff);
    }
  }

  // On a link too poor for the lowest video layer the relay sends audio only: the screen says
  // the picture is paused because of the link (the sound goes on) and clears the notice by
  // itself once frames come again. Seen from the receiver: frames stop, audio flows.
  const linkNotice = document.getElementById("link-notice");
  function watchLink(mine) {
    if (!linkNotice) return;
    let frames = -1, audio = -1, still = 0;
    const timer = setInterval(async function () {
      if (pc !== mine) { clearInterval(timer); linkNotice.hidden = true; return; }
      let f = 0, a = 0;
      try {
        (await mine.getStats()).forEach(function (r) {
          if (r.type !== "inbound-rtp") return;
          if (r.kind === "video") f += r.framesDecoded || 0;
          if (r.kind === "audio") a += r.packetsReceived || 0;
        });
      } catch (e) { return; }
      const videoStalled = frames >= 0 && f === frames;
      const audioFlows = audio >= 0 && a > audio;
      still = videoStalled && audioFlows ? still + 1 : 0;
      linkNotice.hidden = still < 2;  // about 4 s without a frame while the sound goes on
      document.body.dataset.videoPaused = still >= 2 ? "true" : "false";
      frames = f; audio = a;
    }, 2000);
  }

  // A kiosk (opened by its screen token) returns to its standing address a while after the
  // lesson ended; that page shows the next lesson and opens it when it is time.
  let kioskTimer = null;
  function kioskAfterEnd(isEnded) {
    clearTimeout(kioskTimer);
    if (isEnded && cfg.kioskUrl) kioskTimer = setTimeout(function () { window.location.assign(cfg.kioskUrl); }, 10 * 60 * 1000);
  }
  new MutationObserver(function () {
    kioskAfterEnd(document.getElementById("live-status").dataset.state === "ended");
  }).observe(document.getElementById("live-status"), { attributes: true, attributeFilter: ["data-state"] });
  kioskAfterEnd(ended);

  Live.joinRoom(function (msg) {
    if (msg.state === "live") {
      if (!pc) { ended = false; connect(); }
    } else if (msg.state === "interrupted") {
      // Its media node is gone: drop the dead connection now (ICE would take seconds to
      // notice); the trainer's page publishes again and "live" brings us back at once.
      teardown();
      Live.setStatus("waiting", "reconnecting");
      scheduleRetry(1);
    } else if (msg.state === "ended") {
      ended = true;
      teardown();
      Live.setStatus("ended");
      scheduleRetry(15);
    }
  });

  // Sound: turned on once per device (a kiosk remembers it); if the browser refuses to
  // play with sound before a gesture, the picture plays muted and the button comes back.
  const unmute = document.getElementById("unmute");
  const SOUND_KEY = "yuanjiao.sound";
  function soundWanted() { try { return localStorage.getItem(SOUND_KEY) === "on"; } catch (e) { return false; } }
  function showSound() { unmute.classList.toggle("on", !video.muted); unmute.textContent = video.muted ? unmute.dataset.off : unmute.dataset.on; }
  function play() {
    video.muted = !soundWanted();
    video.play().catch(function () { video.muted = true; video.play().catch(function () {}); }).then(showSound);
  }
  unmute.addEventListener("click", function () {
    video.muted = !video.muted;
    try { localStorage.setItem(SOUND_KEY, video.muted ? "off" : "on"); } catch (e) { /* private mode */ }
    if (!video.muted) video.play().catch(function () {});
    showSound();
  });
  video.muted = !soundWanted();
  showSound();
  window.addEventListener("pagehide", function () { Live.deleteResource(location); });
  window.livePlayer = { connect: connect, get pc() { return pc; } };
  if (!(hlsFallback && (hlsFallback.forced() || !window.RTCPeerConnection)
        && hlsFallback.start())) {
    connect();
  }
})();
