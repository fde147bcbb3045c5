"""The client and the logs with real processes: `examples/client.py` against `hpo serve`
and its workers, the per-epoch log line (text there; JSON from a real `hpo worker`), and
the access log without the polling requests."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.logs import PollingFilter
from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.studies.service import create_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique
from tests.test_e2e import Service, hpo_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_example_runs_against_hpo_serve(served: Service, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "client.py"),
            "--url",
            served.url,
            "--trials",
            "2",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "final status: completed" in out.stdout, out.stdout
    name = re.search(r"submitted study \d+ (digits-client-\w+)", out.stdout)
    assert name, out.stdout
    assert len(re.findall(r"^  #\d ", out.stdout, re.M)) == 2
    models = list(tmp_path.glob("trial-*.pt"))
    assert len(models) == 1 and models[0].stat().st_size > 0

    # `hpo serve`'s workers logged each epoch of each trial, in text
    log = served.log_path.read_text(errors="replace")
    epochs = re.findall(
        rf"INFO hpo\.worker\.trial: study {name[1]}: trial (\d) \(id \d+\) epoch (\d)/2 "
        r"val_accuracy=[\d.e-]+ \([\d.]+ s\)",
        log,
    )
    assert sorted(epochs) == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")], log[-3000:]
    # the access log keeps the submission, not the example's polling
    assert '"POST /api/studies HTTP/1.1" 201' in log, log[-3000:]
    assert '"GET /api/studies/' not in log and '"GET /api/health' not in log


@pytest.mark.slow
def test_a_real_worker_logs_each_epoch_as_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    upgrade(url)
    name = unique("json-log")
    with session_scope(url) as session:
        create_study(session, StudySpec.model_validate(tiny_spec(name, n_trials=1)))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    out = subprocess.run(
        [
            *hpo_command(),
            "worker",
            "--device",
            "cpu",
            "--until-idle",
            "--threads",
            "1",
            "--database-url",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, "HPO_LOG_FORMAT": "json", "HPO_WORKER_POLL_SECONDS": "0.2"},
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines()]  # every line is JSON
    epochs = [x for x in lines if x["logger"] == "hpo.worker.trial" and "epoch" in x]
    assert [(x["epoch"], x["max_epochs"]) for x in epochs] == [(1, 2), (2, 2)], lines
    for x in epochs:
        assert x["level"] == "INFO" and x["study"] == name and x["trial_number"] == 0
        assert x["metric"] == "val_accuracy" and 0 <= x["value"] <= 1
        assert x["epoch_seconds"] > 0 and x["message"].startswith(f"study {name}: trial 0 (id ")


def access(method: str, path: str, status: int) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    args = ("127.0.0.1:5000", method, path, "1.1", status)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "kept"),
    [
        ("GET", "/api/studies", 200, False),
        ("GET", "/api/studies/3/trials?limit=100", 200, False),
        ("GET", "/api/trials/9/curves", 200, False),
        ("GET", "/api/workers", 200, False),
        ("GET", "/api/health", 200, False),
        ("GET", "/metrics", 200, False),
        ("HEAD", "/api/studies/1", 200, False),
        ("GET", "/hpo/api/studies/1", 200, False),  # under a proxy's root path
        ("POST", "/api/studies", 201, True),
        ("POST", "/api/studies/1/stop", 200, True),
        ("DELETE", "/api/datasets/x", 204, True),
        ("GET", "/api/studies/1", 404, True),  # errors stay
        ("GET", "/api/trials/9/model", 200, False),
        ("GET", "/api/datasets", 200, True),
        ("GET", "/studies/1", 200, True),  # a page someone opened
        ("GET", "/api/studiesx", 200, True),
    ],
)
def test_polling_requests_leave_the_access_log(
    method: str, path: str, status: int, kept: bool
) -> None:
    assert PollingFilter("/hpo").filter(access(method, path, status)) is kept
