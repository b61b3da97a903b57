"""Serving as a library: ``ServeOptions`` (what ``python -m runtime.serve`` is asked to do) and ``serve``
(the plan of streams run to its end through ``runtime.multistream.MultiStream``, the report returned).

    from runtime.data.options import RecordingOptions
    from runtime.serving import ServeOptions, serve
    report = serve(ServeOptions("build/stereo_small.onnx", streams=4, max_steps=20), RecordingOptions())

Streams: every ``events`` path (one stream each), then ``streams`` built-in synthetic streams (seeds
``seed``, ``seed`` + 1, ...); named cam0, cam1, ... in that order. Stream i joins at step ``i * stagger``
(or when a slot frees up) and leaves after ``max_steps`` windows or at the end of its source. A stream is
opened only when it joins, and at most ``slots`` streams are open at once: ``max_streams``, or as many as
fit the memory budget (``memory_mb``, default a quarter of the memory available; the report's
``aggregate.memory`` states it). Each stream is isolated (``MultiStream``): one that fails or that
``runtime.stream`` would refuse (``max_dropped``) is reported so and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.memory import default_budget
from runtime.core.names import TASKS
from runtime.data.options import FLAGS, OptionError, RecordingOptions
from runtime.metrics import DEFAULT_MIN_DISPARITY, load_energy_table
from runtime.multistream import MultiStream
from runtime.report import DEFAULT_MAX_DROPPED

MAX_STREAMS = 4096  # a million streams is a hang, not a server (issue 12)
# what one open stream may hold besides its state and windows (its source: a synthetic world is ~5 MB)
STREAM_OVERHEAD_BYTES = 8 << 20
MAX_MEMORY_MB = 1 << 30
# field -> flag of every option the command line's errors may name (the recording's: FLAGS)
SERVE_FLAGS = {**FLAGS, "events": "--events", "streams": "--streams", "burn_in": "--burn-in",
               "max_steps": "--max-steps", "stagger": "--stagger", "max_streams": "--max-streams",
               "threads": "--threads", "min_disparity": "--min-disparity", "seed": "--seed",
               "max_dropped": "--max-dropped", "memory_mb": "--memory-mb", "energy_table": "--energy-table"}


@dataclass(frozen=True)
class ServeOptions:
    """What to serve and how (the command line's options other than the recording's)."""

    onnx: str
    events: tuple[str, ...] = ()
    streams: int | None = None  # built-in synthetic streams (default 4 without events, else 0)
    seed: int = 0
    max_steps: int | None = None
    stagger: int = 0
    max_streams: int | None = None
    burn_in: int = 0
    device: str = "cpu"
    threads: int | None = None
    energy_table: str | None = None
    min_disparity: float = DEFAULT_MIN_DISPARITY
    max_dropped: float = DEFAULT_MAX_DROPPED
    memory_mb: float | None = None  # budget of the open streams (default: a quarter of the available memory)
    extra: dict = field(default_factory=dict)  # more Stream options every stream gets (the Python API's)

    def check(self) -> ServeOptions:
        """Itself, once every value is in range; else ``OptionError`` naming the field."""
        for name, low in (("streams", 0), ("max_steps", 1), ("stagger", 0), ("threads", 1), ("max_streams", 1),
                          ("burn_in", 0), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise OptionError(name, f"must be at least {low}, got {value}")
        for name in ("streams", "max_streams"):
            value = getattr(self, name)
            if value is not None and value > MAX_STREAMS:
                raise OptionError(name, f"must be at most {MAX_STREAMS}, got {value}")
        if not 0 <= self.max_dropped <= 1:
            raise OptionError("max_dropped", f"must be a fraction from 0 to 1, got {self.max_dropped}")
        if self.memory_mb is not None and not 0 < self.memory_mb <= MAX_MEMORY_MB:
            raise OptionError("memory_mb", f"must be positive and at most {MAX_MEMORY_MB}, got {self.memory_mb}")
        return self

    def plan(self) -> list[dict[str, Any]]:
        """The streams to serve, in join order: name, source and the step at which each joins."""
        synthetic = self.streams if self.streams is not None else (0 if self.events else 4)
        sources = [{"events": e} for e in self.events] + [{"seed": self.seed + k} for k in range(synthetic)]
        if not sources:
            raise OptionError("streams", "nothing to serve: give {events} PATH or {streams} N >= 1",
                              refs=("events", "streams"))
        return [{"name": f"cam{i}", "at": i * self.stagger, **src} for i, src in enumerate(sources)]


def memory_plan(server: MultiStream, options: ServeOptions, streams: int) -> dict[str, Any]:
    """How many streams may be open at once: the budget, one stream's estimated bytes and the slots."""
    spec = server.spec
    state = sum(int(np.prod(st.shape)) * np.dtype(st.dtype).itemsize for st in spec.states)
    enc = spec.encoding
    windows = 3 * 2 * enc.bins * enc.height * enc.width * 4  # the window read ahead, the batch and its copy
    per_stream = state + windows + STREAM_OVERHEAD_BYTES
    budget = int(options.memory_mb * (1 << 20)) if options.memory_mb is not None else default_budget()
    fit = max(1, budget // per_stream)
    slots = min(streams, options.max_streams or fit, fit)
    if options.max_streams is not None and options.max_streams > fit:
        raise OptionError("max_streams", f"{options.max_streams} open streams need about "
                          f"{options.max_streams * per_stream / 2**20:,.0f} MB, more than the budget of "
                          f"{budget / 2**20:,.0f} MB ({{memory_mb}}): at most {fit}", refs=("memory_mb",))
    return {"budget_bytes": budget, "per_stream_bytes": per_stream, "slots": slots,
            "budget_from": "memory_mb" if options.memory_mb is not None else "a quarter of the available memory"}


def serve(options: ServeOptions, recording: RecordingOptions | None = None,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the plan to its end and return the report (``on_step(n)`` after each batched step of n streams).
    Bad options: ``OptionError``; a stream that fails or is refused is in the report, not raised."""
    options.check()
    pending = options.plan()
    energy = load_energy_table(options.energy_table) if options.energy_table else None
    server = MultiStream(options.onnx, device=options.device, threads=options.threads,
                         max_streams=options.max_streams, burn_in=options.burn_in, energy_table=energy,
                         min_disparity=options.min_disparity, max_dropped=options.max_dropped,
                         options=(recording or RecordingOptions()).check(), **options.extra)
    server.flags = SERVE_FLAGS
    if not TASKS[server.spec.task].disparity:
        server.close()
        raise OptionError("onnx", f"snn.task is {server.spec.task!r}; serve stereo models as event streams, "
                          "models of tensors with --tensors", value=options.onnx)
    memory = memory_plan(server, options, len(pending))
    tick = 0
    pending.reverse()  # popped from the end
    try:
        while pending or server.active:
            while pending and pending[-1]["at"] <= tick and len(server.active) < memory["slots"]:
                s = pending.pop()
                try:
                    server.join(s["name"], s.get("events"), seed=s.get("seed", 0), max_steps=options.max_steps)
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a stream that cannot open is reported, the others go on
                    server.fail(s["name"], exc, events=s.get("events"), seed=s.get("seed", 0))
            if not server.active:  # nobody to serve until the next stream joins
                if pending:
                    tick = max(tick, pending[-1]["at"])
                continue
            results = server.step()
            tick += 1
            if on_step is not None:
                on_step(len(results))
    finally:
        server.close()
    report = server.report()
    report["aggregate"]["memory"] = memory
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """One line per stream that failed or was refused: ``name (source) status: why``."""
    lines = []
    for name, r in report["streams"].items():
        if r.get("status") in ("failed", "refused"):
            sv = r["serve"]
            source = sv.get("events") or sv.get("tensors") or f"synthetic seed {sv.get('seed')}"
            lines.append(f"{name} ({source}) {r['status']}: {r['error']}")
    return lines
