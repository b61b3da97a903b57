"""One lowering rule per NIR node type (``compiler.nir_import``): the lowered-graph nodes it becomes, its
output shape, its parameters checked against that shape. A type with no rule is one located error.

Neurons (forward Euler at ``dt``; ``coefficients`` computes in float64, rounds once to float32):

    LIF      tau dv/dt = (v_leak - v) + r I        a = 1 - dt/tau, b = dt r / tau, c = dt v_leak / tau
    IF       dv/dt = r I                           a = 1, b = dt r, c = 0
    LI       as LIF, never fires;   I (Integrator)  as IF, never fires
    CubaLIF  tau_syn di/dt = -i + w_in I           a_syn = 1 - dt/tau_syn, b_syn = dt w_in / tau_syn,
             then the LIF driven by i (this step's)     a, b, c of the LIF with tau_mem
    CubaLI   as CubaLIF, never fires;   Threshold  z = I > threshold
"""

from __future__ import annotations

import math

import nir
import numpy as np

from .nir_graph import is_pass, safe_name

NEURON_TYPES = {nir.LIF: "lif", nir.IF: "if", nir.LI: "li", nir.I: "i", nir.CubaLIF: "cubalif",
                nir.CubaLI: "cubali", nir.Threshold: "threshold"}
FIRES = {"lif", "if", "cubalif", "threshold"}
SUPPORTED = ("Input, Output, Affine, Linear, Conv1d, Conv2d, SumPool2d, AvgPool2d, Scale, Flatten, Delay, "
             "LIF, IF, LI, I, CubaLIF, CubaLI, Threshold")


def _f64(low, name: str, node, key: str, shape) -> np.ndarray:
    value = np.asarray(getattr(node, key), dtype=np.float64)
    try:
        out = np.broadcast_to(value, shape)
    except ValueError:
        raise low.error(name, f"its {key} has shape {value.shape}, its input {shape}") from None
    if not np.all(np.isfinite(out)):
        raise low.error(name, f"its {key} holds non-finite values")
    return out


def coefficients(low, name: str, node, model: str, shape) -> dict[str, np.ndarray]:
    """The float32 coefficients of one NIR neuron at ``low.dt`` (module docstring)."""
    dt = low.dt
    p = {k: _f64(low, name, node, k, shape) for k in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "w_in",
                                                     "v_threshold", "v_reset", "threshold") if hasattr(node, k)}
    for key in ("tau", "tau_mem", "tau_syn"):
        if key in p and np.any(p[key] <= 0):
            raise low.error(name, f"its {key} must be positive")
    out: dict[str, np.ndarray] = {}
    if model in ("cubalif", "cubali"):
        out["a_syn"], out["b_syn"] = 1 - dt / p["tau_syn"], dt * p["w_in"] / p["tau_syn"]
    tau = p.get("tau", p.get("tau_mem"))
    if model in ("if", "i"):
        out["a"], out["b"], out["c"] = np.ones(shape), dt * p["r"], np.zeros(shape)
    elif model != "threshold":
        out["a"], out["b"], out["c"] = 1 - dt / tau, dt * p["r"] / tau, dt * p["v_leak"] / tau
    if model == "threshold":
        out["v_threshold"] = p["threshold"]
    elif model in FIRES:
        out["v_threshold"], out["v_reset"] = p["v_threshold"], p["v_reset"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _ints(value, n: int) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(value)).astype(int).ravel()
    return tuple(int(a[0]) for _ in range(n)) if a.size == 1 else tuple(int(v) for v in a[:n])


def _conv(low, name, node, x, shape):
    dims = 1 if isinstance(node, nir.Conv1d) else 2
    w = np.asarray(node.weight, dtype=np.float32)
    if len(shape) != dims + 1 or w.ndim != dims + 2:
        raise low.error(name, f"a Conv{dims}d on an input of shape {shape} with weight {w.shape}")
    groups = int(node.groups)
    if shape[0] != w.shape[1] * groups:
        raise low.error(name, f"its weight {w.shape} (groups {groups}) takes {w.shape[1] * groups} channels, "
                        f"its input has {shape[0]}")
    kernel = w.shape[2:]
    stride, dilation = _ints(node.stride, dims), _ints(node.dilation, dims)
    if isinstance(node.padding, str):
        if node.padding != "valid" and any(s != 1 for s in stride):
            raise low.error(name, f"padding {node.padding!r} with stride {stride}")
        padding = tuple(0 if node.padding == "valid" else d * (k - 1) // 2
                        for k, d in zip(kernel, dilation, strict=True))
        if node.padding == "same" and any(d * (k - 1) % 2 for k, d in zip(kernel, dilation, strict=True)):
            raise low.error(name, "padding 'same' with an even kernel (asymmetric padding) has no form here")
    else:
        padding = _ints(node.padding, dims)
    out = (w.shape[0], *(_conv_out(*a) for a in zip(shape[1:], kernel, stride, padding, dilation, strict=True)))
    bias = None if node.bias is None else np.broadcast_to(np.asarray(node.bias, np.float32), (w.shape[0],)).copy()
    macs = int(np.prod(w.shape[1:])) * math.prod(out)
    ref = low.emit("nir_conv", name, [x], out, params=w.size + (0 if bias is None else bias.size), macs=macs,
                   attrs={"dims": dims, "weight": w, "bias": bias, "stride": stride, "padding": padding,
                          "dilation": dilation, "groups": groups, "at": name})
    return ref, out


