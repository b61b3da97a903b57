"""``SNN_MALLOC`` (training/allocator.py): freed memory kept for the next step, the same values, bad values refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import training.allocator as allocator
from tests.helpers import GENOTYPES, ROOT
from training.errors import TrainError

GLIBC = allocator._glibc() is not None
# Allocates and touches 256 MiB in one block, frees it, and prints the resident memory before and after the free.
PROBE = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from training.allocator import configure
print(configure(), file=sys.stderr)
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
x = np.ones(256 << 18, dtype=np.float32)
held = rss()
del x
print(held, rss())
"""


def _probe(value: str) -> tuple[int, int]:
    env = {**os.environ, "SNN_MALLOC": value}
    done = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT))], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    held, after = map(int, done.stdout.split())
    return held, after


@pytest.mark.skipif(not GLIBC or not os.path.exists("/proc/self/status"), reason="glibc on Linux only")
def test_keep_holds_a_freed_block_and_system_gives_it_back():
    held, after = _probe("keep")
    assert after > held - (64 << 10), (held, after)  # the 256 MiB stay mapped for the next allocation
    held, after = _probe("system")
    assert after < held - (200 << 10), (held, after)  # glibc's own choice: the block was unmapped


@pytest.mark.parametrize("value, expected", [(None, "keep"), ("", "keep"), ("  ", "keep"), ("keep", "keep"),
                                             (" system ", "system")])
def test_the_choice_defaults_to_keep(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(allocator.ENV, raising=False)
    else:
        monkeypatch.setenv(allocator.ENV, value)
    assert allocator.choice() == expected


@pytest.mark.parametrize("value", ["bad", "Keep", "0", "system,keep"])
def test_a_bad_value_is_one_line(monkeypatch, value):
    monkeypatch.setenv(allocator.ENV, value)
    with pytest.raises(TrainError) as err:
        allocator.configure()
    assert "SNN_MALLOC" in str(err.value) and repr(value) in str(err.value) and "\n" not in str(err.value)


def test_what_the_log_says(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.configure() == "malloc as the system set it (SNN_MALLOC=system)"
    monkeypatch.setenv(allocator.ENV, "keep")
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.configure() == "malloc as the system set it (not glibc)"


SMALL = ("input.height=8", "input.width=8", "input.channels=1", "networks.backbone.node_channels=[4,8]",
         "networks.backbone.layers[0].channels=4", "networks.backbone.layers[2].channels=8")


def _train(out, value: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.train", str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "--out", str(out),
           "--data", "digits", "--epochs", "1", "--max-batches", "3", "--batch-size", "16", "--threads", "1",
           *[a for s in SMALL for a in ("--set", s)]]
    env = {**os.environ, "SNN_MALLOC": value, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_run_trains_the_same_weights_either_way_and_says_how(tmp_path):
    runs = {}
    for value in ("keep", "system"):
        done = _train(tmp_path / value, value)
        assert done.returncode == 0, done.stderr
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("execution:"))
        assert f"SNN_MALLOC={value})" in line or not GLIBC, line
        runs[value] = torch.load(tmp_path / value / "last.pt", weights_only=True)["model"]
    assert runs["keep"].keys() == runs["system"].keys()
    for k, v in runs["keep"].items():
        assert torch.equal(v, runs["system"][k]), k


def test_training_refuses_a_bad_value_in_one_line(tmp_path):
    done = _train(tmp_path / "run", "nonsense")
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: SNN_MALLOC='nonsense'") and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_a_bad_value_in_one_line(tmp_path):
    env = {**os.environ, "SNN_MALLOC": "nonsense", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "training.evaluate", str(ROOT / "models" / "stereo_small.pt"),
                           "--val-seeds", "0", "--seconds", "0.1"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: SNN_MALLOC='nonsense'") and "\n" not in err, err


def test_bench_transfer_refuses_a_bad_value_in_one_line():
    env = {**os.environ, "SNN_MALLOC": "nonsense", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_transfer.py"), "--snn",
                           str(ROOT / "models" / "stereo_small.pt"), "--seeds", "1000", "--seconds", "0.1",
                           "--constant", "2.89"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: SNN_MALLOC='nonsense'") and "\n" not in err, err
