"""Issue 17 §5: `dataset.path` and `download` stay inside the operator's data roots, resolved
(symlinks, `..`) before the check: at submission (422) and again on the worker, before it
opens or creates anything."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.models import Study
from service.core.settings import Settings
from service.datasets.locations import DataPlaceRefused, DataPlaces
from service.datasets.spec import DatasetSpec
from service.worker.process import WorkerProcess
from tests.conftest import backends, tiny_spec, unique
from tests.private_db import module_database
from tests.test_trainer_images import _mirror, write_mnist


@pytest.fixture(scope="module", params=backends())
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """This module's own database: its workers take no other module's studies."""
    yield from module_database(request, tmp_path_factory)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """data/ (the data dir), root/ (an extra root), outside/, and symlinks both ways:
    root/link-out -> outside (leaves the roots), alias -> root (enters them)."""
    paths = {name: tmp_path / name for name in ("data", "root", "outside")}
    for p in paths.values():
        p.mkdir()
    (paths["root"] / "link-out").symlink_to(paths["outside"], target_is_directory=True)
    (tmp_path / "alias").symlink_to(paths["root"], target_is_directory=True)
    paths["alias"] = tmp_path / "alias"
    return paths


@pytest.fixture
def settings(database_url: str, tree: dict[str, Path]) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tree["data"],
        data_roots=[tree["root"]],
        max_trials=50,
        worker_poll_seconds=0.05,
        heartbeat_seconds=0.5,
        torch_threads=1,
    )


def outside_cases(tree: dict[str, Path]) -> dict[str, dict[str, Any]]:
    root, outside = tree["root"], tree["outside"]
    return {
        "absolute": {"path": "/etc"},
        "dot-dot out of a root": {"path": f"{root}/../outside"},
        "relative dot-dot out of the data dir": {"path": "../outside"},
        "symlink inside a root to outside": {"path": f"{root}/link-out"},
        "under a symlink out": {"path": f"{root}/link-out/mnist"},
        "a sibling sharing the root's prefix": {"path": f"{root}2/mnist"},
        "download into a new folder anywhere": {"path": f"{outside}/x/deep", "download": True},
        "NUL byte": {"path": f"{root}/a\x00b"},
    }


def inside_cases(tree: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {
        "default folder": {},
        "under a root": {"path": f"{tree['root']}/mnist"},
        "a root itself": {"path": str(tree["root"])},
        "dot-dot that stays inside": {"path": f"{tree['root']}/x/../mnist"},
        "through a symlink into a root": {"path": f"{tree['alias']}/mnist"},
        "relative: under the data dir": {"path": "mnist-v2"},
        "download under a root": {"path": f"{tree['root']}/new/mnist", "download": True},
    }


def test_folders_outside_the_roots_are_refused_and_inside_resolved(
    tree: dict[str, Path],
) -> None:
    places = DataPlaces(tree["data"], (tree["root"],))
    for case, fields in outside_cases(tree).items():
        with pytest.raises(DataPlaceRefused) as refused:
            # Unvalidated, as a worker may meet a tampered row: the spec itself already
            # refuses a NUL byte (a control character), this check must too.
            places.folder(DatasetSpec.model_construct(name="mnist", **fields))
        assert refused.value.field == "dataset.path", case
        assert "HPO_DATA_ROOTS" in str(refused.value) or "NUL" in case, case
    roots = [tree["data"].resolve(), tree["root"].resolve()]
    for case, fields in inside_cases(tree).items():
        folder = places.folder(DatasetSpec(name="mnist", **fields))
        assert folder is not None and any(folder.is_relative_to(r) for r in roots), case
        assert ".." not in folder.parts and folder == folder.resolve(), case
    assert places.folder(DatasetSpec(name="mnist", path=f"{tree['alias']}/m")) == (
        tree["root"].resolve() / "m"
    )
    assert places.folder(DatasetSpec(name="digits")) is None  # no files to read


def test_without_roots_only_the_data_dir_is_a_root_and_downloads_can_be_turned_off(
    tree: dict[str, Path],
) -> None:
    bare = DataPlaces(tree["data"])
    with pytest.raises(DataPlaceRefused, match="add its folder to HPO_DATA_ROOTS"):
        bare.folder(DatasetSpec(name="mnist", path=f"{tree['root']}/mnist"))
    assert bare.folder(DatasetSpec(name="mnist")) == tree["data"].resolve() / "mnist"
    off = DataPlaces(tree["data"], allow_downloads=False)
    with pytest.raises(DataPlaceRefused, match="HPO_ALLOW_DOWNLOADS") as refused:
        off.folder(DatasetSpec(name="mnist", download=True))
    assert refused.value.field == "dataset.download"
    assert off.folder(DatasetSpec(name="mnist")) is not None  # reading stays allowed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["/a", "/b c"]', ["/a", "/b c"]),
        (f"/a{os.pathsep}/b c{os.pathsep}", ["/a", "/b c"]),
        ("", []),
    ],
    ids=["json list", "pathsep", "empty"],
)
def test_data_roots_setting_reads_a_json_list_or_pathsep_separated_paths(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("HPO_DATA_ROOTS", value)
    monkeypatch.setenv("HPO_ALLOW_DOWNLOADS", "false")
    settings = Settings()
    assert settings.data_roots == [Path(p) for p in expected]
    assert settings.allow_downloads is False


def study_count(url: str, name: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(Study).where(Study.name == name))


def test_submit_refuses_folders_outside_the_roots_and_stores_nothing(
    client: httpx.Client, settings: Settings, tree: dict[str, Path]
) -> None:
    for case, fields in outside_cases(tree).items():
        name = unique("outside")
        spec = tiny_spec(name, dataset={"name": "mnist", **fields})
        response = client.post("/api/studies", json=spec)
        assert response.status_code == 422, (case, response.text)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body", "dataset", "path"], (case, detail)
        if case != "NUL byte":
            assert "HPO_DATA_ROOTS" in detail[0]["msg"], (case, detail)
        assert study_count(settings.database_url, name) == 0, case
    assert not (tree["outside"] / "x").exists()
    for case, fields in inside_cases(tree).items():
        spec = tiny_spec(unique("inside"), dataset={"name": "mnist", **fields})
        response = client.post("/api/studies", json=spec)
        assert response.status_code == 201, (case, response.text)
        client.post(f"/api/studies/{response.json()['id']}/stop")  # no worker should take it


def submit_and_tamper(client: httpx.Client, url: str, dataset: dict[str, Any]) -> int:
    """A study submitted with a folder the API accepts, whose stored spec then names
    `dataset` (as a database user could write it), bypassing the API's check."""
    spec = tiny_spec(unique("tampered"), n_trials=1, dataset={"name": "mnist"})
    spec["budget"]["max_failed_trials"] = 0
    spec["objective"]["max_epochs"] = 1
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    study_id: int = created.json()["id"]
    with session_scope(url) as session:
        row = session.get(Study, study_id)
        assert row is not None
        row.spec = {**row.spec, "dataset": dataset}
    return study_id


