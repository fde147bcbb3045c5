"""No request, whatever its content, turns into a 500 or stores what a consumer cannot use.

Specs with non-finite floats, integers past 64 bits and invalid text (lone surrogates, control
characters) at every field and key are answered 422 naming the field, over a real server on
SQLite and PostgreSQL, and nothing is stored (issue 17 §3). Schemathesis cannot generate
these (its JSON is strict), so this module does. Every numeric field of the spec is bounded,
and the bounds are values its consumers (samplers, pruners, dataset splits, the database)
accept (§8). Path and query parameters and the dataset upload's form fields get the same.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from service.app.main import create_app
from service.core.db.engine import session_scope
from service.core.db.models import Dataset, Study
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.core.types import MAX_SEED
from service.datasets.locations import DataPlaces
from service.studies.search.factories import build_pruner, build_sampler
from service.studies.search.space import suggest_params
from service.studies.spec import StudySpec, load_spec, train_config
from service.worker.data import DatasetCache
from tests.conftest import unique

# Every field a spec can hold, with a value that is accepted (the test below checks it); the
# leaves, nodes and keys of this document are where hostile values are put. Not here:
# `init_from` needs a finished trial, `dataset.path`/`download` an image dataset on disk.
MAXIMAL_SPEC: dict[str, Any] = {
    "name": "maximal",
    "dataset": {
        "name": "moons",
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "seed": 3,
        "n_samples": 100,
        "noise": 0.1,
        "shape": "flat",
        "task": "classification",
    },
    "model": {"family": "mlp"},
    "objective": {"metric": "val_accuracy", "direction": "maximize", "max_epochs": 2},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        "hidden_units": {"type": "int", "low": 8, "high": 32, "step": 8, "log": False},
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
        "momentum": {
            "type": "float",
            "low": 0.5,
            "high": 0.99,
            "when": {"optimizer": ["momentum"]},
        },
    },
    "fixed": {"hidden_layers": 1, "activation": "relu", "weight_decay": 1e-4},
    "sampler": {"name": "tpe", "seed": 7, "n_startup_trials": 3, "max_history": 500},
    "pruner": {
        "name": "median",
        "n_startup_trials": 2,
        "n_warmup_steps": 1,
        "percentile": 30.0,
        "min_resource": 1,
        "reduction_factor": 3,
    },
    "budget": {
        "n_trials": 2,
        "timeout_seconds": 3600.0,
        "max_failed_trials": 3,
        "max_parallel_trials": 2,
        "max_retries": 1,
        "device_hours": 2.5,
    },
    "fuse": {"max_trials": 4},
    "enqueue": [{"lr": 0.01, "dropout": 0.2, "hidden_units": 16, "optimizer": "adam"}],
    "priority": 1,
    "checkpoint": {"every_epochs": 5, "every_seconds": 120.0},
    "notify": {"webhook": "https://hooks.example.com/hpo", "events": ["completed", "failed"]},
}
NOT_IN_MAXIMAL = {("init_from",), ("dataset", "path"), ("dataset", "download")}
# The fields a single-objective spec cannot hold (a multi-objective one refuses a pruner):
# put into MAXIMAL_MULTI_OBJECTIVE, the base for every path under them.
MAXIMAL_MULTI_OBJECTIVE: dict[str, Any] = {
    **copy.deepcopy(MAXIMAL_SPEC),
    "name": "maximal-multi",
    "objective": {"max_epochs": 2},
    "objectives": [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "n_params", "direction": "minimize"},
    ],
    "sampler": {"name": "nsga2", "seed": 7, "population_size": 4},
    "pruner": {"name": "none"},
}
MULTI_ONLY = {("objectives",), ("sampler", "population_size")}


def _base(path: tuple[str | int, ...]) -> dict[str, Any]:
    """The maximal spec that holds `path`."""
    multi = any(path[: len(m)] == m for m in MULTI_ONLY)
    return MAXIMAL_MULTI_OBJECTIVE if multi else MAXIMAL_SPEC


Path_ = tuple[str | int, ...]


def _nodes(doc: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every value's path in `doc`, containers included, the root excluded."""
    if path:
        yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _nodes(value, (*path, i))


