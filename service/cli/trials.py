"""`hpo trial ID [--diagnosis]` and `hpo model ID`: one trial over REST."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.cli.diagnosis import print_trial_diagnosis
from service.cli.options import CommandError, Subparsers, add_client_command, client_of


def cmd_trial(args: argparse.Namespace) -> int:
    """One trial as indented JSON, or with `--diagnosis` only its findings as text."""
    with client_of(args) as api:
        if args.diagnosis:
            print_trial_diagnosis(api.trial_diagnosis(args.trial_id))
        else:
            print(json.dumps(api.trial(args.trial_id), indent=2))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """Download a trial's model (checked against its SHA-256) to `-o` or trial-ID-model.pt."""
    with client_of(args) as api:
        content = api.model(args.trial_id)
    out = Path(args.output or f"trial-{args.trial_id}-model.pt")
    try:
        out.write_bytes(content)
    except OSError as e:
        raise CommandError(f"cannot write {out}: {e}") from e
    print(f"trial {args.trial_id}: model saved to {out} ({len(content)} bytes)")
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `trial` and `model`."""
    c = add_client_command(
        sub, "trial", cmd_trial, "one trial with its curves and diagnosis (JSON)"
    )
    c.add_argument("trial_id", type=int)
    c.add_argument("--diagnosis", action="store_true", help="only its findings, as text")
    c = add_client_command(
        sub, "model", cmd_model, "download a trial's trained model (a torch.save file)"
    )
    c.add_argument("trial_id", type=int)
    c.add_argument("-o", "--output", help="file to write (default trial-ID-model.pt)")
