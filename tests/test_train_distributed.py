"""torchrun with 2 CPU processes (gloo) trains, and ends where one process on the same global batch ends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import GENOTYPES, ROOT

ARGS = [str(GENOTYPES / "cifar10.yaml"), "--data", "digits", "--epochs", "1", "--max-batches", "2",
        "--batch-size", "16", "--timesteps", "2", "--quiet", "--no-tensorboard", "--threads", "1",
        "--set", "input.height=8", "--set", "input.width=8", "--set", "input.channels=1",
        "--set", "networks.backbone.node_channels=[4,4,8]", "--set", "networks.backbone.layers[0].channels=8"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    """Run in a new session; on timeout kill the whole group (torchrun's workers included)."""
    import signal

    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_gloo_processes_match_one_process(tmp_path):
    one = _run([sys.executable, "-m", "training.train", *ARGS, "--out", str(tmp_path / "one")], 120)
    assert one.returncode == 0, one.stderr
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                "-m", "training.train", *ARGS, "--out", str(tmp_path / "two")], 180)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert b["config"]["batch_size"] == 16
    import yaml

    assert yaml.safe_load((tmp_path / "two" / "config.yaml").read_text())["world_size"] == 2
    # two processes on one CPU machine: the log advises threads, once (rank 0); one process: no such line
    advice = "processes: 2 on one CPU machine (gloo)"
    assert (two.stdout + two.stderr).count(advice) == 1, two.stdout[-2000:]
    assert "processes:" not in one.stdout + one.stderr
    worst = 0.0
    for key, t in a["model"].items():
        if t.is_floating_point():
            diff = float((t - b["model"][key]).abs().max())
            worst = max(worst, diff)
            assert torch.allclose(t, b["model"][key], rtol=1e-3, atol=1e-4), (key, diff)
        else:
            assert torch.equal(t, b["model"][key]), key
    # the weights did move: the comparison is not trivially between two initialisations
    init_moved = a["history"][0]["train_loss"] > 0
    assert init_moved and worst < 1e-4


def test_global_batchnorm_normalises_stacked_steps_as_separate_calls():
    """``GlobalBatchNorm.forward_chunks`` (one all-reduce for the T steps a multistep layer stacks) computes what
    one call per step computes: outputs, the gradients of input, weight and bias, and the running averages
    updated step after step (float64, a one-process gloo group; 2-D and 3-D, plain and channels-last)."""
    import torch.distributed as dist

    from training.distributed import GlobalBatchNorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        for shape, chunks, layout in (((12, 5, 7, 9), 6, torch.contiguous_format),
                                      ((12, 5, 7, 9), 4, torch.channels_last), ((8, 3, 4, 5, 6), 4, None)):
            a = GlobalBatchNorm(shape[1], momentum=0.3).double()
            with torch.no_grad():
                a.weight.uniform_(0.5, 1.5)
                a.bias.uniform_(-0.5, 0.5)
            b = GlobalBatchNorm(shape[1], momentum=0.3).double()
            b.load_state_dict(a.state_dict())
            x = (torch.randn(shape, dtype=torch.float64) * 2 + 1)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya = a.forward_chunks(xa, chunks)
            yb = torch.cat([b(c) for c in xb.chunk(chunks)])
            g = torch.randn(shape, dtype=torch.float64)
            (ya * g).sum().backward()
            (yb * g).sum().backward()
            assert torch.allclose(ya, yb, rtol=0, atol=1e-12)
            assert torch.allclose(xa.grad, xb.grad, rtol=0, atol=1e-12)
            for pa, pb in ((a.weight.grad, b.weight.grad), (a.bias.grad, b.bias.grad)):
                assert torch.allclose(pa, pb, rtol=0, atol=1e-12)
            for key, t in a.state_dict().items():
                assert torch.allclose(t.double(), b.state_dict()[key].double(), rtol=0, atol=1e-12), key
            assert int(a.num_batches_tracked) == chunks
            # each step its own statistics: not one normalisation over the whole stacked batch
            whole = torch.nn.functional.batch_norm(x, None, None, a.weight, a.bias, True, 0.0, a.eps)
            assert not torch.allclose(ya, whole, atol=1e-3)
    finally:
        dist.destroy_process_group()


def test_the_one_machine_advice_only_where_cpu_processes_share_one_machine(monkeypatch):
    from training.distributed import Dist, one_machine_note

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    note = one_machine_note(Dist(0, 2), "cpu")
    assert note is not None and note.startswith("processes: 2 on one CPU machine") and "--threads 2" in note
    assert one_machine_note(Dist(), "cpu") is None  # one process
    assert one_machine_note(Dist(0, 2), "cuda") is None  # GPUs: NCCL, one device per process
    for local in ("1", "", "x", " "):  # several machines (or no torchrun): nothing to advise
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
        assert one_machine_note(Dist(0, 2), "cpu") is None, local
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert one_machine_note(Dist(0, 2), "cpu") is None


@pytest.mark.parametrize("distill", [False, True])
def test_a_stereo_run_under_two_processes_matches_one_process(tmp_path, distill):
    """A stereo run (multistep: the feature network runs its two views, and its BatchNorm's running averages
    are updated view after view step by step, as in one process) under torchrun: the loss of the first batch is
    one process's within float rounding, and the step ends where one process's does, running averages included
    (they once drifted by 1e-3: the two views' updates were applied view after view, not step by step). With
    ``--distill`` each process's teacher scores its slice of the global batch, and is named once. One batch:
    later batches of a spiking stereo model drift apart by spikes flipped at the threshold; SGD, as Adam's first
    step (the gradient over its own magnitude) turns the rounding of a near-zero gradient into a step of lr."""
    from tests.helpers import SMALL
    from tests.test_train_distill import _teacher_file

    args = [str(GENOTYPES / "stereo.yaml"), "--epochs", "1", "--windows", "2", "--burn-in", "1", "--batch-size", "2",
            "--train-seeds", "100", "--val-seeds", "0", "--seconds", "0.6", "--threads", "1", "--quiet",
            "--no-tensorboard", "--max-batches", "1", "--exec", "multistep", "--optimizer", "sgd"]
    if distill:
        _teacher_file(tmp_path / "teacher.pt")
        args += ["--distill", str(tmp_path / "teacher.pt"), "--distill-weight", "0.5"]
    for key, value in SMALL["stereo"].items():
        args += ["--set", f"{key}={value}"]
    one = _run([sys.executable, "-m", "training.train", *args, "--out", str(tmp_path / "one")], 300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                "-m", "training.train", *args, "--out", str(tmp_path / "two")], 400)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (two.stdout + two.stderr).count("distilling from") == int(distill), two.stdout[-2000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert a.get("distill_sha256") == b.get("distill_sha256")
    loss_a, loss_b = a["history"][0]["train_loss"], b["history"][0]["train_loss"]
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_a), (loss_a, loss_b)
    for key, t in a["model"].items():
        if t.is_floating_point():
            diff = float((t - b["model"][key]).abs().max())
            assert diff <= 1e-6, (key, diff)
        else:
            assert torch.equal(t, b["model"][key]), key
