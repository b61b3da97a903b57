"""An ONNX Runtime session of a contract model, with its state carried from step to step.

``SNNSession.step(inputs)`` runs one time step: it feeds the data inputs and the current state,
keeps ``state_out.*`` as the next step's ``state_in.*`` and returns the data output and the spike
counts. On CPU the state lives in numpy arrays. On CUDA and TensorRT it stays on the device: two
sets of device buffers (A, B) and two IOBindings, one reading A and writing B, the other reading B
and writing A, used in turn (swapped buffers), so only the data inputs and the small outputs cross
the bus.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from runtime.contract import ModelSpec, read_contract
from runtime.core.errors import RuntimeInputError, first_line
from runtime.core.names import spikes_output

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
MAX_THREADS = 1024  # intra-op threads


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none):
    the session's intra-op threads when ``--threads`` is not given."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
_DEVICE_EP = {"cpu": CPU_EP, "cuda": CUDA_EP, "tensorrt": TRT_EP}


def plan_providers(
    device: str,
    available: Sequence[str],
    *,
    device_id: int = 0,
    trt_shapes: str | None = None,
    trt_cache: str | None = None,
) -> list[Any]:
    """The provider list to ask ONNX Runtime for, in priority order.

    ``auto`` prefers CUDA when this onnxruntime build has it, else the CPU; TensorRT is used only when
    asked for (``tensorrt``) since building its engine takes minutes on first use. ``available`` is
    ``onnxruntime.get_available_providers()``; a provider the build lacks is a ``RuntimeInputError``.
    """
    if device not in DEVICES:
        raise RuntimeInputError("--device", f"{device!r} is not one of {', '.join(DEVICES)}")
    cuda = (CUDA_EP, {"device_id": str(device_id)})
    if device == "cpu":
        return [CPU_EP]
    if device == "auto":
        return [cuda, CPU_EP] if CUDA_EP in available else [CPU_EP]
    ep = _DEVICE_EP[device]
    if ep not in available:
        raise RuntimeInputError(
            "--device",
            f"{device}: this onnxruntime build has no {ep} "
            f"(it has {', '.join(available)}); install onnxruntime-gpu or use --device cpu",
        )
    if device == "cuda":
        return [cuda, CPU_EP]
    trt_opts = {"device_id": str(device_id), "trt_engine_cache_enable": "True"}
    if trt_cache:
        trt_opts["trt_engine_cache_path"] = trt_cache
    if trt_shapes:
        for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
            trt_opts[key] = trt_shapes
    return [(TRT_EP, trt_opts), cuda, CPU_EP]


def check_active(device: str, active: Sequence[str]) -> str:
    """The device the session really runs on, given the providers ONNX Runtime kept.

    ONNX Runtime silently falls back to the CPU when a GPU provider cannot start (no device, no CUDA
    or cuDNN libraries); an explicit ``cuda`` or ``tensorrt`` request then is an error, ``auto`` is not.
    """
    primary = active[0] if active else CPU_EP
    if device in ("cuda", "tensorrt") and primary != _DEVICE_EP[device]:
        ep = _DEVICE_EP[device]
        raise RuntimeInputError(
            "--device",
            f"{device}: {ep} could not start on this host (no GPU, or its "
            "CUDA/cuDNN/TensorRT libraries are missing); use --device cpu or auto",
        )
    if primary == TRT_EP:
        return "tensorrt"
    return "cuda" if primary == CUDA_EP else "cpu"


# ONNX Runtime's layout transformer for the CPU runs each QLinearConv in NHWC with a Transpose on both
# sides (the ONNX contract's tensors are NCHW, so they cannot cancel); QLinearConv's own NCHW path
# transposes inside the kernel, faster. Disabled, the int8 graphs' outputs are bit-identical and a step
# is faster (alternating steps, 2 threads, idle machine: paper width 397 -> 373 ms, full width 697 ->
# 672 ms; the demo int8 graph, 1 thread, 12.9 -> 12.0 ms; docs/deploy.md). fp32 graphs: untouched.
DISABLED_OPTIMIZERS = ("NhwcTransformer",)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The runtime's ONNX Runtime settings, chosen from measurements on the stereo graphs
    (``benchmarks/bench_ort_settings.py``; numbers in docs/runtime.md):

    - graph optimisation level ``all``: an int8 graph needs at least ``extended`` (that is where the
      QDQ units become QLinearConv; below it int8 runs as float and is no faster), and ``all`` adds
      the blocked NCHWc kernels that make the fp32 2-D convolutions fastest;
    - sequential execution: the one-step graph is a long chain, parallel execution was 1.5-2x slower;
    - idle intra-op threads do not spin (``session.intra_op.allow_spinning`` 0): with spinning, two
      threads on a machine whose other core is busy were up to 2-3x slower than one;
    - ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


@contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence stdout/stderr at the file-descriptor level (ONNX Runtime's C++ logs of a failed GPU probe)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):  # no real descriptors (an embedding application): do nothing
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


@dataclass
class StepOutput:
    """What one step returns: the data output (batch removed when batch is 1) and spikes per layer."""

    output: np.ndarray
    spikes: dict[str, float]
    model_s: float


class StepSession(Protocol):
    """What a ``runtime.stream.Stream`` steps: ``SNNSession``, or one slot of a shared session
    (``runtime.multistream.SlotSession``)."""

    spec: ModelSpec
    batch: int
    device: str
    requested_device: str
    providers: list[str]
    threads: int | None
    io_binding: bool

    def step(self, inputs: Mapping[str, np.ndarray]) -> StepOutput: ...

    def reset(self) -> None: ...

    @property
    def state(self) -> dict[str, np.ndarray]: ...

    def set_state(self, state: Mapping[str, np.ndarray]) -> None: ...


class SNNSession:
    """One model, one ONNX Runtime session, one carried state (batch 1 by default)."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = "auto",
        threads: int | None = None,
        batch: int = 1,
        io_binding: bool | None = None,
        device_id: int = 0,
    ) -> None:
        path = Path(model)
        where = str(model)
        try:
            found = path.is_file()
        except OSError as exc:  # a name the file system refuses (too long): a traceback before
            raise RuntimeInputError(where, f"cannot read it ({exc.strerror or exc})") from None
        if not found:
            raise RuntimeInputError(where, "is a folder, not a model file" if path.is_dir() else "no such model file")
        if threads is not None and threads < 1:
            raise RuntimeInputError("--threads", f"must be at least 1, got {threads}")
        if threads is not None and threads > MAX_THREADS:  # a million threads hang the process starting them
            raise RuntimeInputError("--threads", f"must be at most {MAX_THREADS}, got {threads}")
        self.path = path
        self.batch = batch
        self.requested_device = device
        self.threads = available_cores() if threads is None else threads  # what is used, for the report
        opts = session_options(self.threads)
        available = ort.get_available_providers()
        # TensorRT needs an optimisation profile for the symbolic batch: read the shapes on the CPU first
        spec = self._probe_spec(where, opts) if device == "tensorrt" else None
        providers = plan_providers(
            device,
            available,
            device_id=device_id,
            trt_shapes=_trt_shapes(spec, batch) if spec else None,
            trt_cache=str(Path.home() / ".cache" / "snn-runtime" / "trt"),
        )
        self.session = self._open(where, opts, providers, quiet=providers[0] != CPU_EP)
        self.device = check_active(device, self.session.get_providers())
        self.providers = list(self.session.get_providers())
        self.spec: ModelSpec = spec or self._read_spec(where)
        self.device_id = device_id
        self.io_binding = self.device != "cpu" if io_binding is None else io_binding
        self._ort_device = "cuda" if self.device != "cpu" else "cpu"
        self._state_np: dict[str, np.ndarray] = {}
        self._buffers: list[dict[str, ort.OrtValue]] = []
        self._bindings: list[Any] = []
        self._parity = 0
        if self.io_binding:
            self._setup_bindings()
        self.reset()

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _open(
        where: str, opts: ort.SessionOptions, providers: list[Any], *, quiet: bool
    ) -> ort.InferenceSession:
        disabled = list(DISABLED_OPTIMIZERS)
        try:
            if quiet:
                with _quiet_fds():
                    return ort.InferenceSession(where, opts, providers=providers, disabled_optimizers=disabled)
            return ort.InferenceSession(where, opts, providers=providers, disabled_optimizers=disabled)
        except Exception as exc:  # onnxruntime raises its own classes for every load failure
            first = first_line(exc)
            if "INVALID_PROTOBUF" in first or "Protobuf parsing failed" in first:
                raise RuntimeInputError(where, "not an ONNX model (protobuf parsing failed)") from None
            raise RuntimeInputError(where, f"ONNX Runtime cannot load it: {first[-300:]}") from None

    def _probe_spec(self, where: str, opts: ort.SessionOptions) -> ModelSpec:
        probe = self._open(where, opts, [CPU_EP], quiet=False)
        return read_contract(
            where, probe.get_modelmeta().custom_metadata_map, probe.get_inputs(), probe.get_outputs()
        )

    def _read_spec(self, where: str) -> ModelSpec:
        s = self.session
        return read_contract(where, s.get_modelmeta().custom_metadata_map, s.get_inputs(), s.get_outputs())

    def _setup_bindings(self) -> None:
        spec = self.spec
        kept = [spec.data_output, *spec.spike_outputs]
        self._buffers = [
            {
                st.name: ort.OrtValue.ortvalue_from_numpy(
                    np.zeros((self.batch, *st.shape), st.dtype), self._ort_device, self.device_id
                )
                for st in spec.states
            }
            for _ in range(2)
        ]
        self._bindings = []
        for k in range(2):
            src, dst = self._buffers[k], self._buffers[1 - k]
            binding = self.session.io_binding()
            for st in spec.states:
                binding.bind_ortvalue_input(st.input_name, src[st.name])
                binding.bind_ortvalue_output(st.output_name, dst[st.name])
            for name in kept:  # small outputs come back to the host
                binding.bind_output(name, "cpu")
            self._bindings.append(binding)
        self._kept = kept

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        """Set the state to zeros (the contract's initial state)."""
        if self.io_binding:
            for st in self.spec.states:
                zeros = np.zeros((self.batch, *st.shape), st.dtype)
                for buf in self._buffers:
                    buf[st.name].update_inplace(zeros)
            self._parity = 0
        else:
            self._state_np = {st.name: np.zeros((self.batch, *st.shape), st.dtype) for st in self.spec.states}

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A host copy of the current state, name -> array with the batch dimension."""
        if self.io_binding:
            return {name: np.array(v.numpy(), copy=True) for name, v in self._buffers[self._parity].items()}
        return {k: v.copy() for k, v in self._state_np.items()}

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the current state (e.g. one saved at the end of a previous chunk)."""
        for st in self.spec.states:
            if st.name not in state:
                raise RuntimeInputError("state", f"{st.name} missing")
            arr = np.ascontiguousarray(state[st.name], dtype=st.dtype)
            if arr.shape != (self.batch, *st.shape):
                raise RuntimeInputError(
                    "state", f"{st.name} has shape {arr.shape}, expected {(self.batch, *st.shape)}"
                )
            if self.io_binding:
                self._buffers[self._parity][st.name].update_inplace(arr)
            else:
                self._state_np[st.name] = arr.copy()

    # ---------------------------------------------------------------- stepping
    def step(self, inputs: Mapping[str, np.ndarray]) -> StepOutput:
        """Run one time step; ``inputs`` maps each data input to an array with or without the batch axis."""
        spec = self.spec
        feeds = {}
        for name in spec.data_inputs:
            arr = np.asarray(inputs[name], dtype=np.float32)
            if arr.ndim == 3:
                arr = arr[None]
            feeds[name] = np.ascontiguousarray(arr)
        if self.io_binding:
            binding = self._bindings[self._parity]
            for name, arr in feeds.items():
                binding.bind_cpu_input(name, arr)
            t0 = time.perf_counter()
            self.session.run_with_iobinding(binding)
            model_s = time.perf_counter() - t0
            values = self._bound_outputs(binding)
            self._parity = 1 - self._parity
        else:
            for st in spec.states:
                feeds[st.input_name] = self._state_np[st.name]
            names = [spec.data_output, *(st.output_name for st in spec.states), *spec.spike_outputs]
            t0 = time.perf_counter()
            results = self.session.run(names, feeds)
            model_s = time.perf_counter() - t0
            values = dict(zip(names, results, strict=True))
            for st in spec.states:
                self._state_np[st.name] = values[st.output_name]
        out = values[spec.data_output]
        spikes = {layer.name: float(np.sum(values[spikes_output(layer.name)])) for layer in spec.layers}
        return StepOutput(out[0] if self.batch == 1 else out, spikes, model_s)

    def _bound_outputs(self, binding: Any) -> dict[str, np.ndarray]:
        # IOBinding lists its outputs in the order they were first bound: the states, then the kept ones
        values = binding.get_outputs()[len(self.spec.states) :]
        return {
            name: np.array(value.numpy(), copy=True) for name, value in zip(self._kept, values, strict=True)
        }


def _trt_shapes(spec: ModelSpec, batch: int) -> str:
    """TensorRT profile shapes (``name:1x5x260x346,...``) for every input at the given batch size."""
    enc = spec.encoding
    parts = []
    for name in spec.data_inputs:
        dims = [
            batch,
            *(
                d if isinstance(d, int) else v
                for d, v in zip(spec.data_input_shape[1:], (enc.bins, enc.height, enc.width), strict=True)
            ),
        ]
        parts.append(f"{name}:{'x'.join(str(d) for d in dims)}")
    for st in spec.states:
        parts.append(f"{st.input_name}:{'x'.join(str(d) for d in (batch, *st.shape))}")
    return ",".join(parts)
