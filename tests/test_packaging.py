"""What the README promises exists: examples, docker files, documented parameters/commands."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from service.cli.main import build_parser
from tests.conftest import DIGITS_SPEC
from trainer.params import PARAMS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_examples_are_the_issue_spec() -> None:
    assert json.loads((ROOT / "examples" / "digits.json").read_text()) == DIGITS_SPEC
    assert yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text()) == DIGITS_SPEC


def test_readme_documents_every_parameter_and_command() -> None:
    for name in PARAMS:
        assert f"`{name}`" in README, name
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices:  # type: ignore[union-attr]
        assert f"hpo {command}" in README, command


def test_compose_builds_from_files_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (ROOT / "docker" / build["context"] / build["dockerfile"]).exists(), name
    assert compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
