"""Checks of a study submission beyond its schema: the service's caps, the dataset it names,
and how many studies its owner already runs.

Each refusal is a core error: `InvalidInput` naming the field (a 422 in FastAPI's validation
shape), or `TooManyRequests` for the owner's quota.
"""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.access.tokens import Principal
from service.core.db.models import Study
from service.core.errors import InvalidInput, TooManyRequests
from service.core.settings import Settings
from service.core.states import StudyState
from service.datasets import service as dataset_service
from service.datasets.locations import DataPlaces
from service.datasets.splits import check_split
from service.datasets.tasks import dataset_task
from service.studies.objectives import DEFAULT_METRIC, natural_direction, task_problem
from service.studies.search.space import grid_values
from service.studies.spec import StudySpec
from trainer.data import DATASET_NAMES


def refuse(problems: list[InvalidInput]) -> None:
    """Raise the problems, if any, as one `InvalidInput` (each answered in the 422)."""
    if problems:
        raise InvalidInput(problems[0].reason, field=problems[0].field, also=problems[1:])


def check_caps(spec: StudySpec, settings: Settings) -> None:
    """The service's own limits on trials and epochs; raises `InvalidInput`."""
    caps = (
        ("budget.n_trials", spec.budget.n_trials, settings.max_trials, "HPO_MAX_TRIALS"),
        ("objective.max_epochs", spec.objective.max_epochs, settings.max_epochs, "HPO_MAX_EPOCHS"),
    )
    refuse(
        [
            InvalidInput(
                f"{field.rsplit('.', 1)[-1]} must be <= {cap} on this service ({env}), got {value}",
                field=field,
                kind="less_than_equal",
                value=value,
            )
            for field, value, cap, env in caps
            if value > cap
        ]
    )


def check_grid_budget(spec: StudySpec) -> None:
    """A grid study runs each point at most once, so its budget is at most the grid's size;
    raises `InvalidInput` at `budget.n_trials`."""
    if spec.sampler.name != "grid":
        return
    points = math.prod(len(values) for values in grid_values(spec).values())
    if spec.budget.n_trials > points:
        raise InvalidInput(
            f"the grid has {points} points and runs each once, so n_trials must be <= "
            f"{points}, got {spec.budget.n_trials}",
            field="budget.n_trials",
            kind="less_than_equal",
            value=spec.budget.n_trials,
        )


def check_dataset(session: Session, spec: StudySpec) -> None:
    """The dataset is built in or uploaded, an image dataset has images, and the fractions
    split its rows into splits that can train and evaluate; raises `InvalidInput`."""
    name = spec.dataset.name
    if name in DATASET_NAMES:
        check_split(session, spec.dataset)
        return
    if not dataset_service.exists(session, name):
        raise InvalidInput(
            f"unknown dataset {name!r}; built-in: {list(DATASET_NAMES)}, "
            "uploaded: see GET /api/datasets",
            field="dataset.name",
            value=name,
        )
    if spec.dataset.shape == "image":
        shape = dataset_service.get_row(session, name).shape
        if len(shape) != 4:
            raise InvalidInput(
                f"image needs X of n x C x H x W; dataset {name!r} is {shape}",
                field="dataset.shape",
                value="image",
            )
    check_split(session, spec.dataset)


def check_objective_task(session: Session, spec: StudySpec) -> None:
    """The objective's metric exists for the dataset's task (an upload's task is known only
    here); raises `InvalidInput` at `objective.metric` or `dataset.task`. The task is
    written into the spec (`dataset.task`), and a spec that named no metric gets the task's
    default, so workers, diagnosis and readers need not ask again."""
    task = dataset_task(session, spec.dataset)
    spec.dataset.task = task
    if "metric" not in spec.objective.model_fields_set and task == "regression":
        spec.objective.metric = DEFAULT_METRIC[task]
        spec.objective.direction = natural_direction(spec.objective.metric)
    metric = spec.objective.metric
    if (why := task_problem(metric, task, spec.dataset.name)) is not None:
        raise InvalidInput(why, field="objective.metric", value=metric)


def check_quota(session: Session, settings: Settings, principal: Principal | None) -> None:
    """A non-admin token runs at most `max_running_studies_per_owner` studies at once;
    raises `TooManyRequests`."""
    if principal is None or principal.role == "admin":
        return
    running = session.scalar(
        select(func.count())
        .select_from(Study)
        .where(Study.owner_token_id == principal.token_id, Study.status == StudyState.RUNNING)
    )
    cap = settings.max_running_studies_per_owner
    if running is not None and running >= cap:
        raise TooManyRequests(
            f"token {principal.name!r} already runs {running} studies, the most allowed "
            f"(HPO_MAX_RUNNING_STUDIES_PER_OWNER={cap}); stop one or wait for one to finish"
        )


def check_submission(
    session: Session, spec: StudySpec, settings: Settings, principal: Principal | None
) -> None:
    """Every check of a submission that the studies package can make, in the order a
    client fixes them; `trials.service.check_init_from` checks the trial it starts from."""
    check_caps(spec, settings)
    check_grid_budget(spec)
    check_dataset(session, spec)
    check_objective_task(session, spec)
    DataPlaces.of(settings).folder(spec.dataset)  # dataset.path inside a data root
    check_quota(session, settings, principal)
