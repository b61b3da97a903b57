"""Serving streams of tensors: several ``[T, *input]`` arrays through one ONNX Runtime session of a model of
tensors (a classification genotype, an imported NIR graph), each stream in its own batch slot
(``runtime.multistream.MultiSession``), as ``runtime.serve`` serves event streams.

    python -m runtime.serve --onnx cifar.onnx --tensors a.npy,b.npy --labels la.npy,lb.npy --report r.json
    python -m runtime.serve --onnx cifar.onnx --tensors inputs/ --labels labels/

Streams (``plan``): every file of ``--tensors`` (repeatable; a comma-separated list, or a folder: its
``*.npy`` by name), named stream0, stream1, ... in that order; stream i joins at step ``i * --stagger``
(or when a slot and the memory budget allow) and leaves after ``--max-steps`` steps or at its last input.
``--labels``: as many files in the same order (``-`` for a stream without labels), or a folder holding
the labels of ``X.npy`` as ``X.npy``. Each stream is isolated as the event streams are: one whose files
cannot be used (unreadable, another size per step, non-finite values, labels that do not fit) is
``failed`` and the others go on; one whose output is NaN or infinite at every step is ``refused``; only
``ok`` streams are pooled. Report keys: docs/deploy.md, "Serving streams of tensors".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.core.errors import first_line
from runtime.core.memory import default_budget
from runtime.data.options import OptionError
from runtime.metrics import percentiles_ms
from runtime.multistream import MultiSession
from runtime.serving import SERVE_FLAGS, ServeOptions
from runtime.stream.tensors import TensorTally, input_shape, load_inputs, load_labels

NO_LABELS = "-"  # in a --labels list: this stream has none
# field -> flag of the options a tensor stream's errors may name (with the serving options')
FLAGS = {**SERVE_FLAGS, "tensors": "--tensors", "labels": "--labels"}


@dataclass(frozen=True)
class TensorServeOptions:
    """What to serve: ``tensors`` and ``labels`` as given on the command line (``plan`` expands them)."""

    onnx: str
    tensors: tuple[str, ...]
    labels: tuple[str, ...] = ()
    max_steps: int | None = None
    stagger: int = 0
    max_streams: int | None = None
    device: str = "cpu"
    threads: int | None = None
    memory_mb: float | None = None

    def check(self) -> TensorServeOptions:
        """Itself, once the values it shares with ``ServeOptions`` are in range; else ``OptionError``."""
        ServeOptions(self.onnx, max_steps=self.max_steps, stagger=self.stagger, max_streams=self.max_streams,
                     threads=self.threads, memory_mb=self.memory_mb).check()
        return self

    def plan(self) -> list[dict[str, Any]]:
        """The streams in join order: name, tensors file, labels file (or None and why), join step."""
        files = _expand(self.tensors)
        if not files:
            raise OptionError("tensors", "no .npy file to serve", value=",".join(self.tensors))
        labels = _pair_labels(files, self.labels)
        return [{"name": f"stream{i}", "at": i * self.stagger, "tensors": f, **labels[i]}
                for i, f in enumerate(files)]


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _expand(values: Sequence[str]) -> list[str]:
    """Files of ``--tensors``: a folder gives its ``*.npy`` by name; a file (even a missing one) is itself."""
    out = []
    for part in _split(values):
        out += sorted(str(p) for p in Path(part).glob("*.npy")) if os.path.isdir(part) else [part]
    return out


def _pair_labels(files: list[str], values: Sequence[str]) -> list[dict[str, Any]]:
    """Each stream's labels file (``labels``) or None with the reason (``labels_absent``)."""
    parts = _split(values)
    if not parts:
        return [{"labels": None, "labels_absent": "no --labels given"} for _ in files]
    if len(parts) == 1 and os.path.isdir(parts[0]):
        found = [os.path.join(parts[0], os.path.basename(f)) for f in files]
        return [{"labels": p, "labels_absent": None} if os.path.isfile(p) else
                {"labels": None, "labels_absent": f"no {p}"} for p in found]
    if len(parts) != len(files):
        raise OptionError("labels", f"{len(parts)} labels files for {len(files)} tensor streams: give one per "
                          f"stream in the order of {{tensors}} ('{NO_LABELS}' for none) or a folder",
                          value=",".join(values), refs=("tensors",))
    return [{"labels": None, "labels_absent": f"'{NO_LABELS}' in --labels"} if p == NO_LABELS else
            {"labels": p, "labels_absent": None} for p in parts]


class _Open:
    """One stream being served: its inputs, labels and tally."""

    def __init__(self, plan: dict[str, Any], data: np.ndarray, tally: TensorTally, tick: int) -> None:
        self.plan, self.data, self.tally, self.pos = plan, data, tally, 0
        self.serve = {"joined_at_tick": tick, "left_at_tick": None, "tensors": plan["tensors"],
                      "labels": plan["labels"]}


