// The watch page's fallback: HLS (hls.js, or the browser's own player on Safari) for a
// member whose browser or network cannot play WebRTC. live_player.js starts it when there
// is no RTCPeerConnection, after three failed WebRTC connections, or with ?hls=1.
(function () {
  "use strict";
  const me = document.currentScript;
  const src = me ? me.dataset.src : null;
  const video = document.getElementById("live-video");
  let hls = null;
  let retryTimer = null;
  let active = false;

  function native() { return video.canPlayType("application/vnd.apple.mpegurl") !== ""; }
  function usable() { return !!src && ((window.Hls && window.Hls.isSupported()) || native()); }
  function forced() { return /[?&]hls=1(&|$)/.test(window.location.search); }

  function retry(seconds) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(load, seconds * 1000);
  }

  function load() {
    if (hls) { hls.destroy(); hls = null; }
    if (!(window.Hls && window.Hls.isSupported())) {
      video.src = src;
      video.play().catch(function () {});
      return;
    }
    hls = new window.Hls({
      // Start two segments (about 2 s) behind the live edge; jump ahead past five.
      liveSyncDurationCount: 2,
      liveMaxLatencyDurationCount: 5,
      xhrSetup: function (xhr) { xhr.withCredentials = true; },
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, function () { video.play().catch(function () {}); });
    hls.on(window.Hls.Events.ERROR, function (_ev, data) {
      if (!data.fatal) return;
      // Not live yet (503), or the network dropped: wait and load the playlist again.
      const waiting = data.response && data.response.code === 503;
      Live.setStatus("waiting", waiting ? "waiting" : "reconnecting");
      retry(3);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  }

  function start() {
    if (active) return true;
    if (!usable()) return false;
    active = true;
    document.body.dataset.player = "hls";
    video.srcObject = null;
    video.addEventListener("playing", function () { Live.setStatus("live"); });
    video.addEventListener("ended", function () { Live.setStatus("ended"); retry(15); });
    load();
    return true;
  }

  /** Seconds between the wall clock and the frame on screen: the segments carry
   *  EXT-X-PROGRAM-DATE-TIME, the time the engine received the frame (hls.js only). */
  function latency() {
    if (!hls || !hls.playingDate) return null;
    return (Date.now() - hls.playingDate.getTime()) / 1000;
  }

  window.LiveHls = { start: start, forced: forced, usable: usable, latency: latency,
                     get active() { return active; } };
})();
