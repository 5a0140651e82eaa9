// The trainer's page: devices and preview, screen sharing, WHIP start/stop, sites and figures.
(function () {
  "use strict";
  const Live = window.Live;
  const cfg = Live.config;
  const preview = document.getElementById("preview");
  const cameraSelect = document.getElementById("camera-select");
  const micSelect = document.getElementById("mic-select");
  const startBtn = document.getElementById("start-broadcast");
  const stopBtn = document.getElementById("stop-broadcast");
  const shareBtn = document.getElementById("share-screen");
  const message = document.getElementById("broadcast-message");
  let camera = null;       // the camera + microphone stream
  let screen = null;       // the screen-share stream, while sharing
  let pc = null;
  let location = null;
  let statsTimer = null;

  function say(text) { message.textContent = text || ""; }

  async function openCamera() {
    const constraints = {
      video: cameraSelect.value ? { deviceId: { exact: cameraSelect.value } } : { width: 1280, height: 720 },
      audio: micSelect.value ? { deviceId: { exact: micSelect.value } } : true,
    };
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    if (camera) camera.getTracks().forEach(function (t) { t.stop(); });
    camera = stream;
    if (!screen) preview.srcObject = camera;
    await replaceSending();
  }

  async function listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    [[cameraSelect, "videoinput"], [micSelect, "audioinput"]].forEach(function (pair) {
      const select = pair[0];
      const current = select.value;
      select.innerHTML = "";
      devices.filter(function (d) { return d.kind === pair[1]; }).forEach(function (d, i) {
        const opt = document.createElement("option");
        opt.value = d.deviceId;
        opt.textContent = d.label || (pair[1] + " " + (i + 1));
        select.appendChild(opt);
      });
      if (current) select.value = current;
    });
  }

  function currentVideoTrack() {
    return (screen || camera).getVideoTracks()[0] || null;
  }

  async function replaceSending() {
    if (!pc) return;
    for (const sender of pc.getSenders()) {
      if (!sender.track) continue;
      if (sender.track.kind === "video") await sender.replaceTrack(currentVideoTrack());
      if (sender.track.kind === "audio" && camera) await sender.replaceTrack(camera.getAudioTracks()[0]);
    }
  }

  async function start() {
    startBtn.disabled = true;
    say("");
    try {
      if (!camera) await openCamera();
      pc = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
      pc.addTransceiver(currentVideoTrack(), { direction: "sendonly" });
      const audio = camera.getAudioTracks()[0];
      if (audio) pc.addTransceiver(audio, { direction: "sendonly" });
      const mine = pc;
      pc.onconnectionstatechange = function () {
        if (pc !== mine) return;
        if (mine.connectionState === "connected") Live.setStatus("live");
        else if (mine.connectionState === "failed") republish();
      };
      const result = await Live.postOffer(cfg.whipUrl, pc);
      if (result.status !== 201) {
        throw new Error((result.body && result.body.message) || ("HTTP " + result.status));
      }
      location = result.location;
      stopBtn.disabled = false;
      Live.setStatus("live");
      pollStats();
    } catch (e) {
      say(e.message || String(e));
      if (pc) pc.close();
      pc = null;
      startBtn.disabled = false;
    }
  }

  /** The media node went away (the server says "interrupted", or ICE failed): publish
   *  again with the same camera; the app sends it to a node that answers. Tries every
   *  second until it is back or the trainer stops. */
  let republishing = false;
  async function republish() {
    if (republishing || !pc) return;
    republishing = true;
    Live.setStatus("live", "reconnecting");
    const old = pc;
    pc = null;
    location = null;
    old.close();
    for (let attempt = 0; attempt < 60 && !pc && camera; attempt++) {
      await start();
      if (!pc) await new Promise(function (resolve) { setTimeout(resolve, 1000); });
    }
    republishing = false;
  }

  async function stop() {
    stopBtn.disabled = true;
    const loc = location;
    location = null;
    if (loc) {
      await fetch(loc, { method: "DELETE", headers: Live.authHeaders(), credentials: "same-origin" });
    }
    if (pc) pc.close();
    pc = null;
    clearInterval(statsTimer);
    releaseDevices();
    Live.setStatus("ended");
    startBtn.disabled = false;
  }

  // After the broadcast the camera and microphone are given back (their lights go off);
  // starting again opens them anew.
  function releaseDevices() {
    [camera, screen].forEach(function (stream) {
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
    });
    camera = null;
    screen = null;
    shareBtn.classList.remove("on");
    preview.srcObject = null;
  }

  const obsBtn = document.getElementById("obs-key");
  if (obsBtn) obsBtn.addEventListener("click", function () {
    const box = obsBtn.closest(".live-obs");
    window.apiFetch(box.dataset.keyUrl, { method: "POST" }).then(function (out) {
      document.getElementById("obs-stream-key").value = out.stream_key;
      document.getElementById("obs-whip-url").value = out.whip_url;
      box.querySelector(".live-obs-fields").hidden = false;
      document.getElementById("obs-message").textContent = "";
    }).catch(function (err) { document.getElementById("obs-message").textContent = err.message; });
  });

  async function shareScreen() {
    if (screen) { stopSharing(); return; }
    if (!navigator.mediaDevices.getDisplayMedia) {
      say(shareBtn.dataset.unsupported || "此浏览器不支持屏幕共享");
      return;
    }
    try {
      screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
    } catch (e) {
      say(e.message || String(e));
      screen = null;
      return;
    }
    screen.getVideoTracks()[0].addEventListener("ended", stopSharing);
    preview.srcObject = screen;
    shareBtn.classList.add("on");
    await replaceSending();
  }

  function stopSharing() {
    if (!screen) return;
    screen.getTracks().forEach(function (t) { t.stop(); });
    screen = null;
    preview.srcObject = camera;
    shareBtn.classList.remove("on");
    replaceSending();
  }

  function renderSites(sites) {
    const list = document.getElementById("site-list");
    list.innerHTML = "";
    if (!sites || !sites.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = list.dataset.empty;
      list.appendChild(li);
    }
    (sites || []).forEach(function (s) {
      const li = document.createElement("li");
      let text = s.label || s.site_name || s.member_name || s.user_name || s.resource_id;
      // The site's layer of the ladder and its link (loss from its receiver reports).
      if (s.layer) text += " · " + (list.dataset["layer" + s.layer[0].toUpperCase() + s.layer.slice(1)] || s.layer);
      if (typeof s.loss === "number") text += " · " + list.dataset.loss.replace("{n}", s.loss.toFixed(1) + "%");
      if (s.pinned) text += " · " + list.dataset.pinned;
      li.textContent = text;
      li.dataset.state = s.state || "";
      li.dataset.layer = s.layer || "";
      list.appendChild(li);
    });
    document.getElementById("stat-sites").textContent = String((sites || []).length);
  }

  /** The recording stopped (disk full...): the broadcast goes on, the trainer is told. */
  function renderRecording(stats) {
    const notice = document.getElementById("recording-notice");
    if (!notice || !stats) return;
    const failed = stats.recording_state === "failed";
    notice.hidden = !failed;
    notice.dataset.error = failed ? (stats.recording_error || "write_failed") : "";
    if (failed) notice.textContent = stats.recording_error === "disk_full" ? notice.dataset.diskFull : notice.dataset.writeFailed;
  }

  function renderStats(stats) {
    if (!stats) return;
    renderRecording(stats);
    if (stats.bitrate_kbps != null) document.getElementById("stat-bitrate").textContent = stats.bitrate_kbps + " kbps";
    if (stats.fps != null) document.getElementById("stat-fps").textContent = String(stats.fps);
    if (stats.width) document.getElementById("stat-size").textContent = stats.width + "×" + stats.height;
  }

  function onState(msg) {
    if (msg.state === "interrupted") { republish(); return; }
    renderSites(msg.sites);
    renderStats(msg.stats);
    if (msg.state === "ended" && !pc) Live.setStatus("ended");
  }

  function pollStats() {
    clearInterval(statsTimer);
    statsTimer = setInterval(function () {
      Live.fetchLive().then(onState).catch(function () {});
    }, 2000);
  }

  startBtn.addEventListener("click", start);
  stopBtn.addEventListener("click", stop);
  shareBtn.addEventListener("click", shareScreen);
  cameraSelect.addEventListener("change", function () { openCamera().catch(function (e) { say(e.message); }); });
  micSelect.addEventListener("change", function () { openCamera().catch(function (e) { say(e.message); }); });
  window.addEventListener("pagehide", function () { if (location) Live.deleteResource(location); });
  Live.joinRoom(onState);
  openCamera().then(listDevices).catch(function (e) { say(e.message || String(e)); });
  window.liveBroadcast = { start: start, stop: stop, get pc() { return pc; }, get camera() { return camera; } };
})();
