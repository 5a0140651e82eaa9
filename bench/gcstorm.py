"""Middle garbage collections while connections arrive: the stall each one makes, under
the web processes' thresholds (`core.gctune.GC_THRESHOLDS`) against the earlier ones.

    .venv/bin/python bench/gcstorm.py                 # 10,000 connections, 3 rounds
    .venv/bin/python bench/gcstorm.py --connections 20000 --objects 300

A web process taking 10,000 websockets keeps nearly everything each one allocates (its
environ, its Engine.IO and Socket.IO state, its greenlet): the young collections free
little, and each middle collection walks all that the young ones since the last left
alive. bench/stack.py logged 5 such stalls per tier of 200-300 ms. Here each connection
is `--objects` container objects that stay (dicts and lists, the shape of a WSGI environ
and a session) and as many that die young, made at once in a fresh interpreter per
setting (no other objects, the start frozen as `tune_gc` does); every middle and full
collection is timed by `gc.callbacks`. Printed per setting and round: middle collections,
the longest and their sum, full collections, and the process CPU of the whole storm; then
the longest stall and the total under the current thresholds against the earlier ones
(same run, rounds alternating). The real figure is bench/stack.py's connection phase;
this shows the mechanism on its own, without the machine's noise around it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The thresholds before the middle collections were made smaller (core/gctune.py).
EARLIER = (20_000, 10, 100)


def storm(thresholds: tuple[int, int, int], connections: int, objects: int) -> dict:
    """One storm in this interpreter (run it in a fresh one)."""
    import gc
    import time

    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    pauses: dict[int, list[float]] = {1: [], 2: []}
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        generation = info["generation"]
        if generation == 0:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[generation].append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(timed)
    kept = []
    cpu = time.process_time()
    for i in range(connections):
        environ = {f"HTTP_HEADER_{j}": [str(i), j] for j in range(objects // 4)}
        state = [{"sid": str(i), "rooms": [i % 100], "n": j} for j in range(objects // 2)]
        kept.append((environ, state, [[j] for j in range(objects // 4)]))
        for _ in range(objects // 2):  # what a connection's handshake makes and drops
            _ = {"packet": [i, "pong"], "ack": {"id": i}}
    cpu = time.process_time() - cpu
    gc.callbacks.remove(timed)
    middle = pauses[1]
    return {"middle": len(middle), "longest_ms": max(middle, default=0.0),
            "middle_ms": sum(middle), "full": len(pauses[2]), "cpu_s": cpu}


def run(thresholds: tuple[int, int, int], connections: int, objects: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(list(thresholds)),
         "--connections", str(connections), "--objects", str(objects)],
        capture_output=True, text=True, check=True, cwd=str(ROOT))
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=200,
                        help="container objects a connection keeps (and as many it drops)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(storm(tuple(json.loads(args.child)), args.connections,
                               args.objects)))
        return
    from core.gctune import GC_THRESHOLDS

    print(f"{args.connections} connections of {args.objects} kept objects each, "
          f"thresholds {GC_THRESHOLDS} against {EARLIER}, {args.rounds} rounds")
    results: dict[tuple, list[dict]] = {GC_THRESHOLDS: [], EARLIER: []}
    for round_ in range(args.rounds):
        order = (EARLIER, GC_THRESHOLDS) if round_ % 2 == 0 else (GC_THRESHOLDS, EARLIER)
        for thresholds in order:
            row = run(thresholds, args.connections, args.objects)
            results[thresholds].append(row)
            print(f"  {thresholds!s:18s} middle collections {row['middle']:3d}, longest "
                  f"{row['longest_ms']:6.1f} ms, all {row['middle_ms']:7.1f} ms; full "
                  f"{row['full']}; storm CPU {row['cpu_s']:.2f} s", flush=True)

    def median(thresholds: tuple, key: str) -> float:
        return statistics.median(r[key] for r in results[thresholds])

    now_long, then_long = median(GC_THRESHOLDS, "longest_ms"), median(EARLIER, "longest_ms")
    now_all, then_all = median(GC_THRESHOLDS, "middle_ms"), median(EARLIER, "middle_ms")
    print(f"longest middle stall {now_long:.1f} ms vs {then_long:.1f} ms "
          f"({now_long / max(then_long, 1e-9):.2f}x); all middle collections {now_all:.0f} ms"
          f" vs {then_all:.0f} ms ({now_all / max(then_all, 1e-9):.2f}x); storm CPU "
          f"{median(GC_THRESHOLDS, 'cpu_s'):.2f} s vs {median(EARLIER, 'cpu_s'):.2f} s "
          f"(medians of {args.rounds})")


if __name__ == "__main__":
    main()
