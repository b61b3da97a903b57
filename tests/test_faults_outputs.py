"""Hostile targets for the writers (issue 23, class 3): outputs are all or nothing, and what was there
before that is not ours is never deleted or overwritten without --overwrite.

Triton: a model folder that already holds other versions and files keeps them, says which version was
written, refuses to replace a config.pbtxt or version it did not write. DSEC submission: written to a
hidden folder and moved in only when the run is accepted. training.train --out: a user's own
config.yaml is not overwritten."""

from __future__ import annotations

from pathlib import Path

import onnx
from helpers import ROOT

from compiler.build import main as build_main

GENOTYPE = str(Path(ROOT) / "genotypes" / "cifar10.yaml")
SMALL = ["--set", "input.height=8", "--set", "input.width=8", "--quiet"]


def _build(*argv):
    return build_main([GENOTYPE, *SMALL, *argv])


def test_triton_keeps_other_versions_and_files_and_says_which_version(tmp_path, capsys):
    model = tmp_path / "repo" / "cifar10"
    (model / "2").mkdir(parents=True)
    (model / "2" / "model.onnx").write_bytes(b"the user's version 2")
    (model / "labels.txt").write_text("cat\ndog\n")
    # no config.pbtxt: version 1 is free, nothing of the user's is in the way
    assert _build("--triton", str(tmp_path / "repo")) == 0
    out = capsys.readouterr().out
    assert "version 1" in out, out
    assert (model / "2" / "model.onnx").read_bytes() == b"the user's version 2"
    assert (model / "labels.txt").read_text() == "cat\ndog\n"
    onnx.load(str(model / "1" / "model.onnx"))
    assert _build("--triton", str(tmp_path / "repo"), "--triton-version", "3") == 0  # ours: replaced freely
    assert "version 3" in capsys.readouterr().out and (model / "3" / "model.onnx").is_file()
    assert (model / "1" / "model.onnx").is_file() and (model / "2" / "model.onnx").is_file()
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", "3", "config.pbtxt", "labels.txt"]


def test_triton_refuses_to_replace_a_config_or_version_it_did_not_write(tmp_path, capsys):
    model = tmp_path / "repo" / "cifar10"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"the user's model")
    (model / "config.pbtxt").write_text('name: "cifar10"\nbackend: "onnxruntime"\n# tuned by hand\n')
    assert _build("--triton", str(tmp_path / "repo")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.pbtxt" in err and "--overwrite" in err, err
    assert (model / "1" / "model.onnx").read_bytes() == b"the user's model"
    assert "tuned by hand" in (model / "config.pbtxt").read_text()
    assert _build("--triton", str(tmp_path / "repo"), "--overwrite") == 0
    onnx.load(str(model / "1" / "model.onnx"))
    assert sorted(p.name for p in model.iterdir()) == ["1", "config.pbtxt"]  # no staging left


def test_triton_bad_version_and_a_file_in_the_way(tmp_path, capsys):
    assert _build("--triton", str(tmp_path), "--triton-version", "0") == 2
    assert "version" in capsys.readouterr().err
    (tmp_path / "cifar10").write_text("a file")
    assert _build("--triton", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1
    assert (tmp_path / "cifar10").read_text() == "a file"
