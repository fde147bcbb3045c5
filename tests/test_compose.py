"""docker/compose.yaml starts a stack that works and keeps its secrets: PostgreSQL not
published, its password and the first admin token from files git and the image builds
ignore, the API with auth on, a migration step everyone waits for, non-root images with one
torch release, healthchecks. `docker compose config` validates the file where the compose
plugin exists; the properties are checked on the file itself everywhere (no Docker engine
is needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
README = (ROOT / "README.md").read_text()


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return found.returncode == 0


def env_files(service: dict[str, Any]) -> list[Path]:
    files = service.get("env_file", [])
    files = [files] if isinstance(files, str | dict) else files
    return [DOCKER / (f["path"] if isinstance(f, dict) else f) for f in files]


def dockerfile(service: dict[str, Any]) -> Path:
    build = service["build"]
    return DOCKER / build["context"] / build["dockerfile"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.skipif(not compose_plugin(), reason="no docker compose plugin on this machine")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    # The env file and the secret are the operator's: stand-ins, in a copy of docker/.
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns("db.env", "secrets"))
    (copy / "db.env").write_text("POSTGRES_PASSWORD=x\nPGPASSWORD=x\n")
    (copy / "secrets").mkdir()
    (copy / "secrets" / "admin_token").write_text("hpo_" + "a" * 43 + "\n")
    subprocess.run(
        ["docker", "compose", "-f", str(copy / "compose.yaml"), "config", "--quiet"], check=True
    )


def test_postgres_is_not_published_and_its_password_comes_from_an_env_file() -> None:
    db = SERVICES["db"]
    assert "ports" not in db
    assert "POSTGRES_PASSWORD" not in environment(db)
    assert env_files(db), "the password comes from an env file"
    for name, service in SERVICES.items():
        for file in env_files(service):
            assert file.parent == DOCKER, (name, file)
            assert git_ignores(file) and docker_ignores(file), (name, file)
        url = environment(service).get("HPO_DATABASE_URL")
        if url is not None:
            assert make_url(url).password is None, name  # libpq reads PGPASSWORD instead
            assert env_files(service), name


def test_the_api_serves_with_auth_on_and_a_bootstrap_token_from_a_secret() -> None:
    api = SERVICES["api"]
    env = environment(api)
    assert env["HPO_AUTH"] == "required"
    assert "--host" in api["command"] and "0.0.0.0" in api["command"]
    (secret,) = api["secrets"]
    assert env["HPO_BOOTSTRAP_TOKEN_FILE"] == f"/run/secrets/{secret}"
    file = DOCKER / COMPOSE["secrets"][secret]["file"]
    assert git_ignores(file) and docker_ignores(file)
    # Nobody else gets the token.
    assert [n for n, s in SERVICES.items() if s.get("secrets")] == ["api"]
    # The API is published on the host's loopback only.
    assert all(str(p).startswith("127.0.0.1:") for p in api.get("ports", []))


def test_migrations_run_once_before_the_api_and_the_workers() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["hpo", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        condition = SERVICES[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
        assert "--no-migrate" in SERVICES["api"]["command"]


def test_long_running_services_have_healthchecks() -> None:
    for name in ("db", "api", "worker"):
        service = SERVICES[name]
        assert service.get("healthcheck") or "HEALTHCHECK" in dockerfile(service).read_text()


def last_user(text: str) -> str | None:
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    return users[-1] if users else None


def test_images_run_as_an_unprivileged_user() -> None:
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        user = str(service.get("user") or last_user(dockerfile(service).read_text()))
        assert user.split(":")[0] not in {"None", "root", "0"}, name


def test_both_images_pin_torch_by_one_build_arg() -> None:
    args = {
        name: service["build"].get("args", {})
        for name, service in SERVICES.items()
        if "build" in service
    }
    assert {str(a.get("TORCH_VERSION")) for a in args.values()} == {"${TORCH_VERSION:-2.13.0}"}
    files = {dockerfile(s) for s in SERVICES.values() if "build" in s}
    assert len(files) == 2
    for file in files:
        text = file.read_text()
        assert re.search(r"^ARG TORCH_VERSION=\S+", text, flags=re.MULTILINE), file
        installs = re.findall(r"pip install [^\n]*torch[^\n]*", text)
        assert installs == ['pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"']
        # No base image with a torch of its own (the old worker image had another release).
        assert not any(b.startswith("pytorch/") for b in re.findall(r"^FROM\s+(\S+)", text, re.M))
    defaults = {
        m for f in files for m in re.findall(r"^ARG TORCH_VERSION=(\S+)", f.read_text(), re.M)
    }
    assert len(defaults) == 1, defaults


def test_the_build_context_leaves_out_environments_data_and_secrets() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "hpo-data", "docker/db.env", "docker/secrets"):
        assert entry in ignored, entry


def git_ignores(path: Path) -> bool:
    found = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], check=False)
    return found.returncode == 0


def docker_ignores(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    ignored = (ROOT / ".dockerignore").read_text().split()
    return any(relative == e or relative.startswith(e.rstrip("/") + "/") for e in ignored)


def test_the_readme_says_how_to_create_the_files_and_use_the_token() -> None:
    section = README.split("### Docker Compose", 1)[1].split("\n### ", 1)[0]
    assert "docker/db.env" in section and "PGPASSWORD" in section
    assert "docker/secrets/admin_token" in section
    assert "docker compose -f docker/compose.yaml up" in section
    assert "Authorization: Bearer $(cat docker/secrets/admin_token)" in section
