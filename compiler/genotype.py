"""Parsing and validating genotypes (schema version 1) into the IR of ``compiler.ir``, with located errors.

Parsing needs no torch. ``load_genotype`` reads a file, applies ``--set`` overrides to the raw data,
parses every field (types, ranges, names) and then plans it (``compiler.planner``: graph checks and
shape inference), so a genotype that loads is one that builds; the plan is kept with the genotype,
so nothing plans it again. The schema is documented in docs/genotype.md; every default is the IR
dataclass field's (``compiler.ir.default``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.core.names import WINDOW_MS_MAX, WINDOW_MS_MIN, encoding_problem

from .errors import GenotypeError, close_match_hint
from .ir import (
    CELL_INPUTS,
    DEFAULT_ENCODING,
    DEFAULT_MIXING,
    ENCODINGS,
    MIXINGS,
    NEURON_KEYS,
    RESETS,
    SCHEMA_VERSION,
    TASKS,
    Cell,
    CellLayer,
    Classifier,
    ConvLayer,
    Edge,
    Genotype,
    Input,
    Layer,
    Network,
    Neuron,
    Node,
    Stereo,
    Surrogate,
    Vectorize,
    default,
)
from .overrides import apply_overrides
from .planner import plan
from .reader import Ctx, MapReader, check_name, check_type
from .yamlio import join_path, load_yaml


# ------------------------------------------------------------------------------------------- parsing
def _surrogate_override(ctx: Ctx, data: Any, path: str) -> dict:
    from .registry import SURROGATES

    m = MapReader(ctx, data, path, ("kind", "b"))
    out: dict[str, Any] = {}
    if m.has("kind"):
        out["kind"] = m.get("kind", str, choices=tuple(SURROGATES))
    if m.has("b"):
        out["b"] = m.get("b", float, low=0.0, low_open=True)
    return out



def _neuron_override(ctx: Ctx, data: Any, path: str) -> dict:
    """A sparse neuron override: only the keys given, each checked."""
    from .registry import NEURONS

    m = MapReader(ctx, data, path, NEURON_KEYS)
    out: dict[str, Any] = {}
    if m.has("kind"):
        out["kind"] = m.get("kind", str, choices=tuple(NEURONS))
    for key in ("tau", "tau_a"):
        if m.has(key):
            out[key] = m.get(key, float, low=0.0, high=1.0)
    if m.has("threshold"):
        out["threshold"] = m.get("threshold", float, low=0.0, low_open=True)
    if m.has("beta"):
        out["beta"] = m.get("beta", float, low=0.0)
    if m.has("reset"):
        out["reset"] = m.get("reset", str, choices=RESETS)
    if m.has("surrogate"):
        out["surrogate"] = _surrogate_override(ctx, m.data["surrogate"], join_path(path, "surrogate"))
    return out


def _with_b(ctx: Ctx, m: MapReader, path: str, neuron: dict) -> dict:
    """``b: 5`` on an edge or node is shorthand for ``neuron: {surrogate: {b: 5}}``."""
    if m.has("b"):
        b = m.get("b", float, low=0.0, low_open=True)
        if "b" in neuron.get("surrogate", {}):
            raise ctx.error(join_path(path, "b"), "b is given twice (also in neuron.surrogate.b)",
                            "keep one")
        neuron = {**neuron, "surrogate": {**neuron.get("surrogate", {}), "b": b}}
    return neuron


def _parse_edge(ctx: Ctx, data: Any, path: str) -> Edge:
    from .registry import CELL_OPS

    m = MapReader(ctx, data, path, ("from", "op", "b", "delay", "neuron"))
    source = m.get("from", str)
    op = m.get("op", str, choices=tuple(CELL_OPS))
    delay = m.get("delay", int, 0, choices=(0, 1))
    neuron = _neuron_override(ctx, m.data["neuron"], join_path(path, "neuron")) if m.has("neuron") else {}
    neuron = _with_b(ctx, m, path, neuron)
    return Edge(source=source, op=op, delay=delay, neuron=neuron)


def _parse_cell(ctx: Ctx, name: str, data: Any, path: str) -> Cell:
    check_name(ctx, path, name, "cell")
    m = MapReader(ctx, data, path, ("nodes", "output"))
    nodes_data = m.get("nodes", dict)
    if not nodes_data:
        raise ctx.error(join_path(path, "nodes"), "a cell needs at least one node")
    nodes = []
    for node_name, node_data in nodes_data.items():
        npath = join_path(join_path(path, "nodes"), node_name)
        check_name(ctx, npath, node_name, "node")
        if node_name in CELL_INPUTS:
            raise ctx.error(npath, f"{node_name!r} is the name of a cell input", "rename the node")
        nm = MapReader(ctx, node_data, npath, ("inputs", "neuron", "b"))
        inputs_data = nm.get("inputs", list)
        if not inputs_data:
            raise ctx.error(join_path(npath, "inputs"), "a node needs at least one input edge")
        edges = tuple(_parse_edge(ctx, e, join_path(join_path(npath, "inputs"), i))
                      for i, e in enumerate(inputs_data))
        neuron = _neuron_override(ctx, nm.data["neuron"], join_path(npath, "neuron")) if nm.has("neuron") else {}
        neuron = _with_b(ctx, nm, npath, neuron)
        nodes.append(Node(name=node_name, inputs=edges, neuron=neuron))
    names = [n.name for n in nodes]
    output = m.get("output", list, list(names))
    for i, o in enumerate(output):
        opath = join_path(join_path(path, "output"), i)
        check_type(ctx, opath, o, str)
        if o not in names:
            raise ctx.error(opath, f"unknown node {o!r}", close_match_hint(o, names, "nodes"))
    if not output:
        raise ctx.error(join_path(path, "output"), "a cell needs at least one output node")
    return Cell(name=name, nodes=tuple(nodes), output=tuple(output))


def _parse_layer(ctx: Ctx, data: Any, path: str, counters: dict[str, int]) -> Layer:
    from .registry import LAYER_OPS

    if isinstance(data, dict) and "cell" in data:
        m = MapReader(ctx, data, path, ("cell", "level", "name", "neuron"))
        kind = "cell"
    else:
        m = MapReader(ctx, data, path, ("conv", "channels", "stride", "level", "name", "neuron", "b"))
        kind = "conv"
    index = counters.get(kind, 0)
    counters[kind] = index + 1
    name = check_name(ctx, join_path(path, "name"), m.get("name", str, f"{kind}{index}"), "layer")
    neuron = _neuron_override(ctx, m.data["neuron"], join_path(path, "neuron")) if m.has("neuron") else {}
    level = m.get("level", int, None, low=0) if m.has("level") else None
    if kind == "cell":
        if level is None:
            raise ctx.error(path, "missing required key 'level'", "give the cell's trellis level, e.g. level: 0")
        return CellLayer(name=name, cell=m.get("cell", str), level=level, neuron=neuron)
    neuron = _with_b(ctx, m, path, neuron)
    return ConvLayer(name=name, op=m.get("conv", str, choices=tuple(LAYER_OPS)),
                     channels=m.get("channels", int, low=1),
                     stride=m.get("stride", int, default(ConvLayer, "stride"), low=1), level=level, neuron=neuron)


def _int_list(ctx: Ctx, m: MapReader, key: str, fallback: tuple[int, ...]) -> tuple[int, ...]:
    values = m.get(key, list, list(fallback))
    path = join_path(m.path, key)
    if not values:
        raise ctx.error(path, "must not be empty")
    for i, v in enumerate(values):
        check_type(ctx, join_path(path, i), v, int)
        if v < 1:
            raise ctx.error(join_path(path, i), f"must be >= 1, got {v}")
    return tuple(values)


def _parse_network(ctx: Ctx, name: str, data: Any, path: str) -> Network:
    check_name(ctx, path, name, "network")
    m = MapReader(ctx, data, path, ("dims", "rates", "node_channels", "layers"))
    layers_data = m.get("layers", list)
    if not layers_data:
        raise ctx.error(join_path(path, "layers"), "a network needs at least one layer")
    counters: dict[str, int] = {}
    layers = tuple(_parse_layer(ctx, d, join_path(join_path(path, "layers"), i), counters)
                   for i, d in enumerate(layers_data))
    seen: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer.name in seen:
            raise ctx.error(join_path(join_path(path, "layers"), i),
                            f"layer name {layer.name!r} is used twice", "give each layer its own name")
        seen[layer.name] = i
    return Network(name=name, dims=m.get("dims", int, default(Network, "dims"), choices=(2, 3)),
                   rates=_int_list(ctx, m, "rates", default(Network, "rates")),
                   node_channels=_int_list(ctx, m, "node_channels", default(Network, "node_channels")),
                   layers=layers)


def _parse_stereo_head(ctx: Ctx, data: Any, path: str) -> Stereo:
    from .registry import ESTIMATORS

    m = MapReader(ctx, data, path, ("feature", "matching", "cost_volume", "estimator"))
    cv = MapReader(ctx, m.get("cost_volume", dict, {}), join_path(path, "cost_volume"), ("disparities", "shift"))
    est = MapReader(ctx, m.get("estimator", dict, {}), join_path(path, "estimator"),
                    ("kind", "support", "disparity_step"))
    return Stereo(feature=m.get("feature", str), matching=m.get("matching", str),
                  disparities=cv.get("disparities", int, default(Stereo, "disparities"), low=2),
                  shift=cv.get("shift", int, default(Stereo, "shift"), low=1),
                  estimator=est.get("kind", str, default(Stereo, "estimator"), choices=tuple(ESTIMATORS)),
                  support=est.get("support", int, default(Stereo, "support"), low=1),
                  disparity_step=est.get("disparity_step", float, default(Stereo, "disparity_step"),
                                         low=0.0, low_open=True))


def _parse_classifier_head(ctx: Ctx, data: Any, path: str) -> Classifier:
    m = MapReader(ctx, data, path, ("backbone", "classes", "aux", "vectorize"))
    aux: dict[str, Any] = {}
    if m.has("aux"):
        am = MapReader(ctx, m.data["aux"], join_path(path, "aux"), ("after", "weight", "channels"))
        aux = {"aux_after": am.get("after", int, low=0),
               "aux_weight": am.get("weight", float, default(Classifier, "aux_weight"), low=0.0),
               "aux_channels": am.get("channels", int, default(Classifier, "aux_channels"), low=1)}
    if m.has("vectorize"):
        vm = MapReader(ctx, m.data["vectorize"], join_path(path, "vectorize"), ("pool", "hidden", "groups"))
        aux["vectorize"] = Vectorize(**{k: vm.get(k, int, default(Vectorize, k), low=1)
                                        for k in ("pool", "hidden", "groups")})
    return Classifier(backbone=m.get("backbone", str),
                      classes=m.get("classes", int, default(Classifier, "classes"), low=1), **aux)


def _node_neuron(ctx: Ctx, m: MapReader, mixing: str) -> dict:
    """``node_neuron``: the nodes' spiking function, a sparse override; only ``mixing: spike`` has one."""
    if not m.has("node_neuron"):
        return {}
    if mixing != "spike":
        raise ctx.error("node_neuron", f"only mixing 'spike' gives a node a spiking function (this genotype "
                        f"mixes by {mixing!r})", "remove node_neuron, or use mixing: spike")
    return _neuron_override(ctx, m.data["node_neuron"], "node_neuron")


