"""Model families a spec may name: those shipped in the package, and those installed on the
machine through the `hpo.models` entry-point group. Model code never comes from a request.

A plug-in registers a builder in its packaging metadata:

    [project.entry-points."hpo.models"]
    tiny_resnet = "my_models:build_tiny_resnet"

where `build_tiny_resnet(config: TrainConfig, input_shape: tuple[int, ...], n_classes: int)
-> torch.nn.Module` returns a module mapping a batch of shape (batch, *input_shape) to
(batch, n_classes) logits. The service checks the name when a study is submitted; each
worker loads the builder from its own environment, so install the plug-in on the workers.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from trainer.loop import ModelBuilder

ENTRY_POINT_GROUP = "hpo.models"
SHIPPED = ("mlp", "cnn")


class UnknownFamily(ValueError):
    pass


def registered() -> dict[str, EntryPoint]:
    """Families installed through entry points; shipped names cannot be taken over."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in SHIPPED}


def available() -> list[str]:
    return [*SHIPPED, *sorted(registered())]


def check_family(family: str) -> None:
    if family not in SHIPPED and family not in registered():
        raise UnknownFamily(
            f"unknown model family {family!r}; available: {available()} (more can be installed "
            f"through the {ENTRY_POINT_GROUP!r} entry-point group)"
        )


def builder_for(family: str) -> ModelBuilder | None:
    """None for a shipped family (the trainer builds it); the plug-in's builder otherwise."""
    if family in SHIPPED:
        return None
    check_family(family)
    builder = registered()[family].load()
    if not callable(builder):
        raise UnknownFamily(f"entry point {family!r} of {ENTRY_POINT_GROUP!r} is not callable")
    return builder  # type: ignore[no-any-return]
