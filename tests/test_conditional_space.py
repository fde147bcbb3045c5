"""Conditional search-space entries (`when`): validation, suggestions, every sampler,
enqueued configurations."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import httpx
import optuna
import pytest

from service.core.settings import Settings
from service.studies.search.space import space_warnings, suggest_params
from service.studies.spec import StudySpec
from service.worker.process import WorkerProcess
from tests.conftest import tiny_spec, unique

MOMENTUM_WHEN = {"optimizer": ["momentum", "nesterov"]}


def conditional_spec(name: str, n_trials: int = 6) -> dict[str, Any]:
    spec = tiny_spec(name, n_trials=n_trials)
    spec["space"] = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "nesterov", "adam"]},
        "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": MOMENTUM_WHEN},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
        # Conditional on a conditional entry: only with momentum, which only comes with
        # optimizer momentum or nesterov.
        "dropout": {
            "type": "float",
            "low": 0.0,
            "high": 0.3,
            "when": {"optimizer": ["nesterov"], "activation": ["tanh"]},
        },
    }
    return spec


def assert_consistent(params: dict[str, Any]) -> None:
    """Every trial's params agree with the spec's conditions."""
    assert ("momentum" in params) == (params["optimizer"] in ("momentum", "nesterov")), params
    nesterov_tanh = params["optimizer"] == "nesterov" and params["activation"] == "tanh"
    assert ("dropout" in params) == nesterov_tanh, params


Mutation = Callable[[dict[str, Any]], None]


def _space(name: str, dist: dict[str, Any]) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["space"][name] = dist

    return mutate


def _when(name: str, when: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["space"][name]["when"] = when

    return mutate


def _chain(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for m in mutations:
            m(spec)

    return mutate


def _reorder(*names: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        space = spec["space"]
        spec["space"] = {n: space[n] for n in names} | {
            n: d for n, d in space.items() if n not in names
        }

    return mutate


def _set(key: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec[key] = value

    return mutate


def _fix(name: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        spec["space"].pop(name, None)
        spec["fixed"][name] = value

    return mutate


# (case id, mutation, field the message must name, words it must contain)
BAD_CONDITIONS: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown parameter",
        _when("momentum", {"optimiser": ["momentum"]}),
        "space.momentum.when.optimiser",
        "unknown parameter",
    ),
    (
        "illegal value",
        _when("momentum", {"optimizer": ["momentum", "lion"]}),
        "space.momentum.when.optimizer",
        "'lion'",
    ),
    (
        "typo of a value",
        _when("momentum", {"optimizer": ["momentum", "nestrov"]}),
        "space.momentum.when.optimizer",
        "'nestrov': must be one of",
    ),
    (
        "no value the space ever chooses",
        _when("momentum", {"optimizer": ["rmsprop"]}),
        "space.momentum.when.optimizer",
        "never holds: space.optimizer offers none of ['rmsprop']",
    ),
    (
        "int value outside the parameter's domain",
        _chain(
            _set("fixed", {"hidden_units": 16}),
            _space("hidden_layers", {"type": "int", "low": 1, "high": 2}),
            _reorder("hidden_layers"),
            _when("momentum", {"hidden_layers": [1, 40]}),
        ),
        "space.momentum.when.hidden_layers",
        "40: must be <= 32",
    ),
    (
        "parent after the entry",
        _reorder("momentum", "optimizer"),
        "space.momentum.when.optimizer",
        "must come before momentum",
    ),
    (
        "cycle",
        _chain(
            _when("activation", {"dropout": [0.1]}),
            _when("dropout", {"activation": ["tanh"]}),
        ),
        "space.activation.when.dropout",
        "cycle",
    ),
    ("itself", _when("momentum", {"momentum": [0.9]}), "space.momentum.when.momentum", "itself"),
    (
        "parent neither searched nor fixed",
        _when("activation", {"weight_decay": [0.0]}),
        "space.activation.when.weight_decay",
        "neither searched",
    ),
    (
        "fixed parent never holds",
        _chain(_fix("optimizer", "adam"), _when("dropout", {"activation": ["tanh"]})),
        "space.momentum.when.optimizer",
        "never holds: fixed.optimizer is 'adam'",
    ),
    (
        "continuous float parent",
        _when("activation", {"lr": [0.01]}),
        "space.activation.when.lr",
        "continuous float",
    ),
    (
        "no values",
        _when("momentum", {"optimizer": []}),
        "space.momentum.when.optimizer",
        "lists no values",
    ),
    ("no parameters", _when("momentum", {}), "space.momentum.when", "at least one"),
    (
        "grid sampler",
        _chain(
            _set("sampler", {"name": "grid"}),
            _space("lr", {"type": "categorical", "choices": [0.01, 0.1]}),
            _space("momentum", {"type": "float", "low": 0.5, "high": 0.9, "step": 0.2}),
            _when("momentum", MOMENTUM_WHEN),
            _space("dropout", {"type": "categorical", "choices": [0.0, 0.2]}),
        ),
        "space.momentum.when",
        "grid sampler cannot",
    ),
    (
        "enqueued value whose condition is false",
        _set("enqueue", [{"optimizer": "adam", "momentum": 0.9}]),
        "enqueue[0].momentum",
        "optimizer='adam'",
    ),
    (
        "enqueued value whose condition the entry makes false",
        _set("enqueue", [{"activation": "relu", "dropout": 0.1}]),
        "enqueue[0].dropout",
        "activation='relu'",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "field", "words"),
    [pytest.param(m, f, w, id=case) for case, m, f, w in BAD_CONDITIONS],
)
def test_bad_conditions_are_422_naming_the_field_and_write_nothing(
    client: httpx.Client, mutation: Mutation, field: str, words: str
) -> None:
    spec = conditional_spec(unique("bad-when"))
    mutation(spec)
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422, response.text
    # located at the field it names: "enqueue[0].momentum" is ["body", "enqueue", 0, "momentum"]
    loc = ["body", *(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", field) if p)]
    detail = response.json()["detail"]
    assert any(e["loc"] == loc and words in e["msg"] for e in detail), (loc, detail)
    names = [s["name"] for s in client.get("/api/studies", params={"limit": 1000}).json()]
    assert spec["name"] not in names


def test_good_conditions_are_accepted_and_stored() -> None:
    spec = conditional_spec("ok")
    spec["fixed"]["batch_size"] = 32
    spec["space"]["lr"]["when"] = {"batch_size": [16, 32]}  # a fixed parent that holds
    spec["enqueue"] = [
        {"optimizer": "adam"},
        {"optimizer": "nesterov", "momentum": 0.9, "activation": "tanh", "dropout": 0.1},
        {"momentum": 0.8},  # the optimizer is left to the sampler: decided when it runs
    ]
    parsed = StudySpec.model_validate(spec)
    dumped = parsed.model_dump(mode="json")
    assert dumped["space"]["momentum"]["when"] == MOMENTUM_WHEN
    assert dumped["space"]["optimizer"]["when"] is None
    assert list(dumped["space"]) == ["lr", "optimizer", "momentum", "activation", "dropout"]


def test_a_legal_value_the_space_does_not_offer_is_accepted_with_a_warning(
    client: httpx.Client, settings: Settings
) -> None:
    """Issue 12 §6: a reused condition naming nesterov, in a space that only offers momentum
    and adam, trains; the study's detail says which values never occur."""
    spec = tiny_spec(unique("when-narrowed"), n_trials=3)
    spec["space"] = {
        "optimizer": {"type": "categorical", "choices": ["momentum", "adam"]},
        "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": MOMENTUM_WHEN},
    }
    spec["enqueue"] = [{"optimizer": "momentum"}, {"optimizer": "adam"}]
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    expected = [
        "space.momentum.when.optimizer: 'nesterov' is not among the values space.optimizer "
        "takes, so momentum is searched only when optimizer is one of ['momentum']"
    ]
    assert created.json()["warnings"] == expected
    study_id = created.json()["id"]

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed", study
    assert study["warnings"] == expected
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in items] == ["complete"] * 3, items
    for t in items:
        assert ("momentum" in t["params"]) == (t["params"]["optimizer"] == "momentum"), t


