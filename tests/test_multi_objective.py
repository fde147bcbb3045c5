"""Multi-objective studies (issue 15 §2): the spec's rules, the Pareto front's mathematics,
the REST answers over trials written into Optuna's storage (SQLite and PostgreSQL), the
samplers, and the worker's measured objectives. The real-worker run is
tests/test_multi_objective_e2e.py."""

from __future__ import annotations

import itertools
import random
from typing import Any

import httpx
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from service.core.optuna_storage import get_storage
from service.studies.pareto import non_dominated
from service.studies.search.factories import build_sampler
from service.studies.search.space import suggest_params
from service.studies.spec import StudySpec
from service.worker.objectives import inference_ms, n_params, reports_to_optuna
from tests.conftest import tiny_spec, unique


def multi_spec(name: str, **overrides: Any) -> dict[str, Any]:
    spec = tiny_spec(name, n_trials=4)
    spec["objective"] = {"max_epochs": 2}
    spec["objectives"] = [{"metric": "val_accuracy"}, {"metric": "n_params"}]
    spec["space"]["hidden_units"] = {"type": "categorical", "choices": [4, 16, 64]}
    spec["fixed"] = {"hidden_layers": 1}
    spec["sampler"] = {"name": "nsga2", "seed": 0, "population_size": 4}
    del spec["pruner"]
    spec.update(overrides)
    return spec


# ---- the front's mathematics --------------------------------------------------------------


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    """a is at least as good as b in every objective and better in one (the definition)."""
    better_or_equal = all(
        (x >= y) if m else (x <= y) for x, y, m in zip(a, b, maximize, strict=True)
    )
    return better_or_equal and a != b


@pytest.mark.parametrize("k", [2, 3])
def test_non_dominated_is_exactly_the_points_nothing_dominates(k: int) -> None:
    rng = random.Random(k)
    for _ in range(200):
        n = rng.randint(0, 25)
        # few distinct values: ties and equal vectors happen
        points = [[float(rng.randint(0, 5)) for _ in range(k)] for _ in range(n)]
        maximize = [rng.random() < 0.5 for _ in range(k)]
        expected = [
            i for i, p in enumerate(points) if not any(dominates(q, p, maximize) for q in points)
        ]
        assert non_dominated(points, maximize) == expected, (points, maximize)


def test_non_dominated_keeps_equal_vectors_and_reads_directions() -> None:
    points = [[0.9, 100.0], [0.9, 100.0], [0.95, 500.0], [0.8, 500.0], [0.7, 50.0]]
    # accuracy up, size down: [0.8, 500] is dominated by both [0.9, 100] and [0.95, 500]
    assert non_dominated(points, [True, False]) == [0, 1, 2, 4]
    # both down: only the smallest accuracy with the smallest size survives
    assert non_dominated(points, [False, False]) == [4]


# ---- the spec -----------------------------------------------------------------------------


def test_a_multi_objective_spec_gets_no_pruner_and_monitors_its_first_curve_metric(
    client: httpx.Client,
) -> None:
    spec = multi_spec(unique("mo"))
    spec["objectives"] = [{"metric": "n_params"}, {"metric": "val_loss"}]
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    study = client.get(f"/api/studies/{response.json()['id']}").json()
    assert study["objectives"] == [
        {"metric": "n_params", "direction": "minimize"},
        {"metric": "val_loss", "direction": "minimize"},
    ]
    assert study["spec"]["pruner"]["name"] == "none"
    # early stopping and the curves chart follow the first objective recorded per epoch
    assert study["spec"]["objective"]["metric"] == "val_loss"
    assert study["spec"]["objective"]["direction"] == "minimize"
    assert study["spec"]["objective"]["max_epochs"] == 2
    assert study["best_value"] is None and study["best"] is None
    stored = StudySpec.model_validate(study["spec"])  # the stored spec reloads as it was
    assert stored.pruner.name == "none" and stored.objective.metric == "val_loss"
    assert not reports_to_optuna(stored)
    assert client.post(f"/api/studies/{study['id']}/stop").status_code == 200


