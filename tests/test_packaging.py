"""What the README promises exists: examples, docker files, documented parameters/commands."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

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


def make_commands(target: str, tmp_path: Path) -> str:
    """What `make <target>` would run on a checkout without a virtualenv."""
    venv = f"VENV={tmp_path / 'venv'}"
    return subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, venv], capture_output=True, text=True, check=True
    ).stdout


def test_make_run_installs_without_the_test_tools(tmp_path: Path) -> None:
    run = make_commands("run", tmp_path)
    assert "pip install -e ." in run and "[dev]" not in run
    assert "pip install -e '.[dev]'" in make_commands("test", tmp_path)


def test_dependencies_are_capped_where_an_api_is_relied_on() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (optuna,) = (Requirement(r) for r in project["dependencies"] if r.startswith("optuna"))
    assert "6.0" not in optuna.specifier and "5.0" in optuna.specifier  # below the next major
    assert not any(r.startswith("torch") and "==" in r for r in project["dependencies"])
