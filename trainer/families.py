"""Plug-in model families: builders registered in the `hpo.models` entry-point group.

A plug-in distribution declares in its packaging metadata

    [project.entry-points."hpo.models"]
    residual_mlp = "residual_mlp:build"

where `build(config: TrainConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module`
returns any module mapping a batch (batch, *input_shape) to (batch, n_classes) outputs.
The shipped families (`mlp`, `cnn`) cannot be taken over. Looking a family up imports the
plug-in's module, so the plug-in must be installed where the model is built or rebuilt.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from trainer.loop import ModelBuilder
from trainer.model import FAMILIES

ENTRY_POINT_GROUP = "hpo.models"


class UnknownFamily(ValueError):
    """A family that is neither shipped nor installed, or whose entry point is no builder."""


def registered() -> dict[str, EntryPoint]:
    """Families installed through entry points; shipped names cannot be taken over."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in FAMILIES}


def available() -> list[str]:
    return [*FAMILIES, *sorted(registered())]


def check_family(family: str) -> None:
    """Raise `UnknownFamily` unless `family` is shipped or installed here."""
    if family not in FAMILIES and family not in registered():
        raise UnknownFamily(
            f"unknown model family {family!r}; available: {available()} (more can be installed "
            f"through the {ENTRY_POINT_GROUP!r} entry-point group)"
        )


def plugin_builder(family: str) -> ModelBuilder:
    """The builder an installed plug-in registered for `family` (imports its module).
    Raises `UnknownFamily` if it is not installed here or not callable."""
    check_family(family)
    if family in FAMILIES:
        raise UnknownFamily(f"{family!r} is a shipped family, built by trainer.model")
    builder = registered()[family].load()
    if not callable(builder):
        raise UnknownFamily(f"entry point {family!r} of {ENTRY_POINT_GROUP!r} is not callable")
    return builder  # type: ignore[no-any-return]
