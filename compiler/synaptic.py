"""The synaptic work of a lowered graph: how many synapses one spike of each spiking layer reaches and
the dense MACs of each consumer (the planner's consumers: who reads which channel blocks, at what cost)."""

from __future__ import annotations


def synaptic_work(neurons: dict, consumers: list) -> tuple[dict[str, float], dict[str, int]]:
    """Fan-out per spiking layer (synapses one spike reaches) and dense MACs per consumer.

    Parts are channel blocks; under spike mixing several parts are summed into the same channels.
    Every spike of every part reaches the consumer's synapses (fan-out per channel share); the dense
    work is the consumer's MACs once, split over the parts that are not spikes."""
    fan_out: dict[str, float] = {n.name: 0.0 for n in neurons.values() if n.spiking}
    dense: dict[str, int] = {}
    for consumer, macs, parts, channels in consumers:
        stacked = sum(part.channels for part in parts)
        for part in parts:
            producer = neurons.get(part.producer)
            if part.binary and producer is not None and producer.spiking:
                fan_out[part.producer] += macs * part.channels / channels / producer.size
            else:
                dense[consumer] = dense.get(consumer, 0) + round(macs * part.channels / stacked)
    return fan_out, dense
