"""`hpo`: serve, worker, db upgrade, and REST client commands (submit, studies, best, ...)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.cli.access import add_access_commands

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("completed", "stopped", "failed")


def _settings(args: argparse.Namespace) -> Any:
    from service.core.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "workers": getattr(args, "workers", None),
            "data_dir": getattr(args, "data_dir", None),
            "device": getattr(args, "device", None),
            "torch_threads": getattr(args, "threads", None),
            "log_level": getattr(args, "log_level", None),
            "stop_deadline_seconds": getattr(args, "stop_deadline", None),
            "auth": getattr(args, "auth", None),
        }.items()
        if v is not None
    }
    return Settings(**overrides)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("optuna").setLevel(logging.WARNING)


# ---- server-side commands ----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from service.cli.serve import serve
    from service.core.db.migrate import upgrade

    settings = _settings(args)
    _logging(settings.log_level)
    if not args.no_migrate:
        upgrade(settings.database_url)
    serve(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from service.worker.pool import node_slots, run_pool

    settings = _settings(args)
    _logging(settings.log_level)
    studies = [x.strip() for x in args.studies.split(",") if x.strip()] if args.studies else None
    try:
        slots = node_slots(args.gpus, args.trials_per_gpu, settings.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(slots) > 1:
        extra = ["--max-trials", str(args.max_trials)] if args.max_trials else []
        extra += ["--until-idle"] if args.until_idle else []
        return run_pool(settings, slots, studies=studies, worker_args=extra)
    from service.worker.process import WorkerProcess

    slot = slots[0]
    device = f"cuda:{slot.visible_devices}" if slot.visible_devices else slot.device
    settings = settings.model_copy(update={"device": device})
    code = WorkerProcess(settings, studies).run(
        max_trials=args.max_trials, until_idle=args.until_idle
    )
    # Everything is recorded: leave without the interpreter's final garbage collection,
    # which takes seconds in a process holding torch (far more on a loaded node) and
    # would eat into the stop deadline.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_worker_health(args: argparse.Namespace) -> int:
    from service.scheduling.workers import local_workers_alive

    settings = _settings(args)
    alive = local_workers_alive(settings.database_url, settings.worker_grace_seconds)
    print(f"{alive} worker(s) alive on this host")
    return 0 if alive > 0 else 1


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from service.core.db.migrate import upgrade

    settings = _settings(args)
    upgrade(settings.database_url)
    print(f"database at {_redact(settings.database_url)} is up to date")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ---- REST client commands ------------------------------------------------------------------


class ApiError(Exception):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    token = getattr(args, "token", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=args.url, timeout=30.0, headers=headers)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    return _request(args, method, path, **kwargs).json()


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        with _client(args) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        raise ApiError(f"cannot reach the service at {args.url}: {e}") from e
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # validation errors: one line each, naming the field
            detail = "\n".join(
                f"  {'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                for d in detail
            )
            detail = "invalid request:\n" + detail
        raise ApiError(f"{response.status_code}: {detail}")
    return response


def _study_id(args: argparse.Namespace, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    for study in _call(args, "GET", "/api/studies", params={"limit": 1000}):
        if study["name"] == ref:
            return int(study["id"])
    raise ApiError(f"no study named {ref!r}")


def load_spec_file(path: Path) -> Any:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        spec = load_spec_file(Path(args.file))
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ApiError(f"cannot read {args.file}: {e}") from e
    if args.name:
        spec["name"] = args.name
    created = _call(args, "POST", "/api/studies", json=spec)
    print(f"study {created['id']} {created['name']!r}: {created['status']}")
    if args.watch:
        return _watch(args, int(created["id"]))
    return 0


def _progress_line(s: dict[str, Any]) -> str:
    c = s["counts"]
    best = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
    return (
        f"[{s['id']}] {s['name']}: {s['status']}  finished {c['complete'] + c['pruned']}"
        f"/{s['n_trials']} (complete {c['complete']}, pruned {c['pruned']}, "
        f"failed {c['fail']}, running {c['running']})  best {best}"
    )


def cmd_studies(args: argparse.Namespace) -> int:
    for s in _call(args, "GET", "/api/studies"):
        print(_progress_line(s))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(_progress_line(_call(args, "GET", f"/api/studies/{_study_id(args, args.study)}")))
    return 0


def _watch(args: argparse.Namespace, study_id: int) -> int:
    last = ""
    while True:
        s = _call(args, "GET", f"/api/studies/{study_id}")
        line = _progress_line(s)
        if line != last:
            print(line, flush=True)
            last = line
        if s["status"] in FINAL and s["counts"]["running"] == 0:
            return 0 if s["status"] != "failed" else 1
        time.sleep(args.interval)


def cmd_watch(args: argparse.Namespace) -> int:
    return _watch(args, _study_id(args, args.study))


def cmd_trials(args: argparse.Namespace) -> int:
    page = _call(
        args,
        "GET",
        f"/api/studies/{_study_id(args, args.study)}/trials",
        params={"limit": args.limit, "offset": args.offset},
    )
    for t in page["items"]:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        extra = f"  error: {t['error']}" if t["error"] else ""
        print(f"#{t['number']:<4} {t['state']:<9} {value:>8}  {json.dumps(t['params'])}{extra}")
    print(f"({len(page['items'])} of {page['total']})")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    best = _call(args, "GET", f"/api/studies/{_study_id(args, args.study)}/best")
    print(json.dumps(best, indent=2))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    s = _call(args, "POST", f"/api/studies/{_study_id(args, args.study)}/stop")
    print(_progress_line(s))
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    params = {"status": args.status} if args.status else {}
    workers = _call(args, "GET", "/api/workers", params=params)
    print(
        f"{'id':>4}  {'status':<8} {'host':<20} {'pid':>7}  {'device':<8} {'gpu':<24} "
        f"{'trial':>6}  heartbeat"
    )
    for w in workers:
        gpu = "-" if not w["gpu_name"] else f"{w['gpu_name']} {w['gpu_memory_mb']} MiB"
        trial = "-" if w["current_trial_id"] is None else str(w["current_trial_id"])
        print(
            f"{w['id']:>4}  {w['status']:<8} {w['host'][:20]:<20} {w['pid']:>7}  "
            f"{w['device']:<8} {gpu[:24]:<24} {trial:>6}  {w['heartbeat_age_seconds']:.0f}s ago"
        )
    return 0


def cmd_trial(args: argparse.Namespace) -> int:
    if args.diagnosis:
        from service.cli.diagnosis import cmd_trial_diagnosis

        return cmd_trial_diagnosis(args)
    print(json.dumps(_call(args, "GET", f"/api/trials/{args.trial_id}"), indent=2))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    import hashlib

    response = _request(args, "GET", f"/api/trials/{args.trial_id}/model")
    digest = hashlib.sha256(response.content).hexdigest()
    expected = response.headers.get("x-content-sha256")
    if expected and expected != digest:
        raise ApiError(f"download corrupted: sha256 {digest}, the service said {expected}")
    out = Path(args.output or f"trial-{args.trial_id}-model.pt")
    out.write_bytes(response.content)
    print(f"trial {args.trial_id}: model saved to {out} ({len(response.content)} bytes)")
    return 0


# ---- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def db_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--database-url", help="SQLAlchemy URL (env HPO_DATABASE_URL)")
        sp.add_argument("--data-dir", help="where the default SQLite database lives")
        sp.add_argument("--log-level", help="debug, info, warning (env HPO_LOG_LEVEL)")

    sp = sub.add_parser("serve", help="serve the API and supervise local worker processes")
    db_flags(sp)
    sp.add_argument("--host", help="bind address (env HPO_HOST, default 127.0.0.1)")
    sp.add_argument("--port", type=int, help="port (env HPO_PORT, default 8000)")
    sp.add_argument("--workers", type=int, help="local worker processes (env HPO_WORKERS)")
    sp.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    sp.add_argument("--threads", type=int, help="torch threads per worker")
    sp.add_argument("--stop-deadline", type=float, help="seconds a stopping worker's trial gets")
    sp.add_argument("--no-migrate", action="store_true", help="skip `db upgrade` at start")
    sp.add_argument(
        "--auth",
        choices=["auto", "required", "off"],
        help="API tokens (env HPO_AUTH; auto: required unless listening on loopback)",
    )
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("worker", help="run one worker process against the database")
    db_flags(sp)
    sp.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    sp.add_argument(
        "--gpus",
        help="all, or GPU indices like 0,1: one worker process per GPU slot "
        "(default: all GPUs when --device is not given)",
    )
    sp.add_argument(
        "--trials-per-gpu",
        type=int,
        default=1,
        help="worker processes (trials at once) per GPU; per node without GPUs",
    )
    sp.add_argument("--studies", help="only these studies (names or ids, comma-separated)")
    sp.add_argument(
        "--stop-deadline",
        type=float,
        help="after SIGTERM/SIGINT, seconds the current trial may still run "
        "(env HPO_STOP_DEADLINE_SECONDS, default 30)",
    )
    sp.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    sp.add_argument("--max-trials", type=int, help="exit after this many trials")
    sp.add_argument(
        "--until-idle", action="store_true", help="exit when no running study has budget left"
    )
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser(
        "worker-health", help="exit 0 if a worker on this host has a fresh heartbeat"
    )
    db_flags(sp)
    sp.set_defaults(func=cmd_worker_health)

    sp = sub.add_parser("db", help="database schema")
    dbsub = sp.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="create or upgrade the service's and Optuna's tables")
    db_flags(up)
    up.set_defaults(func=cmd_db_upgrade)

    def client(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument(
            "--url", default=os.environ.get("HPO_URL", DEFAULT_URL), help="service URL (HPO_URL)"
        )
        c.add_argument("--token", default=os.environ.get("HPO_TOKEN"), help="API token (HPO_TOKEN)")
        c.set_defaults(func=func)
        return c

    c = client("submit", cmd_submit, "submit a study spec (YAML or JSON)")
    c.add_argument("file")
    c.add_argument("--name", help="override the spec's name")
    c.add_argument("--watch", action="store_true", help="follow progress until it finishes")
    c.add_argument("--interval", type=float, default=2.0)
    client("studies", cmd_studies, "list studies")
    for name, func, help in (
        ("status", cmd_status, "one study's progress"),
        ("best", cmd_best, "the best configuration of a study"),
        ("stop", cmd_stop, "stop a study: no new trials"),
    ):
        client(name, func, help).add_argument("study", help="study id or name")
    c = client("watch", cmd_watch, "follow a study until it finishes")
    c.add_argument("study", help="study id or name")
    c.add_argument("--interval", type=float, default=2.0)
    c = client("trials", cmd_trials, "list a study's trials")
    c.add_argument("study", help="study id or name")
    c.add_argument("--limit", type=int, default=100)
    c.add_argument("--offset", type=int, default=0)
    c = client("workers", cmd_workers, "list worker processes with their trial and heartbeat")
    c.add_argument("--status", choices=["running", "stopped", "dead"])
    c = client("trial", cmd_trial, "one trial with its curves and diagnosis (JSON)")
    c.add_argument("trial_id", type=int)
    c.add_argument("--diagnosis", action="store_true", help="only its findings, as text")
    c = client("model", cmd_model, "download a trial's trained model (a torch.save file)")
    c.add_argument("trial_id", type=int)
    c.add_argument("-o", "--output", help="file to write (default trial-ID-model.pt)")
    from service.cli.diagnosis import add_commands

    add_commands(client)
    add_access_commands(sub, client, db_flags)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
