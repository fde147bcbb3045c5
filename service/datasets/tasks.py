"""A dataset's task (classification or regression): stated in the spec (`dataset.task`),
a built-in's own, or what an upload was inferred to be (`trainer.data.infer_task`: a float
target with a non-integer value or more than 20 distinct values is regression)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.db.models import Dataset
from service.core.errors import InvalidInput
from service.datasets.spec import DatasetSpec
from trainer.data import Task


def stored_task(session: Session, name: str) -> Task | None:
    """The task an uploaded dataset was inferred to be; None if no such upload exists."""
    task = session.scalar(select(Dataset.task).where(Dataset.name == name))
    return None if task is None else ("regression" if task == "regression" else "classification")


def dataset_task(session: Session, ds: DatasetSpec) -> Task:
    """The task a study of `ds` trains for. Raises `InvalidInput` at `dataset.task` when the
    spec asks classification of an upload holding continuous targets (a regression upload
    has no classes), or regression of one whose labels are not numbers."""
    stored = stored_task(session, ds.name)
    if stored is None:  # built in (an unknown name is refused by the submission's checks)
        return ds.builtin_task or "classification"
    if ds.task is None or ds.task == stored:
        return stored
    if ds.task == "classification":
        raise InvalidInput(
            f"dataset {ds.name!r} holds continuous targets (uploaded as regression); "
            "it cannot be classification",
            field="dataset.task",
            value=ds.task,
        )
    classes = session.scalar(select(Dataset.classes).where(Dataset.name == ds.name)) or []
    if not all(_is_number(c) for c in classes):
        raise InvalidInput(
            f"regression needs numeric labels; dataset {ds.name!r} has labels such as "
            f"{[c for c in classes if not _is_number(c)][:3]}",
            field="dataset.task",
            value=ds.task,
        )
    return "regression"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
