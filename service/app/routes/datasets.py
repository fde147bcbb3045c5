"""/api/datasets"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from service.app.auth import PrincipalDep, owner_id
from service.app.deps import SessionDep, SettingsDep
from service.app.http_policies import limit_submissions
from service.app.ownership import DatasetNameDep
from service.datasets import service as dataset_service
from service.datasets.service import DatasetInfo
from service.studies.service import running_studies_using

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=201,
    response_model=DatasetInfo,
    dependencies=[Depends(limit_submissions)],
)
def upload_dataset(
    settings: SettingsDep,
    session: SessionDep,
    principal: PrincipalDep,
    name: Annotated[str, Form(description="the name a study spec uses in dataset.name")],
    file: Annotated[UploadFile, File(description=".npz (X, y), .csv or .parquet")],
    target: Annotated[str | None, Form(description="label column of a CSV or Parquet")] = None,
) -> DatasetInfo:
    """Validate, then store an uploaded dataset. 422 names the field and the reason and
    stores nothing; 409 if the name is taken."""
    return dataset_service.upload_dataset(
        session,
        name,
        file.filename or "",
        file.file.read(),
        target or None,
        dataset_service.limits_of(settings),
        owner_id(principal),
    )


@router.get("", response_model=list[DatasetInfo])
def list_datasets(session: SessionDep) -> list[DatasetInfo]:
    return dataset_service.list_datasets(session)


@router.get("/{name}", response_model=DatasetInfo)
def get_dataset(name: DatasetNameDep, session: SessionDep) -> DatasetInfo:
    return dataset_service.get_dataset(session, name)


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_dataset(name: DatasetNameDep, session: SessionDep) -> Response:
    """Delete a dataset (its owner or an admin); 409 while a running study uses it."""
    dataset_service.delete_dataset(session, name, running_studies_using(session, name))
    return Response(status_code=204)
