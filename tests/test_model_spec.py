"""Spec fields of the model side: model.family cnn, dataset shape/path, image datasets,
the new parameters' domains and augmentation refused for tabular data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.studies.spec import StudySpec
from tests.conftest import DIGITS_SPEC


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for key in parents:
            node = node[key]
        node[leaf] = value
    return spec


def test_cnn_example_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    spec = StudySpec.model_validate(
        yaml.safe_load((root / "examples" / "digits_cnn.yaml").read_text())
    )
    assert spec.model.family == "cnn" and spec.dataset.shape == "image"


def test_cnn_on_digits_images_with_model_params_is_accepted() -> None:
    spec = StudySpec.model_validate(
        _spec(
            model={"family": "cnn"},
            dataset__shape="image",
            space__init={"type": "categorical", "choices": ["he_normal", "xavier_uniform"]},
            space__batch_norm={"type": "categorical", "choices": ["none", "before", "after"]},
            space__augment={"type": "categorical", "choices": ["none", "shift", "shift_rotate"]},
            space__conv_channels={"type": "int", "low": 8, "high": 64, "log": True},
            space__input_noise={"type": "float", "low": 0.0, "high": 0.3},
            fixed={"conv_blocks": 2, "kernel_size": 3, "pooling": "avg", "leaky_relu_slope": 0.1},
        )
    )
    assert spec.model.family == "cnn" and spec.dataset.shape == "image"
    image_sets = StudySpec.model_validate(
        _spec(dataset={"name": "cifar10", "path": "/data/cifar"}, fixed={"augment": "shift"})
    )
    assert image_sets.dataset.path == "/data/cifar"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fixed__augment": "shift"}, "fixed.augment: augmentation needs image data"),
        (
            {"space__augment": {"type": "categorical", "choices": ["none", "shift_rotate"]}},
            "space.augment: augmentation needs image data; dataset 'digits' is not images "
            "(digits: set dataset.shape: image)",
        ),
        ({"dataset": {"name": "mnist", "shape": "flat"}, "fixed__augment": "shift"}, "augment"),
        ({"dataset": {"name": "wine", "shape": "image"}}, "only digits can be read as images"),
        ({"dataset": {"name": "wine", "path": "/x"}}, "path: only image datasets"),
        ({"dataset": {"name": "digits", "download": True}}, "download: only image datasets"),
        ({"model": {"family": "rnn"}}, "family"),
        ({"fixed__init": "lecun"}, "fixed.init: must be one of"),
        ({"fixed__batch_norm": "middle"}, "fixed.batch_norm"),
        ({"fixed__pooling": "min"}, "fixed.pooling"),
        ({"fixed__leaky_relu_slope": 1.0}, "fixed.leaky_relu_slope: must be < 1"),
        ({"fixed__init_std": 0.0}, "fixed.init_std: must be > 0"),
        ({"fixed__hidden_units_shrink": 1.5}, "fixed.hidden_units_shrink: must be <= 1"),
        ({"space__kernel_size": {"type": "int", "low": 0, "high": 5}}, "space.kernel_size: low"),
        ({"space__conv_blocks": {"type": "float", "low": 1, "high": 3}}, "space.conv_blocks"),
    ],
)
def test_bad_model_specs_name_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(_spec(**changes))
    # Each error sits at the field it names (issue 12): "field: reason" must match an error's
    # location and its message.
    field, _, reason = message.partition(": ")
    if not reason or " " in field:  # no field named: the reason alone
        field, reason = "", message
    located = [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]
    assert any(field in loc and reason in f"{loc}: {msg}" for loc, msg in located), located
