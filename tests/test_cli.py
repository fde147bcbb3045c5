"""`python -m service.cli.main` (what the end-to-end tests run when no `hpo` script is
installed) reports a failed command like the `hpo` script does: `error: ...` on stderr and
exit 1, from every command group. Before cli/client.py, the groups raised the error class of
a second copy of `service.cli.main` (imported under its own name beside `__main__`), which
main() did not catch: a traceback instead of the message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

UNREACHABLE = "http://127.0.0.1:1"  # nothing listens on port 1


def hpo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["status", "demo"],  # cli/studies
        ["report", "demo"],  # cli/diagnosis
        ["trial", "1", "--diagnosis"],  # cli/trials -> cli/diagnosis
        ["workers"],  # cli/workers
        ["dataset", "list"],  # cli/access
    ],
)
def test_an_unreachable_service_is_one_line_and_exit_1(command: list[str]) -> None:
    out = hpo(*command, "--url", UNREACHABLE)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot reach the service at {UNREACHABLE}: ")
    assert out.stderr.count("\n") == 1, out.stderr


def test_an_unreadable_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    out = hpo("dataset", "upload", str(missing), "--name", "x", "--url", UNREACHABLE)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot read {missing}: ")
    out = hpo("submit", str(tmp_path / "missing.yaml"), "--url", UNREACHABLE)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot read {tmp_path / 'missing.yaml'}: ")
