"""--distill: a teacher's matching costs in the stereo loss's target (training.distill): the loss is the mixed
target's cross entropy, the teacher never trains, a run resumes exactly with it and refuses a changed teacher,
and a teacher that cannot teach this model is one clean line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import GENOTYPES, SMALL

torch.set_num_threads(1)


def test_the_mixed_target_is_the_weighted_sum_of_both_cross_entropies():
    from training.losses import subpixel_cross_entropy

    g = torch.Generator().manual_seed(0)
    cost = torch.randn(2, 5, 3, 4, generator=g)
    teacher = torch.randn(2, 5, 3, 4, generator=g)
    gt = torch.rand(2, 3, 4, generator=g) * 8
    gt[0, 0, 0] = float("nan")  # not counted, with or without a teacher
    plain, n = subpixel_cross_entropy(cost, gt, 2.0, 1.0, 8.0)
    zero, n0 = subpixel_cross_entropy(cost, gt, 2.0, 1.0, 8.0, teacher, 0.0)
    assert torch.equal(plain, zero) and int(n) == int(n0) == 23
    logp = torch.log_softmax(-cost, 1)
    mask = torch.isfinite(gt) & (gt > 0) & (gt <= 8.0)
    from_teacher = -(torch.softmax(-teacher, 1) * logp).sum(1)[mask].sum()
    for w in (0.25, 1.0):
        mixed, _ = subpixel_cross_entropy(cost, gt, 2.0, 1.0, 8.0, teacher, w)
        assert float(mixed) == pytest.approx(float((1 - w) * plain + w * from_teacher), rel=1e-6)
    # the model that equals its teacher is where the teacher's term is smallest
    best, _ = subpixel_cross_entropy(teacher, gt, 2.0, 1.0, 8.0, teacher, 1.0)
    assert float(best) < float(from_teacher)
    with pytest.raises(ValueError, match="teacher cost"):
        subpixel_cross_entropy(cost, gt, 2.0, 1.0, 8.0, teacher[:, :4], 0.5)


def _teacher_file(path, **overrides):
    """A stereo model's checkpoint (a ReLU twin by default) as training.checkpoint writes it."""
    from compiler import build_model, load_genotype
    from training.checkpoint import save_atomic

    g = load_genotype(GENOTYPES / "stereo.yaml", overrides={**SMALL["stereo"], "neuron.kind": "relu", **overrides})
    torch.manual_seed(7)
    model = build_model(g)
    with torch.no_grad():  # running statistics that are not the initial ones: evaluation mode must use them
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_atomic({"model": model.state_dict(), "genotype": g.to_yaml()}, path)
    return g, model


def test_the_trainers_loss_mixes_the_teachers_costs_and_the_teacher_never_changes(tmp_path):
    from compiler import build_model, load_genotype
    from training.config import TrainConfig, task_defaults
    from training.data import SyntheticSpec, synthetic_stereo
    from training.distributed import Dist
    from training.execution import stereo_costs
    from training.loop import Trainer
    from training.losses import subpixel_cross_entropy, valid_disparity
    from training.runner import _teacher

    path = tmp_path / "teacher.pt"
    _, reference = _teacher_file(path)
    g = load_genotype(GENOTYPES / "stereo.yaml", overrides=SMALL["stereo"])
    data = synthetic_stereo(SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.6, val_seconds=0.6),
                            height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=3,
                            burn_in=1)
    batch = data.batch([0, 1], (24, 32), np.random.default_rng(0))
    head = g.head
    limit = (head.disparities - 1) * head.disparity_step
    torch.manual_seed(0)
    model = build_model(g)
    for exec_mode in ("eager", "multistep"):
        cfg = task_defaults(TrainConfig(genotype="x", out=str(tmp_path / "run"), windows=2, burn_in=1, batch_size=2,
                                        diversity=2.0, exec=exec_mode, distill=str(path), distill_weight=0.3,
                                        lr=1e-2), g)
        lines = []
        teacher = _teacher(cfg, g, None, lines.append)
        assert lines and lines[0].startswith(f"distilling from {path}") and "neurons relu" in lines[0]
        assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
        reference.eval()
        with torch.no_grad():
            taught = stereo_costs(reference, batch["left"], batch["right"], 1, "eager")
            costs = stereo_costs(model, batch["left"], batch["right"], 1, "eager")
            disp = batch["disparity"][1:]
            count = sum(int(valid_disparity(d, limit).sum()) for d in disp)
            expected = sum(float(subpixel_cross_entropy(c, d, head.disparity_step, 2.0, limit, t, 0.3)[0])
                           for c, d, t in zip(costs, disp, taught, strict=True)) / count
            plain = sum(float(subpixel_cross_entropy(c, d, head.disparity_step, 2.0, limit)[0])
                        for c, d in zip(costs, disp, strict=True)) / count
        trainer = Trainer(cfg, g, model, data, data, Dist(), log=lambda s: None, teacher=teacher)
        with torch.no_grad():
            loss = float(trainer.batch_loss(batch)[0])
        assert loss == pytest.approx(expected, rel=1e-4) and abs(loss - plain) > 1e-3 * abs(plain)
        before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
        trainer.train_step(batch)  # the model learns; the teacher (weights, running statistics) stays as it was
        assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in before.items())
        model = build_model(g)


