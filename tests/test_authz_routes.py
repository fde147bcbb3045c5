"""Authorization on the value the route acts on (issue 17 §1), table-driven from the app.

Every route naming a study, a trial or a dataset in its path takes that id through the one
owner-checking dependency of `service/app/ownership.py`; the table below is read from
`app.routes`, so a route added later is covered (or the enumeration test fails). With bob's
token, every spelling of alice's ids is refused (403 for the canonical one on a mutating
route, 422 for any other spelling on every route), and alice's things stay as they were.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from service.access.tokens import create_token, list_tokens, verify_token
from service.app.auth import OPEN_PATHS, READ_METHODS, authenticate
from service.app.deps import get_session
from service.app.main import create_app
from service.app.ownership import MAX_ID, OWNER_CHECKS, owned_dataset, owned_study, owned_trial
from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import TrialRecord
from service.core.errors import DatasetNotFound, Forbidden, StudyNotFound, TrialNotFound
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


@pytest.fixture(scope="module")
def app_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        auth="required",
        submit_burst=1000,  # the table submits often; the rate limit has its own test
    )


@contextmanager
def running(app: FastAPI) -> Iterator[httpx.Client]:
    """`app` under a real uvicorn server in a thread (lifespan included), and a client."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://{server.config.host}:{server.config.port}") as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def api(app_settings: Settings) -> Iterator[httpx.Client]:
    """The real app under a real uvicorn server, one per module and backend."""
    with running(create_app(app_settings)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """alice (submit) owns a study, a trial of it and a dataset; bob (submit) owns nothing;
    `other_study` is a second study of alice's (the issue's "3.00")."""

    alice: str
    bob: str
    reader: str
    admin: str
    scraper: str
    study_id: int
    other_study: int
    trial_id: int
    dataset: str
    study_name: str


@pytest.fixture(scope="module")
def world(api: httpx.Client, app_settings: Settings) -> World:
    url = app_settings.database_url
    with session_scope(url) as session:
        tokens = {
            who: create_token(session, unique(who), role)[1]
            for who, role in (
                ("alice", "submit"),
                ("bob", "submit"),
                ("reader", "read"),
                ("admin", "admin"),
                ("scraper", "metrics"),
            )
        }
    ids = []
    for _ in range(2):
        created = api.post(
            "/api/studies", json=tiny_spec(unique("a")), headers=bearer(tokens["alice"])
        )
        assert created.status_code == 201, created.text
        ids.append(int(created.json()["id"]))
    with session_scope(url) as session:
        study = get_study_row(session, ids[0])
        optuna_study_id, name = study.optuna_study_id, study.name
    trial_id = get_storage(url).create_new_trial(optuna_study_id)  # a real running trial
    with session_scope(url) as session:
        session.add(
            TrialRecord(
                study_id=ids[0], optuna_trial_id=trial_id, number=0, claim_index=0, state="running"
            )
        )
    dataset = unique("ads")
    x, y = small_xy()
    up = api.post(
        "/api/datasets",
        data={"name": dataset},
        files={"file": ("d.npz", npz_bytes(X=x, y=y))},
        headers=bearer(tokens["alice"]),
    )
    assert up.status_code == 201, up.text
    return World(
        study_id=ids[0],
        other_study=ids[1],
        trial_id=trial_id,
        dataset=dataset,
        study_name=name,
        **tokens,
    )


# -- the table, from the app itself ------------------------------------------------------

APP = create_app(Settings(database_url="sqlite://"))
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    dependant: Dependant

    @property
    def params(self) -> list[str]:
        return PARAM.findall(self.path)

    @property
    def mutating(self) -> bool:
        return self.method not in READ_METHODS

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def app_routes() -> list[Route]:
    """Every API route of the app (routers included in routers, flattened), per method."""
    found = []
    for ctx in iter_route_contexts(APP.routes):
        if isinstance(ctx.original_route, APIRoute):
            found += [Route(m, ctx.path or "", ctx.dependant) for m in sorted(ctx.methods or ())]
    return found


ROUTES = app_routes()
API = [r for r in ROUTES if r.path.startswith("/api/") and r.path not in OPEN_PATHS]
OWNED = [r for r in API if r.params]
MUTATING = [r for r in API if r.mutating]


def declarers(dependant: Dependant) -> dict[str, set[Callable[..., Any] | None]]:
    """Path parameter -> every callable (endpoint or dependency) that declares it."""
    found: dict[str, set[Callable[..., Any] | None]] = {}
    for param in dependant.path_params:
        found.setdefault(param.name, set()).add(dependant.call)
    for sub in dependant.dependencies:
        for name, calls in declarers(sub).items():
            found.setdefault(name, set()).update(calls)
    return found


def uses_database(dependant: Dependant) -> bool:
    """Whether the route (past the app-wide `authenticate`) takes a database session."""
    if dependant.call is authenticate:
        return False
    return dependant.call is get_session or any(uses_database(d) for d in dependant.dependencies)


def test_every_owned_path_parameter_goes_through_its_owner_check() -> None:
    """A route that names a study, trial or dataset takes it through the one dependency
    that checks the owner on the parsed value, and nothing else parses it: adding a route
    (or a path parameter nobody classified) without it fails here."""
    assert {str(r) for r in OWNED} >= {
        "POST /api/studies/{study_id}/stop",
        "POST /api/studies/{study_id}/learning-curve",
        "GET /api/trials/{trial_id}/model",
        "DELETE /api/datasets/{name}",
    }
    for route in ROUTES:
        for name, calls in declarers(route.dependant).items():
            if not route.path.startswith("/api/"):
                # Dashboard pages: static HTML whose script calls the API with the id.
                assert not uses_database(route.dependant), f"{route} reads the database"
                continue
            assert name in OWNER_CHECKS, (
                f"{route}: path parameter {name!r} is not in ownership.OWNER_CHECKS; "
                "add the dependency that loads it and checks its owner"
            )
            assert calls == {OWNER_CHECKS[name]}, (
                f"{route}: {name!r} must be declared only by {OWNER_CHECKS[name].__name__} "
                f"(found {[getattr(c, '__name__', c) for c in calls]})"
            )


def spellings(value: int) -> list[str]:
    """Non-canonical spellings of an id: each was (or might be) read as `value` by a lax
    parser. Percent-escapes reach the app decoded."""
    full_width = "".join(chr(0xFF10 + int(c)) for c in str(value))
    return [
        f"{value}.0",
        f"{value}.00",
        f"+{value}",
        f"%2B{value}",
        f"0{value}",
        f"%20{value}",
        f"{value}%20",
        f"{value}e0",
        f"{value}%00",
        f"0x{value:x}",
        full_width,
    ]


def fill(path: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: values[m.group(1)], path)


def canonical(w: World) -> dict[str, str]:
    return {"study_id": str(w.study_id), "trial_id": str(w.trial_id), "name": w.dataset}


def send(
    client: httpx.Client, route: Route, url: str, token: str, name: str | None = None
) -> httpx.Response:
    """One request of `route` to `url`; the creating routes get a valid body named `name`."""
    kwargs: dict[str, Any] = {"headers": bearer(token)}
    name = name or unique("b")
    if route.path == "/api/datasets" and route.method == "POST":
        x, y = small_xy()
        kwargs |= {"data": {"name": name}, "files": {"file": ("d.npz", npz_bytes(X=x, y=y))}}
    elif route.path == "/api/studies" and route.method == "POST":
        kwargs["json"] = tiny_spec(name)
    return client.request(route.method, url, **kwargs)


def snapshot(client: httpx.Client, w: World) -> dict[str, Any]:
    """What bob must not change: alice's studies, trial, dataset, learning curves."""
    admin = bearer(w.admin)

    def get(path: str) -> Any:
        r = client.get(path, headers=admin)
        return r.status_code, r.json()

    studies = {}
    for sid in (w.study_id, w.other_study):
        study = client.get(f"/api/studies/{sid}", headers=admin).json()
        study.pop("workers", None)
        studies[sid] = study
    return {
        "studies": studies,
        "trial": get(f"/api/trials/{w.trial_id}")[1]["state"],
        "dataset": get(f"/api/datasets/{w.dataset}"),
        "curves": [get(f"/api/studies/{s}/learning-curve") for s in (w.study_id, w.other_study)],
    }


def ids_in(path: str) -> list[str]:
    return [p for p in PARAM.findall(path) if p in ("study_id", "trial_id")]


@pytest.mark.parametrize("route", OWNED, ids=str)
def test_no_spelling_of_anothers_id_gets_past_the_owner_check(
    api: httpx.Client, world: World, route: Route
) -> None:
    before = snapshot(api, world)
    ids = {"study_id": world.study_id, "trial_id": world.trial_id}
    tried = 0
    for param in ids_in(route.path):
        targets = [ids[param]] + ([world.other_study] if param == "study_id" else [])
        for target in targets:
            for spelling in spellings(target):
                url = fill(route.path, canonical(world) | {param: spelling})
                response = send(api, route, url, world.bob)
                assert response.status_code == 422, (route, spelling, response.text)
                errors = response.json()["detail"]
                assert [e["loc"] for e in errors] == [["path", param]], (spelling, errors)
                tried += 1
    if route.path.endswith("{name}"):
        for spelling in (f"%20{world.dataset}", f"{world.dataset}%20", f"{world.dataset}%0A"):
            response = send(api, route, fill(route.path, {"name": spelling}), world.bob)
            assert response.status_code == 422, (route, spelling, response.text)
            tried += 1
    assert tried
    # The canonical spelling: another owner may read, never change.
    response = send(api, route, fill(route.path, canonical(world)), world.bob)
    if route.mutating:
        assert response.status_code == 403, response.text
        assert "belongs to another token" in response.json()["detail"]
    else:
        assert response.status_code in (200, 404, 409), response.text
    assert snapshot(api, world) == before


@pytest.mark.parametrize("route", MUTATING, ids=str)
def test_every_mutating_route_leaves_anothers_things_alone(
    api: httpx.Client, world: World, route: Route
) -> None:
    """Routes without an owned path parameter create: naming alice's study or dataset in
    the body is a conflict, never a takeover."""
    before = snapshot(api, world)
    if route.params:
        url = fill(route.path, canonical(world))
        assert send(api, route, url, world.bob).status_code == 403
    elif route.path.startswith("/api/tokens"):  # admins only: bob is not one
        assert send(api, route, route.path, world.bob).status_code == 403
    else:
        taken = world.dataset if "datasets" in route.path else world.study_name
        assert send(api, route, route.path, world.bob, name=taken).status_code == 409
    assert snapshot(api, world) == before


@pytest.mark.parametrize("route", OWNED, ids=str)
def test_ids_out_of_range_are_422_naming_the_parameter(
    api: httpx.Client, world: World, route: Route
) -> None:
    """Ids past the INTEGER columns used to reach the database: 404 on SQLite, a 422 on
    PostgreSQL that named no parameter ("a number in the request is out of range"); -1 was
    looked up. Now both say which path parameter is out of its range."""
    for param in ids_in(route.path):
        for big in (str(MAX_ID + 1), "9" * 20, "-1"):
            url = fill(route.path, canonical(world) | {param: big})
            response = send(api, route, url, world.admin)
            assert response.status_code == 422, (route, big, response.text)
            assert [e["loc"] for e in response.json()["detail"]] == [["path", param]]
        url = fill(route.path, canonical(world) | {param: str(MAX_ID)})
        assert send(api, route, url, world.admin).status_code == 404


def test_owners_and_admins_still_act_on_canonical_ids(api: httpx.Client, world: World) -> None:
    assert api.get(f"/api/studies/{world.study_id}", headers=bearer(world.reader)).is_success
    assert api.get(f"/api/trials/{world.trial_id}", headers=bearer(world.bob)).is_success
    # alice's own non-canonical spelling is refused too (nothing is reinterpreted) ...
    own = api.post(f"/api/studies/{world.other_study}.0/stop", headers=bearer(world.alice))
    assert own.status_code == 422
    # ... and the canonical one works for her and for an admin.
    stopped = api.post(f"/api/studies/{world.other_study}/stop", headers=bearer(world.alice))
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert (
        api.post(f"/api/studies/{world.other_study}/stop", headers=bearer(world.admin)).status_code
        == 200
    )
    assert api.post("/api/studies/0/stop", headers=bearer(world.bob)).status_code == 404


def test_the_owner_checks_themselves(world: World, app_settings: Settings) -> None:
    """No route changes a trial yet; its check (the trial's study's owner) is ready for one."""

    def request(method: str) -> Request:
        return Request({"type": "http", "method": method, "headers": []})

    checks: list[tuple[Callable[..., Any], Any, type[Exception]]] = [
        (owned_study, world.study_id, StudyNotFound),
        (owned_trial, world.trial_id, TrialNotFound),
        (owned_dataset, world.dataset, DatasetNotFound),
    ]
    with session_scope(app_settings.database_url) as session:
        alice, bob, admin = (
            verify_token(session, t) for t in (world.alice, world.bob, world.admin)
        )
        for check, key, not_found in checks:
            for who in (alice, admin, None):  # None: auth off
                assert check(key, request("POST"), session, who) == key
            assert check(key, request("GET"), session, bob) == key  # reading is open
            with pytest.raises(Forbidden):
                check(key, request("DELETE"), session, bob)
            missing = MAX_ID if isinstance(key, int) else unique("none")
            with pytest.raises(not_found):
                check(missing, request("PATCH"), session, bob)


# -- /metrics with auth on (§4) ----------------------------------------------------------


def test_metrics_need_a_token_with_auth_on(api: httpx.Client, world: World) -> None:
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", headers=bearer("hpo_" + "x" * 43)).status_code == 401
    for who in (world.scraper, world.reader, world.bob, world.admin):
        scraped = api.get("/metrics", headers=bearer(who))
        assert scraped.status_code == 200
        assert "hpo_database_up 1.0" in scraped.text
    # A metrics token scrapes, and reads nothing else.
    assert api.get("/api/studies", headers=bearer(world.scraper)).status_code == 403
    assert (
        api.post(f"/api/studies/{world.study_id}/stop", headers=bearer(world.scraper)).status_code
        == 403
    )


def test_metrics_label_studies_by_id_unless_names_are_opted_in(
    api: httpx.Client, world: World, app_settings: Settings
) -> None:
    text = api.get("/metrics", headers=bearer(world.scraper)).text
    assert f'hpo_trials{{state="running",study="{world.study_id}"}} 1.0' in text
    assert world.study_name not in text
    assert world.dataset not in text

    named = create_app(app_settings.model_copy(update={"metrics_study_names": True}))
    with running(named) as client:
        text = client.get("/metrics", headers=bearer(world.scraper)).text
    assert (
        f'hpo_trials{{state="running",study="{world.study_id}",'
        f'study_name="{world.study_name}"}} 1.0' in text
    )


def test_metrics_on_a_separate_address_need_no_token(app_settings: Settings, world: World) -> None:
    port = free_port()
    settings = app_settings.model_copy(update={"metrics_bind": f"127.0.0.1:{port}"})
    with running(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401  # the API's own keeps its token
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert f'hpo_trials{{state="running",study="{world.study_id}"}} 1.0' in scraped.text
    with pytest.raises(httpx.ConnectError):  # the listener ends with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)


# -- the case end to end, on `hpo serve` ------------------------------------------


def test_hpo_serve_refuses_anothers_stop_by_any_spelling(tmp_path: Path) -> None:
    """alice's study keeps running whatever bob spells its id as; her own stop still works."""
    from tests.test_e2e import Service

    db_url = f"sqlite:///{tmp_path / 'hpo.db'}"
    upgrade(db_url)
    with session_scope(db_url) as session:
        alice = create_token(session, "alice", "submit")[1]
        bob = create_token(session, "bob", "submit")[1]
    svc = Service(tmp_path, workers=0, db_url=db_url, env={"HPO_AUTH": "required"})
    try:
        created = svc.client.post("/api/studies", json=tiny_spec("s"), headers=bearer(alice))
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        for spelling in (f"{sid}.0", f"{sid}.00", f"+{sid}", f"0{sid}", f"%20{sid}", f"{sid}e0"):
            refused = svc.client.post(f"/api/studies/{spelling}/stop", headers=bearer(bob))
            assert refused.status_code == 422, (spelling, refused.text)
        assert svc.client.post(f"/api/studies/{sid}/stop", headers=bearer(bob)).status_code == 403
        study = svc.client.get(f"/api/studies/{sid}", headers=bearer(bob)).json()
        assert study["status"] == "running"
        mine = svc.client.post(f"/api/studies/{sid}/stop", headers=bearer(alice))
        assert mine.status_code == 200 and mine.json()["status"] == "stopped"
    finally:
        assert svc.stop() == 0, svc.log()


def test_token_cli_knows_the_metrics_role(tmp_path: Path) -> None:
    from service.cli.main import main as cli_main

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    upgrade(url)
    assert (
        cli_main(["token", "create", "--name", "prom", "--role", "metrics", "--database-url", url])
        == 0
    )
    with session_scope(url) as session:
        assert [t.role for t in list_tokens(session)] == ["metrics"]
