"""ONNX export per the contract (schema 1, DESIGN.md): one graph = one time step, explicit state.

Inputs: the data inputs, then ``state_in.<name>`` for every state tensor. Outputs: the data output,
``state_out.<name>`` in the same order, then ``spikes.<layer>`` (B,) per spiking layer. The batch
dimension is symbolic (``batch``) and every output declares its exact shape; weights are
initializers. BatchNorm is folded and the stereo cost volume factorised first (on copies); the
metadata lists the passes applied (``snn.passes``).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from runtime.core import names
from runtime.core.atomic import write_bytes_atomic

from .factorize import factorize_cost_volume
from .fold import fold_batchnorm
from .model import SNNModel
from .onnxgraph import BATCH, declare_exact_shapes, fold_constants
from .rewrite import rewrite as rewrite_graph
from .tasks import TASKS

OPSET = 17


class _StepGraph(nn.Module):
    """Positional inputs/outputs in contract order around one model step."""

    def __init__(self, model: SNNModel):
        super().__init__()
        self.model = model
        self.state_names = [n for n, _ in model.state_shapes()]
        self.spike_names = [n.name for n in model.plan.spiking_layers]

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        k = len(self.model.input_names)
        inputs = dict(zip(self.model.input_names, args[:k], strict=True))
        state = dict(zip(self.state_names, args[k:], strict=True))
        out, new_state = self.model(inputs, state)
        return (out[self.model.output_name], *(new_state[n] for n in self.state_names),
                *(out["spikes"][n] for n in self.spike_names))


def metadata(model: SNNModel, passes: list[dict] | None = None) -> dict[str, str]:
    """The ``snn.*`` metadata_props of the contract; ``passes`` (the optimisations applied, in order)
    becomes ``snn.passes``."""
    g, p = model.genotype, model.plan
    inp = g.input
    meta = {
        names.META_SCHEMA: names.SCHEMA,
        names.META_TASK: g.task,
        names.META_GENOTYPE: g.to_yaml(),
        names.META_ENCODING: json.dumps({"kind": inp.encoding, "window_ms": inp.window_ms, "bins": inp.bins,
                                    "height": inp.height, "width": inp.width}
                                   if inp.encoding != "image" else
                                   {"kind": "image", "channels": inp.channels, "timesteps": inp.timesteps,
                                    "height": inp.height, "width": inp.width}),
        names.META_LAYERS: json.dumps({n.name: {"neurons": n.size, "fan_out": round(p.fan_out[n.name], 4)}
                                  for n in p.spiking_layers}),
        names.META_DENSE_MACS: json.dumps(p.dense_macs),
        names.META_PARAMS: str(p.params),
        names.META_PASSES: json.dumps(passes or []),
    }
    meta.update(TASKS[g.task].meta(g))
    return meta


def declared_outputs(model: SNNModel) -> dict[str, list]:
    """Every graph output's exact shape (``batch`` symbolic): the contract's declarations."""
    p = model.plan
    data = next(n for n in p.graph if n.name == p.outputs[model.output_name])
    shapes = {model.output_name: [BATCH, *data.shape]}
    shapes.update({names.state_output(n): [BATCH, *s] for n, s in model.state_shapes()})
    shapes.update({names.spikes_output(n.name): [BATCH] for n in model.plan.spiking_layers})
    return shapes


def to_onnx(model: SNNModel, *, fold: bool = True, factorize: bool = True, rewrite: bool = True,
            opset: int = OPSET, resample: bool = True) -> onnx.ModelProto:
    """The one-step ONNX graph of ``model`` (in memory), with the contract's metadata.

    Passes, each on a copy (``model`` is left as it was, in its own train/eval mode): BatchNorm
    folding (``fold``), the cost-volume factorisation (``factorize``, stereo; compiler.factorize),
    then tracing in eval mode, constant folding and the exact output declarations (compiler.onnxgraph). The applied
    passes are listed in ``snn.passes``. Inputs, outputs and state are the same with or without them.
    ``resample=False`` keeps the nearest resampling as the Gathers ``compiler.resample`` would rewrite
    (the same values; only for measuring that pass).
    """
    was_training = model.training
    model.eval()
    try:
        passes: list[dict] = []
        export_model = model
        if fold:
            export_model = fold_batchnorm(model)
            passes.append({"pass": "fold_batchnorm"})
        if factorize:
            export_model, record = factorize_cost_volume(export_model)
            if record:
                passes.append(record)
        proto = _trace(export_model, opset)
    finally:
        model.train(was_training)
    proto = fold_constants(proto)
    if rewrite:
        proto, records = rewrite_graph(proto, resample=resample)
        passes += records
    proto = declare_exact_shapes(proto, declared_outputs(model))
    proto.producer_name = "snn-search-toolchain"
    proto.doc_string = f"{model.genotype.name}: one time step of a spiking network, state explicit"
    del proto.metadata_props[:]
    for key, value in metadata(model, passes).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _trace(export_model: SNNModel, opset: int) -> onnx.ModelProto:
    """The TorchScript exporter on one step with batch 1 and the batch axis symbolic."""
    wrapper = _StepGraph(export_model).eval()
    device = next(export_model.parameters()).device
    inp = export_model.genotype.input
    data = [torch.zeros(1, inp.in_channels, inp.height, inp.width, device=device) for _ in export_model.input_names]
    state = list(export_model.initial_state(1, device=device).values())
    input_names = list(export_model.input_names) + [names.state_input(n) for n in wrapper.state_names]
    output_names = ([export_model.output_name] + [names.state_output(n) for n in wrapper.state_names]
                    + [names.spikes_output(n) for n in wrapper.spike_names])
    dynamic = {name: {0: BATCH} for name in input_names + output_names}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(data + state), buffer, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def save_onnx(proto: onnx.ModelProto, path: str | Path) -> None:
    """Write ``proto`` atomically (``runtime.core.atomic``: a temporary file in the same folder, fsync, rename
    over ``path``, fsync the folder; the permissions a new file would get)."""
    write_bytes_atomic(path, proto.SerializeToString())


def export_onnx(model: SNNModel, path: str | Path, *, fold: bool = True, factorize: bool = True,
                rewrite: bool = True, opset: int = OPSET) -> onnx.ModelProto:
    """Write ``model`` as a one-step ONNX graph at ``path`` (atomically) and return the proto.

    See ``to_onnx`` for the passes (all on by default). The graph passes
    ``onnx.checker.check_model(full_check=True)``.
    """
    proto = to_onnx(model, fold=fold, factorize=factorize, rewrite=rewrite, opset=opset)
    save_onnx(proto, path)
    return proto