REFUSALS: list[tuple[str, dict[str, Any], list[Any], str]] = [
    (
        "wrong direction",
        {
            "objectives": [
                {"metric": "val_accuracy"},
                {"metric": "n_params", "direction": "maximize"},
            ]
        },
        ["objectives", 1, "direction"],
        "n_params must be minimized",
    ),
    (
        "repeated metric",
        {"objectives": [{"metric": "n_params"}, {"metric": "n_params"}]},
        ["objectives", 1, "metric"],
        "must not repeat",
    ),
    (
        "unknown metric",
        {"objectives": [{"metric": "val_f1"}, {"metric": "n_params"}]},
        ["objectives", 0, "metric"],
        "unknown metric",
    ),
    ("one objective", {"objectives": [{"metric": "n_params"}]}, ["objectives"], "at least 2"),
    (
        "four objectives",
        {
            "objectives": [
                {"metric": m} for m in ("val_accuracy", "val_loss", "n_params", "inference_ms")
            ]
        },
        ["objectives"],
        "at most 3",
    ),
    ("cmaes", {"sampler": {"name": "cmaes"}}, ["sampler", "name"], "one objective only"),
    (
        "a pruner",
        {"pruner": {"name": "median"}},
        ["pruner", "name"],
        "Optuna does not prune multi-objective studies",
    ),
]


@pytest.mark.parametrize(("case", "change", "loc", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_multi_objective_refusals_name_the_field(
    client: httpx.Client, case: str, change: dict[str, Any], loc: list[Any], says: str
) -> None:
    response = client.post("/api/studies", json=multi_spec(unique("mo"), **change))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(e["loc"][1:] == loc and says in e["msg"] for e in detail), detail


def test_an_explicit_none_pruner_and_a_monitor_metric_are_accepted(client: httpx.Client) -> None:
    spec = multi_spec(unique("mo"), pruner={"name": "none"})
    spec["objective"] = {"metric": "val_loss", "max_epochs": 3}
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 201, response.text
    study = client.get(f"/api/studies/{response.json()['id']}").json()
    assert study["spec"]["objective"]["metric"] == "val_loss"
    assert [o["metric"] for o in study["objectives"]] == ["val_accuracy", "n_params"]
    client.post(f"/api/studies/{study['id']}/stop")


# ---- the REST answers over a study's trials -----------------------------------------------

DISTRIBUTIONS = {
    "hidden_units": CategoricalDistribution([4, 16, 64]),
    "lr": FloatDistribution(1e-3, 1e-1, log=True),
}
# (hidden_units, lr, accuracy, n_params): #0, #1, #3 and #4 are the front (#4 ties #1)
WRITTEN = [
    (4, 0.01, 0.80, 300.0),
    (16, 0.02, 0.90, 1000.0),
    (16, 0.05, 0.85, 1000.0),  # dominated by #1
    (64, 0.03, 0.97, 4000.0),
    (16, 0.04, 0.90, 1000.0),  # equal to #1: both on the front
    (64, 0.01, 0.70, 4000.0),  # dominated by everything
]


def write_trials(url: str, name: str) -> list[int]:
    """The WRITTEN trials as complete trials, then one pruned and one failed; Optuna ids."""
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(url))
    for units, lr, acc, size in WRITTEN:
        params = {"hidden_units": units, "lr": lr}
        study.add_trial(
            create_trial(params=params, distributions=DISTRIBUTIONS, values=[acc, size])
        )
    params = {"hidden_units": 4, "lr": 0.01}
    for state in (TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, state=state))
    return [t._trial_id for t in study.get_trials(deepcopy=False)]


