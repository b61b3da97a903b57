"""What DGS, TPS and HNS share: finding a neuron layer's module (and the ops feeding it) in a built
model, the searcher interface the training loop calls, the genotype write-back, and the registry the
searchers join (``SEARCHERS``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from compiler.edit import locate, neuron_layer_names
from compiler.ir import Genotype
from compiler.registry import NEURONS

from .. import runlog
from ..errors import TrainError


@dataclass
class Slot:
    """A neuron layer of a built model: ``container[key]`` is its NeuronModule; ``ops`` feed it."""

    name: str
    container: nn.Module
    key: str
    ops: list[tuple[nn.Module, str]]  # (container, key) of each op module whose current it sums

    @property
    def neuron(self) -> nn.Module:
        return _get(self.container, self.key)

    def replace(self, module: nn.Module) -> None:
        _set(self.container, self.key, module)


def _get(container: nn.Module, key: str) -> nn.Module:
    return container[key] if isinstance(container, nn.ModuleDict) else getattr(container, key)


def _set(container: nn.Module, key: str, module: nn.Module) -> None:
    if isinstance(container, nn.ModuleDict):
        container[key] = module
    else:
        setattr(container, key, module)


def find_slot(model: nn.Module, g: Genotype, name: str) -> Slot:
    """The module of neuron layer ``name`` (GenotypeError if the name is not a neuron layer)."""
    site = locate(g, name)
    net = model.nets[site.network]
    layer = net.layers[site.layer_index]
    if site.node is None:
        return Slot(name, layer, "neuron", [(layer, "op")])
    cell = layer.cell  # the CellLayer keeps its (possibly cloned) Cell
    node = cell.node(site.node)
    if site.edge is None:  # a node's neuron: fed by its edges' ops, or under spike mixing by their spikes
        ops = [] if g.mixing == "spike" else [(layer.ops, f"{site.node}_{i}") for i in range(len(node.inputs))]
        return Slot(name, layer.neurons, site.node, ops)
    key = f"{site.node}_{site.edge}"
    return Slot(name, layer.neurons, key, [(layer.ops, key)])


def resolve_layers(g: Genotype, names: list[str], kinds: tuple[str, ...]) -> list[str]:
    """``['all']`` -> every neuron layer of one of ``kinds``; else the names, checked, one per location."""
    from compiler.planner import plan

    p = plan(g)
    if names == ["all"]:
        chosen = [n for n in neuron_layer_names(g, spiking_only=False) if p.neurons[n].neuron.kind in kinds]
    else:
        chosen, seen = [], set()
        for n in names:
            site = locate(g, n)
            if n not in p.neurons:
                raise TrainError(f"{n!r} is not a neuron layer of this genotype")
            if p.neurons[n].neuron.kind not in kinds:
                raise TrainError(f"layer {n!r} has a {p.neurons[n].neuron.kind} neuron; this search needs "
                                 f"{' or '.join(kinds)}")
            if site not in seen:
                seen.add(site)
                chosen.append(n)
    if not chosen:
        raise TrainError(f"no {' or '.join(kinds)} layer to search in this genotype")
    return chosen


class Searcher:
    """Hooks the training loop calls; subclasses implement the ones they need."""

    name = "search"

    @classmethod
    def search_kinds(cls) -> tuple[str, ...]:
        """The neuron kinds this searcher may search: those whose registry entry names it."""
        return tuple(kind for kind, spec in NEURONS.items() if cls.name in spec.searchers)

    def __init__(self, out: str | None, main: bool = True):
        self.log_path = Path(out) / f"{self.name}.jsonl" if out and main else None

    def parameters(self) -> list[Tensor]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def extra_loss(self) -> Tensor | None:
        return None

    def before_epoch(self, trainer, epoch: int) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def end_epoch(self, trainer, epoch, batches, gen, rng) -> dict | None:
        return None

    def write_back(self, g: Genotype) -> Genotype:
        return g

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def record(self, row: dict) -> None:
        """One row of ``NAME.jsonl``, appended as a metrics row is (``runlog.append_row``: one write of a
        whole line, fsynced); resume cuts the log back to the checkpoint's epochs (``runlog.repair``)."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            runlog.append_row(self.log_path, row)


# Option name (``cfg.dgs`` ...) -> searcher class; each class registers itself (``@register``) with
# its ``name``; the neuron kinds it can search are those whose registry entry names it
# (``compiler.registry.NEURONS``). ``training.searchers`` imports them all.
SEARCHERS: dict[str, type[Searcher]] = {}


def register(cls: type[Searcher]) -> type[Searcher]:
    if cls.name in SEARCHERS:
        raise ValueError(f"searcher {cls.name!r} registered twice")
    SEARCHERS[cls.name] = cls
    return cls


def make_searchers(cfg, model, genotype) -> list[Searcher]:
    """The searchers the options switch on (in registration order), installed into ``model``."""
    out: list[Searcher] = []
    main = int(__import__("os").environ.get("RANK", "0")) == 0
    for name, cls in SEARCHERS.items():
        layers = getattr(cfg, name)
        if layers:
            out.append(cls(model, genotype, resolve_layers(genotype, layers, cls.search_kinds()), cfg, main))
    return out


def write_back(genotype: Genotype, searchers: list[Searcher], trainer=None) -> Genotype:
    """The genotype with every searcher's current result written into it."""
    for s in searchers:
        genotype = s.write_back(genotype)
    return genotype


def softmax_list(alpha: Tensor) -> list[float]:
    return [round(float(v), 6) for v in torch.softmax(alpha.detach(), 0)]
