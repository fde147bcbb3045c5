"""Auth over a real server: every mutating route refuses the wrong callers; tokens, roles,
owners, limits, security headers."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from service.access.tokens import create_token, revoke_tokens, verify_token
from service.app.auth import OPEN_PATHS, READ_METHODS, check_at_startup
from service.app.main import create_app
from service.cli.main import main as cli_main
from service.core.db.engine import session_scope
from service.core.db.models import TrialRecord
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.studies.service import get_study_row
from tests.conftest import backends, free_port, tiny_spec, unique
from tests.dataset_files import npz_bytes, small_xy
from tests.private_db import module_database


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database (see tests/private_db.py)."""
    yield from module_database(request, tmp_path_factory)


MAX_REQUEST = 64 * 1024
RUNNING_CAP = 3


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        auth="required",
        max_request_bytes=MAX_REQUEST,
        submit_burst=5,
        submit_per_minute=0.5,
        max_running_studies_per_owner=RUNNING_CAP,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """alice (submit) owns a study, a trial and a dataset; bob (submit) owns nothing."""

    alice: str
    bob: str
    reader: str
    admin: str
    revoked: str
    study_id: int
    trial_id: int
    dataset: str


@pytest.fixture
def world(client: httpx.Client, settings: Settings) -> World:
    url = settings.database_url
    with session_scope(url) as session:
        tokens = {
            who: create_token(session, unique(who), role)[1]
            for who, role in (
                ("alice", "submit"),
                ("bob", "submit"),
                ("reader", "read"),
                ("admin", "admin"),
                ("revoked", "admin"),
            )
        }
        revoke_tokens(session, str(verify_token(session, tokens["revoked"]).token_id))
    created = client.post(
        "/api/studies", json=tiny_spec(unique("a")), headers=bearer(tokens["alice"])
    )
    assert created.status_code == 201, created.text
    study_id = int(created.json()["id"])
    # A real (running) Optuna trial of alice's study with the service's record of it.
    with session_scope(url) as session:
        optuna_study_id = get_study_row(session, study_id).optuna_study_id
    trial_id = get_storage(url).create_new_trial(optuna_study_id)
    with session_scope(url) as session:
        session.add(
            TrialRecord(
                study_id=study_id,
                optuna_trial_id=trial_id,
                number=0,
                claim_index=0,
                state="running",
            )
        )
    dataset = unique("ads")
    x, y = small_xy()
    up = client.post(
        "/api/datasets",
        data={"name": dataset},
        files={"file": ("d.npz", npz_bytes(X=x, y=y))},
        headers=bearer(tokens["alice"]),
    )
    assert up.status_code == 201, up.text
    return World(study_id=study_id, trial_id=trial_id, dataset=dataset, **tokens)


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every protected route of the app, read from the app itself."""
    app = create_app(Settings(database_url="sqlite://"))
    found = []
    for route in iter_route_contexts(app.routes):  # routers included in routers, flattened
        path = route.path or ""
        if not isinstance(route.original_route, APIRoute) or not path.startswith("/api/"):
            continue
        if path not in OPEN_PATHS:
            found += [(method, path) for method in sorted(route.original_route.methods)]
    return found


MUTATING = [(m, p) for m, p in api_routes() if m not in READ_METHODS]
READING = [(m, p) for m, p in api_routes() if m in READ_METHODS]


def fill(path: str, w: World) -> str:
    values = {"study_id": w.study_id, "trial_id": w.trial_id, "name": w.dataset}
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), 1)), path)


def request(
    client: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    kwargs: dict[str, Any] = {"headers": headers}
    if path == "/api/datasets" and method == "POST":
        x, y = small_xy()
        kwargs |= {"data": {"name": unique("d")}, "files": {"file": ("d.npz", npz_bytes(X=x, y=y))}}
    elif method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = tiny_spec(unique("s"))
    return client.request(method, path, **kwargs)


def admin_only(path: str) -> bool:
    """Routes only admin tokens may call, reading included: the tokens."""
    return path.startswith("/api/tokens")


def owned(path: str) -> bool:
    return any(p in path for p in ("{study_id}", "{trial_id}")) or path == "/api/datasets/{name}"


CASES = [
    "no token",
    "malformed header",
    "not a bearer",
    "unknown token",
    "revoked token",
    "read role",
]


def test_the_routes_are_enumerated() -> None:
    assert ("POST", "/api/studies") in MUTATING
    assert ("POST", "/api/studies/{study_id}/stop") in MUTATING
    assert ("POST", "/api/datasets") in MUTATING
    assert ("DELETE", "/api/datasets/{name}") in MUTATING


@pytest.mark.parametrize(("method", "path"), MUTATING, ids=[f"{m} {p}" for m, p in MUTATING])
def test_every_mutating_route_refuses_wrong_callers(
    client: httpx.Client, world: World, method: str, path: str
) -> None:
    url = fill(path, world)
    headers_of = {
        "no token": ({}, 401),
        "malformed header": ({"Authorization": "Bearer"}, 401),
        "not a bearer": ({"Authorization": f"Basic {world.alice}"}, 401),
        "unknown token": (bearer("hpo_" + "x" * 43), 401),
        "revoked token": (bearer(world.revoked), 401),
        "read role": (bearer(world.reader), 403),
    }
    if owned(path):
        headers_of["another owner"] = (bearer(world.bob), 403)
    for case, (headers, status) in headers_of.items():
        response = request(client, method, url, headers)
        assert response.status_code == status, (case, response.text)
        assert isinstance(response.json()["detail"], str), case
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    if admin_only(path):  # tokens: a submit token is refused too
        assert request(client, method, url, bearer(world.alice)).status_code == 403
    # The rightful callers get past auth (the route itself may still say 404 or 409).
    for who in (world.admin,) if admin_only(path) else (world.alice, world.admin):
        response = request(client, method, url, bearer(who))
        assert response.status_code not in (401, 403), response.text


@pytest.mark.parametrize(("method", "path"), READING, ids=[f"{m} {p}" for m, p in READING])
def test_reading_needs_a_token_of_any_role(
    client: httpx.Client, world: World, method: str, path: str
) -> None:
    url = fill(path, world)
    assert client.request(method, url).status_code == 401
    assert client.request(method, url, headers=bearer(world.revoked)).status_code == 401
    if admin_only(path):  # tokens
        for who in (world.reader, world.bob):
            assert client.request(method, url, headers=bearer(who)).status_code == 403
        assert client.request(method, url, headers=bearer(world.admin)).status_code == 200
        return
    for who in (world.reader, world.bob):
        assert client.request(method, url, headers=bearer(who)).status_code not in (401, 403)


def test_health_stays_open(client: httpx.Client) -> None:
    assert client.get("/api/health").status_code == 200


def test_nobody_without_a_token_gets_a_body_parsed(client: httpx.Client) -> None:
    # Invalid bodies: were they parsed before auth, these would be 422s.
    garbage = client.post("/api/datasets", files={"file": ("x.npz", b"junk")})
    assert garbage.status_code == 401
    broken = client.post(
        "/api/studies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 401
    assert broken.headers["content-security-policy"]  # the gate's answers carry the headers


def test_owners_are_recorded_and_admin_may_stop_anything(
    client: httpx.Client, world: World
) -> None:
    assert (
        client.post(f"/api/studies/{world.study_id}/stop", headers=bearer(world.bob)).status_code
        == 403
    )
    stopped = client.post(f"/api/studies/{world.study_id}/stop", headers=bearer(world.admin))
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"
    assert (
        client.delete(f"/api/datasets/{world.dataset}", headers=bearer(world.bob)).status_code
        == 403
    )
    assert (
        client.delete(f"/api/datasets/{world.dataset}", headers=bearer(world.alice)).status_code
        == 204
    )


def test_submissions_are_rate_limited_per_token(client: httpx.Client, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        carol = create_token(session, unique("carol"), "submit")[1]
        other = create_token(session, unique("dan"), "submit")[1]
    bad = {"name": "x"}  # counted even though invalid: the limit guards the service's work
    for _ in range(settings.submit_burst):
        assert client.post("/api/studies", json=bad, headers=bearer(carol)).status_code == 422
    limited = client.post("/api/studies", json=bad, headers=bearer(carol))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "too many submissions" in limited.json()["detail"]
    # Another token has its own budget.
    assert client.post("/api/studies", json=bad, headers=bearer(other)).status_code == 422


def test_running_studies_per_owner_are_capped(client: httpx.Client, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        erin = create_token(session, unique("erin"), "submit")[1]
    ids = []
    for _ in range(RUNNING_CAP):
        created = client.post("/api/studies", json=tiny_spec(unique("e")), headers=bearer(erin))
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    over = client.post("/api/studies", json=tiny_spec(unique("e")), headers=bearer(erin))
    assert over.status_code == 429
    assert f"already runs {RUNNING_CAP} studies" in over.json()["detail"]
    assert client.post(f"/api/studies/{ids[0]}/stop", headers=bearer(erin)).status_code == 200
    again = client.post("/api/studies", json=tiny_spec(unique("e")), headers=bearer(erin))
    assert again.status_code == 201, again.text


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


def test_request_bodies_over_the_cap_are_413(client: httpx.Client, world: World) -> None:
    spec = tiny_spec(unique("big"))
    spec["enqueue"] = [{"lr": 0.01}] * 10_000  # about 130 KB of JSON
    import json

    body = json.dumps(spec).encode()
    assert len(body) > MAX_REQUEST
    headers = bearer(world.alice) | {"content-type": "application/json"}
    declared = client.post("/api/studies", content=body, headers=headers)
    assert declared.status_code == 413
    assert "HPO_MAX_REQUEST_BYTES" in declared.json()["detail"]
    streamed = client.post("/api/studies", content=_chunks(body), headers=headers)  # chunked
    assert streamed.status_code == 413
    assert client.get("/api/studies", headers=bearer(world.alice)).status_code == 200


def test_security_headers_on_every_response(client: httpx.Client) -> None:
    for path in ("/api/health", "/api/studies", "/openapi.json", "/nowhere"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert (
            "access-control-allow-origin"
            not in client.get(path, headers={"Origin": "https://evil.example"}).headers
        )


def test_cors_only_for_configured_origins() -> None:
    settings = Settings(database_url="sqlite://", cors_origins=["https://ok.example"])

    async def origins() -> list[str | None]:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            answers = [
                await ac.get("/openapi.json", headers={"Origin": origin})
                for origin in ("https://ok.example", "https://evil.example")
            ]
        return [a.headers.get("access-control-allow-origin") for a in answers]

    assert asyncio.run(origins()) == ["https://ok.example", None]


def test_openapi_declares_bearer_auth(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_auth_mode_follows_the_address(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hpo.auth"):
        check_at_startup(Settings(database_url=database_url, host="127.0.0.1"))
    assert "auth is OFF" in caplog.text
    from service.app.auth import auth_required

    assert auth_required(Settings(database_url=database_url, host="0.0.0.0"))
    assert auth_required(Settings(database_url=database_url, host="::1", auth="required"))
    assert not auth_required(Settings(database_url=database_url, host="::1"))
    assert not auth_required(Settings(database_url=database_url, host="0.0.0.0", auth="off"))


def hpo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess per command costs seconds of imports)."""
    code = cli_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_serve_refuses_a_public_address_without_tokens_and_token_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'hpo.db'}"]
    public = ["serve", "--host", "0.0.0.0", "--port", str(free_port()), "--workers", "0"]
    with pytest.raises(SystemExit, match="no API token exists"):
        cli_main([*public, *db])

    code, out, err = hpo(capsys, "token", "create", "--name", "alice", "--role", "submit", *db)
    assert code == 0, err
    token = out.strip()
    assert re.fullmatch(r"hpo_[A-Za-z0-9_-]{43}", token)
    assert "shown once" in err
    code, out, _ = hpo(capsys, "token", "list", *db)
    assert "alice" in out and "submit" in out and "active" in out
    assert token not in out  # the secret is shown once, never again
    code, out, _ = hpo(capsys, "token", "revoke", "alice", *db)
    assert code == 0 and "revoked token" in out
    assert "revoked 20" in hpo(capsys, "token", "list", *db)[1]
    code, _, err = hpo(capsys, "token", "revoke", "alice", *db)
    assert code == 1 and "no active token" in err


@pytest.mark.parametrize("root_path", ["/hpo", "/hpo/"])
def test_a_path_prefix_does_not_open_the_api(
    settings: Settings, world: World, root_path: str
) -> None:
    """Behind a proxy's prefix (HPO_ROOT_PATH) the server sees /hpo/api/...: still guarded."""
    app = create_app(settings.model_copy(update={"root_path": root_path}))

    async def get(path: str, headers: dict[str, str]) -> int:
        transport = httpx.ASGITransport(app=app, root_path=root_path.rstrip("/"))
        async with httpx.AsyncClient(transport=transport, base_url="http://hpo") as c:
            return (await c.get(path, headers=headers)).status_code

    prefix = root_path.rstrip("/")
    assert asyncio.run(get(f"{prefix}/api/studies", {})) == 401
    assert asyncio.run(get(f"{prefix}/api/studies/{world.study_id}", {})) == 401
    assert asyncio.run(get(f"{prefix}/api/studies", bearer(world.reader))) == 200
    assert asyncio.run(get(f"{prefix}/api/health", {})) == 200
    assert asyncio.run(get(f"{prefix}/metrics", {})) == 401
    assert asyncio.run(get(f"{prefix}/metrics", bearer(world.reader))) == 200
