"""`hpo dataset upload|list|show|delete` (REST) and `hpo token create|list|revoke` (database)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def _api() -> Any:
    from service.cli import main as cli  # the REST helpers live there; imported late (cycle)

    return cli


def cmd_dataset_upload(args: argparse.Namespace) -> int:
    cli = _api()
    path = Path(args.file)
    try:
        content = path.read_bytes()
    except OSError as e:
        raise cli.ApiError(f"cannot read {path}: {e}") from e
    form = {"name": args.name}
    if args.target:
        form["target"] = args.target
    info = cli._call(args, "POST", "/api/datasets", data=form, files={"file": (path.name, content)})
    print(
        f"dataset {info['name']!r}: {info['n_rows']} rows, shape {info['shape']}, "
        f"{info['n_classes']} classes, sha256 {info['sha256']}"
    )
    return 0


def cmd_dataset_list(args: argparse.Namespace) -> int:
    for d in _api()._call(args, "GET", "/api/datasets"):
        print(
            f"{d['name']:<24} {d['n_rows']:>8} rows  shape {d['shape']}  "
            f"{d['n_classes']} classes  {d['source_format']}  {d['sha256'][:12]}"
        )
    return 0


def cmd_dataset_show(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(_api()._call(args, "GET", f"/api/datasets/{args.name}"), indent=2))
    return 0


def cmd_dataset_delete(args: argparse.Namespace) -> int:
    cli = _api()
    try:
        with cli._client(args) as client:
            response = client.delete(f"/api/datasets/{args.name}")
    except Exception as e:
        raise cli.ApiError(f"cannot reach the service at {args.url}: {e}") from e
    if response.status_code != 204:
        raise cli.ApiError(f"{response.status_code}: {response.json().get('detail')}")
    print(f"dataset {args.name!r} deleted")
    return 0


def _database_url(args: argparse.Namespace) -> str:
    from service.core.settings import Settings

    overrides = {"database_url": args.database_url} if args.database_url else {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    url: str = Settings(**overrides).database_url
    return url


def cmd_token_create(args: argparse.Namespace) -> int:
    from service.access.tokens import TokenError, create_token

    try:
        info, token = create_token(_database_url(args), args.name, args.role)
    except TokenError as e:
        raise _api().ApiError(str(e)) from e
    print(token)
    print(
        f"token {info.id} {info.name!r} ({info.role}); shown once, only its hash is stored",
        file=__import__("sys").stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from service.access.tokens import list_tokens

    for t in list_tokens(_database_url(args)):
        state = "active" if t.revoked_at is None else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
        print(f"{t.id:>4}  {t.name:<20} {t.role:<7} created {t.created_at:%Y-%m-%d %H:%M}  {state}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from service.access.tokens import TokenError, revoke_tokens

    try:
        revoked = revoke_tokens(_database_url(args), args.token_ref)
    except TokenError as e:
        raise _api().ApiError(str(e)) from e
    for t in revoked:
        print(f"revoked token {t.id} {t.name!r} ({t.role})")
    return 0


def add_access_commands(
    sub: Any,
    _client: Callable[..., argparse.ArgumentParser],
    db_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    def rest(parent: Any, name: str, func: Any, help: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = parent.add_parser(name, help=help)
        c.add_argument(
            "--url", default=os.environ.get("HPO_URL", DEFAULT_URL), help="service URL (HPO_URL)"
        )
        c.add_argument("--token", default=os.environ.get("HPO_TOKEN"), help="API token (HPO_TOKEN)")
        c.set_defaults(func=func)
        return c

    ds = sub.add_parser("dataset", help="upload, list and delete datasets").add_subparsers(
        dest="dataset_command", required=True
    )
    c = rest(ds, "upload", cmd_dataset_upload, "upload a .npz, .csv or .parquet dataset")
    c.add_argument("file")
    c.add_argument("--name", required=True, help="the name specs use in dataset.name")
    c.add_argument("--target", help="label column of a CSV or Parquet file")
    rest(ds, "list", cmd_dataset_list, "list uploaded datasets")
    rest(ds, "show", cmd_dataset_show, "one dataset (JSON)").add_argument("name")
    rest(ds, "delete", cmd_dataset_delete, "delete a dataset no running study uses").add_argument(
        "name"
    )

    tok = sub.add_parser("token", help="API tokens (talks to the database)").add_subparsers(
        dest="token_command", required=True
    )
    c = tok.add_parser("create", help="create a token and print it (once)")
    db_flags(c)
    c.add_argument("--name", required=True, help="who or what uses it")
    c.add_argument("--role", required=True, choices=["read", "submit", "admin"])
    c.set_defaults(func=cmd_token_create)
    c = tok.add_parser("list", help="tokens (never their secrets)")
    db_flags(c)
    c.set_defaults(func=cmd_token_list)
    c = tok.add_parser("revoke", help="revoke a token by id, or all active tokens of a name")
    db_flags(c)
    c.add_argument("token_ref", metavar="ID|NAME")
    c.set_defaults(func=cmd_token_revoke)
