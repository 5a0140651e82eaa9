"""HLS for members watching alone (phones, desktops behind strict networks): the packager.

`HlsPackager` runs in the process of the engine (the web app's, or a media node's) and is
one more consumer of the trainer's frames, decoded once by the engine. It encodes them
once, to H.264 (and the sound to AAC), and PyAV's hls muxer writes MPEG-TS segments of
about `SEGMENT_SECONDS` and a playlist whose segments carry EXT-X-PROGRAM-DATE-TIME, under
``<YUANJIAO_HLS_DIR>/<occurrence_id>/``. The encoding runs on a thread of its own and
never holds the engine's loop: when it falls behind, frames are dropped, not queued.

The web side (who may fetch the files) is `video.hls_views`.
"""

from __future__ import annotations

import contextlib
import fractions
import logging
import queue
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import av

log = logging.getLogger(__name__)

SEGMENT_SECONDS = 1.0
#: Segments kept in the playlist (older files are deleted by the muxer).
LIST_SIZE = 8
PLAYLIST = "index.m3u8"
TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
#: Frames waiting for the encoder beyond this are dropped (the newest are kept).
QUEUE_LIMIT = 30
#: After the first video frame, wait this long for sound before the streams are fixed.
AUDIO_WAIT_SECONDS = 0.5
FILE_NAME = re.compile(r"(index\.m3u8|seg\d{1,9}\.ts)")


def occurrence_dir(base: str, occurrence_id: int) -> str:
    return str(Path(base) / str(int(occurrence_id)))


# --- media side ---------------------------------------------------------------------------


class HlsPackager:
    """Decoded frames in, an HLS playlist and its segments out, on a thread of its own."""

    def __init__(self, directory: str, *, height: int = 480, bitrate_kbps: int = 1200,
                 fps: int = 30) -> None:
        self.directory = Path(directory)
        self.target_height = max(90, int(height))
        self.bitrate = max(200, int(bitrate_kbps)) * 1000
        self.fps = fps
        self.queue: queue.Queue = queue.Queue()
        self.dropped = 0
        self.segments_started = 0
        self.failed = False
        self._t0: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"hls-{self.directory.name}")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    # Called on the engine's loop: never blocks.
    def push_video(self, frame: av.VideoFrame) -> None:
        self._push(("video", frame, time.monotonic()))

    def push_audio(self, frame: av.AudioFrame) -> None:
        self._push(("audio", frame, time.monotonic()))

    def _push(self, item: tuple) -> None:
        if self._closed or self.failed:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            with contextlib.suppress(queue.Empty):
                self.queue.get_nowait()
                self.dropped += 1
        self.queue.put_nowait(item)

    def close(self, wait: float = 0.0) -> None:
        """Finish the playlist (EXT-X-ENDLIST); `wait` seconds for the thread at most."""
        if not self._closed:
            self._closed = True
            self.queue.put(None)
        if wait:
            self._thread.join(wait)

    # The packager's thread.
    def _run(self) -> None:
        try:
            self._package()
        except Exception:
            self.failed = True
            log.exception("HLS packaging failed in %s", self.directory)

    def _package(self) -> None:
        pending: list[tuple] = []
        first_video_at: float | None = None
        has_audio = False
        while True:  # the streams are fixed once sound had a chance to show up
            item = self.queue.get()
            if item is None:
                return
            pending.append(item)
            has_audio = has_audio or item[0] == "audio"
            if item[0] == "video" and first_video_at is None:
                first_video_at = item[2]
            if first_video_at is not None and (
                    has_audio or item[2] - first_video_at >= AUDIO_WAIT_SECONDS):
                break
        first = next(frame for kind, frame, _ in pending if kind == "video")
        container, video, audio = self._open(first, has_audio)
        self._t0 = min(at for _, _, at in pending)
        state = {"last_video": -1, "last_key": None}
        try:
            for item in pending:
                self._encode(container, video, audio, item, state)
            while (item := self.queue.get()) is not None:
                self._encode(container, video, audio, item, state)
            for stream in (video, audio):
                if stream is not None:
                    for packet in stream.encode(None):
                        container.mux(packet)
        finally:
            container.close()

    def _open(self, first: av.VideoFrame, has_audio: bool):
        height = min(self.target_height, first.height)
        width = round(first.width * height / first.height)
        width, height = max(2, width - width % 2), max(2, height - height % 2)
        container = av.open(str(self.directory / PLAYLIST), "w", format="hls", options={
            "hls_time": str(SEGMENT_SECONDS),
            "hls_list_size": str(LIST_SIZE),
            "hls_flags": "delete_segments+program_date_time+independent_segments+temp_file",
            "hls_segment_type": "mpegts",
            "hls_segment_filename": str(self.directory / "seg%05d.ts"),
        })
        video = container.add_stream("libx264", rate=self.fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        video.time_base = TIME_BASE
        video.codec_context.time_base = TIME_BASE
        video.bit_rate = self.bitrate
        video.codec_context.gop_size = 100000  # our clock places the keyframes
        video.options = {"preset": "veryfast", "tune": "zerolatency", "profile": "main",
                         "sc_threshold": "0"}
        audio = None
        if has_audio:
            audio = container.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "stereo"
            audio.bit_rate = 96000
        return container, video, audio

    def _encode(self, container, video, audio, item: tuple, state: dict[str, Any]) -> None:
        kind, frame, at = item
        if kind == "audio":
            if audio is None:
                return
            frame.pts = None  # the encoder's FIFO numbers the samples
            for packet in audio.encode(frame):
                container.mux(packet)
            return
        pts = max(int((at - self._t0) * 90000), state["last_video"] + 1)
        state["last_video"] = pts
        if (frame.width, frame.height) != (video.width, video.height) or \
                frame.format.name != "yuv420p":
            frame = frame.reformat(width=video.width, height=video.height, format="yuv420p")
        keyframe = state["last_key"] is None or at - state["last_key"] >= SEGMENT_SECONDS
        if keyframe:
            state["last_key"] = at
            self.segments_started += 1
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.pict_type = (av.video.frame.PictureType.I if keyframe
                           else av.video.frame.PictureType.NONE)
        for packet in video.encode(frame):
            container.mux(packet)


def packager_for(options: dict[str, Any]) -> HlsPackager | None:
    """The engine's hook: a packager when the web app asked for HLS (`hls_dir`)."""
    directory = options.get("hls_dir")
    if not directory:
        return None
    try:
        return HlsPackager(directory, height=int(options.get("height") or 480),
                           bitrate_kbps=int(options.get("bitrate_kbps") or 1200))
    except OSError:
        log.exception("cannot write HLS under %s; the broadcast goes on without", directory)
        return None
