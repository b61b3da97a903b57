"""Benchmark of the event data layer: generator speed and encoding throughput (not a test).

    python benchmarks/bench_data.py [--seconds 10] [--json out.json]

1. The synthetic stereo generator at the MVSEC size (346 x 260): simulated seconds per wall
   second, in memory and written to MVSEC-layout files.
2. SBT (5 bins of 10 ms per 50 ms window) and event-count encoding of the generated left-camera
   events, in events per second, side by side with tonic's ``ToFrame`` time binning (10 ms frames)
   on the same events. tonic is looked for on ``sys.path`` and in ``/tmp/tonic_env`` (``pip install
   --target /tmp/tonic_env tonic``); without it the benchmark says so and reports our numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime.data.encoding import event_count, sbt  # noqa: E402
from runtime.data.events import to_tonic  # noqa: E402
from runtime.data.synth import SynthConfig, generate, write_mvsec  # noqa: E402

TONIC_ENV = "/tmp/tonic_env"


def best_of(fn, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def import_tonic():
    try:
        import tonic.transforms  # noqa: F401
    except ImportError:
        if os.path.isdir(TONIC_ENV):
            sys.path.append(TONIC_ENV)  # appended: our numpy stays the one in use
            try:
                import tonic.transforms  # noqa: F401
            except ImportError as exc:
                return None, f"{type(exc).__name__}: {exc}"
        else:
            return None, f"not installed (pip install --target {TONIC_ENV} tonic)"
    import tonic

    return tonic, tonic.__version__


def main(argv: list[str] | None = None) -> int:
    """The benchmark read top to bottom (each measurement, then one table); long because the measured
    sequence is kept in one place on purpose."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="simulated seconds for the event set")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
    }

    # ---- generator -------------------------------------------------------------------------
    config = SynthConfig(seconds=args.seconds, seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    data = generate(config, images=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    ev = data.events["left"]
    n_events = len(ev) + len(data.events["right"])
    results["generator_in_memory"] = {
        "size": f"{config.width}x{config.height}",
        "sim_seconds": args.seconds,
        "wall_seconds": round(wall, 3),
        "sim_seconds_per_wall_second": round(args.seconds / wall, 3),
        "sim_seconds_per_cpu_second": round(args.seconds / cpu, 3),
        "sim_hz": round(data.sim_hz, 1),
        "events_per_sim_second_per_camera": round(n_events / 2 / args.seconds),
    }
    with tempfile.TemporaryDirectory() as tmp:
        short = SynthConfig(seconds=min(args.seconds, 2.0), seed=0)
        start = time.perf_counter()
        write_mvsec(short, tmp, "bench")
        wall_files = time.perf_counter() - start
        size_mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6
    results["generator_to_mvsec_files"] = {
        "sim_seconds": short.seconds,
        "wall_seconds": round(wall_files, 3),
        "sim_seconds_per_wall_second": round(short.seconds / wall_files, 3),
        "megabytes_written": round(size_mb, 1),
    }

    # ---- encodings -------------------------------------------------------------------------
    H, W = config.height, config.width
    window, bins = 50_000, 5
    t_first = int(ev["t"][0])
    n_windows = (int(ev["t"][-1]) - t_first) // window
    t_end = t_first + n_windows * window
    used = ev[ev["t"] < t_end]  # whole windows only, so every tool bins the same events

    def run_ours(fn):
        for k in range(n_windows):
            t0 = t_first + k * window
            fn(used, t0, t0 + window, bins, H, W)

    t_sbt = best_of(lambda: run_ours(sbt))
    t_cnt = best_of(lambda: run_ours(event_count))
    results["events_encoded"] = len(used)
    results["windows"] = n_windows
    results["sbt_events_per_second"] = round(len(used) / t_sbt)
    results["count_events_per_second"] = round(len(used) / t_cnt)

    tonic, tonic_info = import_tonic()
    results["tonic"] = tonic_info
    if tonic is not None:
        tev = to_tonic(used)
        to_frame = tonic.transforms.ToFrame(sensor_size=(W, H, 2), time_window=window // bins)
        frames = None

        def run_tonic():
            nonlocal frames
            frames = to_frame(tev)

        t_tonic = best_of(run_tonic)
        results["tonic_ToFrame_events_per_second"] = round(len(used) / t_tonic)
        ours = np.concatenate(
            [
                event_count(used, t_first + k * window, t_first + (k + 1) * window, bins, H, W)
                for k in range(n_windows)
            ]
        ).reshape(-1, 2, H, W)[:, ::-1]  # ours: ON first; tonic: p = 0 (OFF) first
        n = min(len(ours), len(frames))
        results["tonic_frames_equal_our_counts"] = bool(
            np.array_equal(ours[:n], frames[:n].astype(np.float32))
        )
        results["tonic_frames_compared"] = int(n)

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
