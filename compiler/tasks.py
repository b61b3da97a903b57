"""The tasks a genotype's head can have, as one table: how each task's head is lowered into the graph
(``compiler.planner``), what it adds to the parameter count and the memory estimate, and its extra ONNX
metadata. Code that depends on the task looks it up here (``TASKS[g.task]``) or reads the lowered graph.

A head handler gets the planner's walker (``w``: ``w.g`` the genotype, ``w.network`` lowers a network
instance, ``w.emit`` appends a node, ``w.error`` makes a located GenotypeError) and fills ``plans`` (network
name -> NetPlan); it returns the names of the networks it uses and the graph's task outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from runtime.core.names import META_MAX_DISPARITY, data_inputs

from .errors import close_match_hint
from .ir import Classifier, Genotype, Network
from .names import NeuronSite, instance_name
from .plantypes import NetPlan, Part, Value
from .registry import RULES, Registry, ShapeError

LINEAR = "head.linear"  # the classifier's name as a consumer of synaptic work (snn.dense_macs)


@dataclass(frozen=True)
class Task:
    name: str
    lower: Callable  # (walker, plans) -> (used network names, {task output: value name})
    params: Callable  # (genotype, plans) -> (parameters of the head, training-only parameters)
    aux_activations: Callable  # (genotype, plans) -> values of one step of training-only parts
    meta: Callable  # genotype -> extra ONNX metadata of the task ({key: value})


def _network(w, key: str, name: str, dims: int) -> Network:
    """The network the head names under ``key``, checked to exist and to have ``dims`` dimensions."""
    nets = {n.name: n for n in w.g.networks}
    if name not in nets:
        raise w.error(f"head.{key}", f"unknown network {name!r}", close_match_hint(name, nets, "networks"))
    if nets[name].dims != dims:
        raise w.error(f"networks.{name}.dims", f"the {key} network must be {dims}-D")
    return nets[name]


def _input(w, name: str) -> Value:
    """A data input node of the graph and its value."""
    inp = w.g.input
    shape = (inp.in_channels, inp.height, inp.width)
    w.emit("input", name, [], shape, attrs={"input": name})
    return Value(shape, (Part("input", inp.in_channels, False),), name)


def _lower_stereo(w, plans: dict[str, NetPlan]) -> tuple[set[str], dict[str, str]]:
    """Feature network on both views, cost volume, matching network, estimator."""
    head, inp = w.g.head, w.g.input
    feat = _network(w, "feature", head.feature, 2)
    match = _network(w, "matching", head.matching, 3)
    left_in, right_in = (_input(w, n) for n in data_inputs(w.g.task))
    plans[feat.name], left = w.network(feat, instance_name(feat.name, "left"), left_in)
    _, right = w.network(feat, instance_name(feat.name, "right"), right_in)
    shape = RULES["cost_volume"].shape(left.shape, right.shape, head.disparities)
    ref = w.emit("cost_volume", "head:cost_volume", [left.ref, right.ref], shape,
                 attrs={"disparities": head.disparities, "shift": head.shift}, path="head.cost_volume")
    plans[match.name], cost = w.network(match, instance_name(match.name), Value(shape, left.parts + right.parts, ref))
    if cost.shape[0] != 1:
        raise w.error(f"networks.{match.name}.layers[{len(match.layers) - 1}].channels",
                      f"the matching network must end with 1 channel (the matching cost), got {cost.shape[0]}",
                      "set channels: 1 on its last layer")
    if cost.shape[1] != head.disparities:
        raise w.error(f"networks.{match.name}", f"the matching cost has {cost.shape[1]} disparities, "
                      f"the cost volume {head.disparities}", "end the matching network on level 0")
    try:
        out = RULES[head.estimator].shape(cost.shape, inp.height, inp.width)
    except ShapeError as exc:
        raise w.error(f"networks.{match.name}", str(exc), exc.hint) from None
    w.activations += head.disparities * inp.height * inp.width * 2
    w.emit("cost", "head:cost", [cost.ref], (head.disparities, *out), attrs={"size": out}, path="head")
    w.emit("estimator", "head:disparity", ["head:cost"], out, path="head.estimator",
           attrs={"estimator": head.estimator, "support": head.support, "step": head.disparity_step})
    return {feat.name, match.name}, {"cost": "head:cost", "disparity": "head:disparity"}


def _lower_classifier(w, plans: dict[str, NetPlan]) -> tuple[set[str], dict[str, str]]:
    """Backbone, global average pooling, linear head (and the auxiliary head, training only)."""
    head = w.g.head
    back = _network(w, "backbone", head.backbone, 2)
    plans[back.name], out = w.network(back, instance_name(back.name), _input(w, data_inputs(w.g.task)[0]))
    logits = (head.classes,)
    if head.aux_after is not None and head.aux_after >= len(back.layers) - 1:
        raise w.error("head.aux.after", f"must name a layer before the last (0..{len(back.layers) - 2})")
    rank = len(plans)
    if head.vectorize is not None:
        site = NeuronSite(back.name, "head", len(back.layers), head=True)
        outputs = {"logits": _lower_vectorize(w, head, site, out, rank)}
    else:
        pooled = RULES["global_avgpool"].shape(out.shape)
        w.consume(LINEAR, pooled[0] * head.classes, Value(out.shape, tuple(
            Part(p.producer, p.channels, False) for p in out.parts)))
        w.emit("global_pool", "head:pool", [out.ref], pooled, path="head")
        w.emit("linear", "head:linear", ["head:pool"], logits, module=("classifier",), rank=(rank, 0), path="head",
               attrs={"in_features": pooled[0], "out_features": head.classes, "consumer": LINEAR})
        outputs = {"logits": "head:linear"}
    if head.aux_after is not None:
        tap = plans[back.name].layers[head.aux_after]
        w.emit("aux_head", "head:aux", [tap.output], logits, module=("aux",), rank=(rank, 1), path="head.aux",
               attrs={"in_channels": tap.out_shape[0], "head": head, "training_only": True})
        outputs["aux_logits"] = "head:aux"
    return {back.name}, outputs


def _lower_vectorize(w, head: Classifier, site: NeuronSite, out: Value, rank: int) -> str:
    """SNASNet's vectorize block (the authors' code): the backbone's output through a neuron unless it is
    spikes already, average pooling, a linear layer without bias, its neurons, the classifier to
    ``groups`` outputs per class and their mean per class."""
    v, path = head.vectorize, "head.vectorize"
    if not all(p.binary for p in out.parts):
        out = w.neuron("head.spikes", out.shape, w.g.resolve_neuron(), site, out.ref, module=("head_spikes",),
                       rank=(rank, 0), path=path, layer="head")
    pooled = (out.shape[0], *(s // v.pool for s in out.shape[1:]))
    if min(pooled[1:]) < 1:
        raise w.error(f"{path}.pool", f"pooling by {v.pool} empties the backbone's {out.shape} output",
                      "pool by less")
    w.emit("avgpool", "head:pool", [out.ref], pooled, attrs={"kernel": v.pool}, path=path, layer="head")
    features, outs = math.prod(pooled), head.classes * v.groups
    w.consume("head.vectorize", features * v.hidden, Value(pooled, (Part("head:pool", pooled[0], False),)))
    w.emit("linear", "head:hidden", ["head:pool"], (v.hidden,), module=("vectorize",), rank=(rank, 1), path=path,
           layer="head", params=features * v.hidden, macs=features * v.hidden,
           attrs={"in_features": features, "out_features": v.hidden, "bias": False, "flatten": True,
                  "consumer": "head.vectorize"})
    hidden = w.neuron("head.hidden", (v.hidden,), w.g.resolve_neuron(), site, "head:hidden",
                      module=("hidden_spikes",), rank=(rank, 2), path=path, layer="head")
    w.consume(LINEAR, v.hidden * outs, hidden)
    w.emit("linear", "head:linear", [hidden.ref], (outs,), module=("classifier",), rank=(rank, 3), path=path,
           layer="head", params=(v.hidden + 1) * outs, macs=v.hidden * outs,
           attrs={"in_features": v.hidden, "out_features": outs, "consumer": LINEAR})
    return w.emit("group_mean", "head:logits", ["head:linear"], (head.classes,), path=path, layer="head",
                  attrs={"classes": head.classes, "groups": v.groups})


def _classifier_params(g: Genotype, plans: dict[str, NetPlan]) -> tuple[int, int]:
    head, out = g.head, plans[g.head.backbone].out_shape
    params = (out[0] + 1) * head.classes
    if head.vectorize is not None:
        v = head.vectorize
        params = out[0] * math.prod(s // v.pool for s in out[1:]) * v.hidden + (v.hidden + 1) * head.classes * v.groups
    if head.aux_after is None:
        return params, 0
    aux_in = plans[head.backbone].layers[head.aux_after].out_shape  # training only: not in the exported graph
    return params, aux_in[0] * head.aux_channels + 2 * head.aux_channels + (head.aux_channels + 1) * head.classes


def _classifier_aux_activations(g: Genotype, plans: dict[str, NetPlan]) -> int:
    """Values of one step of the training-only auxiliary head (its 1x1 convolution's output)."""
    head = g.head
    if head.aux_after is None:
        return 0
    return head.aux_channels * math.prod(plans[head.backbone].layers[head.aux_after].out_shape[1:])


TASKS = Registry("task")
TASKS.register("stereo", Task("stereo", _lower_stereo, lambda g, plans: (0, 0), lambda g, plans: 0,
                              lambda g: {META_MAX_DISPARITY: repr(float(g.head.max_disparity))}))
TASKS.register("classification", Task("classification", _lower_classifier, _classifier_params,
                                      _classifier_aux_activations, lambda g: {}))
