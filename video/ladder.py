"""The encoding ladder and each site's layer, chosen from its RTCP receiver reports.

Plain rules, no aiortc and no clock of their own: the engine feeds every receiver report
of a site to its `LinkMonitor` with the time, and asks it which layer the site should be
on. Down quickly (loss above 8 % over the last 2 s, or 20 % over 1 s), up carefully
(below 2 % over 10 s and no report above 4 %; longer after an attempt that failed),
never deciding on reports that straddle a switch.

Loss is what the site's own receiver counts before retransmission (RTCP `fraction_lost`
of the media SSRC; RTX packets are counted on their own SSRC), so it measures the link,
not what NACK later repaired. Random loss of a few percent therefore keeps a site on its
layer (retransmission repairs it); congestion (a link narrower than the layer) shows as
tens of percent and moves the site down. A site falls from the lowest video layer to
audio only when even that layer loses more than a quarter of its packets.
"""

from __future__ import annotations

from dataclasses import dataclass

AUDIO = "audio"

#: Loss (percent, smoothed) above which a site moves down one video layer ...
DOWN_LOSS = 8.0
#: ... when it lasts this long (the span the receiver reports cover, not their count).
DOWN_SECONDS = 2.0
#: Congestion (a link narrower than the layer) loses far more: down after 1 s of this.
DOWN_FAST_LOSS = 20.0
DOWN_FAST_SECONDS = 1.0
#: From the lowest video layer to audio only: heavier and longer loss.
AUDIO_LOSS = 25.0
AUDIO_SECONDS = 3.0
#: Loss below which a site may move up one layer, after this long ...
UP_LOSS = 2.0
UP_SECONDS = 10.0
#: ... and no single report in that time above this.
UP_PEAK_LOSS = 4.0
#: ... times this when the receiver's bitrate estimate is below the upper layer's bitrate;
UP_WAIT_UNDER_ESTIMATE = 3
#: ... doubled (up to this) each time a move up is undone within `UP_FAILED_WITHIN`.
UP_MAX_SECONDS = 80.0
UP_FAILED_WITHIN = 15.0
#: Reports that begin within this long after a move may still describe the old layer.
SETTLE_SECONDS = 2.0
#: Weight of the newest report in the smoothed loss the API shows.
LOSS_ALPHA = 0.5


@dataclass(frozen=True)
class Layer:
    """One rung: a video size and bitrate, or audio only (`height` None)."""

    name: str
    height: int | None
    bitrate_kbps: int


