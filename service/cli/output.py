"""How commands print: `-o table` (rich tables, the default) or `-o json` (the API's JSON
body, indented; stable, documented in the README), and `hpo watch`'s progress bar."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service.client import Json

FORMATS = ("table", "json")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """`-o/--output table|json` (default table)."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help="table (default) or json: the API's answer, for scripts",
    )


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command was asked for JSON."""
    return getattr(args, "output", "table") == "json"


class PipeConsole(Console):
    """rich's console, except that a closed output raises `BrokenPipeError` (rich exits 1
    by default): `hpo`'s main() turns it into its quiet exit 141, as for any command."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def console() -> Console:
    """A console on the current stdout (looked up per call: tests swap it). Off a terminal:
    no colours, and lines as wide as they need (up to 200 columns) instead of 80."""
    out = sys.stdout
    if out.isatty():
        return PipeConsole(file=out, highlight=False)
    return PipeConsole(file=out, highlight=False, color_system=None, width=200, soft_wrap=True)


def print_json(data: Any) -> None:
    """`data` as indented JSON (the API's field names and values, unchanged)."""
    print(json.dumps(data, indent=2))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table with a header row; None cells show as `-`."""
    t = Table(*columns, title=title, title_justify="left", box=None, pad_edge=False)
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    console().print(t)


def fields(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
    """A two-column table of `name value` lines."""
    table(("field", "value"), pairs, title=title)


def number(value: float | None) -> str:
    """A metric value to 4 decimals; `-` for none."""
    return "-" if value is None else f"{value:.4f}"


def finished(study: Json) -> int:
    """A study's finished trials (complete + pruned), what its budget counts against."""
    counts = study["counts"]
    return int(counts["complete"] + counts["pruned"])


def progress_line(s: Json) -> str:
    """One line of a study's progress: status, finished/budget, counts by state, best (its
    metric, and the dataset's task)."""
    c = s["counts"]
    metric = f"{s['metric']} " if s.get("metric") else ""  # older services do not say
    task = f" ({s['task']})" if s.get("task") else ""
    return (
        f"[{s['id']}] {s['name']}: {s['status']}  finished {finished(s)}"
        f"/{s['n_trials']} (complete {c['complete']}, pruned {c['pruned']}, "
        f"failed {c['fail']}, running {c['running']})  best {metric}{number(s['best_value'])}{task}"
    )


class StudyProgress:
    """`hpo watch`'s display, fed each polled state: on a terminal a progress bar of
    finished/budget with the status, running trials and best-so-far; elsewhere (a log, a
    pipe) the progress line each time it changes."""

    def __init__(self) -> None:
        self._console = console()
        self._last = ""
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def __enter__(self) -> StudyProgress:
        if self._console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self._console,
            )
            self._bar.start()
        return self

    @property
    def is_bar(self) -> bool:
        """Whether a progress bar is shown (on a terminal), not progress lines."""
        return self._bar is not None

    def __call__(self, s: Json) -> None:
        if self._bar is None:
            line = progress_line(s)
            if line != self._last:
                print(line, flush=True)
                self._last = line
            return
        c = s["counts"]
        detail = (
            f"{s['status']}  running {c['running']}  failed {c['fail']}  "
            f"best {number(s['best_value'])}"
        )
        if not self._bar.tasks:
            name = f"[{s['id']}] {s['name']}"
            self._task = self._bar.add_task(name, total=s["n_trials"], detail=detail)
        self._bar.update(self._task, completed=finished(s), detail=detail)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
