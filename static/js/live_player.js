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
  let failures = 0;  // WebRTC connections that failed in a row (the HLS fallback counts them)
  const hlsFallback = window.LiveHls || null;  // the watch page's (live_hls.js)

  function teardown() {
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
    failures += 1;
    if (failures >= 3 && hlsFallback && hlsFallback.start()) return;
    Live.setStatus("waiting", "reconnecting");
    backoff = Math.min(backoff * 2, 10);
    scheduleRetry(backoff);
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (pc || connecting || (hlsFallback && hlsFallback.active)) return;
    connecting = true;
    const mine = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
    pc = mine;
    mine.addTransceiver("video", { direction: "recvonly" });
    mine.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    mine.ontrack = function (ev) {
      stream.addTrack(ev.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(function () {});
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
    let result;
    try {
      const url = cfg.whepUrl + (cfg.siteId ? "?site=" + cfg.siteId : "");
      result = await Live.postOffer(url, mine);
    } catch (e) {
      result = { status: 0, body: { message: String(e) } };
    }
    connecting = false;
    if (pc !== mine) return;
    if (result.status === 201) {
      location = result.location;
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

  Live.joinRoom(function (msg) {
    if (msg.state === "live") {
      if (!pc) { ended = false; connect(); }
    } else if (msg.state === "ended") {
      ended = true;
      teardown();
      Live.setStatus("ended");
      scheduleRetry(15);
    }
  });

  document.getElementById("unmute").addEventListener("click", function (ev) {
    video.muted = !video.muted;
    ev.target.classList.toggle("on", !video.muted);
  });
  window.addEventListener("pagehide", function () { Live.deleteResource(location); });
  window.livePlayer = { connect: connect, get pc() { return pc; } };
  if (!(hlsFallback && (hlsFallback.forced() || !window.RTCPeerConnection)
        && hlsFallback.start())) {
    connect();
  }
})();