def _cli_base(tmp_path, out="run"):
    base = [str(GENOTYPES / "stereo.yaml"), "--out", str(tmp_path / out), "--epochs", "2", "--windows", "2",
            "--burn-in", "1", "--batch-size", "2", "--train-seeds", "100", "--val-seeds", "0", "--seconds", "0.6",
            "--threads", "1", "--quiet"]
    for key, value in SMALL["stereo"].items():
        base += ["--set", f"{key}={value}"]
    return base


def test_a_distilled_run_resumes_exactly_and_refuses_a_changed_teacher(tmp_path, capsys):
    from training.train import main

    path = tmp_path / "teacher.pt"
    _teacher_file(path)
    distill = ["--distill", str(path), "--distill-weight", "0.5"]
    assert main([*_cli_base(tmp_path, "full"), *distill]) == 0
    assert "distilling from" in capsys.readouterr().out
    assert main([*_cli_base(tmp_path, "half"), *distill, "--stop-after", "1"]) == 0
    assert main([*_cli_base(tmp_path, "half"), "--resume"]) == 0
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["distill_sha256"] == b["distill_sha256"]
    assert a["config"]["distill"] == str(path) and a["config"]["distill_weight"] == 0.5
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    # the same run without the teacher trains other weights (the option is not ignored)
    assert main([*_cli_base(tmp_path, "plain")]) == 0
    c = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    assert "distill_sha256" not in c and any(not torch.equal(t, c["model"][k]) for k, t in a["model"].items())
    # a teacher file that changed under a stopped run: resume refuses it in one line
    capsys.readouterr()
    assert main([*_cli_base(tmp_path, "changed"), *distill, "--stop-after", "1"]) == 0
    _teacher_file(path, **{"neuron.kind": "lif"})
    assert main([*_cli_base(tmp_path, "changed"), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the file changed since the run started" in err, err


@pytest.mark.parametrize("case, message", [
    ("missing", "no such checkpoint"),
    ("no_genotype", "the checkpoint holds no genotype"),
    ("disparities", "the teacher has 6 disparities, the model 5"),
    ("classifier", "the teacher is a classification model"),
    ("window", "the teacher has 25.0 ms windows, the model 50.0"),
    ("weights", "missing (1 missing, 0 extra)"),
    ("weight_alone", "--distill-weight weighs the teacher of --distill"),
    ("empty", "--distill needs a checkpoint file, got an empty path"),
    ("blank", "--distill needs a checkpoint file, got an empty path"),
    ("garbage", "teacher.pt: not a checkpoint written by torch.save"),
    ("folder", "is a folder"),
    ("bad_genotype", "its genotype does not load"),
    ("nan", "non-finite values"),
])
def test_a_teacher_that_cannot_teach_is_one_line_and_trains_nothing(tmp_path, capsys, case, message):
    from compiler import build_model, load_genotype
    from training.checkpoint import save_atomic
    from training.train import main

    path = tmp_path / "teacher.pt"
    if case == "no_genotype":
        _, model = _teacher_file(path)
        save_atomic({"model": model.state_dict()}, path)
    elif case == "disparities":
        _teacher_file(path, **{"head.cost_volume.disparities": 6})
    elif case == "window":
        _teacher_file(path, **{"input.window_ms": 25.0})
    elif case == "classifier":
        g = load_genotype(GENOTYPES / "cifar10.yaml")
        save_atomic({"model": build_model(g).state_dict(), "genotype": g.to_yaml()}, path)
    elif case == "weights":  # its weights are not its genotype's
        g, model = _teacher_file(path)
        state = model.state_dict()
        state.pop(next(iter(state)))
        save_atomic({"model": state, "genotype": g.to_yaml()}, path)
    elif case == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif case == "folder":
        path.mkdir()
    elif case == "bad_genotype":
        _, model = _teacher_file(path)
        save_atomic({"model": model.state_dict(), "genotype": "schema: 1\nname: x\n"}, path)
    elif case == "nan":
        g, model = _teacher_file(path)
        state = model.state_dict()
        next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
        save_atomic({"model": state, "genotype": g.to_yaml()}, path)
    args = {"weight_alone": ["--distill-weight", "0.2"], "empty": ["--distill", ""],
            "blank": ["--distill", " "]}.get(case, ["--distill", str(path)])
    rc = main([*_cli_base(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "run" / "last.pt").exists()
