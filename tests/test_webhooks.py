"""Webhooks (issue 16 §8): a study's `notify` spec is validated; its events are recorded by
the transactions that decide them and delivered by the outbox, signed with HMAC-SHA256,
retried with back-off, to a real HTTP server in this process; a real worker delivers the
events of a real study."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing
import os
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from service.core.db.engine import session_scope
from service.core.db.models import Study, utcnow
from service.core.db.outbox import WebhookDelivery
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.core.states import TrialState
from service.integrations.config import IntegrationSettings
from service.integrations.dispatch import drain_once
from service.integrations.notify import record_trial_result
from service.scheduling.claims import claim_slot, expire_deadlines, finish_record
from service.studies.service import create_study, stop_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique
from tests.study_checks import worker_settings
from tests.webhook_receiver import Received, webhook_receiver

SECRET = "s3cret-for-tests"
QUICK: dict[str, Any] = {
    "webhook_secret": SecretStr(SECRET),
    "webhook_backoff_seconds": 0.05,
    "webhook_timeout_seconds": 5.0,
}


def verify(received: Received) -> dict[str, Any]:
    """The payload, after checking its signature over the raw body."""
    expected = hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers["X-HPO-Signature"] == f"sha256={expected}"
    payload: dict[str, Any] = json.loads(received.body)
    assert received.headers["X-HPO-Event"] == payload["event"]
    return payload


def submit(url: str, raw: dict[str, Any]) -> int:
    with session_scope(url) as session:
        return create_study(session, StudySpec.model_validate(raw)).id


def rows(url: str, study_id: int) -> list[WebhookDelivery]:
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.study_id == study_id)
                .order_by(WebhookDelivery.id)
            )
        )


def drain_until_settled(url: str, settings: IntegrationSettings, study_id: int) -> None:
    """Drain the outbox until no delivery of the study is pending (back-off included)."""
    for _ in range(200):
        drain_once(url, settings)
        if all(r.state != "pending" for r in rows(url, study_id)):
            return
        time.sleep(0.05)
    raise AssertionError(f"still pending: {rows(url, study_id)}")


@pytest.mark.parametrize(
    ("notify", "loc"),
    [
        ({"webhook": "ftp://example.com/x"}, ["notify", "webhook"]),
        ({"webhook": "https:///no-host"}, ["notify", "webhook"]),
        ({"webhook": "http://example.com:99999/"}, ["notify", "webhook"]),
        ({"webhook": "http://example.com/" + "a" * 2000}, ["notify", "webhook"]),
        ({"webhook": "http://example.com/", "events": ["done"]}, ["notify", "events", 0]),
        ({"webhook": "http://example.com/", "events": []}, ["notify", "events"]),
        ({"webhook": "http://example.com/", "events": ["failed", "failed"]}, ["notify", "events"]),
        ({"events": ["failed"]}, ["notify", "webhook"]),
        ({"webhook": "http://example.com/", "secret": "x"}, ["notify", "secret"]),
    ],
)
def test_a_bad_notify_spec_is_a_422_naming_the_field(
    client: httpx.Client, notify: dict[str, Any], loc: list[Any]
) -> None:
    spec = tiny_spec(unique("notify-bad"), notify=notify)
    response = client.post("/api/studies", json=spec)
    assert response.status_code == 422, response.text
    assert any(entry["loc"][1:] == loc for entry in response.json()["detail"]), response.text


def test_stop_and_the_failure_cap_send_one_signed_event_each(database_url: str) -> None:
    """`stopped` from the service's stop, `failed` from the transaction that passes the
    failure cap; a study that asks for neither gets nothing; a second stop sends nothing."""
    settings = IntegrationSettings(**QUICK)
    with webhook_receiver() as receiver:
        stopped = submit(
            database_url,
            tiny_spec(unique("stopped"), notify={"webhook": receiver.url + "/stopped"}),
        )
        quiet = submit(
            database_url,
            tiny_spec(
                unique("quiet"),
                notify={"webhook": receiver.url + "/quiet", "events": ["completed"]},
            ),
        )
        failing = tiny_spec(unique("failing"), notify={"webhook": receiver.url + "/failed"})
        failing["budget"] = {"n_trials": 3, "max_failed_trials": 0}
        failed = submit(database_url, failing)
        for study_id in (stopped, quiet, stopped):
            with session_scope(database_url) as session:
                stop_study(session, study_id)
        claim = claim_slot(database_url, failed, None)
        assert claim is not None
        finish_record(database_url, claim.record_id, TrialState.FAIL, error="boom")
        for study_id in (stopped, quiet, failed):
            drain_until_settled(database_url, settings, study_id)

        assert receiver.on("/quiet") == []
        (stop_event,) = [verify(r) for r in receiver.on("/stopped")]
        assert stop_event["event"] == "stopped"
        assert stop_event["study"]["id"] == stopped and stop_event["study"]["status"] == "stopped"
        assert stop_event["timestamp"].endswith("Z")
        (fail_event,) = [verify(r) for r in receiver.on("/failed")]
        assert fail_event["event"] == "failed" and fail_event["study"]["id"] == failed
        assert "boom" in fail_event["error"]
    assert [(r.state, r.attempts) for r in rows(database_url, stopped)] == [("delivered", 1)]


def test_a_failing_receiver_gets_the_same_delivery_again_with_back_off(database_url: str) -> None:
    """A receiver that answers 500 twice, then 200: three identical, signed requests (same
    body and delivery id), then delivered; one that always fails is given up after the
    last attempt, with its error kept."""
    settings = IntegrationSettings(**QUICK, webhook_max_attempts=4)
    with webhook_receiver() as receiver:
        receiver.failures = {"/flaky": 2, "/down": 1000}
        flaky = submit(
            database_url, tiny_spec(unique("flaky"), notify={"webhook": receiver.url + "/flaky"})
        )
        down = submit(
            database_url, tiny_spec(unique("down"), notify={"webhook": receiver.url + "/down"})
        )
        for study_id in (flaky, down):
            with session_scope(database_url) as session:
                stop_study(session, study_id)
        for study_id in (flaky, down):
            drain_until_settled(database_url, settings, study_id)
        tries = receiver.on("/flaky")
        assert len(tries) == 3
        assert len({(r.body, r.headers["X-HPO-Delivery"]) for r in tries}) == 1
        assert verify(tries[0])["event"] == "stopped"
        assert len(receiver.on("/down")) == 4
    (row,) = rows(database_url, flaky)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)
    assert row.delivered_at is not None
    (given_up,) = rows(database_url, down)
    assert (given_up.state, given_up.attempts, given_up.last_error) == ("failed", 4, "HTTP 500")


def _run_worker_with_env(settings: Settings, studies: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)  # the fork server's children do not see the test's environment
    from service.worker.process import WorkerProcess

    WorkerProcess(settings, studies).run(until_idle=True, install_signals=False)


def run_worker_with_env(url: str, studies: list[str], env: dict[str, str]) -> None:
    """One real worker process (from the fork server) with `env` set, until idle."""
    context = multiprocessing.get_context("forkserver")
    proc = context.Process(
        target=_run_worker_with_env, args=(worker_settings(url), studies, env), daemon=True
    )
    proc.start()
    proc.join(timeout=600)
    assert proc.exitcode == 0


WORKER_ENV = {
    "HPO_WEBHOOK_SECRET": SECRET,
    "HPO_WEBHOOK_BACKOFF_SECONDS": "0.05",
    "HPO_OUTBOX_POLL_SECONDS": "0.05",
}


@pytest.mark.slow
def test_a_real_worker_delivers_each_improvement_and_the_completion_once(
    database_url: str,
) -> None:
    """A 4-trial study on a real worker: one signed `best_improved` per trial that beat
    every earlier one (its number, value and parameters), then one `completed`; every
    delivery once, on its first attempt."""
    with webhook_receiver() as receiver:
        name = unique("hooked")
        raw = tiny_spec(name, n_trials=4, notify={"webhook": receiver.url + "/hook"})
        study_id = submit(database_url, raw)
        run_worker_with_env(database_url, [name], WORKER_ENV)
        payloads = [verify(r) for r in receiver.on("/hook")]
        deliveries = [r.headers["X-HPO-Delivery"] for r in receiver.on("/hook")]

    assert len(set(deliveries)) == len(deliveries)  # each once
    assert [p["event"] for p in payloads][-1] == "completed"
    assert payloads[-1]["study"] == {"id": study_id, "name": name, "status": "completed"}
    # The improvements, as the trials finished (one worker: in number order).
    trials = get_storage(database_url).get_all_trials(
        get_storage(database_url).get_study_id_from_name(f"hpo:{name}")
    )
    best: float | None = None
    expected = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.value is not None and (best is None or t.value > best):
            best = t.value
            expected.append({"number": t.number, "value": t.value, "params": t.params})
    improved = [p for p in payloads if p["event"] == "best_improved"]
    assert [{k: p["trial"][k] for k in ("number", "value", "params")} for p in improved] == expected
    assert improved[0]["previous_best"] is None
    assert [p["previous_best"] for p in improved[1:]] == [e["value"] for e in expected[:-1]]
    assert len(payloads) == len(expected) + 1
    assert {(r.state, r.attempts) for r in rows(database_url, study_id)} == {("delivered", 1)}


def test_a_deadline_completes_the_study_with_one_event_and_a_repeated_result_is_not_doubled(
    database_url: str,
) -> None:
    """The sweep's deadline expiry records `completed` in its UPDATE's transaction (once:
    a second sweep finds the study no longer running); the worker's best check, called
    again for the same trial (a retry after a lost commit), records nothing more."""
    raw = tiny_spec(unique("deadline"), notify={"webhook": "http://127.0.0.1:9/unused"})
    raw["budget"] = {"n_trials": 3, "timeout_seconds": 3600}
    study_id = submit(database_url, raw)
    first, again = (
        record_trial_result(
            database_url, study_id, trial_id=1, number=0, value=0.5, params={}, maximize=True
        )
        for _ in range(2)
    )
    assert first and not again
    assert not record_trial_result(
        database_url, study_id, trial_id=2, number=1, value=0.5, params={}, maximize=True
    )  # not better
    with session_scope(database_url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        study.deadline_at = utcnow() - timedelta(seconds=1)
    expire_deadlines(database_url)
    expire_deadlines(database_url)
    assert [(r.event, r.trial_number) for r in rows(database_url, study_id)] == [
        ("best_improved", 0),
        ("completed", None),
    ]
