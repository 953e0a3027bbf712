"""Each layer's time in one run of a network, from a runtime's own profiler: its ops, in the
order they ran, given to the layers of the chain MobileNet is (convs, then the pool, then the
classifier; the order of ``arch.layers``). Each runtime names its ops (``ChainOps``) beside its
predictor; ``bench``'s layer shares and the latency model's calibration read a profile the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChainOps:
    """How a runtime's profiled ops map onto a chain's layers (``chain_layer_seconds``)."""

    convs: tuple[str, ...]  # each is the chain's next conv layer
    before: tuple[str, ...]  # belongs to the layer after it (a pad, a reorder into a conv's layout)
    pools: tuple[str, ...]  # the chain's last layer but one
    classifiers: tuple[str, ...]  # its last layer


def chain_layer_seconds(nodes: Sequence[tuple[str, float]], ops: ChainOps) -> list[float]:
    """One run's (op, seconds) nodes, in execution order, as seconds per layer of a chain of
    convs, then the pool, then the classifier: a conv op starts the next conv layer, a ``before``
    op is added to the layer after it, anything else (a reorder out of a layout, a flatten) to
    the layer before it."""
    convs = sum(op in ops.convs for op, _ in nodes)
    layers = [0.0] * (convs + 2)
    at, pending = -1, 0.0
    for op, seconds in nodes:
        if op in ops.before:
            pending += seconds
            continue
        if op in ops.convs:
            at += 1
        elif op in ops.pools:
            at = convs
        elif op in ops.classifiers:
            at = convs + 1
        layers[max(at, 0)] += seconds + pending
        pending = 0.0
    layers[max(at, 0)] += pending
    return layers
