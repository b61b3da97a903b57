"""Property tests (issue 12): a genotype with one hostile value anywhere, a hostile name, hostile YAML text
or a hostile ``--set`` gives one clean located line (``GenotypeError``) or a genotype that is right:
finite numbers, names that cannot collide, a plan, and a canonical form that parses back to itself."""

from __future__ import annotations

import math

import yaml
from helpers import GENOTYPES, SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import GenotypeError, loads_genotype, plan
from compiler.genotype import parse_genotype
from compiler.ir import Genotype
from compiler.names import RESERVED_NAMES
from compiler.overrides import apply_overrides
from compiler.reader import NAME_RE

BASE = {name: yaml.safe_load((GENOTYPES / f"{name}.yaml").read_text()) for name in ("cifar10", "stereo_small")}
for _name, _data in BASE.items():
    BASE[_name], _ = apply_overrides(_data, SMALL[_name])

HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30), st.sampled_from([10**400, -1, 0]),
    st.text(max_size=12), st.sampled_from(["n.0", "a b", "", "keys", "training", "x[1]", "1e-4", ".nan"]),
    st.booleans(), st.none(), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4),
                                                                                        st.integers(), max_size=2),
)
HOSTILE_NUMBER = st.sampled_from([math.nan, math.inf, -math.inf, 10**400, 2**40, -1, 0, 1e-4, 1e308, -0.0])
HOSTILE_NAME = st.sampled_from(["n.0", "cell0.n1", "keys", "training", "forward", "a b", "", "0a", "x" * 65, "é"])
NAME_PARENTS = ("cells", "nodes", "networks")


def paths(data, prefix=()):
    """Every (path, is_key) of a plain-data tree: each value's path, and each mapping key's."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*prefix, k), True
            yield from paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, (*prefix, i))
    yield prefix, False


def mutate(data, path, is_key, value):
    import copy

    data = copy.deepcopy(data)
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if is_key:
        new = value if isinstance(value, str) else str(value)
        parent[new] = parent.pop(last)
    else:
        parent[last] = value
    return data


def check_valid(g: Genotype) -> None:
    """What a genotype that loads must satisfy."""
    def numbers(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k != "meta":
                    yield from numbers(v)
        elif isinstance(x, list):
            for v in x:
                yield from numbers(v)
        elif isinstance(x, float):
            yield x

    assert all(math.isfinite(v) for v in numbers(g.to_dict()))
    names = [c.name for c in g.cells] + [n.name for c in g.cells for n in c.nodes] + [n.name for n in g.networks] + [
        layer.name for n in g.networks for layer in n.layers]
    assert all(NAME_RE.fullmatch(n) and n not in RESERVED_NAMES for n in names)
    assert plan(g).params > 0
    assert parse_genotype(g.to_dict()) == g


def check_error(exc: GenotypeError, where: str) -> None:
    text = str(exc)
    assert "\n" not in text and text.startswith(where) and len(text) < 2000, text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(BASE)), data=st.data(), kind=st.sampled_from(["number", "name", "any"]))
def test_one_hostile_value_or_name_anywhere(name, data, kind):
    base = BASE[name]
    every = [p for p in paths(base) if p[0]]
    numbers = [p for p in every if not p[1] and isinstance(_get(base, p[0]), (int, float))
               and not isinstance(_get(base, p[0]), bool) and "meta" not in p[0]]
    names = [p for p in every if (p[1] and len(p[0]) >= 2 and p[0][-2] in NAME_PARENTS)
             or (not p[1] and p[0][-1] == "name" and "layers" in p[0])]
    pool = {"number": numbers, "name": names, "any": every}[kind]
    path, is_key = data.draw(st.sampled_from(pool))
    value = data.draw({"number": HOSTILE_NUMBER, "name": HOSTILE_NAME, "any": HOSTILE}[kind])
    try:
        g = parse_genotype(mutate(base, path, is_key, value), file="g.yaml")
    except GenotypeError as exc:
        check_error(exc, "g.yaml")
    else:
        check_valid(g)


def _get(data, path):
    for p in path:
        data = data[p]
    return data


TEXT = (GENOTYPES / "cifar10.yaml").read_text()


SNIPPETS = ["x: " + "[" * 10_000 + "]" * 10_000, "x: " + "{a: " * 70 + "1" + "}" * 70, "x: &a [*a]",
            "x: &a {b: [*a]}", "input.height: 5", "x: !!python/object:os.system ls", "x: &a [1, 2]\ny: [*a, *a]"]


@settings(max_examples=80, deadline=None)
@given(pos=st.integers(0, len(TEXT)), junk=st.text(alphabet="[]{}:,-&*!|>'\"#\n .x0", max_size=8),
       cut=st.integers(0, 3), snippet=st.sampled_from(["", *SNIPPETS]))
def test_hostile_yaml_text(pos, junk, cut, snippet):
    text = TEXT[:pos] + junk + TEXT[pos + cut:] + "\n" + snippet + "\n"
    try:
        g = loads_genotype(text, file="g.yaml", overrides=SMALL["cifar10"])
    except GenotypeError as exc:
        check_error(exc, "")
    else:
        check_valid(g)


KEYS = ["input.height", "input.window_ms", "neuron.threshold", "neuron.surrogate.b", "neuron.tau",
        "networks.backbone.layers[1].channels", "networks.backbone.layers[0].name", "head.aux.channels",
        "head.aux.weight", "cells.cell.nodes.n0.inputs[0].b", "meta.x"]
VALUES = [".nan", ".inf", "-.inf", "1.0e+400", "0.0001", "-1", "1000000000000", "[" * 5000 + "]" * 5000, "a.b",
          "keys", "[1, 2", "{a: 1}", "~", "true"]


@settings(max_examples=80, deadline=None)
@given(key=st.sampled_from(KEYS), corrupt=st.sampled_from(["", "drop]", "dot", "empty"]),
       value=st.one_of(st.sampled_from(VALUES), st.text(alphabet="[]{}:,0123.enaif -", max_size=12)))
def test_hostile_set(key, corrupt, value):
    key = {"": key, "drop]": key.replace("]", "", 1), "dot": key.replace(".", "..", 1), "empty": ""}[corrupt]
    try:
        g = loads_genotype(TEXT, file="g.yaml", overrides=[*(f"{k}={v}" for k, v in SMALL["cifar10"].items()),
                                                            f"{key}={value}"])
    except GenotypeError as exc:
        check_error(exc, "")
    else:
        check_valid(g)
