"""A data-size learning curve trains the study's own model family (issue 11's bug: a `cnn`
study's learning curve used to train an MLP), through the real job path: a worker finishes
the study's trial, `create_job` queues the curve, and the worker runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from service.analysis.learning_curves import create_job, latest_job
from service.core.db.engine import session_scope
from service.core.settings import Settings
from service.studies.service import create_study
from service.studies.spec import StudySpec
from service.worker.process import WorkerProcess
from tests.conftest import backends, unique
from tests.private_db import module_database


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database: its workers run only this module's study and job."""
    yield from module_database(request, tmp_path_factory)


def modules_run(settings: Settings) -> set[type[nn.Module]]:
    """The module types whose forward ran while a worker emptied the queue."""
    seen: set[type[nn.Module]] = set()

    def hook(module: nn.Module, _args: object, _out: object) -> None:
        seen.add(type(module))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        WorkerProcess(settings).run(until_idle=True, install_signals=False)
    finally:
        handle.remove()
    return seen


def test_a_cnn_studys_learning_curve_trains_a_cnn(settings: Settings) -> None:
    url = settings.database_url
    spec = StudySpec.model_validate(
        {
            "name": unique("lc-cnn"),
            "dataset": {"name": "digits", "shape": "image"},
            "model": {"family": "cnn"},
            "objective": {"metric": "val_accuracy", "max_epochs": 1},
            "fixed": {"conv_blocks": 1, "conv_channels": 4, "hidden_layers": 0},
            "sampler": {"name": "random", "seed": 1},
            "pruner": {"name": "none"},
            "budget": {"n_trials": 1},
        }
    )
    with session_scope(url) as session:
        study_id = create_study(session, spec).id
    assert nn.Conv2d in modules_run(settings)  # the trial itself

    with session_scope(url) as session:
        create_job(session, study_id, [0.5, 1.0])
    ran = modules_run(settings)  # only the learning-curve job is left to run

    with session_scope(url) as session:
        job = latest_job(session, study_id)
    assert job.state == "complete", job
    assert [p["fraction"] for p in job.points] == [0.5, 1.0]
    assert nn.Conv2d in ran, sorted(t.__name__ for t in ran)
