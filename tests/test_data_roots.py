"""Issue 17 §5: `dataset.path` and `download` stay inside the operator's data roots, resolved
(symlinks, `..`) before the check: at submission (422) and again on the worker, before it
opens or creates anything."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from service.core.db.engine import session_scope
from service.core.db.models import DatasetBlob, Study
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


# ---- dataset files of the user's (trainer.mapped): same roots, nothing outside opened -------

OPENED: list[str] = []
_RECORDING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # every open() and os.open() of this process, while recording


def npz_file(path: Path, n: int = 120, compressed: bool = False) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = (rng.standard_normal((n, 4)) + 3 * y[:, None]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    return path


def file_cases(tree: dict[str, Path]) -> tuple[dict[str, str], dict[str, str]]:
    """(outside, inside) paths of a dataset file; outside/d.npz exists, and root/evil.npz
    is a symlink to it."""
    root, outside = tree["root"], tree["outside"]
    npz_file(outside / "d.npz")
    npz_file(root / "d.npz")
    (root / "evil.npz").symlink_to(outside / "d.npz")
    out = {
        "absolute outside": f"{outside}/d.npz",
        "dot-dot out of a root": f"{root}/../outside/d.npz",
        "relative dot-dot out of the data dir": "../outside/d.npz",
        "symlinked file inside a root": f"{root}/evil.npz",
        "under a symlinked folder": f"{root}/link-out/d.npz",
        "a sibling sharing the root's prefix": f"{root}2/d.npz",
    }
    inside = {
        "under a root": f"{root}/d.npz",
        "dot-dot that stays inside": f"{root}/x/../d.npz",
        "through a symlink into a root": f"{tree['alias']}/d.npz",
        "not on the API host (checked by workers)": f"{root}/later/d.npz",
    }
    return out, inside


def test_dataset_files_outside_the_roots_are_refused_and_inside_resolved(
    tree: dict[str, Path],
) -> None:
    places = DataPlaces(tree["data"], (tree["root"],))
    outside, inside = file_cases(tree)
    for case, path in outside.items():
        with pytest.raises(DataPlaceRefused, match="HPO_DATA_ROOTS") as refused:
            places.file(DatasetSpec(name="mine", path=path))
        assert refused.value.field == "dataset.path", case
    for case, path in inside.items():
        resolved = places.file(DatasetSpec(name="mine", path=path))
        assert resolved is not None and resolved.is_relative_to(tree["root"].resolve()), case
        assert resolved == resolved.resolve(), case
    assert places.file(DatasetSpec(name="mnist", path=inside["under a root"])) is None
    with pytest.raises(ValueError, match="built in"):
        DatasetSpec(name="moons", path=inside["under a root"])


def test_submit_refuses_dataset_files_outside_the_roots_or_unmappable(
    client: httpx.Client, settings: Settings, tree: dict[str, Path]
) -> None:
    outside, inside = file_cases(tree)
    for case, path in outside.items():
        name = unique("file-out")
        response = client.post(
            "/api/studies", json=tiny_spec(name, dataset={"name": "mine", "path": path})
        )
        assert response.status_code == 422, (case, response.text)
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "dataset", "path"], (case, detail)
        assert "HPO_DATA_ROOTS" in detail["msg"], (case, detail)
        assert study_count(settings.database_url, name) == 0, case
    compressed = npz_file(tree["root"] / "c.npz", compressed=True)
    response = client.post(
        "/api/studies",
        json=tiny_spec(unique("file-c"), dataset={"name": "mine", "path": str(compressed)}),
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "dataset", "path"]
    assert "np.savez_compressed" in detail["msg"]
    for case, path in inside.items():
        spec = tiny_spec(unique("file-in"), dataset={"name": "mine", "path": path})
        response = client.post("/api/studies", json=spec)
        assert response.status_code == 201, (case, response.text)
        client.post(f"/api/studies/{response.json()['id']}/stop")


def test_worker_trains_from_a_file_under_a_root_and_opens_nothing_outside(
    client: httpx.Client, settings: Settings, tree: dict[str, Path]
) -> None:
    outside, inside = file_cases(tree)
    folder = tree["root"] / "folder"
    folder.mkdir()
    with np.load(tree["root"] / "d.npz") as arrays:  # the folder format: x.npy and y.npy
        np.save(folder / "x.npy", arrays["x"])
        np.save(folder / "y.npy", arrays["y"])
    good = {}
    for path in (inside["under a root"], str(folder)):
        spec = tiny_spec(unique("file"), n_trials=1, dataset={"name": "mine", "path": path})
        created = client.post("/api/studies", json=spec)
        assert created.status_code == 201, created.text
        good[path] = created.json()["id"]
    tampered = [
        submit_and_tamper(client, settings.database_url, {"name": "mine", "path": path})
        for path in (outside["symlinked file inside a root"], outside["dot-dot out of a root"])
    ]
    with session_scope(settings.database_url) as session:
        blobs_before = session.scalar(select(func.count()).select_from(DatasetBlob))

    OPENED.clear()
    _RECORDING.append(True)
    try:
        WorkerProcess(settings).run(until_idle=True, install_signals=False)
    finally:
        _RECORDING.clear()

    for path, study_id in good.items():
        study = client.get(f"/api/studies/{study_id}").json()
        assert study["status"] == "completed", (path, study)
        trial = client.get(f"/api/studies/{study_id}/trials").json()["items"][0]
        detail = client.get(f"/api/trials/{trial['trial_id']}").json()
        assert "grad_norm.0" in detail["curves"] and detail["test_accuracy"] > 0.8, path
    for study_id in tampered:
        trials = client.get(f"/api/studies/{study_id}/trials").json()["items"]
        assert [t["state"] for t in trials] == ["fail"]
        assert "dataset.path" in trials[0]["error"], trials[0]
        assert "outside this service's data roots" in trials[0]["error"], trials[0]
    real_outside = tree["outside"].resolve()
    opened = [Path(p).resolve() for p in OPENED]
    assert any(p.is_relative_to(tree["root"].resolve()) for p in opened)  # the hook works
    assert not [p for p in opened if p.is_relative_to(real_outside)]
    with session_scope(settings.database_url) as session:  # nothing copied into the database
        assert session.scalar(select(func.count()).select_from(DatasetBlob)) == blobs_before