# The head of each task (``compiler.ir.TASKS``): its parser.
HEAD_PARSERS = {"stereo": _parse_stereo_head, "classification": _parse_classifier_head}


def _unused_input_keys(ctx: Ctx, im: MapReader, encoding: str) -> None:
    """Refuse input keys the encoding has no use for (they would be silently dropped from the canonical
    form): ``bins`` and ``window_ms`` are for event encodings, ``channels`` for images."""
    unused = ("bins", "window_ms") if encoding == "image" else ("channels",)
    for key in unused:
        if im.has(key):
            what = "event encodings (sbt, count)" if key != "channels" else "image input (encoding: image)"
            raise ctx.error(f"input.{key}", f"applies to {what}, not to encoding {encoding!r}", "remove it")


TOP_KEYS = ("schema", "name", "task", "source", "input", "neuron", "mixing", "node_neuron", "cells", "networks",
            "head", "meta")


def parse_genotype(data: Any, lines: dict[str, int] | None = None, file: str = "<genotype>",
                   overridden: dict[str, str] | None = None) -> Genotype:
    """Plain data (as loaded from YAML) -> a checked Genotype. Raises GenotypeError."""

    ctx = Ctx(file, lines or {}, overridden or {})
    m = MapReader(ctx, data, "", TOP_KEYS)
    schema = m.get("schema", int)
    if schema != SCHEMA_VERSION:
        raise ctx.error("schema", f"unsupported schema version {schema}",
                        f"this compiler reads schema {SCHEMA_VERSION}")
    task = m.get("task", str, choices=TASKS)

    im = MapReader(ctx, m.get("input", dict), "input",
              ("height", "width", "encoding", "bins", "window_ms", "channels", "timesteps"))
    _unused_input_keys(ctx, im, im.get("encoding", str, DEFAULT_ENCODING[task], choices=ENCODINGS))
    inp = Input(height=im.get("height", int, low=1), width=im.get("width", int, low=1),
                encoding=im.get("encoding", str, DEFAULT_ENCODING[task], choices=ENCODINGS),
                bins=im.get("bins", int, default(Input, "bins"), low=1),
                window_ms=im.get("window_ms", float, default(Input, "window_ms"), low=WINDOW_MS_MIN,
                                 high=WINDOW_MS_MAX),
                channels=im.get("channels", int, default(Input, "channels"), low=1),
                timesteps=im.get("timesteps", int, default(Input, "timesteps"), low=1, high=10_000))
    if task == "stereo" and inp.encoding == "image":
        raise ctx.error("input.encoding", "stereo networks take event encodings", "use sbt or count")
    if inp.encoding != "image" and encoding_problem(inp.encoding, inp.window_ms, inp.bins):
        raise ctx.error("input", encoding_problem(inp.encoding, inp.window_ms, inp.bins),
                        "use a longer input.window_ms or fewer input.bins")

    nm = MapReader(ctx, m.get("neuron", dict, {}), "neuron", NEURON_KEYS)
    sm = MapReader(ctx, nm.get("surrogate", dict, {}), "neuron.surrogate", ("kind", "b"))
    neuron = Neuron(**_neuron_override(ctx, {k: v for k, v in nm.data.items() if k != "surrogate"}, "neuron"),
                    surrogate=Surrogate(**_surrogate_override(ctx, sm.data, "neuron.surrogate")))

    cells_data = m.get("cells", dict, {})
    cells = tuple(_parse_cell(ctx, k, v, join_path("cells", k)) for k, v in cells_data.items())
    nets_data = m.get("networks", dict)
    if not nets_data:
        raise ctx.error("networks", "at least one network is needed")
    networks = tuple(_parse_network(ctx, k, v, join_path("networks", k)) for k, v in nets_data.items())
    head = HEAD_PARSERS[task](ctx, m.get("head", dict), "head")
    meta = m.get("meta", dict, {})
    mixing = m.get("mixing", str, DEFAULT_MIXING, choices=MIXINGS)
    g = Genotype(name=m.get("name", str), task=task, input=inp, neuron=neuron, mixing=mixing, cells=cells,
                 networks=networks, head=head, source=m.get("source", str, default(Genotype, "source")),
                 schema=schema, meta=meta, file=file, node_neuron=_node_neuron(ctx, m, mixing))
    plan(g, ctx)  # graph checks and shapes; the plan is kept with g (planner.plan)
    return g


def load_genotype(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Genotype:
    """Read, override and fully validate a genotype file. Raises GenotypeError (one line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenotypeError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise GenotypeError("is a directory, not a genotype file", file=str(path)) from None
    except UnicodeDecodeError:
        raise GenotypeError("not a UTF-8 text file", file=str(path)) from None
    return loads_genotype(text, file=str(path), overrides=overrides)


def loads_genotype(text: str, file: str = "<string>",
                   overrides: dict[str, Any] | list[str] | None = None) -> Genotype:
    data, lines = load_yaml(text, file)
    data, overridden = apply_overrides(data, overrides) if overrides else (data, {})
    return parse_genotype(data, lines, file, overridden)