def test_pareto_best_trials_and_history_of_a_two_objective_study(
    client: httpx.Client, database_url: str
) -> None:
    name = unique("mo")
    response = client.post("/api/studies", json=multi_spec(name))
    assert response.status_code == 201, response.text
    sid = response.json()["id"]
    client.post(f"/api/studies/{sid}/stop")  # no worker here; stopped or not, it reads alike
    ids = write_trials(database_url, name)

    front = client.get(f"/api/studies/{sid}/pareto")
    assert front.status_code == 200, front.text
    body = front.json()
    assert body["objectives"] == [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "n_params", "direction": "minimize"},
    ]
    # best first by the first objective; ties by number
    assert [t["number"] for t in body["trials"]] == [3, 1, 4, 0]
    assert [t["trial_id"] for t in body["trials"]] == [ids[3], ids[1], ids[4], ids[0]]
    assert body["trials"][0]["values"] == [0.97, 4000.0]
    assert body["trials"][0]["params"] == {"hidden_units": 64, "lr": 0.03}
    values = [t["values"] for t in body["trials"]]
    for a, b in itertools.permutations(values, 2):
        assert not dominates(a, b, [True, False])
    every = [[acc, size] for *_, acc, size in WRITTEN]
    for i, v in enumerate(every):
        if v not in values:  # each trial off the front is dominated by one on it
            assert any(dominates(f, v, [True, False]) for f in values), i

    best = client.get(f"/api/studies/{sid}/best")
    assert best.status_code == 409, best.text
    assert "several objectives" in best.json()["detail"]
    assert f"/api/studies/{sid}/pareto" in best.json()["detail"]

    trials = client.get(f"/api/studies/{sid}/trials").json()["items"]
    assert [t["values"] for t in trials] == [*every, None, None]
    assert all(t["value"] is None for t in trials)

    hist = client.get(f"/api/studies/{sid}/history").json()
    assert hist["objectives"] == body["objectives"]
    assert hist["values"] == [*every, None, None]
    assert hist["metric"] == "val_accuracy" and hist["direction"] == "maximize"

    listed = {s["id"]: s for s in client.get("/api/studies").json()}[sid]
    assert listed["best_value"] is None and len(listed["objectives"]) == 2
    # every page the dashboard reads answers
    for path in ("curves", "importances", "report"):
        got = client.get(f"/api/studies/{sid}/{path}")
        assert got.status_code in (200, 404), (path, got.text)  # report: an optional route
        assert got.status_code == 200 or path == "report", (path, got.text)
    assert client.post(f"/api/studies/{sid}/learning-curve", json={}).status_code in (404, 409)


def test_a_single_objective_study_still_has_a_best_and_a_one_value_front(
    client: httpx.Client, database_url: str
) -> None:
    name = unique("so")
    sid = client.post("/api/studies", json=tiny_spec(name)).json()["id"]
    client.post(f"/api/studies/{sid}/stop")
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(database_url))
    dist = {"lr": FloatDistribution(1e-3, 1e-1, log=True)}
    for lr, acc in ((0.01, 0.8), (0.02, 0.9), (0.03, 0.9)):
        study.add_trial(create_trial(params={"lr": lr}, distributions=dist, value=acc))
    assert client.get(f"/api/studies/{sid}/best").json()["number"] == 1
    front = client.get(f"/api/studies/{sid}/pareto").json()
    assert front["objectives"] == [{"metric": "val_accuracy", "direction": "maximize"}]
    assert [(t["number"], t["values"]) for t in front["trials"]] == [(1, [0.9]), (2, [0.9])]
    trials = client.get(f"/api/studies/{sid}/trials").json()["items"]
    assert [(t["value"], t["values"]) for t in trials] == [(0.8, [0.8]), (0.9, [0.9]), (0.9, [0.9])]


# ---- samplers -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "tpe", "random", "qmc", "gp", "grid"])
def test_every_multi_objective_sampler_runs_a_two_objective_study(sampler: str) -> None:
    """Each sampler the spec accepts for several objectives proposes parameters past its
    start-up phase (NSGA-II/III: past the first generation)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    extra = {"population_size": 4} if sampler.startswith("nsga") else {}
    if sampler in ("tpe", "gp"):
        extra = {"n_startup_trials": 3}
    data = multi_spec("s", sampler={"name": sampler, "seed": 3, **extra})
    data["space"]["lr"] = {"type": "float", "low": 1e-3, "high": 1e-1, "step": 1e-3}
    spec = StudySpec.model_validate(data)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    for claim in range(10):
        trial = optuna.load_study(
            study_name=study.study_name, storage=storage, sampler=build_sampler(spec, claim)
        ).ask()
        params = suggest_params(trial, spec)
        study.tell(trial, [params["lr"], float(params["hidden_units"])])
    assert len(study.best_trials) >= 1


# ---- the worker's measured objectives -----------------------------------------------------


def test_n_params_counts_trainable_elements_only() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    assert n_params(model) == 64 * 16 + 16 + 16 * 10 + 10
    for p in model[0].parameters():
        p.requires_grad_(False)  # `init_from` with `freeze`
    assert n_params(model) == 16 * 10 + 10


def test_inference_ms_times_a_full_batch_and_restores_the_mode() -> None:
    seen: list[int] = []
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    model.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    model.train()
    ms = inference_ms(model, torch.randn(5, 4), batch_size=12, warmup=2, passes=3)
    assert ms > 0
    assert seen == [12] * 5  # rows repeated up to the batch size; 2 warm-up + 3 timed
    assert model.training
    with pytest.raises(ValueError, match="at least one validation row"):
        inference_ms(model, torch.empty(0, 4), batch_size=4)
