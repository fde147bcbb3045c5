"""`hpo submit|studies|status|watch|trials|best|stop`: studies over REST."""

from __future__ import annotations

import argparse
import json
import sys

from service.cli.options import Subparsers, add_client_command, client_of, one_line
from service.cli.output import (
    StudyProgress,
    fields,
    number,
    print_json,
    progress_line,
    table,
    wants_json,
)
from service.client import Client, ConflictError, Json, load_spec_file

STUDY_COLUMNS = ("id", "name", "status", "finished", "running", "failed", "best", "direction")


def study_row(s: Json) -> tuple[object, ...]:
    c = s["counts"]
    done = f"{c['complete'] + c['pruned']}/{s['n_trials']}"
    return (
        s["id"],
        s["name"],
        s["status"],
        done,
        c["running"],
        c["fail"],
        number(s["best_value"]),
        s["direction"],
    )


def watch(api: Client, study_id: int, interval: float, as_json: bool) -> int:
    """Follow a study until it has ended and no trial runs (a progress bar on a terminal,
    progress lines elsewhere; with `as_json` only the final study, as JSON); 1 if it
    failed, else 0."""
    if as_json:
        final = api.wait(study_id, interval=interval)
        print_json(final)
    else:
        with StudyProgress() as show:
            final = api.wait(study_id, interval=interval, progress=show)
        if show.is_bar:  # elsewhere the last line printed is this one
            print(progress_line(final))
    return 1 if final["status"] == "failed" else 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a YAML or JSON spec (`--name` overrides its name); `--watch` follows it. The
    service's warnings about an accepted spec go to stderr, one `warning: ...` line each."""
    spec = load_spec_file(args.file)
    with client_of(args) as api:
        created = api.submit(spec, name=args.name)
        for warning in created.get("warnings") or []:
            print(f"warning: {one_line(str(warning))}", file=sys.stderr)
        if args.watch:
            if not wants_json(args):
                print(f"study {created['id']} {created['name']!r}: {created['status']}")
            return watch(api, int(created["id"]), args.interval, wants_json(args))
    if wants_json(args):
        print_json(created)
    else:
        print(f"study {created['id']} {created['name']!r}: {created['status']}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """Every study: a table, or a JSON list of the API's study summaries."""
    with client_of(args) as api:
        studies = list(api.studies())
    if wants_json(args):
        print_json(studies)
    else:
        table(STUDY_COLUMNS, (study_row(s) for s in studies))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One study's progress (JSON: the API's study with spec and best trial)."""
    with client_of(args) as api:
        study = api.get(args.study)
    if wants_json(args):
        print_json(study)
    else:
        print(progress_line(study))
        print(device_line(study))
    return 0


def device_line(s: Json) -> str:
    """The study's device time used, and its `budget.device_hours` limit if it has one."""
    used = float(s.get("device_seconds") or 0.0) / 3600
    limit = s.get("device_seconds_limit")
    if limit is None:
        return f"device hours used {used:.4g} (no limit)"
    return f"device hours used {used:.4g} / limit {float(limit) / 3600:.4g}"


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow a study until it ends; 1 if it failed."""
    with client_of(args) as api:
        return watch(api, api.study_id(args.study), args.interval, wants_json(args))


def cmd_trials(args: argparse.Namespace) -> int:
    """A page of a study's trials (or `--all` of them), then `(shown of total)`; JSON:
    `{"items": [...], "total": n}` as the API pages it."""
    with client_of(args) as api:
        if args.all:
            items = list(api.trials(args.study, state=args.state))
            page: Json = {"items": items, "total": len(items)}
        else:
            page = api.trials_page(args.study, args.limit, args.offset, args.state)
    if wants_json(args):
        print_json(page)
        return 0
    table(
        ("#", "id", "state", "value", "params", "error"),
        (
            (
                t["number"],
                t["trial_id"],
                t["state"],
                number(t["value"]),
                json.dumps(t["params"]),
                t["error"] or "",
            )
            for t in page["items"]
        ),
    )
    print(f"({len(page['items'])} of {page['total']})")
    return 0


def print_front(front: Json) -> None:
    """A multi-objective study's Pareto front as a table: one row per trial."""
    metrics = [f"{o['metric']} ({o['direction']})" for o in front["objectives"]]
    rows = (
        (t["number"], t["trial_id"], *(number(v) for v in t["values"]), json.dumps(t["params"]))
        for t in front["trials"]
    )
    table(("#", "trial", *metrics, "params"), rows, title="Pareto front")


def cmd_best(args: argparse.Namespace) -> int:
    """The best trial's value, parameters and configuration (JSON: the API's answer). A
    multi-objective study has no single best: its Pareto front is printed instead (JSON:
    `/pareto`'s answer)."""
    with client_of(args) as api:
        study_id = api.study_id(args.study)
        try:
            best = api.best(study_id)
        except ConflictError as e:
            if "pareto" not in str(e.detail):
                raise
            front = api.pareto(study_id)
            print_json(front) if wants_json(args) else print_front(front)
            return 0
    if wants_json(args):
        print_json(best)
        return 0
    fields(
        [
            ("trial", f"{best['trial_id']} (#{best['number']})"),
            ("value", number(best["value"])),
            ("test_accuracy", number(best["test_accuracy"])),
            *((f"params.{k}", v) for k, v in best["params"].items()),
            *((f"config.{k}", v) for k, v in best["config"].items() if k not in best["params"]),
        ]
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a study; its progress."""
    with client_of(args) as api:
        study = api.stop(args.study)
    print_json(study) if wants_json(args) else print(progress_line(study))
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
        ("best", cmd_best, "the best configuration of a study (or its Pareto front)"),
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
    c.add_argument("--state", choices=["running", "complete", "pruned", "fail", "waiting"])
    c.add_argument("--all", action="store_true", help="every trial, fetched page by page")