def test_values_off_an_int_parents_grid_are_warnings() -> None:
    """The kind of §6 over int parents: a legal value outside [low, high] or between two
    steps is never taken; a value on the grid is."""
    spec = conditional_spec("int-parent")
    spec["fixed"] = {}
    spec["space"] = {
        "hidden_units": {"type": "int", "low": 16, "high": 64, "step": 16},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": {"hidden_units": [20, 32]}},
        "hidden_layers": {"type": "int", "low": 1, "high": 2},
        "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"hidden_layers": [2, 3]}},
    }
    parsed = StudySpec.model_validate(spec)
    assert space_warnings(parsed) == [
        "space.dropout.when.hidden_units: 20 is not among the values space.hidden_units takes, "
        "so dropout is searched only when hidden_units is one of [32]",
        "space.momentum.when.hidden_layers: 3 is not among the values space.hidden_layers "
        "takes, so momentum is searched only when hidden_layers is one of [2]",
    ]
    assert space_warnings(StudySpec.model_validate(conditional_spec("none"))) == []


def test_suggestions_follow_the_conditions() -> None:
    spec = StudySpec.model_validate(conditional_spec("suggest"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[str, str]] = set()
    for _ in range(120):
        trial = study.ask()
        config = suggest_params(trial, spec)
        assert_consistent(trial.params)
        # What the trainer gets: searched + fixed; an inactive parameter is absent, so the
        # trainer's default applies.
        assert config == {**spec.fixed, **trial.params}
        study.tell(trial, 0.5)
        seen.add((trial.params["optimizer"], trial.params["activation"]))
    assert len(seen) == 8  # every branch was visited


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc"])
def test_every_sampler_respects_conditions(
    client: httpx.Client, settings: Settings, sampler: str
) -> None:
    if settings.database_url.startswith("postgresql") and sampler != "tpe":
        pytest.skip("sampling is independent of the storage; one sampler covers PostgreSQL")
    spec = conditional_spec(unique(f"when-{sampler}"), n_trials=6)
    spec["sampler"] = {"name": sampler, "seed": 5, "n_startup_trials": 2}
    if sampler not in ("tpe", "gp"):
        del spec["sampler"]["n_startup_trials"]
    spec["enqueue"] = [
        {"optimizer": "adam", "activation": "tanh"},
        {"optimizer": "nesterov", "momentum": 0.6, "activation": "tanh", "dropout": 0.2},
    ]
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "completed", study
    items = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in items] == ["complete"] * 6, items
    for t in items:
        assert_consistent(t["params"])
    # Enqueued configurations ran first, exactly as given: the adam one has no momentum.
    assert items[0]["params"]["optimizer"] == "adam"
    assert set(items[0]["params"]) == {"lr", "optimizer", "activation"}
    assert {k: items[1]["params"][k] for k in ("optimizer", "momentum", "dropout")} == {
        "optimizer": "nesterov",
        "momentum": 0.6,
        "dropout": 0.2,
    }


def test_conditions_survive_the_stored_spec(client: httpx.Client) -> None:
    spec = copy.deepcopy(conditional_spec(unique("when-stored")))
    study_id = client.post("/api/studies", json=spec).json()["id"]
    stored = client.get(f"/api/studies/{study_id}").json()["spec"]
    assert stored["space"]["momentum"]["when"] == MOMENTUM_WHEN
    assert list(stored["space"]) == list(spec["space"])  # the order conditions rely on
    client.post(f"/api/studies/{study_id}/stop")
