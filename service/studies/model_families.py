"""Model families a spec may name: those shipped in the package, and those installed on the
machine through the `hpo.models` entry-point group (`trainer.families`). Model code never
comes from a request.

A plug-in registers a builder in its packaging metadata:

    [project.entry-points."hpo.models"]
    residual_mlp = "residual_mlp:build"

where `build(config: TrainConfig, input_shape: tuple[int, ...], n_classes: int)
-> torch.nn.Module` returns any module mapping a batch of shape (batch, *input_shape) to
(batch, n_classes) logits (examples/plugins/residual_mlp is a complete one). The service
checks the name when a study is submitted; each worker loads the builder from its own
environment, so install the plug-in on the workers (and wherever a saved model of the
family is rebuilt).
"""

from __future__ import annotations

from trainer.families import (
    ENTRY_POINT_GROUP,
    UnknownFamily,
    available,
    check_family,
    plugin_builder,
    registered,
)
from trainer.loop import ModelBuilder
from trainer.model import FAMILIES

SHIPPED = FAMILIES

__all__ = [
    "ENTRY_POINT_GROUP",
    "SHIPPED",
    "UnknownFamily",
    "available",
    "builder_for",
    "check_family",
    "registered",
]


def builder_for(family: str) -> ModelBuilder | None:
    """None for a shipped family (the trainer builds it); the plug-in's builder otherwise."""
    if family in SHIPPED:
        return None
    return plugin_builder(family)
