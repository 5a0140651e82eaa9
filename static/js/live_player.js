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
    Live.setStatus("waiting", "reconnecting");
    backoff = Math.min(backoff * 2, 10);
    scheduleRetry(backoff);
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (pc || connecting) return;
    connecting = true;
    const mine = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
    pc = mine;
    mine.addTransceiver("video", { direction: "recvonly" });
    mine.addTransceiver("audio", { direction: "recvonly" });
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
  connect();
})();
