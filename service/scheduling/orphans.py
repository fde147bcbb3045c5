"""The periodic sweep of the worker loop, and closing Optuna trials that no claim owns.

Every worker runs `sweep` every few seconds (and once, over every study, when it starts):
it declares silent workers dead and fails or releases their claims (`claims.reap_dead_workers`),
brings timed-out studies' status up to date (the claims themselves already refuse them),
and fails Optuna trials left RUNNING that no live claim owns. The last should find nothing:
a claim's Optuna trial carries the claim's id from its creation, so the reaper finds it even
when its worker died before linking it. What remains are trials created for a claim that was
released while its worker was in fact alive (starved of CPU past the grace period) and
which that worker then could not close itself, and trials left by older versions.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import optuna
from sqlalchemy import and_, or_, select, update

from service.core.db.engine import session_scope
from service.core.db.models import Study, TrialRecord, utcnow
from service.core.optuna_compat import CLAIM_ATTR
from service.core.optuna_compat import rdb_models as om
from service.core.optuna_storage import get_storage
from service.core.states import StudyState
from service.scheduling.claims import expire_deadlines, reap_dead_workers, settle_status

log = logging.getLogger(__name__)

# Studies finished longer ago than this are left out of the periodic orphan sweep (a full
# sweep, when a worker starts, covers every study): its query then reads only recent studies.
RECENT = timedelta(hours=1)


def sweep(url: str, grace_seconds: float, *, every_study: bool = False) -> None:
    """One round of the worker loop's housekeeping: reap workers silent for
    `grace_seconds`, expire deadlines, close orphaned Optuna trials (of every study when
    `every_study`, else of running and recently finished ones)."""
    reap_dead_workers(url, grace_seconds)
    expire_deadlines(url)
    close_orphan_trials(url, grace_seconds, since=None if every_study else utcnow() - RECENT)


def close_orphan_trials(url: str, grace_seconds: float, since: datetime | None = None) -> int:
    """Fail the Optuna trials of the service's studies that are RUNNING while no unfinished
    claim owns them (neither linked to one nor tagged with one); the number failed.

    A trial without our tag (made by an older version) is only failed once it is older than
    `grace_seconds`: its worker may be between creating and linking it. `since`: only
    studies running, or finished at or after it (None: every study)."""
    T, A = om.TrialModel, om.TrialSystemAttributeModel
    untagged_cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with session_scope(url) as session:
        studies = select(Study.id, Study.optuna_study_id)
        if since is not None:
            studies = studies.where(
                or_(
                    Study.status == StudyState.RUNNING,
                    Study.finished_at.is_(None),
                    Study.finished_at >= since,
                )
            )
        by_optuna_id = {optuna_id: sid for sid, optuna_id in session.execute(studies).all()}
        if not by_optuna_id:
            return 0
        running = session.execute(
            select(T.trial_id, T.study_id, T._datetime_start_utc, A.value_json)
            .outerjoin(A, and_(A.trial_id == T.trial_id, A.key == CLAIM_ATTR))
            .where(T.study_id.in_(list(by_optuna_id)), T.state == optuna.trial.TrialState.RUNNING)
        ).all()
        if not running:
            return 0
        tags = {tid: json.loads(tag) for tid, _, _, tag in running if tag is not None}
        live = session.execute(
            select(TrialRecord.id, TrialRecord.optuna_trial_id).where(
                TrialRecord.finished_at.is_(None),
                or_(
                    TrialRecord.optuna_trial_id.in_([tid for tid, *_ in running]),
                    TrialRecord.id.in_(list(tags.values())),
                ),
            )
        ).all()
    live_claims = {record_id for record_id, _ in live}
    live_trials = {tid for _, tid in live if tid is not None}
    closed = 0
    for tid, optuna_study_id, started, _ in running:
        if tid in live_trials or tags.get(tid) in live_claims:
            continue
        if tid not in tags and (started is None or started > untagged_cutoff):
            continue
        reason = "its worker died before it started: no claim owns it"
        if close_unclaimed_trial(url, tid, by_optuna_id[optuna_study_id], tags.get(tid), reason):
            closed += 1
    return closed


def close_unclaimed_trial(
    url: str, optuna_trial_id: int, study_id: int, claim_id: int | None, reason: str
) -> bool:
    """Fail an Optuna trial that no unfinished claim owns (its claim was released, or it
    has none) and count the failure; link it to the released claim `claim_id`, so that the
    trial list shows why that claim was released. `reason` is logged. False if it had
    finished meanwhile.

    The slot was given back when the claim was released; the count keeps the study's
    failure counter equal to the failed trials the API lists."""
    try:
        get_storage(url).set_trial_state_values(optuna_trial_id, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    now = utcnow()
    with session_scope(url) as session:
        linked = session.scalar(
            select(TrialRecord.id).where(TrialRecord.optuna_trial_id == optuna_trial_id)
        )
        if linked is not None:
            return True  # a record already finished FAIL for it, and counted it
        if claim_id is not None:
            number = session.scalar(
                select(om.TrialModel.number).where(om.TrialModel.trial_id == optuna_trial_id)
            )
            session.execute(
                update(TrialRecord)
                .where(TrialRecord.id == claim_id, TrialRecord.optuna_trial_id.is_(None))
                .values(optuna_trial_id=optuna_trial_id, number=number)
            )
        session.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(n_failed=Study.n_failed + 1, updated_at=now)
        )
        settle_status(session, study_id)
    log.warning("Optuna trial %s had no live claim: failed (%s)", optuna_trial_id, reason)
    return True
