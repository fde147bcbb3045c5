"""Enqueued configurations under concurrent claims, on both databases: each is claimed once,
in order, by the claims in the order they took their budget slots.

The end-to-end version (four `hpo serve` workers, forty trials, ten enqueued) runs on SQLite
only, `hpo serve`'s own setup; this is its race on PostgreSQL, at the level where the
database decides it (a conditional UPDATE of the study row, then the enqueued row read under
that row's lock), in a second instead of a minute. It belongs beside tests/test_claims.py."""

from __future__ import annotations

import threading

from service.core.db.engine import session_scope
from service.scheduling.claims import Claim, claim_slot
from service.studies.service import create_study
from service.studies.spec import StudySpec
from tests.conftest import tiny_spec, unique

THREADS = 6
N_TRIALS = 12
ENQUEUED = [{"lr": round(0.001 * (i + 1), 4), "batch_size": 16} for i in range(8)]


def test_concurrent_claims_take_each_enqueued_configuration_once_in_order(
    database_url: str,
) -> None:
    spec = StudySpec.model_validate(tiny_spec(unique("enq-race"), N_TRIALS, enqueue=ENQUEUED))
    with session_scope(database_url) as session:
        study_id = create_study(session, spec).id
    start = threading.Barrier(THREADS)
    won: list[Claim] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def grab() -> None:
        try:
            start.wait()
            for _ in range(N_TRIALS):
                claim = claim_slot(database_url, study_id, None)
                if claim is not None:
                    with lock:
                        won.append(claim)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=grab) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(c.claim_index for c in won) == list(range(1, N_TRIALS + 1))
    in_claim_order = [c.fixed_params for c in sorted(won, key=lambda c: c.claim_index)]
    assert in_claim_order == [*ENQUEUED, *[None] * (N_TRIALS - len(ENQUEUED))]
