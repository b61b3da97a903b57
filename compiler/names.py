"""The flattened namespace of a compiled network, made here and nowhere else.

A network instance is ``NET`` (``NET.left`` / ``NET.right`` for the stereo feature network), a layer
``INSTANCE.LAYER``, a neuron layer the layer's name (a conv layer), ``LAYER.NODE`` (a node's neuron,
mixing at the membrane) or ``LAYER.NODE.EDGE`` (an edge's neuron, mixing at the spike); a state tensor
``NEURON.v`` / ``NEURON.a`` or ``LAYER.NODE.EDGE.delayed``. ``NeuronSite`` says where a neuron
layer's parameters live in the genotype, so no code parses a name back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuronSite:
    """Where a neuron layer's parameters live in the genotype: a conv layer, a cell node (mixing at the
    membrane) or a cell edge (mixing at the spike). The stereo feature network's two instances share
    their sites."""

    network: str
    layer: str
    layer_index: int
    node: str | None = None
    edge: int | None = None
    head: bool = False  # a neuron of the classification head's vectorize block: the genotype's ``neuron``

    @property
    def path(self) -> str:
        """The genotype key path of the neuron override."""
        if self.head:
            return "neuron (the vectorize head's neurons)"
        base = f"networks.{self.network}.layers[{self.layer_index}]"
        return base if self.node is None else f"{base} (node {self.node}" + (
            f", edge {self.edge})" if self.edge is not None else ")")


def instance_name(network: str, view: str | None = None) -> str:
    """A network instance: the network's name, or ``NET.left`` / ``NET.right`` for the stereo feature
    network, which runs on both views with one set of weights."""
    return network if view is None else f"{network}.{view}"


def cell_inputs_after(index: int, prev, out) -> tuple:
    """(c_{k-1}, c_{k-2}) of the layer after layer ``index``, which output ``out`` and got ``prev``.

    The network input is never a c_{k-2}: the first layer's output is both inputs of the second
    (as in DARTS). Shapes in the planner, tensors in the model and the supernet: one rule."""
    return out, (out if index == 0 else prev)


def layer_name(instance: str, layer: str) -> str:
    """A layer's name in the flattened namespace: ``NET[.INSTANCE].LAYER``."""
    return f"{instance}.{layer}"


def neuron_name(layer: str, node: str | None = None, edge: int | None = None) -> str:
    """A neuron layer's name: the layer's (a conv layer), ``LAYER.NODE`` or ``LAYER.NODE.EDGE``."""
    name = layer if node is None else f"{layer}.{node}"
    return name if edge is None else f"{name}.{edge}"


def state_name(neuron: str, variable: str) -> str:
    """The state tensor ``variable`` (``v``, ``a``) of neuron layer ``neuron``."""
    return f"{neuron}.{variable}"


def delayed_state_name(layer: str, node: str, edge: int) -> str:
    """The state of a delayed edge: its op's output on its source at the step before."""
    return f"{layer}.{node}.{edge}.delayed"


# Names a network, cell, node or layer may not have: the attributes of torch's ``nn.ModuleDict`` (the model
# keys networks and node neurons by name, and torch refuses a key that is an attribute). Written out so that
# parsing needs no torch; tests/test_faults_genotype.py checks it against torch's.
RESERVED_NAMES = frozenset("""
    T_destination add_module apply bfloat16 buffers call_super_init children clear compile cpu cuda double
    dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu
    items keys load_state_dict modules mtia named_buffers named_children named_modules named_parameters
    parameters pop register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
    register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
    to_empty train training type update values xpu zero_grad
""".split())