def test_worker_refuses_a_tampered_folder_before_creating_anything(
    client: httpx.Client,
    settings: Settings,
    tree: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HPO_DATASET_MIRROR", (tree["outside"] / "no-mirror").as_uri())
    deep = tree["outside"] / "x" / "deep"
    study_id = submit_and_tamper(
        client,
        settings.database_url,
        {"name": "mnist", "path": str(deep), "download": True, "shape": "flat"},
    )

    WorkerProcess(settings).run(until_idle=True, install_signals=False)

    study = client.get(f"/api/studies/{study_id}").json()
    assert study["status"] == "failed", study
    trials = client.get(f"/api/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["fail"]
    assert "dataset.path" in trials[0]["error"], trials[0]
    assert "outside this service's data roots" in trials[0]["error"], trials[0]
    assert not (tree["outside"] / "x").exists()  # nothing created, let alone downloaded


def test_worker_with_downloads_off_refuses_them_and_downloads_only_into_the_folder(
    client: httpx.Client,
    settings: Settings,
    tree: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror = tmp_path / "mirror"
    write_mnist(mirror, gz=True, n_train=60, n_test=40)
    _mirror(tmp_path, monkeypatch, "mnist", sorted(mirror.iterdir()))
    target = tree["root"] / "new" / "mnist"
    dataset = {"name": "mnist", "path": str(target), "download": True, "shape": "flat"}

    off = settings.model_copy(update={"allow_downloads": False})
    refused = submit_and_tamper(client, settings.database_url, dataset)
    WorkerProcess(off).run(until_idle=True, install_signals=False)
    trials = client.get(f"/api/studies/{refused}/trials").json()["items"]
    assert "HPO_ALLOW_DOWNLOADS" in trials[0]["error"], trials
    assert not (tree["root"] / "new").exists()

    allowed = submit_and_tamper(client, settings.database_url, dataset)
    WorkerProcess(settings).run(until_idle=True, install_signals=False)
    study = client.get(f"/api/studies/{allowed}").json()
    assert study["status"] == "completed", study
    files = sorted(p.relative_to(tree["root"]) for p in tree["root"].rglob("*") if p.is_file())
    assert files == [Path("new/mnist") / f.name for f in sorted(mirror.iterdir())]