def _keys(doc: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The path of every dict key in `doc`."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*path, key)
            yield from _keys(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _keys(value, (*path, i))


NODES = sorted(
    {
        *_nodes(MAXIMAL_SPEC),
        *(p for p in _nodes(MAXIMAL_MULTI_OBJECTIVE) if _base(p) is not MAXIMAL_SPEC),
    },
    key=repr,
)
KEYS = sorted(
    {
        *_keys(MAXIMAL_SPEC),
        *(p for p in _keys(MAXIMAL_MULTI_OBJECTIVE) if _base(p) is not MAXIMAL_SPEC),
    },
    key=repr,
)


def _with_value(path: Path_, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_base(path))
    spec["name"] = unique("hostile")
    node: Any = spec
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return spec


def _with_key(path: Path_, key: str) -> dict[str, Any]:
    spec = copy.deepcopy(_base(path))
    spec["name"] = unique("hostile")
    node: Any = spec
    for step in path[:-1]:
        node = node[step]
    node[key] = node.pop(path[-1])
    return spec


def _counts(url: str) -> tuple[int, int, int]:
    with session_scope(url) as session:
        studies = session.scalar(select(func.count()).select_from(Study)) or 0
        datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
    return int(studies), int(datasets), len(get_storage(url).get_all_studies())


def _is_subsequence(part: Path_, whole: list[Any]) -> bool:
    items = iter(whole)
    return all(any(step == item for item in items) for step in part)


def _post_raw(client: httpx.Client, spec: dict[str, Any]) -> httpx.Response:
    # Python's json writes NaN, Infinity and escapes lone surrogates (\ud800), as an attacker
    # would; the server must answer all of it.
    return client.post(
        "/api/studies", content=json.dumps(spec), headers={"content-type": "application/json"}
    )


def _assert_refused(response: httpx.Response, names: Path_) -> None:
    """422 in FastAPI's validation shape naming `names` down to the parameter in some
    entry's location (the spec's cross-field checks too: ``enqueue[0].dropout`` is located at
    ``["body", "enqueue", 0, "dropout"]``)."""
    assert response.status_code == 422, (names, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, response.text
    assert all(entry["loc"][0] == "body" for entry in detail), detail
    parameter = names[: 3 if len(names) > 1 and isinstance(names[1], int) else 2]
    assert any(_is_subsequence(parameter, entry["loc"][1:]) for entry in detail), (names, detail)


def test_the_maximal_spec_is_accepted_and_holds_every_field(client: httpx.Client) -> None:
    """The base the hostile values are put into is valid, and it holds every field of the
    spec (a field added later must be added here, so that it is attacked too)."""
    fields: set[Path_] = set()

    def walk(model: type[Any], path: Path_) -> None:
        for name, info in model.model_fields.items():
            fields.add((*path, name))
            for sub in _model_types(info.annotation):
                walk(sub, (*path, name))

    walk(StudySpec, ())
    # a list's items are models too (`objectives`): their fields are named without the index
    typed_nodes = {tuple(s for s in p if isinstance(s, str)) for p in NODES}
    missing = {
        f
        for f in fields - typed_nodes
        if not any(f[: len(n)] == n for n in NOT_IN_MAXIMAL)
        and f[:1] not in {("space",), ("fixed",), ("enqueue",)}  # maps: keys are free
    }
    assert not missing, f"add these fields to MAXIMAL_SPEC: {sorted(missing)}"
    for base in (MAXIMAL_SPEC, MAXIMAL_MULTI_OBJECTIVE):
        spec = copy.deepcopy(base)
        spec["name"] = unique("maximal")
        response = client.post("/api/studies", json=spec)
        assert response.status_code == 201, response.text
        assert client.post(f"/api/studies/{response.json()['id']}/stop").status_code == 200


def _model_types(annotation: Any) -> list[type[Any]]:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for arg in get_args(annotation) for t in _model_types(arg)]


# One of each kind at every place: the kind-wide sweep (a few hundred cheap 422s).
EVERY_KIND: list[Any] = [math.nan, 2**70, "a\ud800b"]
BAD_KEYS = ["\ud800", "k\x00"]


def test_every_field_and_key_refuses_each_kind(client: httpx.Client, database_url: str) -> None:
    before = _counts(database_url)
    for path in NODES:
        for value in EVERY_KIND:
            _assert_refused(_post_raw(client, _with_value(path, value)), path)
    for path in KEYS:
        for key in BAD_KEYS:
            _assert_refused(_post_raw(client, _with_key(path, key)), path[:-1])
    assert _counts(database_url) == before


BAD_TEXT = st.builds(
    lambda a, bad, b: a + bad + b,
    st.text(max_size=3),
    st.characters(categories=["Cs", "Cc"]),
    st.text(max_size=3),
)
HOSTILE_SCALARS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    BAD_TEXT,
)
HOSTILE = st.one_of(
    HOSTILE_SCALARS,
    st.lists(HOSTILE_SCALARS, min_size=1, max_size=3),
    st.dictionaries(BAD_TEXT, HOSTILE_SCALARS, min_size=1, max_size=2),
)


def test_hostile_values_anywhere_are_422_naming_the_field(
    server_url: str, database_url: str
) -> None:
    before = _counts(database_url)
    with httpx.Client(base_url=server_url, timeout=30) as client:

        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(path=st.sampled_from(NODES), value=HOSTILE)
        def attack(path: Path_, value: Any) -> None:
            _assert_refused(_post_raw(client, _with_value(path, value)), path)

        attack()
    assert _counts(database_url) == before


# ---- path and query parameters ------------------------------------------------------------

HOSTILE_PARAMS = [str(2**70), str(-(2**70)), str(2**63), "NaN", "1e400", "%ED%A0%80", "%00"]


def _param_names(dependant: Any, kind: str) -> set[str]:
    """Names of the path or query parameters a route or any of its dependencies declares."""
    names = {p.name for p in getattr(dependant, kind)}
    for sub in dependant.dependencies:
        names |= _param_names(sub, kind)
    return names


def test_path_and_query_parameters_never_500(client: httpx.Client, settings: Settings) -> None:
    """Every route's path and query parameters, given ids past every integer column, numbers
    that are not integers and bytes that are not UTF-8: never a 5xx, and a 422 names the parameter
    (before this, ids past 64 bits were a 422 located at the whole request)."""
    tried = 0
    for route in iter_route_contexts(create_app(settings).routes):
        api = route.original_route
        if not isinstance(api, APIRoute):
            continue
        method = sorted(api.methods)[0]
        # ids come through the owner-checking dependencies, so walk the whole tree
        path_names = sorted(_param_names(api.dependant, "path_params"))
        query_names = sorted(_param_names(api.dependant, "query_params"))
        for where, names in (("path", path_names), ("query", query_names)):
            for name in names:
                for value in HOSTILE_PARAMS:
                    url = route.path or ""
                    for other in path_names:
                        url = url.replace(f"{{{other}}}", value if other == name else "1")
                    query = f"?{name}={value}" if where == "query" else ""
                    response = client.request(method, url + query)
                    tried += 1
                    assert response.status_code < 500, (url, query, response.text)
                    if response.status_code == 422:
                        locs = [e["loc"] for e in response.json()["detail"]]
                        assert [where, name] in locs, (url, query, locs)
    assert tried > 50


def test_learning_curve_body_with_non_finite_fractions_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/studies/1/learning-curve",
        content=b'{"fractions": [NaN, 1e400, -Infinity]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert [e["loc"][:3] for e in response.json()["detail"]] == [
        ["body", "fractions", 0],
        ["body", "fractions", 1],
        ["body", "fractions", 2],
    ]


