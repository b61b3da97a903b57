"""The prepared GPU check (benchmarks/gpu_check.sh, gpu_check.py), dry-run on the CPU at the small size:
every check it makes runs here, so the lent CUDA machine only changes the device."""

from __future__ import annotations

import subprocess
import sys

import torch
from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_cpu_dry_run_passes_every_check(capsys):
    threads = torch.get_num_threads()
    try:
        rc = gpu_check.main(["--device", "cpu", "--size", "small", "--train-steps", "3", "--agree-steps", "2",
                             "--speed-steps", "2", "--no-compile"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in out.splitlines() if line.startswith("| ")}
    assert rows["train"] == rows["agree"] == rows["speed eager"] == "PASS"
    assert out.rstrip().splitlines()[-1].startswith("PASS")


def test_training_check_fails_when_the_loss_does_not_fall(capsys, monkeypatch):
    import training.loop

    results = []  # an optimiser that does not move the weights: the loss stays where it was
    monkeypatch.setattr(training.loop, "make_optimizer", lambda cfg, params: (torch.optim.SGD(params, lr=0.0), None))
    gpu_check.check_training("cpu", gpu_check.SMALL, 3, lambda check, ok, detail: results.append(ok))
    assert results == [False]


def test_cuda_request_without_cuda_is_one_line():
    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cuda"],
                          capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda") and proc.stderr.count("\n") == 1


def test_shell_script_runs_the_check_on_cuda_with_the_images_python():
    script = (ROOT / "benchmarks/gpu_check.sh").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0
    assert "PYTHONPATH=." in script and "python3 benchmarks/gpu_check.py --device cuda" in script
    assert "pip install" not in script


def test_dry_run_steps_the_exported_graph_and_paper_width_is_the_benchmarks():
    from deploy_graphs import PAPER_WIDTH

    assert gpu_check.PAPER_WIDTH == PAPER_WIDTH
    rows = []
    gpu_check.check_onnx("cpu", [("small", gpu_check.SMALL)], 2, lambda check, ok, detail: rows.append((check, detail)))
    assert [c for c, _ in rows] == ["onnx cpu"]
    assert "steps/s" in rows[0][1] and "largest difference 0" in rows[0][1]  # the CPU provider against itself
