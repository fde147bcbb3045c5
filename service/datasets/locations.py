"""Where dataset files may be read and written: the operator's data roots.

An image dataset is read from a folder on the worker: the spec's `dataset.path`, else
`<data_dir>/<name>`; a dataset file of the user's (`dataset.path` with a name that is not
built in: an uncompressed .npz, or a folder of x.npy and y.npy) from that path. Either is
accepted only when, resolved (symlinks and `..`
followed, a relative path taken under the data directory), it lies inside an allowed root:
the data directory itself and every folder of `HPO_DATA_ROOTS`. The service checks a spec at
submission against its own settings, and every worker checks it again against its own just
before it opens a file, so a spec changed behind the API's back cannot aim a worker
elsewhere either. `download: true` writes only inside that folder, and only where the
operator allows downloads (`HPO_ALLOW_DOWNLOADS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import InvalidInput
from service.core.settings import Settings
from service.datasets.spec import DatasetSpec
from trainer.images import IMAGE_DATASETS

HOW_TO_ADD_ROOTS = (
    "add its folder to HPO_DATA_ROOTS (a JSON list, or paths separated by "
    f"{os.pathsep!r}) on the service and on the workers"
)


class DataPlaceRefused(InvalidInput):
    """A dataset folder outside the data roots, or a download where downloads are off (422
    naming `dataset.path` or `dataset.download`)."""

    def __init__(self, field: str, reason: str, value: object) -> None:
        super().__init__(reason, field=field, value=value)

    def __str__(self) -> str:  # what a failed trial records: the field and the reason
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True)
class DataPlaces:
    """The folders this process may read dataset files from (and download into).

    `data_dir`: the data directory (always a root); `roots`: the operator's further roots;
    `allow_downloads`: whether `dataset.download` may fetch files into a root.
    """

    data_dir: Path
    roots: tuple[Path, ...] = ()
    allow_downloads: bool = True

    @classmethod
    def of(cls, settings: Settings) -> DataPlaces:
        return cls(settings.data_dir, tuple(settings.data_roots), settings.allow_downloads)

    def allowed_roots(self) -> list[Path]:
        """The roots, resolved (as the folders checked against them are), without repeats."""
        resolved = [self.data_dir.resolve(), *(r.expanduser().resolve() for r in self.roots)]
        return list(dict.fromkeys(resolved))

    def folder(self, ds: DatasetSpec) -> Path | None:
        """The resolved folder an image dataset is read from (None for other datasets).

        Raises `DataPlaceRefused` (422 at `dataset.path`) if it lies outside every root, or
        (at `dataset.download`) if it asks for a download and downloads are off.
        """
        if ds.name not in IMAGE_DATASETS:
            return None
        folder = self._inside(ds.path, ds.name)
        if ds.download and not self.allow_downloads:
            raise DataPlaceRefused(
                "dataset.download",
                "downloads are off on this service (HPO_ALLOW_DOWNLOADS=false); put the files "
                f"in {folder} instead",
                True,
            )
        return folder

    def file(self, ds: DatasetSpec) -> Path | None:
        """The resolved path of a dataset file on the workers (`ds.is_file`; None for other
        datasets): an .npz file or a folder of .npy files. Raises `DataPlaceRefused` (422 at
        `dataset.path`) if it lies outside every root. Nothing is opened."""
        if not ds.is_file or ds.path is None:
            return None
        return self._inside(ds.path, ds.name)

    def _inside(self, path: str | None, name: str) -> Path:
        """`path` (else `<data_dir>/<name>`; relative: under the data directory) resolved,
        if inside a root; raises `DataPlaceRefused` at `dataset.path` otherwise."""
        data_dir = self.data_dir.resolve()
        try:
            # resolve() follows every symlink of the part that exists and folds `..`, so the
            # check sees the folder the files would really come from.
            given = data_dir / Path(path).expanduser() if path else data_dir / name
            resolved = given.resolve()
        except (OSError, RuntimeError, ValueError) as e:  # NUL byte, symlink loop, no home
            raise DataPlaceRefused("dataset.path", f"not a usable path: {e}", path) from e
        if not self.allows(resolved):
            shown = [str(r) for r in self.allowed_roots()]
            raise DataPlaceRefused(
                "dataset.path",
                f"{path!r} is outside this service's data roots {shown} (symlinks and '..' "
                f"resolved); put the files under one of them, or {HOW_TO_ADD_ROOTS}",
                path,
            )
        return resolved

    def allows(self, resolved: Path) -> bool:
        """Whether a resolved path lies inside one of the roots."""
        return any(resolved.is_relative_to(root) for root in self.allowed_roots())

    def check_opened(self, fd: int, path: Path) -> None:
        """Vet a file opened for reading before a byte of it is read: on Linux, the file the
        descriptor really refers to (`/proc/self/fd`) must lie inside a root, so a path
        swapped for a symlink between the check and the open reads nothing. Raises
        `DataPlaceRefused` at `dataset.path`."""
        link = Path(f"/proc/self/fd/{fd}")
        if not link.exists():
            return  # no procfs: the resolved path, opened without following a last symlink
        real = Path(os.readlink(link))
        if not self.allows(real):
            raise DataPlaceRefused(
                "dataset.path",
                f"{path} turned out to be {real}, outside this service's data roots",
                str(path),
            )
