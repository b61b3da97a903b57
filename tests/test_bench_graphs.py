"""``benchmarks/bench_graphs.py``: saved graphs stepped in turn; what it prints, and bad input in one line."""

from __future__ import annotations

import sys

import pytest
from helpers import ROOT, make_exact, small_genotype

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_graphs  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    import onnx

    from compiler import build_model
    from compiler.export import to_onnx

    out = tmp_path_factory.mktemp("graphs")
    model = build_model(small_genotype("stereo_small")).eval()
    make_exact(model, seed=0)  # weights that spike
    onnx.save(to_onnx(model), str(out / "a.onnx"))
    onnx.save(to_onnx(model), str(out / "b.onnx"))  # the same export: its disparity is the same, bit for bit
    make_exact(model, seed=1)  # another model of the same contract
    onnx.save(to_onnx(model), str(out / "c.onnx"))
    onnx.save(to_onnx(build_model(small_genotype("stereo_small", **{"input.width": 48})).eval()),
              str(out / "wide.onnx"))
    onnx.save(to_onnx(build_model(small_genotype("cifar10")).eval()), str(out / "cla.onnx"))
    (out / "text.onnx").write_text("not a model")
    return out


def test_graphs_are_stepped_in_turn_and_compared_with_the_first(graphs, capsys):
    argv = [f"a={graphs / 'a.onnx'}", str(graphs / "b.onnx"), f"c={graphs / 'c.onnx'}", "--rounds", "3",
            "--warmup", "1", "--windows", "2", "--ort-defaults", "c"]
    assert bench_graphs.main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| a (a.onnx)", "| b (b.onnx)", "| c (c.onnx)"]
    assert rows[0].endswith("| 1.00x | - |")
    assert rows[1].endswith("| bit-identical |") and "the runtime's" in rows[1]
    assert "max diff" in rows[2] and "every optimiser" in rows[2]


@pytest.mark.parametrize("argv, says", [
    (["{g}/a.onnx", "{g}/a.onnx"], "the name 'a' is given twice"),
    (["={g}/a.onnx"], "expected NAME=MODEL.onnx or MODEL.onnx"),
    (["x="], "expected NAME=MODEL.onnx or MODEL.onnx"),
    (["{g}/missing.onnx"], "no such model file"),
    (["{g}"], "is a folder, not a model file"),
    (["{g}/text.onnx"], "not an ONNX model"),
    (["{g}/cla.onnx"], "this benchmark steps stereo models"),
    (["{g}/a.onnx", "{g}/wide.onnx"], "unlike the first graph's"),
    (["{g}/a.onnx", "--ort-defaults", "b"], "--ort-defaults: names no graph given: b"),
    (["{g}/a.onnx", "--rounds", "0"], "--rounds: must be from 1 to 100000, got 0"),
    (["{g}/a.onnx", "--threads", "x"], "--threads: not an integer: 'x'"),
    ([], "the following arguments are required"),
])
def test_bad_input_is_one_line(graphs, capsys, argv, says):
    try:
        rc = bench_graphs.main([a.format(g=graphs) for a in argv])
    except SystemExit as exc:  # the parser's own errors exit from parse_args
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and says in err, err
