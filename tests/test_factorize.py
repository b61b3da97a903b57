"""The cost-volume factorisation (compiler.factorize): exact against the 3-D convolution of the volume,
border cases included; the factorised model and graph give the outputs of the unfactorised ones in
torch and in ONNX Runtime over many steps; the contract and the metadata say what was applied."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers import make_exact, small_genotype

from compiler import build_model
from compiler.export import to_onnx
from compiler.factorize import CostVolumeConv, factorize_cost_volume, why_not
from compiler.fold import fold_batchnorm
from compiler.onnxgraph import conv_macs
from compiler.ops import cost_volume
from compiler.volume import ViewPair

# (C, C_out, D, h, w, shift, kernel): interior, shifts beyond the width, D = 1 and 2, kernels 1 and 5
CASES = [(3, 4, 5, 6, 7, 1, 3), (3, 4, 6, 5, 9, 2, 3), (2, 3, 9, 4, 5, 1, 3), (2, 3, 4, 4, 6, 3, 3),
         (2, 3, 1, 4, 5, 1, 3), (2, 3, 2, 4, 5, 1, 3), (2, 2, 5, 5, 8, 1, 1), (4, 5, 8, 6, 11, 2, 5)]


def _views(c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple((torch.rand(2, c, h, w, generator=gen) < 0.4).double() for _ in range(2))


@pytest.mark.parametrize("case", CASES)
def test_layer_equals_conv3d_of_the_volume(case):
    c, co, d, h, w, shift, k = case
    torch.manual_seed(sum(case))
    conv = torch.nn.Conv3d(2 * c, co, k, padding=k // 2, bias=True).double()
    left, right = _views(c, h, w, seed=sum(case))
    with torch.no_grad():
        want = conv(cost_volume(left, right, d, shift))
        got = CostVolumeConv(conv, d, shift, (h, w))(ViewPair(left, right, d, shift))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_the_borders_are_what_a_naive_shift_gets_wrong():
    """Shifting one conv2d of the right view (zero-filled) differs from the volume's convolution at the
    left edge of each shifted map and at the last column; the factorised layer does not."""
    c, co, d, h, w, shift = 3, 4, 5, 6, 9, 1
    conv = torch.nn.Conv3d(2 * c, co, 3, padding=1, bias=False).double()
    left, right = _views(c, h, w, seed=5)
    with torch.no_grad():
        want = conv(cost_volume(left, right, d, shift))
        wl, wr = conv.weight[:, :c], conv.weight[:, c:]
        naive = []
        for disp in range(d):
            total = 0
            for t in range(3):
                src = disp + t - 1
                if 0 <= src < d:
                    a = F.conv2d(right, wr[:, :, t], padding=1)
                    a = F.pad(a, (src * shift, 0))[..., :w]
                    total = total + F.conv2d(left, wl[:, :, t], padding=1) + a
            naive.append(total)
        naive = torch.stack(naive, dim=2)
    wrong = (naive - want).abs().amax(dim=(0, 1, 2, 3)) > 1e-9  # per column
    assert wrong[-1] and wrong[:-1].any()  # the last column and the shifted maps' left edges
    got = CostVolumeConv(conv, d, shift, (h, w))(ViewPair(left, right, d, shift))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fold", [True, False])
def test_factorised_model_steps_like_the_original(fold):
    torch.manual_seed(0)
    model = build_model(small_genotype("stereo")).eval()
    make_exact(model)
    base = fold_batchnorm(model) if fold else model
    fac, record = factorize_cost_volume(base)
    assert record["layer"] == "matching.stem0" and record["macs_after"] < record["macs_before"]
    assert type(base.nets["matching"].layers[0].op).__name__ != "CostVolumeConv"  # input left as it was
    rng = np.random.default_rng(0)
    s1, s2 = base.initial_state(2), fac.initial_state(2)
    spikes = 0.0
    with torch.no_grad():
        for _ in range(12):
            x = {k: torch.from_numpy((np.sign(rng.standard_normal((2, 5, 24, 32)))
                                      * (rng.random((2, 5, 24, 32)) < 0.3)).astype(np.float32))
                 for k in ("left", "right")}
            o1, s1 = base(x, s1)
            o2, s2 = fac(x, s2)
            for layer, n in o1["spikes"].items():
                torch.testing.assert_close(o2["spikes"][layer], n, rtol=0, atol=0)
                spikes += float(n.sum())
            for key, v in s1.items():
                torch.testing.assert_close(s2[key], v, rtol=0, atol=1e-5)
            torch.testing.assert_close(o2["disparity"], o1["disparity"], rtol=0, atol=1e-4)
    assert spikes > 0 and float(s1["matching.stem0.v"].abs().sum()) > 0


def _pass_names(proto) -> list[str]:
    return [p["pass"] for p in json.loads({m.key: m.value for m in proto.metadata_props}["snn.passes"])]


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def test_factorised_graph_runs_like_the_unfactorised_one_in_onnxruntime():
    torch.manual_seed(1)
    model = build_model(small_genotype("stereo_small")).eval()
    make_exact(model, seed=1)
    plain, fac = to_onnx(model, factorize=False), to_onnx(model)
    # the contract is the same: names, element types and declared shapes of every input and output
    for a, b in ((plain.graph.input, fac.graph.input), (plain.graph.output, fac.graph.output)):
        assert [(v.name, v.type.SerializeToString()) for v in a] == [(v.name, v.type.SerializeToString()) for v in b]
    passes = {p["pass"]: p for p in json.loads({m.key: m.value for m in fac.metadata_props}["snn.passes"])}
    assert list(passes)[:2] == ["fold_batchnorm", "factorize_cost_volume"]
    assert "factorize_cost_volume" not in _pass_names(plain)
    saved = conv_macs(plain)["float"] - conv_macs(fac)["float"]
    assert saved == passes["factorize_cost_volume"]["macs_before"] - passes["factorize_cost_volume"]["macs_after"] > 0
    s_plain, s_fac = _session(plain), _session(fac)
    out_names = [o.name for o in s_fac.get_outputs()]
    rng = np.random.default_rng(2)
    state = {i.name: np.zeros([2, *i.shape[1:]], np.float32)
             for i in s_plain.get_inputs() if i.name.startswith("state_in.")}
    st_plain, st_fac = dict(state), dict(state)
    for _ in range(30):
        x = {k: (np.sign(rng.standard_normal((2, 5, 24, 32))) * (rng.random((2, 5, 24, 32)) < 0.3)).astype(np.float32)
             for k in ("left", "right")}
        r1 = dict(zip(out_names, s_plain.run(out_names, {**x, **st_plain}), strict=True))
        r2 = dict(zip(out_names, s_fac.run(out_names, {**x, **st_fac}), strict=True))
        for name in out_names:
            if name.startswith("spikes."):
                np.testing.assert_array_equal(r2[name], r1[name], err_msg=name)
            else:
                np.testing.assert_allclose(r2[name], r1[name], rtol=0, atol=1e-4, err_msg=name)
        st_plain = {"state_in." + k[len("state_out."):]: v for k, v in r1.items() if k.startswith("state_out.")}
        st_fac = {"state_in." + k[len("state_out."):]: v for k, v in r2.items() if k.startswith("state_out.")}
    assert float(np.abs(st_fac["state_in.matching.stem0.v"]).sum()) > 0


def test_where_it_does_not_apply_it_says_why_and_changes_nothing():
    classifier = build_model(small_genotype("snasnet_cifar10_bw")).eval()
    assert "not a stereo model" in why_not(classifier)
    assert factorize_cost_volume(classifier) == (classifier, None)
    strided = build_model(small_genotype("stereo", **{"networks.matching.layers[0].stride": 2})).eval()
    assert "stride-1" in why_not(strided)
    assert "factorize_cost_volume" not in _pass_names(to_onnx(strided))
