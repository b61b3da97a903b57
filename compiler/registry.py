"""The registry of ops, neurons, surrogates and estimators: names, shape rules and costs (no torch).

Every op is an ``OpSpec``; its shape rule and cost formulas are what validation, the summary
table and the energy model use. The torch side (``compiler.ops.BUILDERS``) builds each op with one
factory signature ``BUILDERS[name](in_channels, out_channels, dims, stride)``; a test checks that both
registries name the same ops.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

Shape = tuple[int, ...]  # (channels, *spatial) for one sample


class ShapeError(ValueError):
    """A shape rule does not hold; the caller adds the location."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class OpSpec:
    """An edge or layer op. ``kind``: conv (weights + BN, outputs a current), skip, pool."""

    name: str
    kind: str
    kernel: int = 1
    doc: str = ""

    def out_shape(self, in_shape: Shape, out_channels: int, stride: int = 1) -> Shape:
        c, *spatial = in_shape
        if self.kind != "conv" and c != out_channels:
            raise ShapeError(f"{self.name} keeps its {c} input channels but the node has {out_channels}: "
                             "the sum at the node would mix shapes",
                             "use a conv op on this edge, or make the channel counts equal")
        return (out_channels, *(math.ceil(s / stride) for s in spatial))

    def params(self, in_channels: int, out_channels: int, dims: int) -> int:
        """Trainable parameters: conv weight (no bias) + BatchNorm weight and bias."""
        if self.kind != "conv":
            return 0
        return in_channels * out_channels * self.kernel**dims + 2 * out_channels

    def macs(self, in_shape: Shape, out_shape: Shape) -> int:
        """Multiply-accumulates of one step for one sample (BN is folded away at export)."""
        if self.kind != "conv":
            return 0
        dims = len(in_shape) - 1
        return math.prod(out_shape) * in_shape[0] * self.kernel**dims

    @property
    def has_neuron(self) -> bool:
        """Whether an edge with this op gets its own neuron under mixing at the spike (a skip passes
        its source's spikes on unchanged and has none)."""
        return self.kind != "skip"

    @property
    def binary_preserving(self) -> bool:
        """True when binary spikes in give binary values out (so the consumer only accumulates)."""
        return self.kind == "skip"