# ---- dataset upload form fields -----------------------------------------------------------

CSV = b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n6,5,0\n4,3,1\n"


def _multipart(fields: dict[str, bytes], filename: str, data: bytes) -> bytes:
    """A multipart body with exactly these bytes in each field (no client re-encodes them)."""
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k.encode(), v)
        for k, v in fields.items()
    ]
    parts.append(
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s\r\n" % (filename.encode(), data)
    )
    return b"".join(parts) + b"--B--\r\n"


FORM_CASES = [
    ("name", {"name": b"a\xed\xa0\x80b"}),  # a surrogate, as CESU-8 bytes
    ("name", {"name": b"   "}),
    ("name", {"name": b"abc\n"}),  # was stored, trailing newline and all
    ("name", {"name": b"ab\x00c"}),
    ("name", {"name": b"a" * 101}),
    ("target", {"target": b"la\xed\xa0\x80"}),
    ("target", {"target": b"  "}),
    ("target", {"target": b"label\x00"}),
]


@pytest.mark.parametrize(("field", "fields"), FORM_CASES, ids=[repr(c[1]) for c in FORM_CASES])
def test_upload_form_fields_with_bad_text_are_422(
    client: httpx.Client, database_url: str, field: str, fields: dict[str, bytes]
) -> None:
    before = _counts(database_url)
    body = _multipart({"name": unique("up").encode(), **fields}, "d.csv", CSV)
    if "target" not in fields:
        body = _multipart({**fields, "target": b"label"}, "d.csv", CSV)
    response = client.post(
        "/api/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert response.status_code == 422, response.text
    assert ["body", field] in [e["loc"] for e in response.json()["detail"]]
    assert _counts(database_url) == before


# ---- numeric domains: bounded, and every bound usable by its consumers --------------------


def _numeric_fields() -> list[tuple[Path_, dict[str, Any]]]:
    schema = StudySpec.model_json_schema()
    defs = schema["$defs"]
    found: list[tuple[Path_, dict[str, Any]]] = []

    def walk(node: dict[str, Any], path: Path_) -> None:
        for name, prop in node.get("properties", {}).items():
            for option in prop.get("anyOf", [prop]):
                if "$ref" in option:
                    option = defs[option["$ref"].rsplit("/", 1)[-1]]
                if option.get("type") in ("integer", "number"):
                    found.append(((*path, name), option))
                elif "properties" in option:
                    walk(option, (*path, name))

    walk(schema, ())
    return found


NUMERIC_FIELDS = _numeric_fields()


def test_every_numeric_field_of_the_spec_is_bounded() -> None:
    assert len(NUMERIC_FIELDS) >= 20, NUMERIC_FIELDS
    unbounded = [
        ".".join(map(str, path))
        for path, s in NUMERIC_FIELDS
        if not ({"minimum", "exclusiveMinimum"} & s.keys())
        or not ({"maximum", "exclusiveMaximum"} & s.keys())
    ]
    assert not unbounded, f"fields without a domain: {unbounded}"


def _bounds(schema: dict[str, Any]) -> list[int | float]:
    values: list[int | float] = []
    if "minimum" in schema:
        values.append(schema["minimum"])
    if "maximum" in schema:
        values.append(schema["maximum"])
    if schema["type"] == "number":  # just inside an open end
        if "exclusiveMinimum" in schema:
            values.append(math.nextafter(schema["exclusiveMinimum"], math.inf))
        if "exclusiveMaximum" in schema:
            values.append(math.nextafter(schema["exclusiveMaximum"], -math.inf))
    return values


BOUNDARY_CASES = [(path, value) for path, s in NUMERIC_FIELDS for value in _bounds(s)]


def _consume(spec: StudySpec, url: str, data_dir: Path) -> None:
    """What a worker does with a spec before training: sampler, pruner, one suggestion,
    the trainer's config, a prune decision, and the dataset's splits."""
    sampler = build_sampler(spec, claim_index=1_000_000)
    pruner = build_pruner(spec.pruner, spec.objective.max_epochs)
    directions = [o.direction for o in spec.objectives or [spec.objective]]
    study = optuna.create_study(sampler=sampler, pruner=pruner, directions=directions)
    trial = study.ask()
    config = train_config(spec, suggest_params(trial, spec), trial_number=trial.number)
    assert config.max_epochs == spec.objective.max_epochs
    if spec.objectives is None:  # Optuna reports and prunes single-objective trials only
        trial.report(0.5, 1)
        trial.should_prune()
    key = spec.dataset.model_dump_json()
    if key not in _SPLIT:  # the splits do not depend on the database: once per process
        DatasetCache(url, "cpu", DataPlaces(data_dir, (), False)).get(spec.dataset)
        _SPLIT.add(key)


_SPLIT: set[str] = set()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_every_accepted_bound_is_usable_by_its_consumers(
    client: httpx.Client, database_url: str, tmp_path: Path
) -> None:
    """Each numeric field at each end of its domain is either refused at submission (422
    naming it: a service cap, another field's rule) or stored and then usable by a worker."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    accepted = 0
    for path, value in BOUNDARY_CASES:
        spec = copy.deepcopy(_base(path))
        spec["name"] = unique("bound")
        node: Any = spec
        for step in path[:-1]:
            node = node.setdefault(step, {"trial_id": 0} if step == "init_from" else {})
        node[path[-1]] = value
        response = client.post("/api/studies", json=spec)
        field = ".".join(map(str, path))
        if response.status_code == 422:
            text = json.dumps(response.json())
            # init_from names trial 0, which does not exist: its lookup is what consumes it
            assert str(path[0] if path[0] == "init_from" else path[-1]) in text, (field, text)
            continue
        assert response.status_code == 201, (field, value, response.text)
        accepted += 1
        with session_scope(database_url) as session:
            row = session.get(Study, response.json()["id"])
            assert row is not None
            stored = load_spec(row.spec)
        _consume(stored, database_url, tmp_path)
        client.post(f"/api/studies/{response.json()['id']}/stop")
    assert accepted >= len(BOUNDARY_CASES) // 2, accepted


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(
    "sampler", ["tpe", "random", "grid", "cmaes", "gp", "qmc", "nsga2", "nsga3"]
)
def test_every_sampler_takes_every_accepted_seed(sampler: str) -> None:
    """A spec seed is varied per claim (seed * stride + claim index); every sampler must take
    the result for any accepted seed and claim (before, any seed above 4294 failed every
    trial: numpy's generators take 0..2**32-1)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in (0, 4295, MAX_SEED):
        spec = StudySpec.model_validate(
            {
                "name": "seeds",
                "dataset": {"name": "moons"},
                "space": {
                    "lr": {"type": "float", "low": 0.01, "high": 0.1, "step": 0.01},
                    "batch_size": {"type": "categorical", "choices": [16, 32]},
                },
                "sampler": {"name": sampler, "seed": seed},
                "budget": {"n_trials": 1},
            }
        )
        for claim_index in (0, 2**31 - 1):
            study = optuna.create_study(sampler=build_sampler(spec, claim_index))
            trial = study.ask()
            assert set(suggest_params(trial, spec)) == {"lr", "batch_size"}


def test_an_uploaded_dataset_too_small_for_the_splits_is_refused_at_submission(
    client: httpx.Client, database_url: str
) -> None:
    name = unique("tiny")
    body = _multipart({"name": name.encode(), "target": b"label"}, "d.csv", CSV)
    response = client.post(
        "/api/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert response.status_code == 201, response.text
    before = _counts(database_url)
    spec = {"name": unique("tiny"), "dataset": {"name": name}, "budget": {"n_trials": 1}}
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "dataset", "val_fraction"]
    assert _counts(database_url) == before
    spec["dataset"] = {"name": name, "val_fraction": 0.3, "test_fraction": 0.3}
    assert client.post("/api/studies", json=spec).status_code == 201
