"""Study specs from files: JSON, or YAML (safe, without timestamps), checked to be a mapping
of JSON values before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


class SpecFileError(ValueError):
    """A spec file could not be used: it cannot be read, its syntax is wrong (the message
    gives line and column), or it does not hold a mapping of JSON values. One line."""


class SpecLoader(yaml.SafeLoader):
    """YAML's safe loader without timestamps: a spec holds no dates, and a value such as
    `name: 2024-01-01` means the string."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A study spec from a `.json` file, or YAML from any other. Raises `SpecFileError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecFileError(f"cannot read {path}: {e}") from e
    try:
        if path.suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            spec = yaml.load(text, Loader=SpecLoader)  # a SafeLoader
    except json.JSONDecodeError as e:
        raise SpecFileError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecFileError(f"{path}: invalid YAML{where}: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise SpecFileError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(spec, dict):
        found = "nothing" if spec is None else f"a {type(spec).__name__}"
        raise SpecFileError(
            f"{path}: a study spec is a mapping of fields (name, dataset, space, ...), not {found}"
        )
    problem = non_json_value(spec)
    if problem:
        raise SpecFileError(f"{path}: {problem}")
    return spec


def non_json_value(value: Any, where: str = "") -> str | None:
    """`"field.path: why"` for the first value in `value` that JSON cannot carry (a YAML
    binary or set, a key that is not a string); None when there is none."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path}: a {type(key).__name__} cannot be a key; use a string"
            found = non_json_value(item, path)
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = non_json_value(item, f"{where}[{i}]")
            if found:
                return found
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return f"{where or 'the spec'}: {type(value).__name__} is not a JSON value"