class Registry(dict):
    """A name -> entry dict that refuses silent overwrites."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str, entry):
        if name in self:
            warnings.warn(f"{self.what} {name!r} registered twice; the later one wins", stacklevel=2)
        self[name] = entry
        return entry


OPS = Registry("op")
for _k in (1, 3, 5, 7):
    OPS.register(f"conv{_k}x{_k}", OpSpec(f"conv{_k}x{_k}", "conv", _k,
                                         f"{_k}x{_k} convolution (x{_k} in depth in 3-D networks) + BatchNorm"))
OPS.register("skip", OpSpec("skip", "skip", doc="identity: passes its input (spikes) on"))
OPS.register("avgpool3x3", OpSpec("avgpool3x3", "pool", 3, doc="3x3 average pooling, stride 1, padding 1"))

CELL_OPS = OPS  # every op may label a cell edge
LAYER_OPS = {k: v for k, v in OPS.items() if v.kind == "conv"}  # conv layers of a network


@dataclass(frozen=True)
class NeuronSpec:
    """A neuron kind's facts, written once: its state variables, whether it spikes, the ``Neuron`` fields
    its step reads, what NIR can express of it (``nir``: ``"lif"`` a thresholded leaky integrator with hard
    reset, NIR's LIF, or IF at tau = 1; ``"li"`` a leaky integrator, NIR's LI, or I at tau = 1; None: no
    NIR form) and which neuron searchers may search it (``searchers``: dgs, tps, hns). Its step (charge,
    fire, reset) is its module class in ``compiler.neurons.NEURON_MODULES``."""

    name: str
    spiking: bool
    state: tuple[str, ...]
    doc: str
    params: tuple[str, ...] = ("tau", "threshold", "reset", "surrogate")
    nir: str | None = None
    searchers: tuple[str, ...] = ()


NEURONS = Registry("neuron")
NEURONS.register("lif", NeuronSpec("lif", True, ("v",), "leaky integrate-and-fire", nir="lif",
                                   searchers=("dgs", "tps", "hns")))
NEURONS.register("if", NeuronSpec("if", True, ("v",), "integrate-and-fire (LIF with tau = 1)",
                                  ("threshold", "reset", "surrogate"), nir="lif", searchers=("dgs",)))
NEURONS.register("alif", NeuronSpec("alif", True, ("v", "a"), "LIF with an adaptive threshold",
                                    ("tau", "threshold", "reset", "tau_a", "beta", "surrogate"),
                                    searchers=("dgs", "tps")))
NEURONS.register("relu", NeuronSpec("relu", False, (), "ReLU, for hybrid ANN/SNN networks", ()))
NEURONS.register("li", NeuronSpec("li", False, ("v",), "leaky integrator: outputs its membrane potential",
                                  ("tau",), nir="li"))

SURROGATES = Registry("surrogate")
for _name, _doc in (("dspike", "b/2 (1 - tanh^2(b (x - 1/2))) / tanh(b/2) on 0 <= x <= 1, x = u - V_th + 1/2"),
                    ("triangle", "b max(0, 1 - |x - 1/2|), x = u - V_th + 1/2"),
                    ("superspike", "1 / (b |x| + 1)^2, x = u - V_th"),
                    ("arctan", "(b/3) / (1 + (pi x)^2), x = u - V_th")):
    SURROGATES.register(_name, _doc)

ESTIMATORS = Registry("estimator")
ESTIMATORS.register("subpixel", "softmin of the cost within `support` of its argmin (paper eq. 5)")
ESTIMATORS.register("soft_argmin", "softmin over all disparities")


def resample_shape(in_shape: Shape, spatial: Sequence[int]) -> Shape:
    """Nearest resampling to another trellis level keeps channels, changes the spatial size."""
    return (in_shape[0], *spatial)


def concat_shape(shapes: Sequence[Shape], names: Sequence[str]) -> Shape:
    """Concatenation along channels: every spatial size must agree."""
    first = shapes[0][1:]
    for shape, name in zip(shapes[1:], names[1:], strict=True):
        if shape[1:] != first:
            raise ShapeError(f"cannot concatenate {names[0]} {tuple(shapes[0])} with {name} {tuple(shape)}: "
                             "spatial sizes differ", "put both on the same level")
    return (sum(s[0] for s in shapes), *first)


def sum_shape(shapes: Sequence[Shape], names: Sequence[str]) -> Shape:
    """Summation at a node: every shape must agree."""
    for shape, name in zip(shapes[1:], names[1:], strict=True):
        if shape != shapes[0]:
            raise ShapeError(f"cannot sum {names[0]} {tuple(shapes[0])} with {name} {tuple(shape)}",
                             "make the edges produce the same shape")
    return shapes[0]


def cost_volume_shape(left: Shape, right: Shape, disparities: int) -> Shape:
    """(C, h, w) x2 -> (2C, D, h, w): left features beside disparity-shifted right features."""
    if left != right:
        raise ShapeError(f"left features {left} and right features {right} differ",
                         "run the same feature network on both views")
    return (2 * left[0], disparities, *left[1:])


def estimator_shape(cost: Shape, height: int, width: int) -> Shape:
    """Matching cost (1, D, h, w) -> disparity (H, W) at input resolution."""
    if cost[0] != 1 or len(cost) != 4:
        raise ShapeError(f"the matching cost must be (1, D, h, w), got {cost}",
                         "end the matching network with a 1-channel layer")
    return (height, width)


@dataclass(frozen=True)
class RuleSpec:
    """A parameter-free op of the macro network and its shape rule."""

    name: str
    shape: object  # Callable[..., Shape]
    doc: str


RULES = Registry("shape rule")
for _rule in (
    RuleSpec("resample", resample_shape, "nearest up/down resampling to a trellis level (keeps spikes binary)"),
    RuleSpec("concat", concat_shape, "concatenation along channels (cell outputs)"),
    RuleSpec("sum", sum_shape, "sum at the node: currents at the membrane, or spikes"),
    RuleSpec("batchnorm", lambda shape: shape, "BatchNorm after each conv; folded into it at export"),
    RuleSpec("global_avgpool", lambda shape: (shape[0],), "mean over every spatial position"),
    RuleSpec("linear", lambda shape, out: (out,), "fully connected layer of the classifier head"),
    RuleSpec("cost_volume", cost_volume_shape, "concat(F_L(x), F_R(x - d * shift)) for d < D"),
    RuleSpec("subpixel", estimator_shape, "sub-pixel disparity estimator, paper eq. 5"),
    RuleSpec("soft_argmin", estimator_shape, "softmin over all disparities"),
):
    RULES.register(_rule.name, _rule)
