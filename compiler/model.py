"""The torch spiking model built from a genotype's Plan: one time step, explicit state.

    model = build_model(genotype)           # or build_model(plan(genotype))
    state = model.initial_state(batch_size=2)
    out, state = model({"left": x, "right": y}, state)   # x, y: (B, bins, H, W)

``out`` holds the task output (``disparity`` (B, H, W) and ``cost`` (B, D, H, W) for stereo;
``logits`` (B, classes), and ``aux_logits`` in training mode, for classification) and ``spikes``:
per spiking layer the number of spikes each sample emitted at this step, shape (B,). Nothing is
kept between calls: the state dict is the only memory.

The parts other networks reuse: ``NetworkModule`` runs a network's layers (``ConvBlock``,
``CellBlock``) in order with the c_{k-1} / c_{k-2} rule; ``stereo_head`` and ``classifier_head`` turn a
runner ``run(network, x, instance, taps=None)`` into the task outputs. The SpikeDHS supernet
(training/search/supernet.py) passes its own runner, which replaces the cell layers by its trellis.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cellgraph import cell_order
from .ir import Classifier, ConvLayer, Genotype, Input, Stereo
from .names import cell_inputs_after, delayed_state_name, instance_name, layer_name, neuron_name, state_name
from .neurons import NeuronModule, build_neuron
from .planner import plan
from .plantypes import LayerPlan, NetPlan, Plan
from .registry import OPS

# ---------------------------------------------------------------------------------------------- ops


class ConvBN(nn.Module):
    """Convolution (2-D or 3-D, padding k//2, no bias) followed by BatchNorm; outputs a current."""

    def __init__(self, in_channels: int, out_channels: int, dims: int, kernel: int, stride: int = 1):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = bn(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class FoldedConv(nn.Module):
    """A ConvBN after BatchNorm folding (compiler.fold): the convolution with the folded bias alone.
    ``bn`` is None to say that there is none; parameter names stay those of the ConvBN."""

    bn = None

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class AvgPool(nn.Module):
    def __init__(self, dims: int, kernel: int):
        super().__init__()
        pool = nn.AvgPool2d if dims == 2 else nn.AvgPool3d
        self.pool = pool(kernel, stride=1, padding=kernel // 2, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x)


def _conv_builder(kernel: int):
    def build(in_channels: int, out_channels: int, dims: int, stride: int = 1) -> nn.Module:
        return ConvBN(in_channels, out_channels, dims, kernel, stride)
    return build


# One factory signature for every op: (in_channels, out_channels, dims, stride) -> module.
BUILDERS = {name: _conv_builder(spec.kernel) for name, spec in OPS.items() if spec.kind == "conv"}
BUILDERS["skip"] = lambda in_channels, out_channels, dims, stride=1: nn.Identity()
BUILDERS["avgpool3x3"] = lambda in_channels, out_channels, dims, stride=1: AvgPool(dims, 3)


def resample(x: Tensor, size: tuple[int, ...] | None) -> Tensor:
    """Nearest resampling to a trellis level's size (keeps spikes binary)."""
    if size is None or tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")


# --------------------------------------------------------------------------------------------- step
class Step:
    """The state going in and out of one time step, and the spike counts, as the model runs."""

    def __init__(self, state: dict[str, Tensor]):
        self.state_in = state
        self.state_out: dict[str, Tensor] = {}
        self.spikes: dict[str, Tensor] = {}

    def neuron(self, name: str, module: NeuronModule, current: Tensor) -> Tensor:
        mine = {s: self.state_in[state_name(name, s)] for s in module.state_names}
        y, new = module(current, mine)
        for s, t in new.items():
            self.state_out[state_name(name, s)] = t
        if module.spiking:
            self.spikes[name] = y.flatten(1).sum(1)
        return y


# A network runner: run(network name, input, instance name, taps) -> output; taps (optional) collects
# each layer's output by index.
Runner = Callable[..., Tensor]


class ConvBlock(nn.Module):
    """A conv layer of a network: (resample to its level,) op, neuron."""

    def __init__(self, lp: LayerPlan, g: Genotype, dims: int):
        super().__init__()
        layer = lp.layer
        self.target = lp.target
        self.op = BUILDERS[layer.op](lp.inputs["c_prev"][0], layer.channels, dims, layer.stride)
        self.neuron = build_neuron(g.resolve_neuron(layer.neuron))

    def forward(self, name: str, step: Step, prev: Tensor, prev_prev: Tensor) -> Tensor:
        return step.neuron(name, self.neuron, self.op(resample(prev, self.target)))


class CellBlock(nn.Module):
    """A cell layer: its nodes in topological order, delayed edges through the state."""

    def __init__(self, lp: LayerPlan, g: Genotype, dims: int):
        super().__init__()
        self.cell = g.cell(lp.layer.cell)
        self.target = lp.target
        self.order = cell_order(self.cell)
        self.spike_mixing = g.mixing == "spike"
        channels = lp.node_channels
        in_channels = {"c_prev": lp.inputs["c_prev"][0], "c_prev_prev": lp.inputs["c_prev_prev"][0]}
        self.ops = nn.ModuleDict()
        self.neurons = nn.ModuleDict()
        for node in self.cell.nodes:
            for i, edge in enumerate(node.inputs):
                c_in = in_channels.get(edge.source, channels)
                self.ops[f"{node.name}_{i}"] = BUILDERS[edge.op](c_in, channels, dims)
                if self.spike_mixing and OPS[edge.op].has_neuron:
                    spec = g.resolve_neuron(lp.layer.neuron, node.neuron, edge.neuron)
                    self.neurons[f"{node.name}_{i}"] = build_neuron(spec)
            if not self.spike_mixing:
                self.neurons[node.name] = build_neuron(g.resolve_neuron(lp.layer.neuron, node.neuron))
        # (node, input index, source) of each delayed edge: its op runs on the source's output at the end
        # of a step and the result is the state the edge reads at the next step. A zero initial state is
        # then exactly "no input yet" in training and in inference alike (BatchNorm never sees it).
        self.delayed = [(n.name, i, e.source) for n in self.cell.nodes for i, e in enumerate(n.inputs) if e.delay]

    def forward(self, name: str, step: Step, prev: Tensor, prev_prev: Tensor) -> Tensor:
        values = {"c_prev": resample(prev, self.target), "c_prev_prev": resample(prev_prev, self.target)}
        for node_name in self.order:
            node = self.cell.node(node_name)
            terms = []
            for i, edge in enumerate(node.inputs):
                key = f"{node_name}_{i}"
                if edge.delay:
                    t = step.state_in[delayed_state_name(name, node_name, i)]
                else:
                    t = self.ops[key](values[edge.source])
                if key in self.neurons:
                    t = step.neuron(neuron_name(name, node_name, i), self.neurons[key], t)
                terms.append(t)
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            if not self.spike_mixing:
                total = step.neuron(neuron_name(name, node_name), self.neurons[node_name], total)
            values[node_name] = total
        for node_name, i, src in self.delayed:
            step.state_out[delayed_state_name(name, node_name, i)] = self.ops[f"{node_name}_{i}"](values[src])
        outs = [values[o] for o in self.cell.output]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class NetworkModule(nn.Module):
    """A network: its layers in order; conv layers take c_prev, cells c_prev and c_prev_prev."""

    def __init__(self, np_: NetPlan, g: Genotype):
        super().__init__()
        dims = np_.network.dims
        self.names = [lp.layer.name for lp in np_.layers]
        self.layers = nn.ModuleList(
            ConvBlock(lp, g, dims) if isinstance(lp.layer, ConvLayer) else CellBlock(lp, g, dims)
            for lp in np_.layers)

    def forward(self, x: Tensor, step: Step, instance: str, taps: dict[int, Tensor] | None = None) -> Tensor:
        return run_layers(zip(self.names, self.layers, strict=True), x, step, instance, taps)


def run_layers(layers, x: Tensor, step: Step, instance: str, taps: dict[int, Tensor] | None = None) -> Tensor:
    """Run ``(name, block)`` pairs in order: block(layer name, step, c_{k-1}, c_{k-2}) -> output, with
    the planner's c_{k-2} rule (``cell_inputs_after``)."""
    prev = prev_prev = x
    for i, (name, block) in enumerate(layers):
        out = block(layer_name(instance, name), step, prev, prev_prev)
        prev, prev_prev = cell_inputs_after(i, prev, out)
        if taps is not None:
            taps[i] = out
    return prev


# ---------------------------------------------------------------------------------------- stereo
def cost_volume(left: Tensor, right: Tensor, disparities: int, shift: int = 1) -> Tensor:
    """(B, C, H, W) x2 -> (B, 2C, D, H, W): left features beside right features shifted by d * shift.

    Where x - d * shift falls outside the image the right half is zero.
    """
    b, c, h, w = left.shape
    pad = (disparities - 1) * shift
    padded = F.pad(right, (pad, 0))  # (B, C, H, pad + W)
    slices = [padded[..., pad - d * shift: pad - d * shift + w] for d in range(disparities)]
    right_v = torch.stack(slices, dim=2)  # (B, C, D, H, W)
    left_v = left.unsqueeze(2).expand(b, c, disparities, h, w)
    return torch.cat([left_v, right_v], dim=1)


def estimate_disparity(cost: Tensor, kind: str, support: int, step: float) -> Tensor:
    """Matching cost (B, D, H, W) -> disparity (B, H, W) in pixels: D(d) = d * step.

    ``subpixel`` (paper eq. 5): softmin over the d with |d - argmin| < support;
    ``soft_argmin``: softmin over every d.
    """
    d = torch.arange(cost.shape[1], dtype=cost.dtype, device=cost.device).view(1, -1, 1, 1)
    logits = -cost
    if kind == "subpixel":
        best = torch.argmin(cost, dim=1, keepdim=True).to(cost.dtype)
        near = torch.abs(d - best) < support
        logits = torch.where(near, logits, torch.full_like(logits, -1e4))
    prob = torch.softmax(logits, dim=1)
    return (prob * d).sum(dim=1) * step


# ------------------------------------------------------------------------------------------ heads
def stereo_head(head: Stereo, inp: Input, run: Runner, inputs: dict[str, Tensor],
                volume_fn: Callable = cost_volume) -> dict[str, Tensor]:
    """The feature network on both views, the cost volume, the matching network and the estimator.

    ``volume_fn(left, right, D, shift)`` builds the matching network's input: the cost volume, or in a
    factorised model (compiler.factorize) the two views, which its first layer reads directly."""
    left = run(head.feature, inputs["left"], instance_name(head.feature, "left"))  # (B, C, h, w)
    right = run(head.feature, inputs["right"], instance_name(head.feature, "right"))
    volume = volume_fn(left, right, head.disparities, head.shift)  # (B, 2C, D, h, w)
    cost = run(head.matching, volume, instance_name(head.matching))[:, 0]  # (B, D, h, w)
    cost = F.interpolate(cost, size=(inp.height, inp.width), mode="bilinear", align_corners=False)  # (B, D, H, W)
    return {"cost": cost, "disparity": estimate_disparity(cost, head.estimator, head.support, head.disparity_step)}


def classifier_head(head: Classifier, run: Runner, image: Tensor, classifier: nn.Module,
                    aux: nn.Module | None = None) -> dict[str, Tensor]:
    """The backbone, global average pooling and the linear classifier; with ``aux`` (training) also the
    auxiliary logits from the output of layer ``head.aux_after``."""
    taps: dict[int, Tensor] = {}
    feats = run(head.backbone, image, instance_name(head.backbone), taps if aux is not None else None)
    out = {"logits": classifier(feats.flatten(2).mean(2))}  # (B, classes)
    if aux is not None:
        out["aux_logits"] = aux(taps[head.aux_after])
    return out


def aux_head(in_channels: int, head: Classifier) -> nn.Module:
    """The training-only auxiliary classifier (not part of the exported graph)."""
    return nn.Sequential(ConvBN(in_channels, head.aux_channels, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(head.aux_channels, head.classes))


def task_names(g: Genotype) -> tuple[list[str], str]:
    """The model's input names and its data output's name (those of the ONNX contract)."""
    from runtime.core.names import data_inputs, data_output

    return data_inputs(g.task), data_output(g.task)


# ----------------------------------------------------------------------------------------- model
class SNNModel(nn.Module):
    """A compiled genotype. ``forward`` is one time step; see the module docstring.

    ``volume`` builds the stereo matching network's input from the two views' features (the cost
    volume; a factorised copy replaces it, see compiler.factorize)."""

    volume = staticmethod(cost_volume)

    def __init__(self, p: Plan):
        super().__init__()
        self.genotype = p.genotype
        self.plan = p
        self.nets = nn.ModuleDict({name: NetworkModule(np_, p.genotype) for name, np_ in p.nets.items()})
        head = p.genotype.head
        if isinstance(head, Classifier):
            self.classifier = nn.Linear(p.nets[head.backbone].out_shape[0], head.classes)
            if head.aux_after is not None:
                self.aux = aux_head(p.nets[head.backbone].layers[head.aux_after].out_shape[0], head)

    @property
    def input_names(self) -> list[str]:
        return task_names(self.genotype)[0]

    @property
    def output_name(self) -> str:
        return task_names(self.genotype)[1]

    def state_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return list(self.plan.states)

    def spiking_neurons(self) -> int:
        """Neurons per sample of all spiking layers (the denominator of a firing rate)."""
        return sum(n.size for n in self.plan.spiking_layers)

    def initial_state(self, batch_size: int = 1, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        """Zeros for every state tensor, (batch_size, *shape) each."""
        if device is None:
            device = next(self.parameters()).device
        return {name: torch.zeros((batch_size, *shape), device=device, dtype=dtype)
                for name, shape in self.plan.states}

    def forward(self, inputs: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise KeyError(f"missing model input(s) {missing}; this model takes {self.input_names}")
        step = Step(state)
        head = self.genotype.head

        def run(net: str, x: Tensor, instance: str, taps: dict[int, Tensor] | None = None) -> Tensor:
            return self.nets[net](x, step, instance, taps)

        if isinstance(head, Stereo):
            out = stereo_head(head, self.genotype.input, run, inputs, self.volume)
        else:
            aux = self.aux if self.training and head.aux_after is not None else None
            out = classifier_head(head, run, inputs["image"], self.classifier, aux)
        out["spikes"] = step.spikes
        return out, step.state_out


def build_model(source: Genotype | Plan) -> SNNModel:
    """Build the torch model of a validated genotype, or of its plan (weights freshly initialised).
    A genotype is planned once (its parser's plan is reused)."""
    return SNNModel(source if isinstance(source, Plan) else plan(source))
