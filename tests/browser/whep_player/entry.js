// A third-party WHEP player (Eyevinn's @eyevinn/webrtc-player, from npm) on a page of
// another origin: it knows nothing of Yuanjiao but RFC 9725. Bundled by the test (esbuild).
import { WebRTCPlayer } from "@eyevinn/webrtc-player";

const params = new URLSearchParams(window.location.search);
const video = document.querySelector("video");
const player = new WebRTCPlayer({ video: video, type: "whep" });
window.playerErrors = [];
player.on("no-media", function () { window.playerErrors.push("no-media"); });
player.load(new URL(params.get("whep")), "Bearer " + params.get("token"))
  .catch(function (err) { window.playerErrors.push(String(err)); });
window.framesDecoded = function () {
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  return q ? q.totalVideoFrames : 0;
};
