"""Drawings of genotypes (compiler.draw): every shipped genotype draws; the drawing holds each cell's nodes and
edges (labelled with op and surrogate temperature, delayed edges dashed) and each network's layer path; the
command line writes DOT without graphviz's dot and SVG/PNG with it (checked for the same structure)."""

from __future__ import annotations

import re

import pytest
from helpers import GENOTYPES

from compiler import load_genotype, plan
from compiler.build import main as build_main
from compiler.draw import dot_program, drawing
from compiler.ir import CellLayer

SHIPPED = sorted(p.stem for p in GENOTYPES.glob("*.yaml"))


def _edges(source: str) -> list[tuple[str, str, str]]:
    """(tail, head, attributes) of every edge of a DOT text."""
    return [(a, b, attrs) for a, b, attrs in re.findall(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s]+)"?\s*(\[.*\])?\s*$',
                                                        source, re.M)]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_genotype_draws_its_cells_and_layer_path(name):
    g = load_genotype(GENOTYPES / f"{name}.yaml")
    p = plan(g)
    source = drawing(p).source
    edges = _edges(source)
    for cell in g.cells:
        for node in cell.nodes:
            assert f"cell.{cell.name}.{node.name}" in source
            for edge in node.inputs:
                found = [attrs for a, b, attrs in edges
                         if a == f"cell.{cell.name}.{edge.source}" and b == f"cell.{cell.name}.{node.name}"]
                assert found, (cell.name, node.name, edge.source)
                assert any(edge.op in attrs and " b=" in attrs and ("dashed" in attrs) == bool(edge.delay)
                           for attrs in found)
    for net_name, np_ in p.nets.items():
        path = [a for a, b, attrs in edges if a.startswith(f"net.{net_name}.") and b.startswith(f"net.{net_name}.")
                and "invis" not in attrs]
        assert len(path) == len(np_.layers) - 1  # the layer path: one visible edge per consecutive pair
        for i, lp in enumerate(np_.layers):
            if isinstance(lp.layer, CellLayer):
                assert f"net.{net_name}.{i}.L{lp.layer.level}" in source


def test_command_line_writes_dot_text_and_refuses_unknown_formats(tmp_path, capsys):
    out = tmp_path / "snasnet.dot"
    assert build_main([str(GENOTYPES / "snasnet_cifar10_bw.yaml"), "--draw", str(out), "--quiet"]) == 0
    assert "style=dashed" in out.read_text() and not list(tmp_path.glob("*.onnx"))
    assert build_main([str(GENOTYPES / "stereo.yaml"), "--draw", str(tmp_path / "x.bmp"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown format 'bmp'" in err


@pytest.mark.skipif(dot_program() is None, reason="graphviz's dot program is not installed")
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_rendered_drawing_holds_the_nodes(tmp_path, suffix):
    out = tmp_path / f"stereo.{suffix}"
    assert build_main([str(GENOTYPES / "stereo.yaml"), "--draw", str(out), "--quiet"]) == 0
    data = out.read_bytes()
    if suffix == "png":
        assert data.startswith(b"\x89PNG")
        return
    titles = set(re.findall(r"<title>([^<]+)</title>", data.decode()))
    assert {"cell.feature.n0", "cell.matching.n2", "head.cost_volume", "head.estimator"} <= titles
    assert "cell.feature.c_prev&#45;&gt;cell.feature.n0" in titles
