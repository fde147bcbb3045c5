"""`hpo trial ID [--diagnosis]` and `hpo model ID`: one trial over REST."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.cli.diagnosis import print_trial_diagnosis
from service.cli.options import CommandError, Subparsers, add_client_command, client_of
from service.cli.output import fields, number, print_json, wants_json


def cmd_trial(args: argparse.Namespace) -> int:
    """One trial: a summary table (JSON: the API's trial with its curves and diagnosis),
    or with `--diagnosis` only its findings (JSON: the API's diagnosis)."""
    with client_of(args) as api:
        body = api.diagnosis(args.trial_id) if args.diagnosis else api.trial(args.trial_id)
    if wants_json(args):
        print_json(body)
    elif args.diagnosis:
        print_trial_diagnosis(body)
    else:
        epochs = max((len(points) for points in body["curves"].values()), default=0)
        fields(
            [
                ("trial", f"{body['trial_id']} (#{body['number']} of study {body['study_id']})"),
                ("state", body["state"]),
                ("value", number(body["value"])),
                ("test_accuracy", number(body["test_accuracy"])),
                ("epochs", epochs),
                ("duration_seconds", body["duration_seconds"]),
                ("model", "kept" if body["has_model"] else "none"),
                ("error", body["error"]),
                *((f"params.{k}", json.dumps(v)) for k, v in body["params"].items()),
                ("diagnosis", ", ".join(f["kind"] for f in body["diagnosis"]) or "-"),
                *(("warning", w) for w in body["warnings"]),
            ]
        )
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """Download a trial's model (checked against its SHA-256) to `-o` or trial-ID-model.pt."""
    out = Path(args.output or f"trial-{args.trial_id}-model.pt")
    with client_of(args) as api:
        try:
            api.download_model(args.trial_id, out)
        except OSError as e:
            raise CommandError(f"cannot write {out}: {e}") from e
    print(f"trial {args.trial_id}: model saved to {out} ({out.stat().st_size} bytes)")
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `trial` and `model`."""
    c = add_client_command(
        sub, "trial", cmd_trial, "one trial: state, value, parameters, diagnosis"
    )
    c.add_argument("trial_id", type=int)
    c.add_argument("--diagnosis", action="store_true", help="only its findings")
    c = add_client_command(
        sub,
        "model",
        cmd_model,
        "download a trial's trained model (a torch.save file)",
        output=False,  # -o names the file here
    )
    c.add_argument("trial_id", type=int)
    c.add_argument("-o", "--output", help="file to write (default trial-ID-model.pt)")
