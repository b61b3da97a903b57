"""Nearest resampling in the ONNX ops ONNX Runtime's CPU provider runs fastest, exactly the same values.

``compiler.rewrite.nearest_resize_to_gather`` writes the trellis resampling of spikes between levels
as one ``Gather`` per axis with the torch model's source indices. ONNX Runtime gathers along the last
axis element by element (a 5-D ``(48, 17, 44, 58) -> (48, 33, 87, 116)`` upsampling took 4.5 ms alone,
1 thread), while its 4-D nearest ``Resize`` runs at memory speed. This pass takes each chain of such
``Gather``s (constant 1-D indices, one per axis) and writes it, per axis, as:

- a strided ``Slice`` where the indices are ``start + k * i`` (integer-factor down-sampling; exact
  by definition), all such axes in one node;
- a nearest ``Resize`` (``asymmetric``, ``floor``) over the last two axes where its source index
  ``floor(i / scale)`` cannot differ from the Gather's in any float implementation: the indices are
  ``i >> j`` for a power-of-two factor ``2**j`` (``i / 2**j`` is exact), or ``floor(i * n_in / n_out)``
  with ``i * n_in / n_out`` never an integer for ``0 < i < n_out`` (then it is at least ``1 / n_out``
  away from every integer, far more than float rounding moves it). A 5-D tensor is reshaped to 4-D
  around it (the axes before the last two merged; ``Reshape`` is free in ONNX Runtime);
- the ``Gather`` as it was, otherwise (a non-last axis gathers whole rows: cheap).

One refinement for the last axis, measured on ONNX Runtime 1.31 (uint8, ``(1, 792, 87, 116)`` and
``(1, 816, 44, 58)``, 2 threads, ``benchmarks/bench_resample.py``): a strided ``Slice`` along the last
axis copies element by element (7.2 ms for a 2x down-sampling of the width), a nearest ``Resize`` with
the exact scale ``1/2**j`` does it in 4.3 ms, and with the height in the same ``Resize`` 2.3 ms
(against 9.9 ms for ``Slice`` then ``Resize``; float32 8.4 -> 5.7 and 11.6 -> 4.5 ms): a power-of-two
down-sampling of the last axis (``n_in == 2**j * n_out``, indices ``2**j * i``; ``i / 2**-j`` is exact)
joins the ``Resize``. (ONNX Runtime's fast exact-2x up-sampling pays only on uint8: the int8 graph takes
it, ``runtime/resize2x.py``.)

Shrinking steps come first, growing ones last (the least data moved). Pure data movement: the output
is bit for bit the chain's for every input (NaN and infinities included).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from .onnxgraph import dims

# the robustness argument needs float rounding far below 1 / n_out: sizes up to this are safe
MAX_SIZE = 4096


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def arithmetic(idx: np.ndarray, n_in: int) -> tuple[int, int] | None:
    """``(start, step)`` when ``idx`` is ``start + step * i`` (step >= 1) inside ``0..n_in-1``; else None."""
    if idx.size == 0 or idx[0] < 0 or idx[-1] >= n_in:
        return None
    step = int(idx[1] - idx[0]) if idx.size > 1 else 1
    if step < 1 or not np.array_equal(idx, idx[0] + step * np.arange(idx.size)):
        return None
    return int(idx[0]), step


def resize_exact(idx: np.ndarray, n_in: int) -> bool:
    """Whether a nearest ``Resize`` (asymmetric, floor) from ``n_in`` to ``len(idx)`` reads exactly
    ``idx`` in every float implementation (the module's docstring says why)."""
    n_out = idx.size
    if not (0 < n_in <= MAX_SIZE and 0 < n_out <= MAX_SIZE) or n_in == n_out:
        return False
    i = np.arange(n_out, dtype=np.int64)
    shrink = n_in // n_out
    if n_in == shrink * n_out:  # down-sampling by an integer: exact only by a power of two (1/2**j is a float)
        return shrink & (shrink - 1) == 0 and np.array_equal(idx, i * shrink)
    factor = n_out // n_in
    if n_out == factor * n_in and factor & (factor - 1) == 0:
        return np.array_equal(idx, i >> (factor.bit_length() - 1))
    return bool(np.all((i[1:] * n_in) % n_out != 0)) and np.array_equal(idx, (i * n_in) // n_out)


def resize_scale(n_in: int, n_out: int) -> np.float32 | None:
    """The float32 scale whose ``floor(n_in * scale)`` is ``n_out`` in float32 and float64 arithmetic
    (the output size ``Resize`` computes from ``scales``), nearest to ``n_out / n_in``."""
    s = np.float32(n_out / n_in)
    for _ in range(4):
        if n_out <= float(s * np.float32(n_in)) < n_out + 1 and n_out <= float(s) * n_in < n_out + 1:
            return s
        s = np.nextafter(s, np.float32(np.inf)) if float(s) * n_in < n_out else np.nextafter(s, np.float32(0))
    return None


def _plan(maps: dict[int, np.ndarray], shape: list[int]) -> dict[int, str] | None:
    """Per resampled axis: ``slice``, ``resize`` or ``gather``; None if nothing gets cheaper."""
    rank, kinds = len(shape), {}
    for axis, idx in maps.items():
        exact = rank >= 4 and axis >= rank - 2 and resize_exact(idx, shape[axis]) \
            and resize_scale(shape[axis], idx.size) is not None
        if exact and axis == rank - 1:  # a strided Slice of the last axis is slower than Resize
            kinds[axis] = "resize"
        elif arithmetic(idx, shape[axis]):
            kinds[axis] = "slice"
        else:
            kinds[axis] = "resize" if exact else "gather"
    return kinds if any(k != "gather" for k in kinds.values()) else None


class _Emitter:
    """Appends the nodes and initializers of one chain's replacement, named after its output."""

    def __init__(self, tag: str, x: str, shape: list[int]):
        self.tag, self.current, self.shape = tag, x, list(shape)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray) -> str:
        name = f"{self.tag}.resample.c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> None:
        out = out or f"{self.tag}.resample.t{self.count}"
        self.nodes.append(helper.make_node(op, [self.current, *inputs], [out],
                                           name=f"{self.tag}.resample.{op}{self.count}", **attrs))
        self.current, self.count = out, self.count + 1

    def slice(self, axes: dict[int, tuple[int, int, int]]) -> None:
        starts, ends, steps = ([v[k] for v in axes.values()] for k in range(3))
        self.node("Slice", [self.const(np.array(starts, np.int64)), self.const(np.array(ends, np.int64)),
                            self.const(np.array(list(axes), np.int64)), self.const(np.array(steps, np.int64))])

    def gather(self, axis: int, idx: np.ndarray) -> None:
        self.node("Gather", [self.const(idx.astype(np.int64))], axis=axis)
        self.shape[axis] = idx.size

    def resize(self, sizes: dict[int, int]) -> None:
        """Nearest ``Resize`` of the last two axes to ``sizes``, through 4-D when the rank is higher."""
        rank = len(self.shape)
        if rank > 4:
            inner = int(np.prod(self.shape[1:rank - 2]))
            self.node("Reshape", [self.const(np.array([0, inner, *self.shape[-2:]], np.int64))])
        scales = [np.float32(1)] * 2 + [resize_scale(self.shape[a], sizes.get(a, self.shape[a]))
                                        if a in sizes else np.float32(1) for a in (rank - 2, rank - 1)]
        self.node("Resize", ["", self.const(np.array(scales, np.float32))], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        for a, n in sizes.items():
            self.shape[a] = n
        if rank > 4:
            self.node("Reshape", [self.const(np.array([0, *self.shape[1:]], np.int64))])


def _emit(tag: str, x: str, y: str, shape: list[int], maps: dict[int, np.ndarray], kinds: dict[int, str]):
    """The replacement of one chain from ``x`` (static ``shape`` but the batch) to ``y``."""
    e = _Emitter(tag, x, shape)
    slices = {a: arithmetic(maps[a], shape[a]) for a in maps if kinds[a] == "slice"}
    if slices:
        e.slice({a: (s, s + k * (maps[a].size - 1) + 1, k) for a, (s, k) in slices.items()})
        for a in slices:
            e.shape[a] = maps[a].size
    gathers = [a for a in maps if kinds[a] == "gather"]
    for a in [a for a in gathers if maps[a].size < shape[a]]:
        e.gather(a, maps[a])
    resized = {a: maps[a].size for a in maps if kinds[a] == "resize"}
    if resized:
        e.resize(resized)
    for a in [a for a in gathers if maps[a].size >= shape[a]]:
        e.gather(a, maps[a])
    e.nodes[-1].output[0] = y
    return e.nodes, e.inits


def _chains(graph: onnx.GraphProto, shapes, consts) -> list[list[tuple[int, onnx.NodeProto]]]:
    """Runs of Gathers with constant 1-D indices on a static (but the batch) input, each reading the
    previous one's output and nothing else reading that; every axis once per run. Each node with its
    position in the graph."""
    readers: dict[str, int] = {}
    for name in [i for n in graph.node for i in n.input if i] + [o.name for o in graph.output]:
        readers[name] = readers.get(name, 0) + 1
    chains: list[list[tuple[int, onnx.NodeProto]]] = []
    last: dict[str, list[tuple[int, onnx.NodeProto]]] = {}
    for k, node in enumerate(graph.node):
        shape = shapes.get(node.input[0]) if node.op_type == "Gather" and len(node.input) == 2 else None
        idx = consts.get(node.input[1]) if shape else None
        if idx is None or idx.ndim != 1 or idx.dtype.kind not in "iu" or len(shape) < 2 \
                or not all(isinstance(d, int) for d in shape[1:]):
            continue
        axis = _axis(node) % len(shape)
        if axis == 0:
            continue
        chain = last.pop(node.input[0], None)
        if chain is None or readers.get(node.input[0]) != 1 or axis in {_axis(n) % len(shape) for _, n in chain}:
            chain = [(k, node)]
            chains.append(chain)
        else:
            chain.append((k, node))
        last[node.output[0]] = chain
    return chains


def _axis(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)


def nearest_gathers_as_slices_and_resizes(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The graph with every Gather chain that has a cheaper exact form rewritten; how many chains."""
    out = _copy(proto)
    inferred = shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)
    shapes = {v.name: dims(v) for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    consts = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    replace: dict[int, tuple] = {}
    dropped: set[str] = set()
    for positions in _chains(out.graph, shapes, consts):
        chain = [n for _, n in positions]
        x, shape = chain[0].input[0], shapes[chain[0].input[0]]
        maps = {_axis(n) % len(shape): consts[n.input[1]].astype(np.int64) for n in chain}
        maps = {a: (m % shape[a]) for a, m in maps.items()}  # Gather's negative indices count from the end
        kinds = _plan(maps, shape)
        if kinds is None:
            continue
        nodes, inits = _emit(chain[-1].output[0], x, chain[-1].output[0], shape, maps, kinds)
        replace.update({k: ([], []) for k, _ in positions[:-1]})
        replace[positions[-1][0]] = (nodes, inits)
        dropped.update(n.input[1] for n in chain)
    nodes = []
    for k, node in enumerate(out.graph.node):
        new, inits = replace.get(k, ([node], []))
        nodes += new
        out.graph.initializer.extend(inits)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    kept = [t for t in out.graph.initializer if t.name in used or t.name not in dropped]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, sum(1 for v in replace.values() if v[0])