class TensorServer:
    """The streams of a ``TensorServeOptions`` through one ``MultiSession``: ``run()`` gives the report."""

    def __init__(self, options: TensorServeOptions) -> None:
        self.options = options
        self.pending = options.plan()
        self.multi = MultiSession(options.onnx, device=options.device, threads=options.threads,
                                  max_streams=options.max_streams)
        self.spec = self.multi.spec
        self.shape = input_shape(self.spec, f"--onnx {options.onnx}")
        self.budget = int(options.memory_mb * (1 << 20)) if options.memory_mb is not None else default_budget()
        self.active: dict[str, _Open] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        self.ticks = self.steps = 0
        self.wall_s = 0.0

    def _open_bytes(self) -> int:
        return sum(s.data.nbytes for s in self.active.values())

    def _join(self, plan: dict[str, Any]) -> bool:
        """Open a stream (False: it must wait for memory); one whose files cannot be used is failed."""
        try:
            size = os.path.getsize(plan["tensors"])
            if size > self.budget:
                raise OptionError("tensors", f"needs {size / 2**20:,.1f} MB, more than the budget of "
                                  f"{self.budget / 2**20:,.1f} MB ({{memory_mb}})", value=plan["tensors"],
                                  refs=("memory_mb",))
            if self.active and self._open_bytes() + size > self.budget:
                return False
            data = load_inputs(plan["tensors"], self.shape, self.options.max_steps)
            truth = None if plan["labels"] is None else load_labels(plan["labels"], len(data))
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a stream whose files cannot be used is reported, the others go on
            self._fail(plan, exc, None)
            return True
        self.multi.open(plan["name"])
        self.active[plan["name"]] = _Open(plan, data, TensorTally(self.spec, truth), self.ticks)
        return True

    def _fail(self, plan: dict[str, Any], exc: BaseException, stream: _Open | None) -> None:
        serve = stream.serve if stream is not None else {"joined_at_tick": None, "left_at_tick": None,
                                                         "tensors": plan["tensors"], "labels": plan["labels"]}
        serve["left_at_tick"] = self.ticks
        message = exc.render(FLAGS) if isinstance(exc, OptionError) else first_line(exc)
        self.finished[plan["name"]] = {"serve": serve, "status": "failed", "error": message,
                                       "failed_at": {"tick": self.ticks, "step": None if stream is None
                                                     else stream.tally.steps}, "classification": None}

    def _leave(self, name: str) -> None:
        s = self.active.pop(name)
        self.multi.close(name)
        s.serve["left_at_tick"] = self.ticks
        wall = sum(s.tally.latency_ms) / 1000  # the batched runs it took part in
        report = {**s.tally.report(self.options.onnx, self.multi.base.device,
                                   {"tensors": s.plan["tensors"], "labels": s.plan["labels"]}, wall),
                  "serve": s.serve, "status": "ok", "error": None}
        if s.plan["labels"] is None:
            report.update(classification=None, classification_absent=s.plan["labels_absent"])
        if s.tally.steps and s.tally.non_finite_output_steps == s.tally.steps:
            report.update(status="refused", classification=None,
                          error=f"the model's output is NaN or inf in every one of the {s.tally.steps} steps")
        self.finished[name] = report

    def step(self) -> int:
        """One input of every active stream through one run; the number of streams stepped."""
        t0 = time.perf_counter()
        name_in = self.spec.data_inputs[0]
        inputs = {n: {name_in: np.asarray(s.data[s.pos], np.float32).reshape(self.shape)}
                  for n, s in self.active.items()}
        outs = self.multi.step(inputs)
        for name, out in outs.items():
            s = self.active[name]
            try:
                s.tally.add(out)
                s.pos += 1
            except (KeyboardInterrupt, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - one stream's failure must not stop the others
                self.active.pop(name)
                self.multi.close(name)
                self._fail(s.plan, exc, s)
        self.ticks += 1
        self.steps += len(outs)
        for name in [n for n, s in self.active.items() if s.pos >= len(s.data)]:
            self._leave(name)
        self.wall_s += time.perf_counter() - t0
        return len(outs)

    def run(self, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Serve the plan to its end; the report."""
        pending = list(reversed(self.pending))  # popped from the end
        slots = self.options.max_streams or len(pending)
        while pending or self.active:
            while pending and pending[-1]["at"] <= self.ticks and len(self.active) < slots:
                if not self._join(pending[-1]):
                    break  # waits for memory
                pending.pop()
            if not self.active:
                if pending:
                    self.ticks = max(self.ticks, pending[-1]["at"])
                continue
            n = self.step()
            if on_step is not None:
                on_step(n)
        return self.report()

    def report(self) -> dict[str, Any]:
        streams = {p["name"]: self.finished[p["name"]] for p in self.pending}
        return {"schema": 1, "model": self.options.onnx, "task": self.spec.task,
                "aggregate": self._aggregate(streams), "streams": streams}

    def _aggregate(self, streams: dict[str, dict[str, Any]]) -> dict[str, Any]:
        multi, spec = self.multi, self.spec
        ok = [r for r in streams.values() if r["status"] == "ok"]
        steps = sum(r["steps"] for r in ok)
        rates = {layer.name: sum(r["firing_rate"][layer.name] * r["steps"] for r in ok) / steps if steps else None
                 for layer in spec.layers}
        scored = [r for r in ok if r["classification"] is not None]
        status = [r["status"] for r in streams.values()]
        return {
            "streams": len(streams), **{s: status.count(s) for s in ("ok", "refused", "failed")},
            "max_streams": multi.max_streams, "ticks": self.ticks, "steps": self.steps,
            "runs": len(multi.run_s), "batch_size": {"mean": float(np.mean(multi.batch_sizes))
                                                      if multi.batch_sizes else None,
                                                      "max": max(multi.batch_sizes, default=None)},
            "wall_s": self.wall_s, "steps_per_s": self.steps / self.wall_s if self.wall_s > 0 else None,
            "model_s": float(np.sum(multi.run_s)),
            "model_steps_per_s": sum(multi.batch_sizes) / float(np.sum(multi.run_s)) if multi.run_s else None,
            "latency_ms": {"run": percentiles_ms(multi.run_s)},
            "runtime": {"device": multi.base.device, "providers": multi.base.providers,
                        "threads": multi.base.threads, "onnxruntime": ort.__version__},
            "firing_rate": rates,
            "memory": {"budget_bytes": self.budget, "budget_from": "memory_mb" if self.options.memory_mb
                       is not None else "a quarter of the available memory", "per_stream": "its --tensors array"},
            **_pooled(scored, ok),
        }


def _pooled(scored: list[dict[str, Any]], ok: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled accuracy of the ``ok`` streams with labels, or None with the reason."""
    if not scored:
        why = "no stream was served" if not ok else "no stream that was served has labels"
        return {"classification": None, "classification_absent": why}
    correct = sum(r["classification"]["correct"] for r in scored)
    steps = sum(r["steps"] for r in scored)
    return {"classification": {"accuracy": correct / steps, "correct": correct, "steps": steps,
                               "streams": len(scored)}, "classification_absent": None}


def serve_tensors(options: TensorServeOptions, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Serve ``options`` to the end; the report. Bad options: ``OptionError``; a model of event windows or
    one that cannot load: ``RuntimeInputError``; a stream that fails or is refused is in the report."""
    return TensorServer(options.check()).run(on_step)


def _f(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_tensor_serve(report: dict[str, Any]) -> str:
    """A table of the tensor streams and the aggregate, for people."""
    rows = [("stream", "tensors", "labels", "joined", "left", "steps", "steps/s model", "accuracy %", "status")]
    for name, r in report["streams"].items():
        sv, cls = r["serve"], r.get("classification") or {}
        acc = cls.get("accuracy")
        rows.append((name, sv["tensors"], sv["labels"] or "-", str(sv["joined_at_tick"]), str(sv["left_at_tick"]),
                     str(r.get("steps", 0)), _f(r.get("steps_per_s"), ".1f"),
                     _f(None if acc is None else 100 * acc, ".2f"), r["status"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    a = report["aggregate"]
    cls = a["classification"]
    accuracy = (f"accuracy {100 * cls['accuracy']:.2f} % of {cls['steps']} steps ({cls['streams']} streams)"
                if cls else f"accuracy n/a ({a['classification_absent']})")
    lines += ["", f"aggregate {a['streams']} streams ({a['ok']} ok, {a['refused']} refused, {a['failed']} failed), "
              f"{a['steps']} steps in {a['runs']} runs (batch mean {_f(a['batch_size']['mean'], '.2f')}): "
              f"{_f(a['steps_per_s'], '.1f')} steps/s end to end, {_f(a['model_steps_per_s'], '.1f')} steps/s model "
              f"only ({a['runtime']['device']})", f"          {accuracy}"]
    return "\n".join(lines)


# the HTML page's table of tensor streams: header, keys into each stream's view
HTML_COLUMNS = (("steps", ("steps", "total")), ("steps/s model", ("speed", "fps_model")),
                ("accuracy %", ("accuracy", "pct")), ("status", ("status",)))


def tensor_html(report: dict[str, Any]) -> dict[str, Any]:
    """A tensor server's report under the keys the HTML page reads (``runtime.htmlreport``; its table of
    streams with ``HTML_COLUMNS``)."""
    def view(r: dict[str, Any]) -> dict[str, Any]:
        acc = (r.get("classification") or {}).get("accuracy")
        return {"steps": {"total": r.get("steps", 0)}, "speed": {"fps_model": r.get("steps_per_s")},
                "accuracy": {"pct": None if acc is None else 100 * acc}, "status": r["status"]}

    a = report["aggregate"]
    cls = a["classification"]
    page = {"model": {"path": report["model"], "task": report["task"]}, "runtime": {"device": a["runtime"]["device"]},
            "source": {"kind": f"{a['streams']} streams of tensors"},
            "aggregate": {"streams": a["streams"], "steps_per_s": a["steps_per_s"],
                          "accuracy_pct": None if cls is None else 100 * cls["accuracy"]},
            "sparsity": {"firing_rate": {k: v for k, v in a["firing_rate"].items() if v is not None}},
            "streams": {name: view(r) for name, r in report["streams"].items()}}
    return page
