"""Many independent streams (cameras) through one ONNX Runtime session.

Every input and state tensor of a contract graph has a batch dimension; here each row of it is one
stream's **slot**. A step stacks the next window of every active stream into one batch, runs the graph
once, and hands each stream its row of the outputs; each stream's state stays in its row. A stream that
joins gets a new row of zeros (the contract's initial state); one that leaves frees its row (the last row
moves into it, so the active rows stay ``0..n-1`` and a full step feeds the state arrays without copying).
Each stream's outputs are those of running it alone (tested).

    from runtime.multistream import MultiStream
    server = MultiStream("build/stereo_small.onnx", threads=1)
    server.join("cam0", seed=0, max_steps=20)             # built-in synthetic stream, or events=PATH
    server.join("cam1", events="data/x_data.hdf5")
    while server.active:
        results = server.step()                           # {name: StepResult}: one window per stream, one run
    report = server.report()                              # {"aggregate": {...}, "streams": {name: report}}

``MultiSession`` is the lower level: ``open(key)``, ``close(key)``, ``step({key: inputs})``, per-key
``reset``/``state``/``set_state``, for an application that brings its own windows.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.core.errors import RuntimeInputError, first_line
from runtime.core.names import TASKS, spikes_output
from runtime.data.events import DataError
from runtime.data.options import OptionError
from runtime.metrics import (
    EnergyTable,
    energy_metrics,
    load_energy_table,
    percentiles_ms,
    sparsity_metrics,
    summarize_errors,
)
from runtime.report import DEFAULT_MAX_DROPPED, quality_problem
from runtime.session import SNNSession, StepOutput
from runtime.stream.core import StepResult, Stream


class MultiSession:
    """One ONNX Runtime session, one state slot (batch row) per open stream key."""

    def __init__(self, model: str | Path, *, device: str = "cpu", threads: int | None = None,
                 max_streams: int | None = None) -> None:
        if max_streams is not None and max_streams < 1:
            raise RuntimeInputError("--max-streams", f"must be at least 1, got {max_streams}")
        self.base = SNNSession(model, device=device, threads=threads, io_binding=False)
        self.spec = self.base.spec
        self.max_streams = max_streams
        self._keys: list[Hashable] = []  # row -> key
        self._state = {st.name: np.zeros((0, *st.shape), st.dtype) for st in self.spec.states}
        self._outputs = [self.spec.data_output, *(st.output_name for st in self.spec.states),
                         *self.spec.spike_outputs]
        self._ndim = len(self.spec.data_input_shape) - 1  # dimensions of one sample
        self.run_s: list[float] = []  # time of each ONNX Runtime run
        self.batch_sizes: list[int] = []

    @property
    def keys(self) -> list[Hashable]:
        """The open streams, in slot order."""
        return list(self._keys)

    def _row(self, key: Hashable) -> int:
        try:
            return self._keys.index(key)
        except ValueError:
            raise RuntimeInputError(f"stream {key}", "is not open") from None

    def open(self, key: Hashable) -> None:
        """Give ``key`` a new slot with the zero initial state."""
        if key in self._keys:
            raise RuntimeInputError(f"stream {key}", "is already open")
        if self.max_streams is not None and len(self._keys) >= self.max_streams:
            raise RuntimeInputError(f"stream {key}", f"no free slot ({self.max_streams} streams at most)")
        for name, arr in self._state.items():
            self._state[name] = np.concatenate([arr, np.zeros((1, *arr.shape[1:]), arr.dtype)])
        self._keys.append(key)

    def close(self, key: Hashable) -> None:
        """Free ``key``'s slot: the last slot moves into it."""
        row, last = self._row(key), len(self._keys) - 1
        for name, arr in self._state.items():
            if row != last:
                arr[row] = arr[last]
            self._state[name] = arr[:last]
        self._keys[row] = self._keys[last]
        self._keys.pop()

    def reset(self, key: Hashable) -> None:
        row = self._row(key)
        for arr in self._state.values():
            arr[row] = 0

    def state(self, key: Hashable) -> dict[str, np.ndarray]:
        """A copy of ``key``'s state, name -> array [1, ...]."""
        row = self._row(key)
        return {name: arr[row:row + 1].copy() for name, arr in self._state.items()}

    def set_state(self, key: Hashable, state: Mapping[str, np.ndarray]) -> None:
        row = self._row(key)
        for st in self.spec.states:
            if st.name not in state:
                raise RuntimeInputError("state", f"{st.name} missing")
            arr = np.asarray(state[st.name], dtype=st.dtype)
            if arr.shape not in ((1, *st.shape), st.shape):
                raise RuntimeInputError("state", f"{st.name} has shape {arr.shape}, expected {(1, *st.shape)}")
            self._state[st.name][row] = arr.reshape(st.shape)

    def step(self, inputs: Mapping[Hashable, Mapping[str, np.ndarray]]) -> dict[Hashable, StepOutput]:
        """One time step of the streams in ``inputs`` (key -> data inputs, each [C, H, W] or [1, C, H, W])
        in one run; the other open streams keep their state."""
        if not inputs:
            return {}
        rows = sorted(self._row(k) for k in inputs)
        keys = [self._keys[r] for r in rows]
        full = len(rows) == len(self._keys)
        index = None if full else np.asarray(rows)
        feeds: dict[str, np.ndarray] = {}
        for name in self.spec.data_inputs:
            feeds[name] = np.stack([_sample(inputs[k][name], self._ndim) for k in keys])
        for st in self.spec.states:
            feeds[st.input_name] = self._state[st.name] if full else self._state[st.name][index]
        t0 = time.perf_counter()
        results = self.session.run(self._outputs, feeds)
        run_s = time.perf_counter() - t0
        values = dict(zip(self._outputs, results, strict=True))
        for st in self.spec.states:
            if full:
                self._state[st.name] = values[st.output_name]
            else:
                self._state[st.name][index] = values[st.output_name]
        self.run_s.append(run_s)
        self.batch_sizes.append(len(keys))
        data = values[self.spec.data_output]
        spikes = {layer.name: values[spikes_output(layer.name)] for layer in self.spec.layers}
        return {k: StepOutput(data[i].copy(), {n: float(v[i]) for n, v in spikes.items()}, run_s)
                for i, k in enumerate(keys)}

    @property
    def session(self) -> ort.InferenceSession:
        return self.base.session


