"""Hostile values for the options of the micro-benchmarks (bench_neuron, bench_resample, bench_batchnorm,
bench_convpad, bench_train) and the command-line kit's integer type they use: one line on stderr, exit status 2,
nothing run."""

from __future__ import annotations

import argparse
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_batchnorm  # noqa: E402
import bench_convpad  # noqa: E402
import bench_neuron  # noqa: E402
import bench_resample  # noqa: E402
import bench_train  # noqa: E402

from runtime.core.errors import int_between  # noqa: E402


@pytest.mark.parametrize("main, argv, says", [
    (bench_resample.main, ["--threads", "0"], "--threads: must be from 1 to 1024, got 0"),
    (bench_resample.main, ["--threads", "abc"], "--threads: not an integer: 'abc'"),
    (bench_resample.main, ["--threads", "99999"], "--threads: must be from 1 to 1024, got 99999"),
    (bench_resample.main, ["--rounds", "nan"], "--rounds: not an integer: 'nan'"),
    (bench_resample.main, ["--rounds", "-3"], "--rounds: must be at least 1, got -3"),
    (bench_resample.main, ["--channels", "100000000"], "--channels: must be from 1 to 65536, got 100000000"),
    (bench_neuron.main, ["--shape", "1,x"], "--shape: not comma-separated integers: '1,x'"),
    (bench_neuron.main, ["--shape", "0,4"], "each at least 1"),
    (bench_neuron.main, ["--shape", "5"], "needs 2 or more sizes"),
    (bench_neuron.main, ["--shape", "100000,100000,100"], "at most 268435456 elements"),
    (bench_neuron.main, ["--threads", "-1"], "--threads: must be from 1 to 1024, got -1"),
    (bench_neuron.main, ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
    (bench_batchnorm.main, ["--rounds", "0"], "--rounds: must be from 1 to 10000, got 0"),
    (bench_batchnorm.main, ["--rounds", "nan"], "--rounds: not an integer: 'nan'"),
    (bench_batchnorm.main, ["--threads", "1.5"], "--threads: not an integer: '1.5'"),
    (bench_batchnorm.main, ["--threads", "99999"], "--threads: must be from 1 to 1024, got 99999"),
    (bench_batchnorm.main, ["--precision", "fp16"], "--precision: invalid choice: 'fp16'"),
    (bench_convpad.main, ["--size", "huge"], "--size: invalid choice: 'huge'"),
    (bench_convpad.main, ["--rounds", "0"], "--rounds: must be from 1 to 100000, got 0"),
    (bench_convpad.main, ["--rounds", "inf"], "--rounds: not an integer: 'inf'"),
    (bench_convpad.main, ["--threads", "99999"], "--threads: must be from 1 to 1024, got 99999"),
    (bench_train.main, ["--tasks", "class,foo"], "--tasks: unknown task 'foo'; choose from class, stereo, stereo-fine"),
    (bench_train.main, ["--configs", "eager:fp32"], "'eager:fp32': not EXEC:PRECISION:THREADS[:LAYOUT]"),
    (bench_train.main, ["--configs", "warp:fp32:1"], "EXEC 'warp' is not one of eager, step, multistep"),
    (bench_train.main, ["--configs", "eager:fp32:1,eager:fp16:1"], "PRECISION 'fp16' is not one of fp32, bf16"),
    (bench_train.main, ["--configs", "eager:fp32:0"], "THREADS must be from 1 to 1024, got 0"),
    (bench_train.main, ["--configs", "multistep:fp32:1x0"], "PROCS must be from 1 to 64, got 0"),
    (bench_train.main, ["--configs", "multistep:fp32:1xy"], "PROCS not an integer: 'y'"),
    (bench_train.main, ["--configs", "eager:fp32:1:diag"], "LAYOUT 'diag' is not one of auto, nchw"),
    (bench_train.main, ["--batches", "0"], "--batches: must be from 1 to 100000, got 0"),
    (bench_train.main, ["--warmup", "-1"], "--warmup: must be from 0 to 100000, got -1"),
    (bench_train.main, ["--seed", "-1"], "--seed: must be from 0 to 4294967295, got -1"),
    (bench_train.main, ["--json", str(ROOT)], f"--json: {ROOT} is a folder"),
    (bench_train.main, ["--interleave", "0"], "--interleave: must be from 1 to 10000, got 0"),
    (bench_train.main, ["--interleave", "two"], "--interleave: not an integer: 'two'"),
    (bench_train.main, ["--interleave", "nan"], "--interleave: not an integer: 'nan'"),
    (bench_train.main, ["--interleave", "-2"], "--interleave: must be from 1 to 10000, got -2"),
    (bench_train.main, ["--interleave", "99999999999"], "--interleave: must be from 1 to 10000, got 99999999999"),
    (bench_train.main, ["--interleave", "2", "--configs", "eager:fp32:1,multistep:fp32:1x2"],
     "--interleave: 'multistep:fp32:1x2' runs under torchrun in processes of its own"),
])
def test_bad_option_values_are_one_line_and_exit_2(main, argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: argument ") and says in err and not out


def test_int_between_takes_its_bounds_and_nothing_else():
    one_to_four = int_between(1, 4)
    assert [one_to_four(t) for t in ("1", "4", " 2 ")] == [1, 4, 2]
    for text in ("0", "5", "-1", "1.5", "inf", "", "1e3"):
        with pytest.raises(argparse.ArgumentTypeError):
            one_to_four(text)
    assert int_between(1)("123456789") == 123456789


def test_bench_train_table_names_configurations_it_did_not_run():
    """A configuration bench_train skips (bf16 on a CPU without it) or that failed is a row with the reason,
    not a missing row."""
    base = {"task": "stereo", "exec": "multistep", "threads": 1, "procs": 1, "layout": "auto"}
    text = bench_train.table([{**base, "precision": "bf16", "skipped": "this CPU has neither AMX nor AVX512-BF16"},
                              {**base, "precision": "fp32", "error": "out of memory"}])
    rows = text.splitlines()[2:]
    assert len(rows) == 2
    assert "| bf16 |" in rows[0] and "not run: this CPU has neither AMX nor AVX512-BF16" in rows[0]
    assert "| fp32 |" in rows[1] and "error: out of memory" in rows[1]


def test_bench_train_configs_parse_to_the_child_spec():
    """Each accepted --configs form gives the spec its child runs: eager defaults to the plain layout (the
    reference), the others to auto; THREADSxPROCS splits."""
    assert bench_train.parse_config("eager:fp32:2", 5) == {
        "exec": "eager", "precision": "fp32", "threads": 2, "procs": 1, "layout": "nchw", "seed": 5}
    assert bench_train.parse_config("multistep:bf16:1x2:channels-last", 0) == {
        "exec": "multistep", "precision": "bf16", "threads": 1, "procs": 2, "layout": "channels-last", "seed": 0}
    assert bench_train.parse_config("step:fp32:1", 0)["layout"] == "auto"


def test_bench_train_json_it_cannot_write_is_one_line_after_the_table(tmp_path, monkeypatch, capsys):
    """A --json whose folder cannot be made (a file stands there) fails after the run in one line, exit 2, with
    every row already printed in the table: nothing measured is lost."""
    monkeypatch.setattr(bench_train, "run_child", lambda spec: {**spec, "skipped": "not run in this test"})
    (tmp_path / "file").write_text("mine")
    assert bench_train.main(["--tasks", "class", "--configs", "eager:fp32:1,step:fp32:1",
                             "--json", str(tmp_path / "file" / "rows.json")]) == 2
    out, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if ln.startswith("error")]  # (the other lines: each row's progress)
    target = tmp_path / "file" / "rows.json"
    assert errors == err.splitlines()[-1:] and errors[0].startswith(f"error: --json {target}: ")
    assert out.count("not run in this test") == 2 and (tmp_path / "file").read_text() == "mine"


def test_the_int8_accuracy_line_judges_both_targets_as_printed():
    import bench_deploy

    both = "(within 1 point: met, within 0.5 points: met)"
    assert bench_deploy.int8_verdict(0.2) == f"int8 - fp32: +0.20 points of 1PA {both}"
    assert bench_deploy.int8_verdict(-0.7).endswith("(within 1 point: met, within 0.5 points: MISSED)")
    assert bench_deploy.int8_verdict(1.3).endswith("(within 1 point: MISSED, within 0.5 points: MISSED)")
    assert bench_deploy.int8_verdict(0.504) == f"int8 - fp32: +0.50 points of 1PA {both}"  # judged as printed
    assert "0.5 points: MISSED" in bench_deploy.int8_verdict(-0.506)


def test_the_training_table_says_how_batchnorm_ran():
    row = {"task": "stereo", "exec": "multistep", "precision": "fp32", "layout": "nchw", "threads": 1, "rate": 2.0,
           "cpu_rate": 2.0, "s_per_batch": 0.5, "peak_mb": 1.0, "mb_per_sample": 1.0, "loss": 1.0, "neurons": "cpp",
           "load": 0.0}
    rows = [{**row, "exec": "eager", "rate": 1.0, "cpu_rate": 1.0, "batchnorm": "per step"},
            {**row, "batchnorm": "one call"}, row]  # (a row of an older --json: no such field)
    lines = bench_train.table(rows).splitlines()
    assert "| BatchNorm of the steps |" in lines[0] and lines[1].count("---") == lines[0].count("|") - 1
    assert "| cpp | one call |" in lines[3] and "| 2.00 |" in lines[3] and "| cpp | - |" in lines[4]


def test_bench_train_refuses_a_bad_malloc_setting_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SNN_MALLOC", "nonsense")
    assert bench_train.main(["--tasks", "class", "--configs", "eager:fp32:1"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: SNN_MALLOC='nonsense'") and not out


def test_bench_train_interleave_keeps_the_configs_order_and_the_rows_it_did_not_run(monkeypatch, capsys):
    """--interleave runs a task's configurations in one child and puts its rows back in --configs order, beside
    the rows of configurations it did not run (bf16 where the CPU lacks it)."""
    seen = []

    def fake(spec):
        seen.append(spec)
        return [{**c, "task": spec["task"], "skipped": f"interleaved {i} of {spec['rounds']} rounds"}
                for i, c in enumerate(spec["configs"])]

    monkeypatch.setattr(bench_train, "run_interleaved", fake)
    monkeypatch.setattr(bench_train, "run_child", lambda spec: pytest.fail("ran a configuration on its own"))
    monkeypatch.setattr("training.execution.cpu_has_bf16", lambda: False)
    assert bench_train.main(["--tasks", "class", "--configs", "eager:fp32:1,multistep:bf16:1,multistep:fp32:2",
                             "--interleave", "3", "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert len(seen) == 1 and seen[0]["rounds"] == 3 and seen[0]["batches"] == 2
    assert [(c["exec"], c["threads"]) for c in seen[0]["configs"]] == [("eager", 1), ("multistep", 2)]
    rows = [ln for ln in out.splitlines() if ln.startswith("| class")]
    assert "interleaved 0 of 3" in rows[0] and "neither AMX nor AVX512-BF16" in rows[1] and "interleaved 1" in rows[2]


def test_bench_train_interleaved_child_times_every_configuration_in_each_round():
    """The interleaved child itself (one process, two configurations, two rounds of one timed batch): a row per
    configuration in order, each timed over both rounds, memory not measured."""
    rows = bench_train.child_interleaved({"task": "class", "rounds": 2, "batches": 1, "warmup": 0, "configs": [
        bench_train.parse_config("eager:fp32:1", 0), bench_train.parse_config("multistep:fp32:1", 0)]})
    assert [(r["exec"], r["interleaved"]) for r in rows] == [("eager", 2), ("multistep", 2)]
    for r in rows:
        assert r["s_per_batch"] > 0 and r["rate"] > 0 and r["peak_mb"] is None and r["mb_per_sample"] is None
    assert "| - | - |" in bench_train.table(rows)
