"""The error catalogue: every bad genotype gets one clear line naming file, line, key path and a fix,
and the command line exits with code 2 (never a traceback)."""

from __future__ import annotations

import re

import pytest
from helpers import GENOTYPES

from compiler import GenotypeError, loads_genotype
from compiler.build import main
from compiler.registry import ShapeError, concat_shape, sum_shape

STEREO = (GENOTYPES / "stereo.yaml").read_text()


def edit(old: str, new: str, text: str = STEREO) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def check_cli(tmp_path, capsys, text: str, *extra: str) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    code = main([str(path), "--check", "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


CASES = [
    # (id, text, expected pieces of the message, a marker on the expected line, or None)
    ("syntax", edit("input: {height: 260, width: 346, encoding: sbt, bins: 5, window_ms: 50}",
                    "input: {height: 260, width: 346"), ["YAML syntax error"], None),
    ("empty", "", ["the file is empty"], None),
    ("comments only", "# nothing here\n", ["the file is empty"], None),
    ("duplicate key", edit("task: stereo\n", "task: stereo\ntask: classification\n"),
     ["duplicate key 'task'", "first given on line 5"], "task: classification"),
    ("unknown key", edit("mixing: spike", "mixng: spike"), ["unknown key 'mixng'", "did you mean 'mixing'"], None),
    ("unknown op", edit("n1: {inputs: [{from: c_prev, op: conv3x3, b: 5}",
                        "n1: {inputs: [{from: c_prev, op: conv3x4, b: 5}"),
     ["cells.feature.nodes.n1.inputs[0].op", "unknown value 'conv3x4'", "did you mean 'conv3x3'"], "conv3x4"),
    ("unknown neuron", edit("neuron: {kind: lif,", "neuron: {kind: lifx,"),
     ["neuron.kind", "unknown value 'lifx'", "'lif'"], "lifx"),
    ("missing node", edit("n2: {inputs: [{from: n0, op: conv3x3, b: 3}", "n2: {inputs: [{from: n7, op: conv3x3, b: 3}"),
     ["cells.feature.nodes.n2.inputs[0].from", "unknown node 'n7'"], "n7"),
    ("cycle", edit("n0: {inputs: [{from: c_prev, op: conv3x3, b: 3}, {from: c_prev_prev, op: conv3x3, b: 3}]}",
                   "n0: {inputs: [{from: c_prev, op: conv3x3, b: 3}, {from: n2, op: conv3x3, b: 3}]}"),
     ["cycle without a delay", "delay: 1"], None),
    ("wrong type", edit("height: 260", "height: tall"),
     ["input.height", "expected an integer, got str 'tall'"], "tall"),
    ("bool is not int", edit("height: 260", "height: true"), ["input.height", "expected an integer"], "height: true"),
    ("zero size", edit("{conv: conv3x3, channels: 24, name: stem0}", "{conv: conv3x3, channels: 0, name: stem0}"),
     ["networks.feature.layers[0].channels", "must be >= 1, got 0"], "channels: 0"),
    ("negative size", edit("height: 260", "height: -5"), ["input.height", "must be >= 1, got -5"], "-5"),
    ("too large", edit("input: {height: 260, width: 346", "input: {height: 60000, width: 90000"),
     ["would need about", "GiB"], None),
    ("python tag", edit("name: spikedhs-stereo", "name: !!python/object/apply:os.system ['echo hacked']"),
     ["tag", "not allowed"], "python/object"),
    ("custom tag", edit("name: spikedhs-stereo", "name: !secret x"), ["tag '!secret' is not allowed"], "!secret"),
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     ["alias bomb"], None),
    ("sum mismatch", edit("n2: {inputs: [{from: n0, op: conv3x3, b: 3}, {from: n1, op: conv3x3, b: 3}]}",
                          "n2: {inputs: [{from: n0, op: conv3x3, b: 3}, {from: c_prev, op: skip}]}"),
     ["cells.feature.nodes.n2.inputs[1].op", "skip keeps its 48 input channels but the node has 32"], "op: skip"),
    ("unused network", edit("networks:\n", "networks:\n  spare: {layers: [{conv: conv3x3, channels: 4}]}\n"),
     ["networks.spare", "not used by the head"], None),
    ("bad level", edit("{cell: feature, level: 1, name: cell0}", "{cell: feature, level: 7, name: cell0}"),
     ["networks.feature.layers[2].level", "level 7 does not exist"], None),
    ("schema version", edit("schema: 1", "schema: 2"), ["unsupported schema version 2"], "schema: 2"),
    ("top level list", "- 1\n- 2\n", ["expected a mapping"], None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_catalogue(tmp_path, capsys, case):
    _, text, pieces, line = case
    message = check_cli(tmp_path, capsys, text)
    assert str(tmp_path / "g.yaml") in message
    for piece in pieces:
        assert piece in message, message
    if line is not None:  # the line of the first occurrence of a marker in the text
        number = next(i for i, t in enumerate(text.splitlines(), 1) if line in t)
        assert re.search(rf"g\.yaml:{number}:", message), message


def test_set_unknown_key(tmp_path, capsys):
    message = check_cli(tmp_path, capsys, STEREO, "--set", "input.heigth=66")
    assert "--set input.heigth=66" in message and "unknown key 'heigth'" in message and "'height'" in message


def test_set_mistyped_value(tmp_path, capsys):
    message = check_cli(tmp_path, capsys, STEREO, "--set", "input.height=tall")
    assert "--set input.height=tall" in message and "expected an integer" in message


def test_set_bad_index_and_syntax(tmp_path, capsys):
    assert "out of range" in check_cli(tmp_path, capsys, STEREO, "--set", "networks.feature.layers[9].channels=4")
    assert "KEY=VALUE" in check_cli(tmp_path, capsys, STEREO, "--set", "input.height")


def test_set_valid_value_applies():
    g = loads_genotype(STEREO, overrides=["input.height=66", "networks.feature.layers[0].channels=8"])
    assert g.input.height == 66 and g.network("feature").layers[0].channels == 8


def test_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml"), "--check"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_error_is_one_line_with_location():
    with pytest.raises(GenotypeError) as info:
        loads_genotype(edit("tau: 0.2", "tau: 1.5"), file="x.yaml")
    err = info.value
    line = next(i for i, t in enumerate(STEREO.splitlines(), 1) if "tau: 0.2" in t)
    assert (err.file, err.line, err.path) == ("x.yaml", line, "neuron.tau"), str(err) and "\n" not in str(err)


def test_concat_and_sum_shape_rules_name_both_sides():
    with pytest.raises(ShapeError, match=r"cannot concatenate n0 \(8, 4, 4\) with n1 \(8, 2, 2\)"):
        concat_shape([(8, 4, 4), (8, 2, 2)], ["n0", "n1"])
    assert concat_shape([(8, 4, 4), (6, 4, 4)], ["a", "b"]) == (14, 4, 4)
    with pytest.raises(ShapeError, match="cannot sum"):
        sum_shape([(8, 4, 4), (6, 4, 4)], ["a", "b"])


def test_unreachable_and_dead_nodes():
    dead = edit("n2: {inputs: [{from: n0, op: conv3x3, b: 3}, {from: n1, op: conv3x3, b: 3}]}\n  matching:",
                "n2: {inputs: [{from: n0, op: conv3x3, b: 3}, {from: n1, op: conv3x3, b: 3}]}\n"
                "    output: [n0, n1]\n  matching:")
    with pytest.raises(GenotypeError, match="n2: node does not reach the cell output"):
        loads_genotype(dead)
    orphan = edit("n1: {inputs: [{from: c_prev, op: conv3x3, b: 5}, {from: c_prev_prev, op: conv3x3, b: 3}]}\n"
                  "      n2: {inputs: [{from: n0, op: conv3x3, b: 3}, {from: n1, op: conv3x3, b: 3}]}\n  matching:",
                  "n1: {inputs: [{from: n2, op: conv3x3, b: 5, delay: 1}]}\n"
                  "      n2: {inputs: [{from: n1, op: conv3x3, b: 3}]}\n    output: [n0, n1, n2]\n  matching:")
    with pytest.raises(GenotypeError, match="not reachable from a cell input"):
        loads_genotype(orphan)
