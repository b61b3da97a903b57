"""Spiking neurons with explicit state, and the surrogate gradients of the Heaviside spike.

All neurons are one discrete time step ``y, state = neuron(I, state)``; state is a dict of tensors
of the input's shape, zero at t = 0. Equations (Che et al., journal version, eqs. 1-8), with
``v`` the membrane potential carried after the reset of the previous step:

- LIF:  u[t] = tau * v[t-1] + I[t];  y[t] = H(u[t] - V_th);  v[t] = u[t] * (1 - y[t])   (hard reset)
        or v[t] = u[t] - V_th * y[t] (soft reset)
- IF:   the LIF with tau = 1
- ALIF: u[t] = tau * v[t-1] + I[t];  A[t] = V_th + beta * a[t];  y[t] = H(u[t] - A[t]);
        a[t+1] = tau_a * a[t] + y[t]   (a is carried as state)
- LI:   u[t] = tau * u[t-1] + I[t];  output u[t] (a leaky integrator that never fires)
- ReLU: y[t] = max(0, I[t]); no state (for hybrid ANN/SNN networks)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .fused import ThresholdParams, threshold_steps
from .fused import impl as fused_impl
from .ir import Neuron
from .registry import NEURONS, Registry
from .surrogates import SURROGATE_GRADS, arctan_grad, dspike_grad, spike, superspike_grad, triangle_grad

__all__ = ["SURROGATE_GRADS", "arctan_grad", "dspike_grad", "spike", "superspike_grad", "triangle_grad"]

# ------------------------------------------------------------------------------------------- neurons
class NeuronModule(nn.Module):
    """One neuron layer: ``forward(I, state) -> (y, new_state)``, split as in SpikingJelly's ``BaseNode``
    into ``charge`` (the membrane potential u from the input and the carried state), ``fire`` (the output
    from u) and ``reset`` (the state carried to the next step). A kind's facts (state names, whether it
    spikes, its NIR form, which searchers may search it) are its ``compiler.registry.NEURONS`` entry."""

    def __init__(self, spec: Neuron):
        super().__init__()
        self.spec = spec
        # Time constants are buffers so that TPS can move them and checkpoints keep them.
        self.register_buffer("tau", torch.tensor(float(spec.tau)))
        self.register_buffer("b", torch.tensor(float(spec.surrogate.b)))

    @property
    def state_names(self) -> tuple[str, ...]:
        return NEURONS[self.spec.kind].state

    @property
    def spiking(self) -> bool:
        return NEURONS[self.spec.kind].spiking

    def spike(self, v: Tensor) -> Tensor:
        """H(v) with this layer's surrogate gradient and temperature."""
        return spike(v, self.spec.surrogate.kind, float(self.b))

    def charge(self, current: Tensor, state: dict[str, Tensor], tau: Tensor | None = None) -> Tensor:
        """u[t] = tau * v[t-1] + I[t] (``tau``: this layer's, unless a searcher tries another)."""
        return (self.tau if tau is None else tau) * state["v"] + current

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    def fused_params(self) -> ThresholdParams | None:
        """This layer as a fused threshold neuron (``compiler.fused``), or None: a kind without a fused
        update runs its plain step."""
        return None

    def _fused(self) -> ThresholdParams | None:
        """The fused form to use now: in training mode (with gradients, or without them as in a stereo sample's
        burn-in windows, which otherwise ran the step T times in Python ops: the kernel's forward gives the
        step's bits), never in ONNX export; evaluation runs the plain step."""
        if (not torch.is_grad_enabled() and not self.training) or torch.onnx.is_in_onnx_export() \
                or fused_impl() == "plain":
            return None
        return self.fused_params()

    def forward(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        p = self._fused()
        if p is not None:
            y, new = threshold_steps(p, current.unsqueeze(0), state)
            return y[0], new
        u = self.charge(current, state)
        y = self.fire(u, state)
        return y, self.reset(u, y, state)

    def run_steps(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """T steps at once: ``current`` (T, B, ...) -> outputs (T, B, ...) and the state after the last step
        (the fused update where there is one, else the step T times)."""
        p = self._fused()
        if p is not None:
            return threshold_steps(p, current, state)
        ys = []
        for t in range(current.shape[0]):
            y, state = self(current[t], state)
            ys.append(y)
        return torch.stack(ys), state

    def extra_repr(self) -> str:
        s = self.spec
        return f"tau={s.tau}, threshold={s.threshold}, reset={s.reset}, surrogate={s.surrogate.kind}(b={s.surrogate.b})"


class LIF(NeuronModule):
    def fused_params(self) -> ThresholdParams:
        s = self.spec
        return ThresholdParams(float(self.tau), float(s.threshold), s.reset == "hard", s.surrogate.kind,
                                     float(self.b))

    def threshold(self, state: dict[str, Tensor]) -> Tensor | float:
        return self.spec.threshold

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return self.spike(u - self.threshold(state))

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.spec.reset == "hard":
            return {"v": u * (1 - y)}
        return {"v": u - self.threshold(state) * y}


class IF(LIF):
    def __init__(self, spec: Neuron):
        super().__init__(spec)
        self.tau.fill_(1.0)


class ALIF(LIF):
    def fused_params(self) -> ThresholdParams:
        s = self.spec
        return ThresholdParams(float(self.tau), float(s.threshold), s.reset == "hard", s.surrogate.kind,
                                     float(self.b), True, float(s.beta), float(s.tau_a))

    def threshold(self, state: dict[str, Tensor]) -> Tensor:
        return self.spec.threshold + self.spec.beta * state["a"]

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor], tau_a: Tensor | None = None) -> dict[str, Tensor]:
        """a[t+1] = tau_a * a[t] + y[t] (``tau_a``: this layer's, unless a searcher tries another)."""
        tau_a = self.spec.tau_a if tau_a is None else tau_a
        return {**super().reset(u, y, state), "a": tau_a * state["a"] + y}


class LI(NeuronModule):
    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return u

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"v": u}


class ReLU(NeuronModule):
    def charge(self, current: Tensor, state: dict[str, Tensor], tau: Tensor | None = None) -> Tensor:
        return current

    def fire(self, u: Tensor, state: dict[str, Tensor]) -> Tensor:
        return torch.relu(u)

    def reset(self, u: Tensor, y: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {}


# Kind -> its step definition; a new kind is one ``NEURONS.register`` and one ``NEURON_MODULES.register``.
NEURON_MODULES = Registry("neuron module")
for _kind, _cls in (("lif", LIF), ("if", IF), ("alif", ALIF), ("li", LI), ("relu", ReLU)):
    NEURON_MODULES.register(_kind, _cls)


def build_neuron(spec: Neuron) -> NeuronModule:
    return NEURON_MODULES[spec.kind](spec)
