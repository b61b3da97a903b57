"""Shared test helpers: small versions of the shipped genotypes, and torch-vs-ONNX Runtime stepping."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GENOTYPES = ROOT / "genotypes"

# Reduced sizes of every shipped genotype (same topology, few channels, tiny inputs).
SMALL = {
    "stereo": {
        "input.height": 24, "input.width": 32, "head.cost_volume.disparities": 5,
        "networks.feature.node_channels": [4, 8, 16, 32], "networks.matching.node_channels": [4, 8, 16, 32],
        "networks.feature.layers[0].channels": 4, "networks.feature.layers[1].channels": 8,
        "networks.feature.layers[4].channels": 8,
        "networks.matching.layers[0].channels": 8, "networks.matching.layers[1].channels": 8,
    },
    "stereo_small": {"input.height": 24, "input.width": 32},  # already few channels
    "stereo_small_fine": {"input.height": 24, "input.width": 32},
    "stereo_fine_c12": {"input.height": 24, "input.width": 32},  # the paper's channels (C = 12), small input
    "cifar10": {"input.height": 8, "input.width": 8, "networks.backbone.node_channels": [4, 4, 8],
                "networks.backbone.layers[0].channels": 8},
    "snasnet_cifar10_bw": {"input.height": 16, "input.width": 16, "networks.backbone.node_channels": [8, 16],
                           "networks.backbone.layers[0].channels": 8, "networks.backbone.layers[2].channels": 16},
}


def small_genotype(name: str, **extra):
    from compiler import load_genotype

    return load_genotype(GENOTYPES / f"{name}.yaml", overrides={**SMALL[name], **extra})


def randomize_bn(model, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (so folding matters)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2 + 0.1)


def make_exact(model, seed: int = 0) -> None:
    """Weights and BatchNorm on a dyadic grid, so every conv sum is exact in float32.

    Then torch, the folded copy and ONNX Runtime compute bit-identical membrane potentials
    whatever their summation order, and spikes can be compared for equality over many steps
    (with arbitrary floats a potential within rounding of the threshold may flip a spike).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                scale = 2.0 / fan_in**0.5
                m.weight.copy_(torch.round(torch.randn(m.weight.shape, generator=gen) * scale * 64) / 64)
                if m.bias is not None:
                    m.bias.copy_(torch.round(torch.randn(m.bias.shape, generator=gen) * 8) / 64)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.eps = 0.0
                m.running_var.fill_(1.0)
                m.running_mean.copy_(torch.round(torch.randn(n, generator=gen) * 2) / 16)
                m.weight.copy_(torch.round(torch.rand(n, generator=gen) * 8 + 4) / 8)
                m.bias.copy_(torch.round(torch.randn(n, generator=gen) * 2 + 1) / 16)


def random_inputs(model, rng: np.random.Generator, batch: int = 2, density: float = 0.3) -> dict:
    """Sparse ternary event frames (stereo) or images (classification), float32."""
    inp = model.genotype.input
    shape = (batch, inp.in_channels, inp.height, inp.width)
    out = {}
    for name in model.input_names:
        if inp.encoding == "image":
            out[name] = (np.round(rng.standard_normal(shape) * 8) / 8).astype(np.float32)  # dyadic
        else:
            mask = rng.random(shape) < density
            out[name] = (np.sign(rng.standard_normal(shape)) * mask).astype(np.float32)
    return out


def step_both(model, session, steps: int, seed: int = 0, batch: int = 2):
    """Run torch (eval) and ONNX Runtime side by side with carried state; yield per-step results.

    Yields (torch_out, torch_state, ort_outputs) where ort_outputs maps output name -> array.
    """
    import torch

    rng = np.random.default_rng(seed)
    names = [n for n, _ in model.state_shapes()]
    state = model.initial_state(batch)
    ort_state = {f"state_in.{n}": state[n].numpy() for n in names}
    out_names = [o.name for o in session.get_outputs()]
    for _ in range(steps):
        x = random_inputs(model, rng, batch)
        with torch.no_grad():
            out, state = model({k: torch.from_numpy(v) for k, v in x.items()}, state)
        res = dict(zip(out_names, session.run(None, {**x, **ort_state}), strict=True))
        ort_state = {f"state_in.{n}": res[f"state_out.{n}"] for n in names}
        yield out, state, res

def ort_session(proto):
    """An ONNX Runtime CPU session of ``proto`` (an ONNX model proto) on one intra-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def spiking_conv(shape, weight, bias=None, **attrs):
    """A one-conv graph ``y = conv(x >= 0.5)`` (input ``x`` of ``shape``, batch free; ``bias`` optional):
    the pattern ``runtime.quantize.quantize_int8`` puts in QDQ form."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.float32(0.5), "th"), numpy_helper.from_array(weight, "w")]
    ins = ["s", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
        ins.append("b")
    nodes = [helper.make_node("GreaterOrEqual", ["x", "th"], ["ge"]),
             helper.make_node("Cast", ["ge"], ["s"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ins, ["y"], **attrs)]
    dims = ["batch", weight.shape[0], *[f"d{i}" for i in range(len(shape) - 2)]]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def assert_graphs_step_alike(first, second, steps: int = 30, seed: int = 0, batch: int = 2) -> dict:
    """Step two stereo graphs (ONNX protos) side by side with their own carried state on the same random
    event frames; every output (data, every state, every spike count) must be the same bits at every
    step. Returns the last step's outputs."""
    sessions = [ort_session(p) for p in (first, second)]
    inputs = {i.name: i for i in sessions[0].get_inputs()}
    state = [{k: np.zeros([batch, *i.shape[1:]], np.float32) for k, i in inputs.items() if k.startswith("state_in.")}
             for _ in sessions]
    rng = np.random.default_rng(seed)
    outs: list[dict] = []
    for t in range(steps):
        feed = {k: rng.choice(np.array([-1, 0, 1], np.float32), size=[batch, *i.shape[1:]], p=[0.1, 0.8, 0.1])
                for k, i in inputs.items() if not k.startswith("state_in.")}
        outs = []
        for k, s in enumerate(sessions):
            names = [o.name for o in s.get_outputs()]
            outs.append(dict(zip(names, s.run(None, {**feed, **state[k]}), strict=True)))
            state[k] = {n.replace("state_out.", "state_in.", 1): v for n, v in outs[k].items()
                        if n.startswith("state_out.")}
        for key, want in outs[1].items():
            assert outs[0][key].tobytes() == want.tobytes(), f"step {t}: {key}"
    return outs[1]

# A tiny SpikeDHS search space over the CIFAR genotype (2 layers, 3 candidates): the search tests' own.
TINY_SEARCH_SPACE = f"""search_space: 1
base: {GENOTYPES / "cifar10.yaml"}
candidates: [{{op: conv3x3, b: 3}}, {{op: conv3x3, b: 5}}, {{op: skip}}]
nodes: 2
networks:
  backbone: {{cell: cell, layers: 2, start_level: 0, end_level: 1}}
"""
