"""/api/datasets"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Response, UploadFile
from fastapi.exceptions import RequestValidationError

from service.app.auth import PrincipalDep, owner_id, require_owner
from service.app.deps import SettingsDep
from service.app.http_policies import limit_submissions
from service.core.errors import DatasetExists, DatasetInUse, DatasetNotFound
from service.core.settings import Settings
from service.datasets import service as dataset_service
from service.datasets.files import DatasetFileError, DatasetLimits, parse_dataset
from service.datasets.service import DatasetInfo

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _invalid(field: str, reason: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": reason, "input": None}]
    )


def limits_of(settings: Settings) -> DatasetLimits:
    return DatasetLimits(
        max_rows=settings.max_dataset_rows,
        max_features=settings.max_dataset_features,
        max_classes=settings.max_dataset_classes,
        max_bytes=settings.max_dataset_bytes,
    )


@router.post(
    "",
    status_code=201,
    response_model=DatasetInfo,
    dependencies=[Depends(limit_submissions)],
)
def upload_dataset(
    settings: SettingsDep,
    principal: PrincipalDep,
    name: Annotated[str, Form(description="the name a study spec uses in dataset.name")],
    file: Annotated[UploadFile, File(description=".npz (X, y), .csv or .parquet")],
    target: Annotated[str | None, Form(description="label column of a CSV or Parquet")] = None,
) -> DatasetInfo:
    """Validate, then store an uploaded dataset. 422 names the field and the reason and
    stores nothing; 409 if the name is taken."""
    if (error := dataset_service.name_error(name)) is not None:
        raise _invalid("name", error)
    data = file.file.read()
    try:
        parsed = parse_dataset(file.filename or "", data, target or None, limits_of(settings))
    except DatasetFileError as e:
        raise _invalid(e.field, e.reason) from e
    except Exception as e:  # a parser's unforeseen complaint is the file's fault, not ours
        raise _invalid("file", f"cannot read the file: {type(e).__name__}: {e}") from e
    try:
        return dataset_service.create_dataset(
            settings.database_url, name, parsed, owner_id(principal)
        )
    except DatasetExists as e:
        raise HTTPException(409, str(e)) from e


@router.get("", response_model=list[DatasetInfo])
def list_datasets(settings: SettingsDep) -> list[DatasetInfo]:
    return dataset_service.list_datasets(settings.database_url)


@router.get("/{name}", response_model=DatasetInfo)
def get_dataset(name: str, settings: SettingsDep) -> DatasetInfo:
    try:
        return dataset_service.get_dataset(settings.database_url, name)
    except DatasetNotFound as e:
        raise HTTPException(404, str(e)) from e


@router.delete("/{name}", status_code=204, response_class=Response)
def delete_dataset(name: str, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Delete a dataset; 409 while a running study uses it."""
    try:
        row = dataset_service.get_row(settings.database_url, name)
        require_owner(principal, row.owner_token_id, f"dataset {name!r}")
        dataset_service.delete_dataset(settings.database_url, name)
    except DatasetNotFound as e:
        raise HTTPException(404, str(e)) from e
    except DatasetInUse as e:
        raise HTTPException(409, str(e)) from e
    return Response(status_code=204)