def _linear(low, name, node, x, shape):
    w = np.asarray(node.weight, dtype=np.float32)
    if len(shape) != 1 or w.ndim != 2 or w.shape[1] != shape[0]:
        raise low.error(name, f"a {type(node).__name__} with weight {w.shape} on an input of shape {shape}")
    bias = np.asarray(node.bias, np.float32).reshape(-1).copy() if isinstance(node, nir.Affine) else None
    ref = low.emit("nir_linear", name, [x], (w.shape[0],), params=w.size + (0 if bias is None else bias.size),
                   macs=w.size, attrs={"weight": w, "bias": bias, "at": name})
    return ref, (w.shape[0],)


def _pool(low, name, node, x, shape):
    if len(shape) != 3:
        raise low.error(name, f"a 2-D pooling on an input of shape {shape}")
    k, s, p = _ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2)
    out = (shape[0], *(_conv_out(n, kk, ss, pp, 1) for n, kk, ss, pp in zip(shape[1:], k, s, p, strict=True)))
    if any(o < 1 for o in out):
        raise low.error(name, f"pooling {shape} with kernel {k}, stride {s} leaves nothing")
    mode = "sum" if isinstance(node, nir.SumPool2d) else "avg"
    return low.emit("nir_pool", name, [x], out, attrs={"mode": mode, "kernel": k, "stride": s, "padding": p}), out


def _flatten(low, name, node, x, shape):
    n = len(shape)
    start, end = int(node.start_dim) % n, int(node.end_dim) % n
    if start > end:
        raise low.error(name, f"start_dim {node.start_dim} after end_dim {node.end_dim} on shape {shape}")
    out = (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])
    if out == tuple(shape):
        return x, out
    return low.emit("reshape", name, [x], out, attrs={"shape": out}), out


def _scale(low, name, node, x, shape):
    scale = _f64(low, name, node, "scale", shape).astype(np.float32)
    return low.emit("nir_scale", name, [x], shape, attrs={"scale": scale.copy()}), shape


def _neuron(low, name, node, x, shape):
    model = NEURON_TYPES[type(node)]
    fires = model in FIRES
    coeffs = coefficients(low, name, node, model, shape)
    state = () if model == "threshold" else tuple(
        low.state(f"{name}.{s}", shape) for s in (("i", "v") if "a_syn" in coeffs else ("v",)))
    low.neuron(name, shape, fires)
    ref = low.emit("nir_neuron", name, [x], shape, state=tuple((s, tuple(shape)) for s in state),
                   attrs={"model": model, "coefficients": coeffs, "fires": fires, "nir": type(node).__name__})
    return ref, shape


def _delay(low, name, node, x, shape):
    steps = low.delay_steps[name]
    if low.delay_shapes[name] != tuple(shape):
        raise low.error(name, f"its delay has shape {low.delay_shapes[name]}, its input {shape}")
    states = [safe_name(f"{name}.delay{k}") for k in range(steps)]
    for k, state in enumerate(states):  # the oldest value leaves, each moves one place, the input enters
        src = low.values[f"{name}@{k + 1}"] if k + 1 < steps else x
        low.writes.append(low.write_node(state, src, shape))
    return low.values[name], shape


def _output(low, name, node, x, shape):
    if len(shape) == 1:
        return x, shape
    out = (math.prod(shape),)
    return low.emit("reshape", "logits:flatten", [x], out, attrs={"shape": out}), out


RULES = {nir.Conv1d: _conv, nir.Conv2d: _conv, nir.Linear: _linear, nir.Affine: _linear, nir.SumPool2d: _pool,
         nir.AvgPool2d: _pool, nir.Flatten: _flatten, nir.Scale: _scale, nir.Delay: _delay, nir.Output: _output,
         **{t: _neuron for t in NEURON_TYPES}}


def lower_node(low, name: str, node, x: str, shape) -> tuple[str, tuple[int, ...]]:
    """Lower one NIR node fed by value ``x`` of ``shape``; returns its value and shape."""
    shape = tuple(int(s) for s in shape)
    if is_pass(node):
        return x, shape
    rule = RULES.get(type(node))
    if rule is None:
        raise low.error(name, f"NIR node type {type(node).__name__} has no form in this compiler "
                        f"(it reads {SUPPORTED})")
    return rule(low, name, node, x, shape)
