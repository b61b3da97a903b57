"""The models pinned by the golden files of ``tests/kept/`` (see ``tests/kept/make_kept.py``)."""

from __future__ import annotations

import zlib

import numpy as np
from helpers import GENOTYPES, ROOT, SMALL

# name -> how to build it: genotype stem, overrides, weights ("named" or a checkpoint), export options.
# The golden files were exported before issue 19 gave a node under mixing at the spike its spiking function:
# every case pins the semantics they hold, the plain sum of spikes (``mixing: spike_sum``).
OLD_NODES = {"mixing": "spike_sum"}
# Issue 19 made the shipped SNASNet genotype the published network (LIF-conv-BN cells, vectorize head): the
# golden files pin the file as it was, kept verbatim under tests/kept/genotypes/ (same relative path, so the
# --check table, which names the file, is the same when run from tests/kept).
KEPT_ROOT = ROOT / "tests" / "kept"
GENOTYPE_ROOTS = {"snasnet_cifar10_bw": KEPT_ROOT}  # stem -> the folder holding genotypes/STEM.yaml
CASES = {
    "stereo_small_trained": {"stem": "stereo_small", "weights": KEPT_ROOT / "stereo_small_spike_sum.pt",
                             "overrides": OLD_NODES},
    "stereo_small_trained_nofold": {"stem": "stereo_small", "weights": KEPT_ROOT / "stereo_small_spike_sum.pt",
                                    "overrides": OLD_NODES, "export": {"fold": False, "factorize": False}},
    "stereo_small_trained_int8": {"stem": "stereo_small", "weights": KEPT_ROOT / "stereo_small_spike_sum.pt",
                                  "overrides": OLD_NODES, "int8": True},
    "stereo_relu_trained": {"stem": "stereo_small", "weights": KEPT_ROOT / "stereo_small_relu_spike_sum.pt",
                            "overrides": {"neuron.kind": "relu", **OLD_NODES}},
    "stereo": {"stem": "stereo", "overrides": {**SMALL["stereo"], **OLD_NODES}},
    "cifar10": {"stem": "cifar10", "overrides": {**SMALL["cifar10"], **OLD_NODES}},
    "snasnet_cifar10_bw": {"stem": "snasnet_cifar10_bw", "overrides": {**SMALL["snasnet_cifar10_bw"], **OLD_NODES}},
}
NIR_CASES = {"cifar10_nir": CASES["cifar10"], "snasnet_cifar10_bw_nir": CASES["snasnet_cifar10_bw"]}
CHECK_GENOTYPES = ["stereo", "stereo_small", "cifar10", "snasnet_cifar10_bw"]  # checked with OLD_NODES


def named_weights(model) -> None:
    """Fill every floating-point parameter and BatchNorm statistic from a generator seeded by the tensor's
    name: the same weights whatever order the modules are created in. Time constants and surrogate
    temperatures (buffers the genotype sets) are left as built."""
    import torch

    with torch.no_grad():
        for name, t in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if not t.is_floating_point() or leaf in ("tau", "b"):
                continue
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            if leaf == "running_var":
                values = rng.uniform(0.5, 1.5, t.shape)
            elif leaf == "running_mean" or leaf == "bias":
                values = rng.normal(0.05, 0.1, t.shape)
            elif leaf == "weight" and t.dim() == 1:  # BatchNorm scale
                values = rng.uniform(0.7, 1.3, t.shape)
            else:  # conv / linear weights: variance large enough that neurons fire
                fan_in = int(np.prod(t.shape[1:])) if t.dim() > 1 else 1
                values = rng.normal(0.0, 2.0 / np.sqrt(fan_in), t.shape)
            t.copy_(torch.from_numpy(values.astype(np.float32)))


def build_case(case: dict):
    from compiler import build_model, load_genotype
    from compiler.build import load_weights

    folder = GENOTYPE_ROOTS[case["stem"]] / "genotypes" if case["stem"] in GENOTYPE_ROOTS else GENOTYPES
    g = load_genotype(folder / f"{case['stem']}.yaml", overrides=case.get("overrides", {}))
    model = build_model(g)
    if "weights" in case:
        load_weights(model, str(case["weights"]))
    else:
        named_weights(model)
    return model.eval()
