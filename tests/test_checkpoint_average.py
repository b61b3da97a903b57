"""``python -m training.checkpoint average``: the mean of several checkpoints' weights (stochastic weight
averaging), and its refusals of checkpoints that cannot be averaged, each one line with exit code 2."""

from __future__ import annotations

import pytest
import torch
from helpers import GENOTYPES

from compiler import build_model, load_genotype
from training.checkpoint import average, load, main, save_atomic

GENOTYPE = GENOTYPES / "stereo_small.yaml"


def _checkpoint(path, seed: int, epoch: int, genotype: str | None = None) -> dict:
    torch.manual_seed(seed)
    model = build_model(load_genotype(GENOTYPE))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    state = model.state_dict()
    state = {k: v + seed if k.endswith("running_mean") else v * (seed + 1) if k.endswith("running_var") else v
             for k, v in state.items()}
    ck = {"model": state, "genotype": genotype or GENOTYPE.read_text(), "config": {"lr": 0.1}, "epoch": epoch,
          "optimizer": {}, "best": {"value": 1.0}}
    save_atomic(ck, path)
    return ck


def test_average_is_the_mean_of_every_floating_tensor_and_keeps_the_last_counts(tmp_path):
    cks = [_checkpoint(tmp_path / f"e{i}.pt", i, i) for i in (1, 2, 3)]
    for ck in cks:  # BatchNorm's batch counts differ between epochs
        for k in ck["model"]:
            if k.endswith("num_batches_tracked"):
                ck["model"][k] = torch.tensor(100 * ck["epoch"])
        save_atomic(ck, tmp_path / f"e{ck['epoch']}.pt")
    srcs = [str(tmp_path / f"e{i}.pt") for i in (1, 2, 3)]
    assert main(["average", *srcs, str(tmp_path / "avg.pt")]) == 0
    out = load(tmp_path / "avg.pt")
    for k, v in out["model"].items():
        if v.is_floating_point():
            want = (sum(ck["model"][k].double() for ck in cks) / 3).to(v.dtype)
            assert torch.equal(v, want), k
            if not all(torch.equal(ck["model"][k], cks[-1]["model"][k]) for ck in cks):
                assert not torch.equal(v, cks[-1]["model"][k]), k
        else:
            assert torch.equal(v, cks[-1]["model"][k]), k
    assert [a["epoch"] for a in out["averaged_from"]] == [1, 2, 3]
    assert "optimizer" not in out and "best" not in out and out["genotype"] == cks[-1]["genotype"]
    # the average builds and runs as the genotype's model
    model = build_model(load_genotype(GENOTYPE))
    model.load_state_dict(out["model"])


@pytest.mark.parametrize("case", ["one", "genotype", "key", "shape", "nan", "dst-is-source", "dst-folder",
                                  "missing"])
def test_average_refuses_what_it_cannot_average_in_one_line(tmp_path, capsys, case):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _checkpoint(a, 1, 1)
    ck = _checkpoint(b, 2, 2)
    dst = tmp_path / "avg.pt"
    srcs = [a, b]
    if case == "one":
        srcs, want = [a], "average needs at least two checkpoints"
    elif case == "genotype":
        save_atomic({**ck, "genotype": ck["genotype"] + "\n# edited\n"}, b)
        want = f"{b}: its genotype differs from {a}'s"
    elif case == "key":
        ck["model"].pop(next(iter(ck["model"])))
        save_atomic(ck, b)
        want = f"{b}: its weights do not match {a}'s"
    elif case == "shape":
        key = next(k for k, v in ck["model"].items() if v.dim() == 4)
        ck["model"][key] = ck["model"][key][:1]
        save_atomic(ck, b)
        want = f"{b}: model tensor {key!r} is torch.float32"
    elif case == "nan":
        key = next(k for k, v in ck["model"].items() if v.is_floating_point())
        ck["model"][key][0] = float("nan")
        save_atomic(ck, b)
        want = f"{b}: model tensor {key!r} holds "
    elif case == "dst-is-source":
        dst, want = b, f"{b}: is one of the checkpoints averaged"
    elif case == "dst-folder":
        dst, want = tmp_path, f"{tmp_path}: is a folder"
    else:
        srcs, want = [a, tmp_path / "none.pt"], f"{tmp_path / 'none.pt'}: no such checkpoint"
    before = b.read_bytes()
    assert main(["average", *map(str, srcs), str(dst)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {want}"), err
    assert len(err.splitlines()) <= 2 and "Traceback" not in err  # the message and its hint
    assert b.read_bytes() == before
    assert not (tmp_path / "avg.pt").exists()
    with pytest.raises(Exception):  # noqa: B017 - the function raises what main reports
        average(srcs, dst)
