"""`hpo report STUDY`, `hpo learning-curve STUDY [--watch]`, and the text of
`hpo trial ID --diagnosis`: diagnoses over REST."""

from __future__ import annotations

import argparse
import time

from service.cli.options import Subparsers, add_client_command, client_of
from service.cli.output import print_json, table, wants_json
from service.client import Client, Json
from service.core.states import JobState

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


def format_findings(findings: list[Json]) -> str:
    """Findings as text: `kind [severity]: evidence` and a `  - remedy` line per remedy."""
    if not findings:
        return "no findings"
    lines = []
    for f in findings:
        evidence = ", ".join(f"{k}={v}" for k, v in f["evidence"].items())
        lines.append(f"{f['kind']} [{f['severity']}]: {evidence}")
        lines += [f"  - {r}" for r in f["remedies"]]
    return "\n".join(lines)


def print_trial_diagnosis(body: Json) -> None:
    """Print one trial's diagnosis (the API's `{"trial_id", "findings"}`) as text."""
    print(f"trial {body['trial_id']}:")
    print(format_findings(body["findings"]))


def cmd_report(args: argparse.Namespace) -> int:
    """A study's report as text (`-o json`, or `--json`: the API's report): counts, best
    trial, importances, advice."""
    with client_of(args) as api:
        report = api.report(args.study)
    if args.json or wants_json(args):
        print_json(report)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in report["finding_counts"].items()) or "none"
    print(f"study {report['study_id']}: {report['n_trials']} finished trials; findings: {counts}")
    if report["best_trial_id"] is not None:
        print(f"\nbest trial (id {report['best_trial_id']}):")
        print(format_findings(report["best_trial_findings"]))
    if report["importances"]:
        print(
            "\nimportances: " + ", ".join(f"{k} {v:.2f}" for k, v in report["importances"].items())
        )
    elif report.get("importances_note"):
        print(f"\nimportances: {report['importances_note']}")
    for hit in report["boundary_hits"]:
        print(f"boundary: {hit['advice']}")
    print(f"\nadvice: {report['advice']}")
    return 0


def print_curve(job: Json) -> None:
    """A learning-curve job: its state, a table of one row per data size, the verdict or
    error."""
    print(f"learning curve {job['id']} of study {job['study_id']}: {job['state']}")
    if job["points"]:
        table(
            ("data", "n_train", "epochs", "train acc", "val acc", "train loss", "val loss"),
            (
                (
                    f"{p['fraction']:.0%}",
                    p["n_train"],
                    p["epochs"],
                    f"{p['train_accuracy']:.4f}",
                    f"{p['val_accuracy']:.4f}",
                    f"{p['train_loss']:.4f}",
                    f"{p['val_loss']:.4f}",
                )
                for p in job["points"]
            ),
        )
    if job["verdict"]:
        print(f"verdict: {job['verdict']} — {job['explanation']}")
    if job["error"]:
        print(f"error: {job['error']}")


def watch_curve(
    api: Client, study_id: int, job: Json, interval: float, quiet: bool = False
) -> Json:
    """Poll the study's learning curve every `interval` seconds until it has finished,
    printing a line each time a data size is done; the finished job."""
    seen = -1
    while job["state"] in UNFINISHED:
        if len(job["points"]) != seen and not quiet:
            seen = len(job["points"])
            print(f"  {job['state']}: {seen}/{len(job['fractions'])} sizes done", flush=True)
        time.sleep(interval)
        job = api.learning_curve(study_id)
    return job


def cmd_learning_curve(args: argparse.Namespace) -> int:
    """Queue a learning curve (or with `--status` show the latest), `--watch` it to the end;
    exit 1 when it failed. JSON: the API's job, once (the final one with `--watch`)."""
    with client_of(args) as api:
        study_id = api.study_id(args.study)
        if args.status:
            job = api.learning_curve(study_id)
        else:
            job = api.queue_learning_curve(study_id, args.fractions)
            trial = job["source_trial_id"]
            if not wants_json(args):
                print(f"learning curve {job['id']} queued for study {study_id} (trial {trial})")
        if args.watch:
            job = watch_curve(api, study_id, job, args.interval, quiet=wants_json(args))
    print_json(job) if wants_json(args) else print_curve(job)
    return 0 if job["state"] != JobState.FAIL else 1


def add_commands(sub: Subparsers) -> None:
    """Add `report` and `learning-curve`."""
    c = add_client_command(sub, "report", cmd_report, "a study's diagnosis report and advice")
    c.add_argument("study", help="study id or name")
    c.add_argument("--json", action="store_true", help="the same as -o json")
    c = add_client_command(
        sub,
        "learning-curve",
        cmd_learning_curve,
        "train the best configuration on 10/25/50/100%% of the data: would more data help?",
    )
    c.add_argument("study", help="study id or name")
    c.add_argument("--fractions", type=float, nargs="+", help="default 0.1 0.25 0.5 1.0")
    c.add_argument("--status", action="store_true", help="show the latest one, queue nothing")
    c.add_argument("--watch", action="store_true", help="follow it until it finishes")
    c.add_argument("--interval", type=float, default=2.0)
