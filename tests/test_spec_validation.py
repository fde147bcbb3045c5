"""Bad study specs are answered 422 with a message naming the field, and write nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.models import Study
from service.core.optuna_storage import get_storage
from service.studies.spec import StudySpec
from tests.conftest import DIGITS_SPEC, unique

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        node[leaf] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        del node[leaf]

    return mutate


# (case id, mutation, text that must appear in the error's location or message)
BAD_SPECS: list[tuple[str, Mutation, str]] = [
    ("low >= high", _set("space.lr", {"type": "float", "low": 0.1, "high": 0.01}), "lr"),
    ("low == high", _set("space.dropout", {"type": "float", "low": 0.2, "high": 0.2}), "dropout"),
    (
        "log with low <= 0",
        _set("space.weight_decay", {"type": "float", "low": 0.0, "high": 1e-2, "log": True}),
        "weight_decay",
    ),
    ("dropout < 0", _set("space.dropout", {"type": "float", "low": -0.1, "high": 0.5}), "dropout"),
    ("dropout >= 1", _set("space.dropout", {"type": "float", "low": 0.0, "high": 1.0}), "dropout"),
    ("fixed dropout 1", _set("fixed.dropout", 1.0), "dropout"),
    (
        "batch_size 0",
        _set("space.batch_size", {"type": "categorical", "choices": [0, 32]}),
        "batch_size",
    ),
    (
        "unknown optimizer",
        _set("space.optimizer", {"type": "categorical", "choices": ["adam", "lion"]}),
        "optimizer",
    ),
    (
        "unknown parameter name",
        _set("space.learning_rate", {"type": "float", "low": 1e-4, "high": 1e-1}),
        "learning_rate",
    ),
    ("unknown fixed parameter", _set("fixed.hidden_neurons", 64), "hidden_neurons"),
    ("unknown dataset", _set("dataset.name", "imagenet"), "dataset"),
    ("n_trials 0", _set("budget.n_trials", 0), "n_trials"),
    ("n_trials over the cap", _set("budget.n_trials", 51), "n_trials"),
    ("max_epochs over the cap", _set("objective.max_epochs", 101), "max_epochs"),
    (
        "empty choices",
        _set("space.batch_size", {"type": "categorical", "choices": []}),
        "choices",
    ),
    ("n_trials wrong type", _set("budget.n_trials", "six"), "n_trials"),
    ("low wrong type", _set("space.lr", {"type": "float", "low": "tiny", "high": 0.1}), "low"),
    ("unknown space type", _set("space.lr", {"type": "uniform", "low": 0.1, "high": 1}), "lr"),
    (
        "float search of int param",
        _set("space.hidden_units", {"type": "float", "low": 8, "high": 64}),
        "hidden_units",
    ),
    ("searched and fixed", _set("fixed.lr", 0.01), "lr"),
    ("unknown top-level key", _set("epochs", 10), "epochs"),
    ("missing budget", _delete("budget"), "budget"),
    ("missing name", _delete("name"), "name"),
    ("val+test leave no row to train", _set("dataset.val_fraction", 0.8), "val_fraction"),
    ("unknown sampler", _set("sampler.name", "bayes"), "sampler"),
    ("unknown pruner", _set("pruner.name", "asha"), "pruner"),
    ("direction contradicts metric", _set("objective.direction", "minimize"), "direction"),
    ("enqueue outside space", _set("enqueue", [{"lr": 5.0}]), "enqueue"),
    ("enqueue unknown param", _set("enqueue", [{"momentum": 0.9}]), "momentum"),
    (
        "grid over continuous float",
        _set("sampler", {"name": "grid"}),
        "grid",
    ),
    ("unknown lr_schedule", _set("fixed.lr_schedule", "cosine"), "lr_schedule"),
    ("unknown grad_clip", _set("fixed.grad_clip", "adaptive"), "grad_clip"),
    (
        "clip threshold 0",
        _set("space.grad_clip_threshold", {"type": "float", "low": 0.0, "high": 1.0}),
        "grad_clip_threshold",
    ),
    ("beta2 = 1", _set("fixed.beta2", 1.0), "beta2"),
    ("negative patience", _set("fixed.early_stopping_patience", -1), "early_stopping_patience"),
    ("unknown decay mode", _set("fixed.weight_decay_mode", "adamw"), "weight_decay_mode"),
    ("augment on tabular data", _set("fixed.augment", "shift"), "fixed.augment"),
]


def _count_studies(url: str) -> tuple[int, int]:
    with session_scope(url) as session:
        ours = session.scalar(select(func.count()).select_from(Study)) or 0
    return int(ours), len(get_storage(url).get_all_studies())


def _error_text(body: dict[str, Any]) -> str:
    return " ".join(
        f"{'.'.join(str(p) for p in err.get('loc', []))} {err.get('msg', '')}"
        for err in body["detail"]
    )


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_422_naming_the_field_and_writes_nothing(
    client: httpx.Client, database_url: str, case: str, mutate: Mutation, field: str
) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = unique("bad")
    mutate(spec)
    before = _count_studies(database_url)

    response = client.post("/api/studies", json=spec)

    assert response.status_code == 422, response.text
    assert field in _error_text(response.json()), response.json()
    # every problem is located at a field, never at the whole body
    assert all(len(e["loc"]) > 1 for e in response.json()["detail"]), response.json()
    assert _count_studies(database_url) == before


# (case id, mutation, the location of the error, words of its message). The spec's checks
# across fields were all located at ["body"] and named the field only in their message.
LOCATED: list[tuple[str, Mutation, list[Any], str]] = [
    (
        "step that does not divide the range",
        _set("space.lr", {"type": "float", "low": 0.01, "high": 0.046, "step": 0.02}),
        ["space", "lr", "step"],
        "does not divide high - low = 0.036",
    ),
    (
        "low >= high",
        _set("space.lr", {"type": "float", "low": 0.1, "high": 0.01}),
        ["space", "lr", "low"],
        "must be < high",
    ),
    (
        "log with low 0",
        _set("space.weight_decay", {"type": "float", "low": 0.0, "high": 0.1, "log": True}),
        ["space", "weight_decay", "low"],
        "log=true needs low > 0",
    ),
    (
        "log with step",
        _set("space.lr", {"type": "float", "low": 0.01, "high": 0.1, "log": True, "step": 0.01}),
        ["space", "lr", "step"],
        "cannot be combined with log",
    ),
    (
        "repeated choice",
        _set("space.optimizer", {"type": "categorical", "choices": ["sgd", "adam", "sgd"]}),
        ["space", "optimizer", "choices", 2],
        "must not repeat",
    ),
    (
        "choice outside the parameter's domain",
        _set("space.batch_size", {"type": "categorical", "choices": [32, 0]}),
        ["space", "batch_size", "choices", 1],
        "",
    ),
    (
        "type that does not fit the parameter",
        _set("space.hidden_units", {"type": "float", "low": 8, "high": 64}),
        ["space", "hidden_units", "type"],
        "use int or categorical",
    ),
    (
        "entry without a type",
        _set("space.lr", {"low": 0.01, "high": 0.1}),
        ["space", "lr", "type"],
        "one of 'float', 'int', 'categorical'",
    ),
    (
        "val + test >= 1",
        _set("dataset.test_fraction", 0.8),
        ["dataset", "val_fraction"],
        "val_fraction + test_fraction must be < 1",
    ),
    (
        "path of a tabular dataset",
        _set("dataset.path", "/data/digits"),
        ["dataset", "path"],
        "only image datasets",
    ),
    (
        "direction against the metric",
        _set("objective.direction", "minimize"),
        ["objective", "direction"],
        "must be maximized",
    ),
    ("fixed out of domain", _set("fixed.dropout", 1.0), ["fixed", "dropout"], ""),
    ("searched and fixed", _set("fixed.lr", 0.01), ["fixed", "lr"], "also in space"),
    ("enqueue outside space", _set("enqueue", [{"lr": 5.0}]), ["enqueue", 0, "lr"], "outside"),
    (
        "enqueue of an unsearched parameter",
        _set("enqueue", [{"lr": 0.01}, {"momentum": 0.9}]),
        ["enqueue", 1, "momentum"],
        "not in space",
    ),
    ("augment on tabular data", _set("fixed.augment", "shift"), ["fixed", "augment"], "image"),
    (
        "grid over a float without step",
        _set("sampler", {"name": "grid"}),
        ["space", "dropout", "step"],
        "grid sampler needs a step",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "loc", "words"), [pytest.param(*c[1:], id=c[0]) for c in LOCATED]
)
def test_cross_field_errors_are_located_at_the_field_they_name(
    mutate: Mutation, loc: list[Any], words: str
) -> None:
    """The spec validators' own checks answer like pydantic's field errors: at the field's
    path in the body, with the reason alone as the message (no "Value error, " prefix)."""
    spec = copy.deepcopy(DIGITS_SPEC)
    mutate(spec)
    with pytest.raises(ValidationError) as caught:
        StudySpec.model_validate(spec)
    errors = caught.value.errors()
    assert any(list(e["loc"]) == loc and words in e["msg"] for e in errors), errors
    assert not any(e["msg"].startswith("Value error") for e in errors), errors


def test_a_located_error_reaches_the_client_at_its_field(client: httpx.Client) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = unique("located")
    spec["space"]["lr"] = {"type": "float", "low": 0.01, "high": 0.046, "step": 0.02}
    spec["enqueue"] = [{"lr": 0.5}]
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in detail] == [
        (["body", "space", "lr", "step"], "value_error"),
        (["body", "enqueue", 0, "lr"], "value_error"),
    ], detail
    assert detail[1]["msg"] == "0.5 is outside space.lr" and detail[1]["input"] == 0.5


def test_malformed_json_is_422_and_writes_nothing(client: httpx.Client, database_url: str) -> None:
    before = _count_studies(database_url)
    body = json.dumps(DIGITS_SPEC)[:-7]  # cut off mid-object
    response = client.post(
        "/api/studies", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "json" in response.text.lower()
    assert _count_studies(database_url) == before


def _raw(value_at: str, token: str) -> Callable[[], bytes]:
    """The issue spec as raw JSON bytes with `token` spelled literally at `value_at` (a dotted
    path): NaN, 1e400 and escapes such as \\ud800 reach the server exactly as written."""

    def body() -> bytes:
        spec = copy.deepcopy(DIGITS_SPEC)
        spec["name"] = unique("raw")
        _set(value_at, "@@VALUE@@")(spec)
        return json.dumps(spec).replace('"@@VALUE@@"', token).encode()

    return body


def _dist(**fields: Any) -> str:
    return json.dumps({"type": "float", "low": 0.0, "high": 0.5, **fields})


DEEP = "[" * 200 + "NaN" + "]" * 200

# (case id, raw body, text that must appear in the error's location or message). Each was a
# 500 (an error body that echoed NaN, infinity or a surrogate could not be encoded) or was
# accepted and then failed on every worker, or was stored though no database should hold it.
RAW_CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("fixed lr NaN", _raw("fixed.lr", "NaN"), "fixed.lr"),
    ("fixed lr -Infinity", _raw("fixed.lr", "-Infinity"), "fixed.lr"),
    ("n_trials 1e400", _raw("budget.n_trials", "1e400"), "budget.n_trials"),
    ("name with a lone surrogate", _raw("name", '"a\\ud800b"'), "name"),
    ("name only whitespace", _raw("name", '"  \\t "'), "name"),
    ("name with NUL", _raw("name", '"a\\u0000b"'), "name"),
    ("name with a newline", _raw("name", '"a\\nb"'), "name"),
    ("name of 201 characters", _raw("name", json.dumps("n" * 201)), "name"),
    ("sampler seed 2**70", _raw("sampler.seed", str(2**70)), "sampler.seed"),
    ("sampler seed -1", _raw("sampler.seed", "-1"), "sampler.seed"),
    ("sampler seed 1e26", _raw("sampler.seed", "1e26"), "sampler.seed"),
    ("sampler seed 2**32", _raw("sampler.seed", str(2**32)), "sampler.seed"),
    ("dataset seed 2**32", _raw("dataset.seed", str(2**32)), "dataset.seed"),
    ("dataset seed -1", _raw("dataset.seed", "-1"), "dataset.seed"),
    ("dataset name with a surrogate", _raw("dataset.name", '"dig\\udfffits"'), "dataset.name"),
    ("dataset name of 5000 characters", _raw("dataset.name", json.dumps("d" * 5000)), "dataset"),
    ("val_fraction NaN", _raw("dataset.val_fraction", "NaN"), "dataset.val_fraction"),
    ("val_fraction leaving no row per class", _raw("dataset.val_fraction", "0.001"), "val_frac"),
    ("dataset path with NUL", _raw("dataset", '{"name": "mnist", "path": "/a\\u0000"}'), "path"),
    ("step Infinity", _raw("space.dropout", _dist(step="@@INF@@")), "space.dropout"),
    ("step finer than floats", _raw("space.dropout", _dist(step=1e-300)), "space.dropout"),
    ("low NaN", _raw("space.dropout", _dist(low="@@NAN@@")), "space.dropout"),
    ("choice 2**70", _raw("space.batch_size.choices", f"[32, {2**70}]"), "space.batch_size"),
    ("choice with NUL", _raw("space.optimizer.choices", '["adam\\u0000"]'), "space.optimizer"),
    ("surrogate in a parameter name", _raw("fixed", '{"lr\\ud800": 0.1}'), "fixed"),
    ("timeout 1e300", _raw("budget.timeout_seconds", "1e300"), "budget.timeout_seconds"),
    ("max_parallel 2**70", _raw("budget.max_parallel_trials", str(2**70)), "max_parallel"),
    ("max_failed 2**40", _raw("budget.max_failed_trials", str(2**40)), "max_failed_trials"),
    ("pruner warmup 2**70", _raw("pruner", f'{{"n_warmup_steps": {2**70}}}'), "n_warmup_steps"),
    ("init_from 2**70", _raw("init_from", f'{{"trial_id": {2**70}}}'), "init_from.trial_id"),
    ("priority Infinity", _raw("priority", "Infinity"), "priority"),
    ("input nested 200 deep", _raw("fixed.lr", DEEP), "fixed.lr"),
]


@pytest.mark.parametrize(("case", "body", "field"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_hostile_json_is_422_naming_the_field_and_writes_nothing(
    client: httpx.Client, database_url: str, case: str, body: Callable[[], bytes], field: str
) -> None:
    raw = body().replace(b'"@@INF@@"', b"Infinity").replace(b'"@@NAN@@"', b"NaN")
    before = _count_studies(database_url)

    response = client.post(
        "/api/studies", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert field in _error_text(response.json()), response.json()
    assert _count_studies(database_url) == before


def test_names_are_trimmed_and_seeds_reach_their_bounds(client: httpx.Client) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    name = unique("trim")
    spec["name"] = f"  {name} \t"
    spec["dataset"] = {**spec["dataset"], "name": " digits ", "seed": 2**32 - 1}
    spec["sampler"]["seed"] = 2**32 - 1
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name
    detail = client.get(f"/api/studies/{response.json()['id']}").json()
    assert detail["spec"]["dataset"]["name"] == "digits"


def test_the_issue_spec_is_accepted(client: httpx.Client) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = unique("ok")
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "running"