def ladder_for(height: int, bitrate_kbps: int) -> list[Layer]:
    """The lecture's layers, best first: its own size and bitrate, half the height at 30 %
    of the bitrate (480 p at 1.2 Mb/s → 240 p at 360 kb/s), and audio only."""
    height = max(90, int(height))
    bitrate_kbps = max(100, int(bitrate_kbps))
    layers = [Layer("high", height, bitrate_kbps)]
    low = max(90, height // 2)
    low -= low % 2
    if low < height:
        layers.append(Layer("low", low, max(120, round(bitrate_kbps * 0.3))))
    layers.append(Layer(AUDIO, None, 0))
    return layers


class LinkMonitor:
    """One site's link as its receiver reports it, and the layer it should be on.

    Each report block's `fraction_lost` covers the time since the previous report (0.5 to
    1.5 s with aiortc, about 1 s with browsers). The loss over the last N seconds is the
    time-weighted mean of the reports covering them, counted only from the last move on
    (older reports describe another layer).
    """

    def __init__(self, layers: list[str], layer: str, now: float,
                 bitrates: dict[str, int] | None = None) -> None:
        self.layers = list(layers)
        #: Each layer's bitrate (kb/s), to compare with the receiver's estimate.
        self.bitrates = dict(bitrates or {})
        #: The receiver's estimate of its link (REMB), when it sends one.
        self.estimate_kbps: float | None = None
        self.layer = layer
        self.pinned: str | None = None
        #: Smoothed loss (percent) of the stream the site currently receives.
        self.loss: float | None = None
        self.jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        self.reports = 0
        self.switches = 0
        #: (start, end, loss percent) of each report since the last move, newest last.
        self._samples: list[tuple[float, float, float]] = []
        self._last_report_at: float | None = None
        self._moved_at = now
        self._up_wait = UP_SECONDS
        self._last_up_at: float | None = None

    def report(self, fraction_lost: int, now: float, *, jitter_ms: float | None = None,
               rtt_ms: float | None = None) -> None:
        """One RTCP receiver report block for the stream the site is on."""
        raw = max(0, min(255, int(fraction_lost))) / 256 * 100
        start = self._last_report_at if self._last_report_at is not None else now - 1.0
        start = max(start, now - 2.0)  # a long silence says nothing about the link
        self._last_report_at = now
        self.reports += 1
        self.loss = raw if self.loss is None else LOSS_ALPHA * raw + (1 - LOSS_ALPHA) * self.loss
        if jitter_ms is not None:
            self.jitter_ms = jitter_ms
        if rtt_ms is not None:
            self.rtt_ms = rtt_ms
        # A report that began before the move (or within the settling time after it)
        # may describe the old layer.
        if start >= self._moved_at + (SETTLE_SECONDS if self.switches else 0.0) - 0.25:
            self._samples.append((start, now, raw))
            horizon = now - UP_MAX_SECONDS - 5
            while self._samples and self._samples[0][1] < horizon:
                self._samples.pop(0)

    def estimate(self, kbps: float) -> None:
        """The receiver's estimated maximum bitrate (RTCP REMB)."""
        self.estimate_kbps = kbps

    def _up_wait_for(self, layer: str) -> float:
        """How long the loss must stay low before moving up to `layer`: longer when the
        receiver's own estimate says its link cannot carry that layer (it can only
        estimate up to 1.5 x what it receives, so the estimate alone cannot forbid it)."""
        needed = self.bitrates.get(layer)
        if self.estimate_kbps is not None and needed and self.estimate_kbps < needed:
            return min(UP_MAX_SECONDS, self._up_wait * UP_WAIT_UNDER_ESTIMATE)
        return self._up_wait

    def loss_over(self, seconds: float, *, worst: bool = False) -> float | None:
        """Loss (percent) over the newest reports covering at least `seconds` (their
        time-weighted mean, or the worst one), or None while the reports since the last
        move cover less."""
        covered = weighted = peak = 0.0
        for start, end, loss in reversed(self._samples):
            covered += end - start
            weighted += (end - start) * loss
            peak = max(peak, loss)
            if covered >= seconds - 0.05:
                return peak if worst else weighted / covered
        return None

    def _down(self) -> list[tuple[float, float]]:
        """(loss, seconds) conditions for moving down one layer."""
        index = self.layers.index(self.layer)
        if index + 1 >= len(self.layers):
            return []
        if self.layers[index + 1] == AUDIO:
            return [(AUDIO_LOSS, AUDIO_SECONDS)]
        return [(DOWN_LOSS, DOWN_SECONDS), (DOWN_FAST_LOSS, DOWN_FAST_SECONDS)]

    def target(self, now: float) -> str | None:
        """The layer to move to now, or None to stay."""
        if self.pinned is not None:
            return self.pinned if self.pinned != self.layer else None
        index = self.layers.index(self.layer)
        for threshold, seconds in self._down():
            loss = self.loss_over(seconds)
            if loss is not None and loss > threshold:
                return self.layers[index + 1]
        if index > 0:
            wait = self._up_wait_for(self.layers[index - 1])
            loss = self.loss_over(wait)
            peak = self.loss_over(wait, worst=True)
            if loss is not None and peak is not None and loss < UP_LOSS \
                    and peak < UP_PEAK_LOSS:
                return self.layers[index - 1]
        return None

    def move(self, layer: str, now: float) -> None:
        """The site was sent to `layer` (it gets there at that layer's next keyframe)."""
        if layer == self.layer:
            return
        up = self.layers.index(layer) < self.layers.index(self.layer)
        if up:
            self._last_up_at = now
        elif self._last_up_at is not None and now - self._last_up_at <= UP_FAILED_WITHIN:
            self._up_wait = min(UP_MAX_SECONDS, self._up_wait * 2)
        self.layer = layer
        self.switches += 1
        self._samples.clear()
        self._moved_at = now

    def pin(self, layer: str | None) -> None:
        if layer is not None and layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}")
        self.pinned = layer

    def describe(self) -> dict[str, object]:
        return {
            "loss": round(self.loss, 1) if self.loss is not None else None,
            "jitter_ms": round(self.jitter_ms, 1) if self.jitter_ms is not None else None,
            "rtt_ms": round(self.rtt_ms, 1) if self.rtt_ms is not None else None,
            "estimate_kbps": round(self.estimate_kbps) if self.estimate_kbps else None,
            "pinned": self.pinned,
            "layer_switches": self.switches,
        }