class SlotSession:
    """One stream's view of a ``MultiSession`` with ``SNNSession``'s interface (what ``Stream`` uses):
    ``step`` runs this stream alone; ``MultiStream`` batches streams through ``MultiSession.step``."""

    io_binding = False
    batch = 1  # one stream per slot

    def __init__(self, multi: MultiSession, key: Hashable) -> None:
        self.multi, self.key = multi, key
        base = multi.base
        self.spec, self.device, self.requested_device = base.spec, base.device, base.requested_device
        self.providers, self.threads = base.providers, base.threads

    def step(self, inputs: Mapping[str, np.ndarray]) -> StepOutput:
        return self.multi.step({self.key: inputs})[self.key]

    def reset(self) -> None:
        self.multi.reset(self.key)

    @property
    def state(self) -> dict[str, np.ndarray]:
        return self.multi.state(self.key)

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.multi.set_state(self.key, state)


class MultiStream:
    """Streams (each a ``Stream``: its source, its metrics) that join, run and leave, stepped together
    through one ``MultiSession``. ``options`` are ``Stream`` options every stream gets (``burn_in``,
    ``energy_table``, ``min_disparity``, ``reset_every``, and ``options``: how recordings are read, a
    ``RecordingOptions``); ``join`` may override them.

    Streams are isolated: a stream whose source or step fails is removed with ``status`` ``failed``
    (``error``: why, ``failed_at``: where) and the others go on; a stream that leaves with data that
    ``runtime.stream`` would refuse (``runtime.report.quality_problem`` with ``max_dropped``) is
    ``refused``, its accuracy withheld; only the ``ok`` streams are pooled into the aggregate."""

    def __init__(self, model: str | Path, *, device: str = "cpu", threads: int | None = None,
                 max_streams: int | None = None, max_dropped: float = DEFAULT_MAX_DROPPED, **options: Any) -> None:
        self.model = str(model)
        self.max_dropped = max_dropped
        self.multi = MultiSession(model, device=device, threads=threads, max_streams=max_streams)
        self.spec = self.multi.spec
        if not TASKS[self.spec.task].events:
            raise RuntimeInputError(self.model, f"snn.task is {self.spec.task!r}; these streams are stereo event "
                                    "streams (a model of tensors is served with --tensors: runtime.tensorserve)")
        table = options.get("energy_table")
        self.energy = load_energy_table(table) if isinstance(table, (str, Path)) else table or EnergyTable()
        self.options = {**options, "energy_table": self.energy}
        self.streams: dict[str, Stream] = {}  # active
        self._windows: dict[str, Iterator[Any]] = {}
        self._next: dict[str, Any] = {}  # each active stream's next window, read ahead
        self._serve: dict[str, dict[str, Any]] = {}  # name -> join/leave ticks and source
        self.finished: dict[str, dict[str, Any]] = {}  # reports of the streams that left
        self._totals: list[tuple[dict[str, float], int, list]] = []  # of the streams that left
        self.ticks = self.steps = 0
        self.wall_s = 0.0

    @property
    def active(self) -> list[str]:
        return list(self.streams)

    def join(self, name: str | None = None, events: str | Path | None = None, *, max_steps: int | None = None,
             seed: int = 0, **options: Any) -> Stream:
        """Open a stream in a new slot (zero state) from ``events`` (None: the built-in synthetic stream
        with ``seed``); it leaves by itself after ``max_steps`` windows or at its source's end."""
        name = name if name is not None else f"stream{len(self._serve)}"
        if name in self._serve:
            raise RuntimeInputError(f"stream {name}", "joined before: stream names are unique")
        self.multi.open(name)
        try:
            stream = Stream(self.model, events, session=SlotSession(self.multi, name), max_steps=max_steps,
                            seed=seed, **{**self.options, **options})
            windows = stream.windows()
        except BaseException:
            self.multi.close(name)
            raise
        self.streams[name] = stream
        self._windows[name] = itertools.islice(windows, max_steps) if max_steps is not None else windows
        self._serve[name] = {"joined_at_tick": self.ticks, "left_at_tick": None,
                             "events": None if events is None else str(events),
                             "seed": seed if events is None else None}
        self._next[name] = self._pull(name)
        if self._next[name] is None:
            self.leave(name)
        return stream

    def leave(self, name: str) -> dict[str, Any]:
        """Close a stream now: its slot is freed and its report kept (returned)."""
        if name not in self.streams:
            raise RuntimeInputError(f"stream {name}", "is not active")
        stream = self.streams.pop(name)
        del self._windows[name], self._next[name]
        self.multi.close(name)
        self._serve[name]["left_at_tick"] = self.ticks
        report = {**stream.report(), "serve": dict(self._serve[name]), "status": "ok", "error": None}
        problem = quality_problem(report, self.max_dropped, stream.options.max_outside_rectify)
        if problem:  # what runtime.stream refuses is not pooled: the report says why, without accuracy
            report.update(status="refused", error=problem, accuracy=None)
        else:
            self._totals.append(stream.totals())
        self.finished[name] = report
        stream.close()
        return report

    def fail(self, name: str, exc: BaseException, *, events: str | Path | None = None, seed: int = 0) -> dict:
        """Remove a stream that failed (or record one that failed to join): its report says why and where."""
        where = {"tick": self.ticks, "step": None}
        if name in self.streams:
            stream = self.streams.pop(name)
            where["step"] = stream.tally.steps
            self._windows.pop(name, None), self._next.pop(name, None)
            self.multi.close(name)
            report = stream.report()
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - a broken source may fail to close too; it is removed all the same
                pass
        else:
            self._serve[name] = {"joined_at_tick": None, "left_at_tick": None,
                                 "events": None if events is None else str(events),
                                 "seed": seed if events is None else None}
            report = {}
        self._serve[name]["left_at_tick"] = self.ticks
        kind = "" if isinstance(exc, (RuntimeInputError, DataError, OSError)) else f"{type(exc).__name__}: "
        message = exc.render(self.flags) if isinstance(exc, OptionError) else first_line(exc)
        self.finished[name] = {**report, "serve": dict(self._serve[name]), "status": "failed",
                               "error": kind + message, "failed_at": where, "accuracy": None}
        return self.finished[name]

    flags: dict[str, str] = {}  # field -> name used for OptionError messages (a command line sets its flags)

    def _pull(self, name: str) -> Any:
        """The stream's next window, or None at the end of its source (or of its max_steps)."""
        return next(self._windows[name], None)

    def step(self) -> dict[str, StepResult]:
        """One window of every active stream through one run; a stream whose source has no next window
        leaves right after its last step (the next window is read ahead)."""
        t0 = time.perf_counter()
        inputs, windows, starts = {}, {}, {}
        for name, stream in list(self.streams.items()):
            starts[name] = time.perf_counter()
            windows[name] = self._next[name]
            self._isolated(name, lambda s=stream, n=name: inputs.__setitem__(n, s.inputs(windows[n])))
        outs = self.multi.step(inputs)
        results: dict[str, StepResult] = {}
        for name in outs:
            self._isolated(name, lambda n=name: results.__setitem__(
                n, self.streams[n].record(windows[n], outs[n], starts[n])))
        self.ticks += 1
        self.steps += len(results)
        for name in list(self.streams):
            if self._isolated(name, lambda n=name: self._next.__setitem__(n, self._pull(n))) and \
                    self._next[name] is None:
                self.leave(name)
        self.wall_s += time.perf_counter() - t0
        return results

    def _isolated(self, name: str, call: Any) -> bool:
        """Run one stream's part of a step; a stream whose part fails is removed as failed (False)."""
        if name not in self.streams:
            return False
        try:
            call()
            return True
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one stream's failure, whatever it is, must not stop the others
            self.fail(name, exc)
            return False

    def close(self) -> None:
        for name in list(self.streams):
            self.leave(name)

    def report(self) -> dict[str, Any]:
        """Per-stream reports (``Stream.report()`` keys plus ``serve``) and one aggregate report."""
        streams = dict(self.finished)
        totals = list(self._totals)
        for name, stream in self.streams.items():
            streams[name] = {**stream.report(), "serve": dict(self._serve[name]), "status": "active", "error": None}
            totals.append(stream.totals())
        return {"schema": 1, "model": self.model, "aggregate": self._aggregate(streams, totals), "streams": streams}

    def _aggregate(self, streams: dict[str, dict[str, Any]], totals: list) -> dict[str, Any]:
        spec, multi = self.spec, self.multi
        spikes = {layer.name: 0.0 for layer in spec.layers}
        counted, errors = 0, []
        for sp, n, errs in totals:
            counted += n
            errors += errs
            for k, v in sp.items():
                spikes[k] += v
        run_s, sizes = multi.run_s, multi.batch_sizes
        had_gt = any(r["accuracy"] is not None for r in streams.values())
        status = [r["status"] for r in streams.values()]
        return {
            "streams": len(streams), "active": len(self.streams), "max_streams": multi.max_streams,
            **{s: status.count(s) for s in ("ok", "refused", "failed")},
            "ticks": self.ticks, "steps": self.steps, "counted_steps": counted,
            "runs": len(run_s), "batch_size": {"mean": float(np.mean(sizes)) if sizes else None,
                                                "max": max(sizes, default=None)},
            "wall_s": self.wall_s, "steps_per_s": self.steps / self.wall_s if self.wall_s > 0 else None,
            "model_s": float(np.sum(run_s)),
            "model_steps_per_s": sum(sizes) / float(np.sum(run_s)) if run_s else None,
            "latency_ms": {"run": percentiles_ms(run_s)},
            "runtime": {"device": multi.base.device, "providers": multi.base.providers,
                        "threads": multi.base.threads, "onnxruntime": ort.__version__},
            "sparsity": sparsity_metrics(spikes, counted, spec.layers),
            "energy": energy_metrics(spikes, counted, spec.layers, spec.dense_macs_per_step, self.energy),
            "accuracy": summarize_errors(errors) if had_gt else None,
        }



def _sample(x: np.ndarray, ndim: int = 3) -> np.ndarray:
    """One stream's data input as float32 of ``ndim`` dimensions ([C, H, W] for event windows; a leading
    batch of 1 is dropped)."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == ndim + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != ndim:
        raise RuntimeInputError("input", f"expected one sample of {ndim} dimensions, got shape {arr.shape}")
    return arr
