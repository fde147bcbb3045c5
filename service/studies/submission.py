"""Checks of a study submission that need the database: the dataset it names, and how many
studies its owner already runs."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from service.access.tokens import Principal
from service.core.db.engine import session_scope
from service.core.db.models import Study
from service.core.settings import Settings
from service.datasets import service as dataset_service
from service.studies.spec import StudySpec
from trainer.data import DATASET_NAMES


def check_submission(spec: StudySpec, settings: Settings, principal: Principal | None) -> None:
    name = spec.dataset.name
    if name not in DATASET_NAMES and not dataset_service.exists(settings.database_url, name):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "dataset", "name"),
                    "msg": f"unknown dataset {name!r}; built-in: {list(DATASET_NAMES)}, "
                    "uploaded: see GET /api/datasets",
                    "input": name,
                }
            ]
        )
    if name not in DATASET_NAMES and spec.dataset.shape == "image":
        shape = dataset_service.get_row(settings.database_url, name).shape
        if len(shape) != 4:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "dataset", "shape"),
                        "msg": f"image needs X of n x C x H x W; dataset {name!r} is {shape}",
                        "input": "image",
                    }
                ]
            )
    if principal is None or principal.role == "admin":
        return
    with session_scope(settings.database_url) as session:
        running = session.scalar(
            select(func.count())
            .select_from(Study)
            .where(Study.owner_token_id == principal.token_id, Study.status == "running")
        )
    cap = settings.max_running_studies_per_owner
    if running is not None and running >= cap:
        raise HTTPException(
            429,
            f"token {principal.name!r} already runs {running} studies, the most allowed "
            f"(HPO_MAX_RUNNING_STUDIES_PER_OWNER={cap}); stop one or wait for one to finish",
        )
