"""What the runtime knows of a compiled model once its contract is read (``runtime.contract``):
its encoding, spiking layers, state tensors and data inputs/outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.core.names import SPIKES, STATE_IN, STATE_OUT


@dataclass(frozen=True)
class EncodingSpec:
    """How events become the model's input tensor (``snn.encoding``)."""

    kind: str
    window_ms: float
    bins: int
    height: int
    width: int

    @property
    def window_us(self) -> int:
        return int(round(self.window_ms * 1000))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "window_ms": self.window_ms,
            "bins": self.bins,
            "height": self.height,
            "width": self.width,
        }


@dataclass(frozen=True)
class LayerSpec:
    """A spiking layer: neurons per sample and synapses reached by one of its spikes."""

    name: str
    neurons: int
    fan_out: float


@dataclass(frozen=True)
class StateSpec:
    """One carried state tensor: ``state_in.<name>`` -> ``state_out.<name>``; shape excludes batch."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def input_name(self) -> str:
        return STATE_IN + self.name

    @property
    def output_name(self) -> str:
        return STATE_OUT + self.name


@dataclass(frozen=True)
class ModelSpec:
    """The checked contract of one model."""

    task: str
    encoding: EncodingSpec
    layers: tuple[LayerSpec, ...]
    dense_macs: Mapping[str, float]
    states: tuple[StateSpec, ...]
    data_inputs: tuple[str, ...]
    data_output: str
    data_input_shape: tuple[int | str | None, ...]
    max_disparity: float | None = None
    genotype: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    passes: tuple[str, ...] = ()  # the compiler's optimisation passes (snn.passes), in order
    quantization: Mapping[str, Any] | None = None  # snn.quantization of an int8 graph, else None

    @property
    def spike_outputs(self) -> tuple[str, ...]:
        return tuple(SPIKES + layer.name for layer in self.layers)

    @property
    def total_neurons(self) -> int:
        return sum(layer.neurons for layer in self.layers)

    @property
    def dense_macs_per_step(self) -> float:
        return float(sum(self.dense_macs.values()))
