"""A fuzz test over the command lines (issue 23, class 8): random values of the right and the wrong type
for every flag of every command (compiler.build, runtime.stream, runtime.serve, runtime.synth,
training.train, training.search), on top of a cheap valid command line. Each run must end without a
traceback, with 0 or one ``error: ...`` line (exit 1 or 2 for serving's partly served runs and bad
input, 130 never), and an exit 0 must not come with a non-finite or unscored number in its report.

The default suite runs ``SNN_FUZZ_CLI`` examples per command (default 3); with ``SNN_SLOW=1`` the test
marked ``slow`` runs 40 more per command, from another seed."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch
from contract_models import stereo_model

from tests.helpers import GENOTYPES, TINY_SEARCH_SPACE

EXAMPLES = int(os.environ.get("SNN_FUZZ_CLI", "3"))
INTS = [-1, 0, 1, 2, 3, 7, 2**31, 10**12]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "0.5", "1e300", "3"]
WRONG = ["", "abc", "1.5", "nö", "1,2", "--", " 3", "1e999", "0x10", "²"]
TINY_TRAIN = ["--set", "input.height=8", "--set", "input.width=8", "--set", "input.channels=1",
              "--set", "networks.backbone.node_channels=[4,4,8]", "--set", "networks.backbone.layers[0].channels=4",
              "--set", "input.timesteps=1"]
SKIP = {"help", "resume", "init", "weights", "load_state", "calib_events", "events", "calib", "energy_table",
        "dsec_timestamps", "device"}  # files the test cannot fake cheaply (bad paths are drawn for str flags anyway)


class TooSlow(BaseException):
    pass


def _parser(command: str) -> argparse.ArgumentParser:
    if command == "compiler.build":
        import compiler.build

        captured = {}

        def grab(self, args=None, namespace=None):
            captured["p"] = self
            raise TooSlow

        real = argparse.ArgumentParser.parse_args
        argparse.ArgumentParser.parse_args = grab
        try:
            with contextlib.suppress(TooSlow):
                compiler.build.main([])
        finally:
            argparse.ArgumentParser.parse_args = real
        return captured["p"]
    if command == "runtime.stream":
        from runtime.stream.cli import _parser
    elif command == "runtime.serve":
        from runtime.serve import _parser
    elif command == "runtime.synth":
        from runtime.synth.__main__ import parser as _parser
    elif command == "training.train":
        from training.train import parser as _parser
    else:
        from training.search.cli import parser as _parser
    return _parser()


def _main(command: str):
    if command == "compiler.build":
        from compiler.build import main
    elif command == "runtime.stream":
        from runtime.stream.cli import main
    elif command == "runtime.serve":
        from runtime.serve import main
    elif command == "runtime.synth":
        from runtime.synth.__main__ import main
    elif command == "training.train":
        from training.train import main
    else:
        from training.search.cli import main
    return main


def _flags(parser: argparse.ArgumentParser, sub: str | None) -> list[argparse.Action]:
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and sub is not None:
            actions = list(action.choices[sub]._actions)
    return [a for a in actions if a.option_strings and a.dest not in SKIP and a.nargs != 0 or
            (a.option_strings and a.nargs == 0 and a.dest not in SKIP)]


def _value(rng: random.Random, action: argparse.Action, tmp: Path) -> list[str]:
    flag = rng.choice(action.option_strings)
    if action.nargs == 0:
        return [flag]
    if action.choices and rng.random() < 0.6:
        return [flag, str(rng.choice(list(action.choices)))]
    if rng.random() < 0.3:
        return [flag, rng.choice(WRONG)]
    if action.type is int:
        return [flag, str(rng.choice(INTS))]
    if action.type is float:
        return [flag, rng.choice(FLOATS)]
    afile = tmp / "afile"
    afile.write_text("not what it should be")
    return [flag, rng.choice([str(afile), str(tmp), "/proc/fuzz/x", str(tmp / "new" / "x"), "1,2", "a" * 300,
                              str(rng.choice(INTS)), rng.choice(FLOATS)])]


def _finite(report_path: Path) -> None:
    def bad(token):
        raise AssertionError(f"{report_path}: holds {token}")

    data = json.loads(report_path.read_text(), parse_constant=bad)
    for key in ("accuracy",):
        if key in data and data[key] is not None:
            for name, value in data[key].items():
                if isinstance(value, float):
                    assert value == value and abs(value) != float("inf"), (name, value)


def _base(command: str, tmp: Path, model: Path, space: Path) -> tuple[list[str], Path | None, str | None]:
    report = tmp / "report.json"
    if command == "compiler.build":
        return [str(GENOTYPES / "cifar10.yaml"), "--set", "input.height=8", "--set", "input.width=8",
                "-o", str(tmp / "m.onnx"), "--quiet"], None, None
    if command == "runtime.stream":
        return ["--onnx", str(model), "--max-steps", "2", "--device", "cpu", "--threads", "1", "--quiet",
                "--report", str(report)], report, None
    if command == "runtime.serve":
        return ["--onnx", str(model), "--streams", "2", "--max-steps", "2", "--threads", "1", "--quiet",
                "--report", str(report)], report, None
    if command == "runtime.synth":
        return ["-o", str(tmp / "synth"), "--seconds", "0.05", "--height", "16", "--width", "16", "--quiet"], None, None
    if command == "training.train":
        return [str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "--data", "digits", "--epochs", "1", "--max-batches", "1",
                "--batch-size", "8", "--quiet", "--no-tensorboard", "--threads", "1", "--out", str(tmp / "run"),
                *TINY_TRAIN], None, None
    sub = "spikedhs"
    return [sub, str(space), "--out", str(tmp / "search"), "--epochs", "1", "--warmup", "0", "--batch-size", "8",
            "--max-batches", "1", "--decode-every", "1", "--threads", "1", "--quiet", *TINY_TRAIN], None, sub


COMMANDS = ["compiler.build", "runtime.stream", "runtime.serve", "runtime.synth", "training.train", "training.search"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "tiny.onnx"
    stereo_model(path)
    return path


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(TINY_SEARCH_SPACE)
    return path


def _fuzz(command: str, examples: int, model: Path, space: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(f"{command}-{seed}")
    threads = torch.get_num_threads()
    for k in range(examples):
        tmp = tmp_path / f"{k}"
        tmp.mkdir()
        base, report, sub = _base(command, tmp, model, space)
        flags = _flags(_parser(command), sub)
        extra = [v for a in rng.sample(flags, min(len(flags), rng.choice([1, 1, 2]))) for v in _value(rng, a, tmp)]
        argv = [*base, *extra]
        err = io.StringIO()
        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TooSlow()))
        signal.alarm(240)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = _main(command)(argv)
                except SystemExit as exc:  # argparse
                    rc = exc.code
        except TooSlow:
            pytest.fail(f"{command} {' '.join(argv)}: still running after 240 s (a hang)")
        except Exception as exc:  # noqa: BLE001 - the point: nothing escapes a command line
            pytest.fail(f"{command} {' '.join(argv)}: {type(exc).__name__}: {exc}")
        finally:
            signal.alarm(0)
            torch.set_num_threads(threads)
        text = err.getvalue()
        assert "Traceback" not in text, (argv, text)
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert rc in (0, 1, 2), (argv, rc, text)
        if rc != 0:
            assert len(errors) == 1, (argv, text)
        elif report is not None and report.exists():
            _finite(report)


@pytest.mark.parametrize("command", COMMANDS)
def test_fuzz_command_lines(command, model, space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fuzz(command, EXAMPLES, model, space, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SNN_SLOW"), reason="a long fuzz run: SNN_SLOW=1")
@pytest.mark.parametrize("command", COMMANDS)
def test_fuzz_command_lines_long(command, model, space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fuzz(command, 40, model, space, tmp_path, seed=1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_what_the_fuzz_found_is_one_line(space, tmp_path, monkeypatch, capsys):
    """An --out name the file system refuses (too long), a negative --threads or an infinite --arch-lr for
    a search, and an --onnx name too long for the file system were tracebacks."""
    from training.search.cli import main as search_main
    from training.train import main as train_main

    monkeypatch.chdir(tmp_path)
    base, _, _ = _base("training.search", tmp_path, tmp_path, space)
    for argv in ([*base, "--out", "a" * 300], [*base, "--threads", "-1"], [*base, "--arch-lr", "inf"],
                 [*base, "--crop-prob", "2"]):
        assert search_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    base, _, _ = _base("training.train", tmp_path, tmp_path, space)
    assert train_main([*base, "--out", "a" * 300]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    from runtime.serve import main as serve_main
    from runtime.stream import main as stream_main

    for main in (stream_main, serve_main):  # an --onnx name too long for the file system was a traceback
        assert main(["--onnx", "a" * 300, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {'a' * 300}: cannot read it (File name too long)\n", err
