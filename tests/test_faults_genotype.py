"""Hostile genotypes, overrides and weight files (issue 12): each is one located line and exit code 2,
never a traceback, a hang or a silently accepted value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import GENOTYPES, ROOT

from compiler import GenotypeError, loads_genotype
from compiler.build import main
from compiler.names import RESERVED_NAMES
from compiler.yamlio import MAX_BYTES, MAX_DEPTH

CIFAR = (GENOTYPES / "cifar10.yaml").read_text()
STEREO = (GENOTYPES / "stereo.yaml").read_text()
SMALL_CIFAR = ["--set", "input.height=8", "--set", "input.width=8", "--set", "networks.backbone.node_channels=[4,4,8]",
               "--set", "networks.backbone.layers[0].channels=8"]


def cli_error(tmp_path, capsys, text: str, *extra: str) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    code = main([str(path), "--check", "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def test_a_25_mb_yaml_list_is_refused_by_its_size_before_parsing(tmp_path, capsys):
    text = "a: [" + "1," * 12_500_000 + "1]\n"
    err = cli_error(tmp_path, capsys, text)
    assert f"more than the limit of {MAX_BYTES:,}" in err  # the byte limit, not the value count after parsing


@pytest.mark.parametrize("where", ["file", "set"])
def test_10000_deep_nesting_is_refused(tmp_path, capsys, where):
    deep = "[" * 10_000 + "]" * 10_000
    if where == "file":
        err = cli_error(tmp_path, capsys, f"schema: 1\nmeta: {deep}\n")
        assert ":2:" in err
    else:
        err = cli_error(tmp_path, capsys, CIFAR, "--set", f"meta.x={deep}")
        assert err.startswith("error: --set meta.x=[[[") and len(err) < 300
    assert f"nested more than {MAX_DEPTH} levels deep" in err


def test_self_referencing_alias_is_a_located_error(tmp_path, capsys):
    text = CIFAR + "x: &m {a: [1, *m]}\n"
    err = cli_error(tmp_path, capsys, text)
    assert f":{line_of(text, 'x: &m')}: x.a[1]: " in err and "a cycle" in err


def test_dotted_top_level_key_is_located_and_not_blamed_on_set(tmp_path, capsys):
    text = CIFAR + "input.height: 5\n"
    err = cli_error(tmp_path, capsys, text, "--set", "input.height=9")
    assert err.startswith(f"error: {tmp_path / 'g.yaml'}:{line_of(text, 'input.height: 5')}: ")
    assert "unknown key 'input.height'" in err and "nested" in err


def test_unclosed_bracket_in_set_is_refused(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, CIFAR, "--set", "networks.backbone.layers[1.channels=4")
    assert "bad key 'networks.backbone.layers[1.channels'" in err


@pytest.mark.parametrize("old, new, path, marker", [
    ("n0: {inputs:", '"n.0": {inputs:', 'cells.cell.nodes["n.0"]', "n.0"),  # a dot: joined names would collide
    ("n0: {inputs:", "keys: {inputs:", "cells.cell.nodes.keys", "keys:"),  # a name torch's ModuleDict refuses
    ("name: stem", "name: cell0.n1", "networks.backbone.layers[0].name", "cell0.n1"),  # cell0's node n1, flattened
    ("backbone:\n    dims", "training:\n    dims", "networks.training", "training:"),
])
def test_names_that_would_collide_are_refused_where_they_are(tmp_path, capsys, old, new, path, marker):
    assert old in CIFAR, old
    text = CIFAR.replace(old, new, 1)
    err = cli_error(tmp_path, capsys, text)
    assert f":{line_of(text, marker)}: {path}: " in err and ("bad" in err or "reserved" in err), err


def test_reserved_names_cover_torch_module_dict():
    import re

    names = {n for n in dir(torch.nn.ModuleDict()) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) and n[0] != "_"}
    assert names <= RESERVED_NAMES


@pytest.mark.parametrize("key, value", [
    ("neuron.threshold", ".nan"), ("neuron.threshold", ".inf"), ("neuron.surrogate.b", ".nan"),
    ("neuron.surrogate.b", "-.inf"), ("neuron.tau", ".nan"), ("input.window_ms", ".nan"),
    ("input.window_ms", ".inf"), ("neuron.threshold", "1.0e+400"),
])
def test_non_finite_genotype_values_are_refused(tmp_path, capsys, key, value):
    err = cli_error(tmp_path, capsys, STEREO, "--set", f"{key}={value}")
    assert err.startswith(f"error: --set {key}={value}: {key}: ") and "finite" in err


def test_huge_integer_for_a_number_is_refused():
    with pytest.raises(GenotypeError, match="too large"):
        loads_genotype(CIFAR, overrides={"neuron.threshold": 10**400})


def test_window_too_short_for_its_bins_says_so(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, STEREO, "--set", "input.window_ms=0.0001")
    assert "input.window_ms: must be >= 0.001" in err
    err = cli_error(tmp_path, capsys, STEREO, "--set", "input.window_ms=0.004", "--set", "input.bins=5")
    assert "cannot hold 5 bins" in err


def test_memory_estimate_counts_the_auxiliary_head(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, CIFAR, "--set", "head.aux.channels=300000000")
    assert "GiB for its weights" in err


def test_a_model_this_machine_cannot_allocate_is_one_line(tmp_path):
    """Under the planner's 16 GiB limit but over what the process may allocate (RLIMIT_AS)."""
    out = tmp_path / "m.onnx"
    code = f"""
import resource, sys
import compiler.build as b, compiler.model, torch
vm = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize'))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 100 * 2**20, resource.RLIM_INFINITY))
sys.exit(b.main([{str(GENOTYPES / 'cifar10.yaml')!r}, '--quiet', '-o', {str(out)!r}, '--set', 'input.channels=1',
                 '--set', 'head.classes=400000', *{SMALL_CIFAR!r}]))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "cannot allocate the model" in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from compiler import build_model, load_genotype

    g = load_genotype(GENOTYPES / "cifar10.yaml", overrides=[s for s in SMALL_CIFAR if s != "--set"])
    return build_model(g).state_dict(), tmp_path_factory.mktemp("w")


@pytest.mark.parametrize("case, message", [
    ("nan", "non-finite values"), ("list", "is a list, not a tensor"), ("int", "is a int, not a tensor"),
    ("dtype", "is torch.int64"), ("folder", "is a folder"),
])
def test_bad_weights_are_one_line(weights, tmp_path, capsys, case, message):
    state, folder = weights
    state = dict(state)
    key = next(k for k, v in state.items() if v.is_floating_point())
    path = folder / f"{case}.pt"
    if case == "nan":
        state[key] = torch.full_like(state[key], float("nan"))
    elif case == "list":
        state[key] = [1.0, 2.0]
    elif case == "int":
        state[key] = 3
    elif case == "dtype":
        state[key] = state[key].to(torch.int64)
    if case == "folder":
        path = folder
    else:
        torch.save({"model": state}, path)
    code = main([str(GENOTYPES / "cifar10.yaml"), "--quiet", "-o", str(tmp_path / "m.onnx"), "--weights", str(path),
                 *SMALL_CIFAR])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "m.onnx").exists()
