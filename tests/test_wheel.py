"""The package as a user installs it: a wheel built from the sources, installed (not editable)
into a fresh virtualenv, migrates a new database from an unrelated directory and serves.

The virtualenv gets the same torch release as this one (the CPU build on disk; any other
requirement could make pip download a multi-GB CUDA build), pinned in the same pip command as
the wheel, and the other dependencies from the index pip is configured with (here: local
files). No `--system-site-packages`: nothing of this checkout or of the test environment can
be imported there. Most of its time is pip unpacking torch and the dependencies (about 25 s of
CPU; longer on a busy machine).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "service", "trainer")

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """A wheel of a copy of the sources (pip builds in the source tree: not in this checkout)."""
    src = tmp / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    # setuptools of this environment when it has one; else pip fetches it from its index.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        *isolation,
        src,
        "-w",
        tmp / "dist",
        cwd=tmp,
        env=env,
    )
    (wheel,) = (tmp / "dist").glob("hpo_service-*.whl")
    return wheel


@pytest.mark.timeout(600)  # pip unpacking torch on a loaded 2-core machine: minutes
def test_a_wheel_installs_migrates_and_serves(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("HPO_")}
    wheel = build_wheel(tmp_path, env)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, env=env)
    python, hpo = venv / "bin" / "python", venv / "bin" / "hpo"
    torch = f"torch=={version('torch').split('+')[0]}"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-compile",
        torch,
        wheel,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )

    elsewhere = tmp_path / "elsewhere"  # no pyproject.toml, alembic.ini or sources here
    elsewhere.mkdir()
    where = run(
        python,
        "-c",
        "import service, trainer; print(service.__file__, trainer.__file__)",
        cwd=elsewhere,
        env=env,
    )
    for file in where.split():
        installed = Path(file).parent
        assert installed.is_relative_to(venv / "lib"), where  # the wheel's copy, not an editable
        assert (installed / "py.typed").is_file()

    url = f"sqlite:///{tmp_path / 'db' / 'hpo.db'}"
    run(hpo, "db", "upgrade", "--database-url", url, cwd=elsewhere, env=env)

    # Served with auth on and the admin token of a file, as the compose stack serves.
    token = "hpo_" + secrets.token_urlsafe(32)
    token_file = tmp_path / "admin_token"
    token_file.write_text(token + "\n")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                hpo,
                "serve",
                "--workers",
                "0",
                "--no-migrate",
                "--auth",
                "required",
                "--port",
                str(port),
                "--database-url",
                url,
            ],
            cwd=elsewhere,
            env={**env, "HPO_BOOTSTRAP_TOKEN_FILE": str(token_file)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                health = httpx.get(f"{base}/api/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert health.status_code == 200, health.text
        assert health.json()["database"] == "ok"
        assert httpx.get(f"{base}/api/studies").status_code == 401
        authed = httpx.get(f"{base}/api/studies", headers={"Authorization": f"Bearer {token}"})
        assert authed.status_code == 200, authed.text
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert token not in log.read_text()
