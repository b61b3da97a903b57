"""ONNX export per the contract (schema 1, DESIGN.md): one graph = one time step, explicit state.

Inputs: the data inputs, then ``state_in.<name>`` for every state tensor. Outputs: the data output,
``state_out.<name>`` in the same order, then ``spikes.<layer>`` (B,) per spiking layer. The batch
dimension is symbolic (``batch``); weights are initializers; BatchNorm is folded first (on a copy).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from runtime import names

from .fold import fold_batchnorm
from .ir import Stereo
from .model import SNNModel

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


def metadata(model: SNNModel) -> dict[str, str]:
    """The ``snn.*`` metadata_props of the contract."""
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
    }
    if isinstance(g.head, Stereo):
        meta[names.META_MAX_DISPARITY] = repr(float(g.head.max_disparity))
    return meta


def export_onnx(model: SNNModel, path: str | Path, *, fold: bool = True, opset: int = OPSET) -> onnx.ModelProto:
    """Write ``model`` as a one-step ONNX graph at ``path`` (atomically) and return the proto.

    The model is exported in eval mode; with ``fold`` (the default) BatchNorm is folded into the
    convolutions on a copy first. The graph passes ``onnx.checker.check_model(full_check=True)``.
    """
    was_training = model.training
    model.eval()
    try:
        export_model = fold_batchnorm(model) if fold else model
        wrapper = _StepGraph(export_model).eval()
        device = next(model.parameters()).device
        inp = model.genotype.input
        data = [torch.zeros(1, inp.in_channels, inp.height, inp.width, device=device)
                for _ in model.input_names]
        state = list(export_model.initial_state(1, device=device).values())
        input_names = list(model.input_names) + [names.state_input(n) for n in wrapper.state_names]
        output_names = ([model.output_name] + [names.state_output(n) for n in wrapper.state_names]
                        + [names.spikes_output(n) for n in wrapper.spike_names])
        dynamic = {name: {0: "batch"} for name in input_names + output_names}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            raw = Path(tmp) / "graph.onnx"
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, tuple(data + state), str(raw), input_names=input_names,
                                  output_names=output_names, dynamic_axes=dynamic, opset_version=opset,
                                  dynamo=False, do_constant_folding=True)
            proto = onnx.load(str(raw))
            proto.producer_name = "snn-search-toolchain"
            proto.doc_string = f"{model.genotype.name}: one time step of a spiking network, state explicit"
            del proto.metadata_props[:]
            for key, value in metadata(model).items():
                proto.metadata_props.add(key=key, value=value)
            onnx.checker.check_model(proto, full_check=True)
            final = Path(tmp) / "final.onnx"
            onnx.save(proto, str(final))
            os.replace(final, path)
        return proto
    finally:
        model.train(was_training)
