"""`hpo submit|studies|status|watch|trials|best|stop`: studies over REST."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from service.cli.client import ApiClient, Json
from service.cli.options import (
    CommandError,
    Subparsers,
    add_client_command,
    client_of,
    one_line,
)
from service.core.states import StudyState

FINAL = (StudyState.COMPLETED, StudyState.STOPPED, StudyState.FAILED)


class SpecLoader(yaml.SafeLoader):
    """YAML's safe loader without timestamps: a spec holds no dates, and a value such as
    `name: 2024-01-01` means the string."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_spec_file(path: Path) -> Json:
    """A study spec from a `.json` file, or YAML from any other. Raises `CommandError` with
    one line: the file cannot be read, its syntax is wrong (with line and column), or it
    does not hold a mapping of JSON values (naming the first field that is not one)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"cannot read {path}: {e}") from e
    try:
        if path.suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            spec = yaml.load(text, Loader=SpecLoader)  # a SafeLoader
    except json.JSONDecodeError as e:
        raise CommandError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CommandError(f"{path}: invalid YAML{where}: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise CommandError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(spec, dict):
        found = "nothing" if spec is None else f"a {type(spec).__name__}"
        raise CommandError(
            f"{path}: a study spec is a mapping of fields (name, dataset, space, ...), not {found}"
        )
    problem = non_json_value(spec)
    if problem:
        raise CommandError(f"{path}: {problem}")
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


def progress_line(s: Json) -> str:
    """One line of a study's progress: status, finished/budget, counts by state, best (its
    metric, and the dataset's task)."""
    c = s["counts"]
    best = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
    metric = f"{s['metric']} " if s.get("metric") else ""  # older services do not say
    task = f" ({s['task']})" if s.get("task") else ""
    return (
        f"[{s['id']}] {s['name']}: {s['status']}  finished {c['complete'] + c['pruned']}"
        f"/{s['n_trials']} (complete {c['complete']}, pruned {c['pruned']}, "
        f"failed {c['fail']}, running {c['running']})  best {metric}{best}{task}"
    )


def watch(api: ApiClient, study_id: int, interval: float) -> int:
    """Print the progress line each time it changes, polling every `interval` seconds,
    until the study has ended and no trial runs; 1 if it failed, else 0."""
    last = ""
    while True:
        s = api.study(study_id)
        line = progress_line(s)
        if line != last:
            print(line, flush=True)
            last = line
        if s["status"] in FINAL and s["counts"]["running"] == 0:
            return 0 if s["status"] != StudyState.FAILED else 1
        time.sleep(interval)


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a YAML or JSON spec (`--name` overrides its name); `--watch` follows it. The
    service's warnings about an accepted spec go to stderr, one `warning: ...` line each."""
    spec = load_spec_file(Path(args.file))
    if args.name:
        spec["name"] = args.name
    with client_of(args) as api:
        created = api.submit(spec)
        print(f"study {created['id']} {created['name']!r}: {created['status']}")
        for warning in created.get("warnings") or []:
            print(f"warning: {one_line(str(warning))}", file=sys.stderr)
        if args.watch:
            return watch(api, int(created["id"]), args.interval)
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """Every study's progress line."""
    with client_of(args) as api:
        for s in api.studies():
            print(progress_line(s))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One study's progress line."""
    with client_of(args) as api:
        print(progress_line(api.study(api.study_id(args.study))))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a study until it ends; 1 if it failed."""
    with client_of(args) as api:
        return watch(api, api.study_id(args.study), args.interval)


def cmd_trials(args: argparse.Namespace) -> int:
    """A page of a study's trials, one line each, then `(shown of total)`."""
    with client_of(args) as api:
        page = api.trials(api.study_id(args.study), limit=args.limit, offset=args.offset)
    for t in page["items"]:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        extra = f"  error: {t['error']}" if t["error"] else ""
        print(f"#{t['number']:<4} {t['state']:<9} {value:>8}  {json.dumps(t['params'])}{extra}")
    print(f"({len(page['items'])} of {page['total']})")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """The best configuration, as indented JSON."""
    with client_of(args) as api:
        print(json.dumps(api.best(api.study_id(args.study)), indent=2))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a study; its progress line."""
    with client_of(args) as api:
        print(progress_line(api.stop(api.study_id(args.study))))
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `submit`, `studies`, `status`, `best`, `stop`, `watch` and `trials`."""
    c = add_client_command(sub, "submit", cmd_submit, "submit a study spec (YAML or JSON)")
    c.add_argument("file")
    c.add_argument("--name", help="override the spec's name")
    c.add_argument("--watch", action="store_true", help="follow progress until it finishes")
    c.add_argument("--interval", type=float, default=2.0)
    add_client_command(sub, "studies", cmd_studies, "list studies")
    for name, func, help in (
        ("status", cmd_status, "one study's progress"),
        ("best", cmd_best, "the best configuration of a study"),
        ("stop", cmd_stop, "stop a study: no new trials"),
    ):
        add_client_command(sub, name, func, help).add_argument("study", help="study id or name")
    c = add_client_command(sub, "watch", cmd_watch, "follow a study until it finishes")
    c.add_argument("study", help="study id or name")
    c.add_argument("--interval", type=float, default=2.0)
    c = add_client_command(sub, "trials", cmd_trials, "list a study's trials")
    c.add_argument("study", help="study id or name")
    c.add_argument("--limit", type=int, default=100)
    c.add_argument("--offset", type=int, default=0)
