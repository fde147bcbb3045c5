"""`hpo dataset upload|list|show|delete` (REST) and `hpo token create|list|revoke` (these
open the database: a token is made before anyone can call the API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli.db import check_database, database_errors
from service.cli.options import (
    CommandError,
    Subparsers,
    add_client_command,
    add_database_options,
    client_of,
    settings_of,
)
from service.cli.output import add_output_option, fields, print_json, table, wants_json
from service.client import Json

if TYPE_CHECKING:
    from service.access.tokens import TokenInfo


DATASET_COLUMNS = ("name", "rows", "shape", "target", "format", "sha256")


def dataset_row(d: Json) -> tuple[object, ...]:
    return (
        d["name"],
        d["n_rows"],
        d["shape"],
        _target(d),
        d["source_format"],
        d["sha256"][:12],
    )


def cmd_dataset_upload(args: argparse.Namespace) -> int:
    """Upload a dataset file; print its rows, shape, classes and hash (JSON: the API's
    dataset)."""
    path = Path(args.file)
    try:
        content = path.read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e}") from e
    with client_of(args) as api:
        info = api.upload_dataset(args.name, content, filename=path.name, target=args.target)
    if wants_json(args):
        print_json(info)
        return 0
    print(
        f"dataset {info['name']!r}: {info['n_rows']} rows, shape {info['shape']}, "
        f"{_target(info)}, sha256 {info['sha256']}"
    )
    return 0


def _target(info: dict[str, object]) -> str:
    """`N classes`, or `regression` for a dataset of continuous targets."""
    return "regression" if info.get("task") == "regression" else f"{info['n_classes']} classes"


def cmd_dataset_list(args: argparse.Namespace) -> int:
    """The uploaded datasets: a table (JSON: the API's list)."""
    with client_of(args) as api:
        datasets = api.datasets()
    if wants_json(args):
        print_json(datasets)
    else:
        table(DATASET_COLUMNS, (dataset_row(d) for d in datasets))
    return 0


def cmd_dataset_show(args: argparse.Namespace) -> int:
    """One dataset (JSON: the API's dataset)."""
    with client_of(args) as api:
        info = api.dataset(args.name)
    if wants_json(args):
        print_json(info)
    else:
        fields((k, v) for k, v in info.items())
    return 0


def cmd_dataset_delete(args: argparse.Namespace) -> int:
    """Delete a dataset (the service refuses while a running study uses it)."""
    with client_of(args) as api:
        api.delete_dataset(args.name)
    print(f"dataset {args.name!r} deleted")
    return 0


def token_json(info: TokenInfo, secret: str | None = None) -> Json:
    """A token as `/api/tokens` gives it: id, name, role, created_at, revoked_at (ISO 8601),
    and the secret when it was just made."""
    out: Json = {
        "id": info.id,
        "name": info.name,
        "role": info.role,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at and info.revoked_at.isoformat(),
    }
    if secret is not None:
        out["token"] = secret
    return out


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create a token: the secret on stdout (shown once), what it is on stderr."""
    from service.access.tokens import TokenError, create_token
    from service.core.db.engine import session_scope

    url = settings_of(args).database_url
    check_database(url)
    try:
        with database_errors(url), session_scope(url) as session:
            info, token = create_token(session, args.name, args.role)
    except TokenError as e:
        raise CommandError(str(e)) from e
    if wants_json(args):
        print_json(token_json(info, token))
        return 0
    print(token)
    print(
        f"token {info.id} {info.name!r} ({info.role}); shown once, only its hash is stored",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """One line per token: id, name, role, created, active or revoked (never the secret)."""
    from service.access.tokens import list_tokens
    from service.core.db.engine import session_scope

    url = settings_of(args).database_url
    check_database(url)
    with database_errors(url), session_scope(url) as session:
        tokens = list_tokens(session)
    if wants_json(args):
        print_json([token_json(t) for t in tokens])
        return 0
    table(
        ("id", "name", "role", "created", "state"),
        (
            (
                t.id,
                t.name,
                t.role,
                f"{t.created_at:%Y-%m-%d %H:%M}",
                "active" if t.revoked_at is None else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}",
            )
            for t in tokens
        ),
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by id, or every active token of a name."""
    from service.access.tokens import TokenError, revoke_tokens
    from service.core.db.engine import session_scope

    url = settings_of(args).database_url
    check_database(url)
    try:
        with database_errors(url), session_scope(url) as session:
            revoked = revoke_tokens(session, args.token_ref)
    except TokenError as e:
        raise CommandError(str(e)) from e
    for t in revoked:
        print(f"revoked token {t.id} {t.name!r} ({t.role})")
    return 0


def add_commands(sub: Subparsers) -> None:
    """Add `dataset upload|list|show|delete` and `token create|list|revoke`."""
    ds = sub.add_parser("dataset", help="upload, list and delete datasets").add_subparsers(
        dest="dataset_command", required=True
    )
    c = add_client_command(
        ds, "upload", cmd_dataset_upload, "upload a .npz, .csv or .parquet dataset"
    )
    c.add_argument("file")
    c.add_argument("--name", required=True, help="the name specs use in dataset.name")
    c.add_argument("--target", help="label column of a CSV or Parquet file")
    add_client_command(ds, "list", cmd_dataset_list, "list uploaded datasets")
    add_client_command(ds, "show", cmd_dataset_show, "one dataset").add_argument("name")
    add_client_command(
        ds, "delete", cmd_dataset_delete, "delete a dataset no running study uses", output=False
    ).add_argument("name")

    tok = sub.add_parser("token", help="API tokens (talks to the database)").add_subparsers(
        dest="token_command", required=True
    )
    c = tok.add_parser("create", help="create a token and print it (once)")
    add_database_options(c)
    c.add_argument("--name", required=True, help="who or what uses it")
    # service.access.tokens.ROLES, spelled out: importing it would load SQLAlchemy here.
    c.add_argument(
        "--role",
        required=True,
        choices=["metrics", "read", "submit", "admin"],
        help="metrics: scrape /metrics only; read: also read the API; submit: also create "
        "and change what it owns; admin: change anything",
    )
    add_output_option(c)
    c.set_defaults(func=cmd_token_create)
    c = tok.add_parser("list", help="tokens (never their secrets)")
    add_database_options(c)
    add_output_option(c)
    c.set_defaults(func=cmd_token_list)
    c = tok.add_parser("revoke", help="revoke a token by id, or all active tokens of a name")
    add_database_options(c)
    c.add_argument("token_ref", metavar="ID|NAME")
    c.set_defaults(func=cmd_token_revoke)
