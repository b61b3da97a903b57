"""SNASNet as published (issue 19): the paper's LIF-conv-BN cell with currents summed at the node
(``mixing: current``), the authors' vectorize head and macro network, so that the shipped SNASNet-Bw genotype
has the paper's parameter count (supplement Table 1: 20.62M on CIFAR-100); torch, ONNX and NIR agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import GENOTYPES, ROOT, small_genotype

from compiler import build_model, load_genotype
from compiler.interpret import submodule
from compiler.planner import plan

PAPER_PARAMS = 20.62e6  # SNASNet-Bw, CIFAR-100, supplement Table 1
STEM = "snasnet_cifar10_bw"


def test_shipped_snasnet_bw_has_the_papers_parameter_count_with_100_classes():
    p = plan(load_genotype(GENOTYPES / f"{STEM}.yaml", overrides={"head.classes": 100}))
    assert abs(p.params - PAPER_PARAMS) / PAPER_PARAMS < 0.05, p.params
    old = plan(load_genotype(ROOT / "tests/kept/genotypes" / f"{STEM}.yaml", overrides={"head.classes": 100}))
    assert abs(old.params - PAPER_PARAMS) / PAPER_PARAMS > 0.5, old.params  # the genotype before issue 19


def test_check_table_prints_the_head_and_its_parameters(capsys):
    from compiler.build import main

    assert main([str(GENOTYPES / f"{STEM}.yaml"), "--check", "--set", "head.classes=100"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("head "))
    # 16384 -> 1024 without bias, 1024 -> 10 x 100 with bias
    assert f"{16384 * 1024 + 1025 * 1000:,}" in head, head
    assert "mixing at the current" in out


def test_the_lowering_puts_the_neuron_before_the_conv_and_sums_currents():
    g = small_genotype(STEM)
    nodes = {n.name: n for n in plan(g).graph}
    convs = [n for n in nodes.values() if n.kind == "op" and n.attrs["kind"] == "conv"]
    assert nodes["backbone.stem:op"].inputs == ("image",)  # the stem has no neuron
    for conv in convs:
        if conv.name != "backbone.stem:op":
            assert nodes[conv.inputs[0]].kind == "neuron", conv.name  # LIF-conv-BN
    skip = nodes["backbone.cell0.n0.0:op"]
    assert skip.attrs["op"] == "skip" and nodes[skip.inputs[0]].kind == "op"  # a skip carries the stem's current
    total = nodes["backbone.cell0.n0:sum"]
    assert all(nodes[i].kind != "neuron" for i in total.inputs)  # the node sums currents
    kinds = [n.kind for n in plan(g).graph if n.path.startswith("head.vectorize")]
    assert kinds == ["neuron", "avgpool", "linear", "neuron", "linear", "group_mean"]


def _conv_input_values(model, steps: int = 5) -> dict[str, set[float]]:
    seen: dict[str, set[float]] = {}
    hooks = []
    for node in model.plan.graph:
        if node.kind == "op" and node.attrs["kind"] == "conv" and node.name != "backbone.stem:op":
            def record(module, args, key=node.name):
                seen.setdefault(key, set()).update(torch.unique(args[0]).tolist())
            hooks.append(submodule(model, node.module).register_forward_pre_hook(record))
    gen = torch.Generator().manual_seed(0)
    state = model.initial_state(2)
    with torch.no_grad():
        for _ in range(steps):
            _, state = model({"image": torch.rand(2, 3, 16, 16, generator=gen) * 4}, state)
    for h in hooks:
        h.remove()
    return seen


def test_every_conv_after_the_stem_reads_binary_spikes():
    model = build_model(small_genotype(STEM)).eval()
    seen = _conv_input_values(model)
    assert len(seen) == 13  # 6 per cell and the reduction conv
    assert {k: v for k, v in seen.items() if not v <= {0.0, 1.0}} == {}
    assert any(1.0 in v for v in seen.values())


def test_vectorize_head_is_the_authors_layout():
    model = build_model(small_genotype(STEM)).eval()
    assert model.vectorize.bias is None and model.classifier.out_features == 10 * 10
    logits = torch.arange(100.0).unsqueeze(0)
    node = next(n for n in model.plan.graph if n.kind == "group_mean")
    from compiler.interpret import HANDLERS

    out = HANDLERS["group_mean"].run(node, None, [logits], None)
    torch.testing.assert_close(out, logits.view(1, 10, 10).mean(2))  # consecutive groups (AvgPool1d)


def test_onnx_parity_over_steps(tmp_path):
    import onnxruntime as ort
    from helpers import make_exact, step_both

    from compiler.export import export_onnx

    model = build_model(small_genotype(STEM)).eval()
    make_exact(model)
    export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    fired = 0.0
    for out, _, res in step_both(model, session, 12):
        for name, spikes in out["spikes"].items():
            np.testing.assert_array_equal(res[f"spikes.{name}"], spikes.numpy(), err_msg=name)
            fired += float(spikes.sum())
        np.testing.assert_allclose(res["logits"], out["logits"].numpy(), rtol=1e-4, atol=1e-4)
    assert fired > 0


def test_nir_export_has_the_vectorize_block():
    from compiler.nir_export import to_nir

    graph = to_nir(build_model(small_genotype(STEM)).eval())
    for name in ("head.spikes", "head.pool", "head.vectorize.flatten", "head.vectorize", "head.hidden",
                 "head.linear", "head.group_mean"):
        assert name in graph.nodes, name
    assert "backbone.stem" not in graph.nodes  # the stem has no neuron


@pytest.mark.parametrize("sets", [{"head.vectorize.pool": 64}, {"head.vectorize.groups": 0}])
def test_vectorize_errors_are_located(sets):
    from compiler.errors import GenotypeError

    with pytest.raises(GenotypeError) as err:
        small_genotype(STEM, **sets)
    assert "head.vectorize" in str(err.value)


def test_searchers_see_the_backbones_neurons_and_a_head_neuron_is_refused_by_name():
    from compiler.edit import locate, neuron_layer_names
    from compiler.errors import GenotypeError

    g = small_genotype(STEM)
    names = neuron_layer_names(g)
    assert "backbone.reduce" in names and not any(n.startswith("head.") for n in names)
    with pytest.raises(GenotypeError, match="top-level neuron"):
        locate(g, "head.hidden")
