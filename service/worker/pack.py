"""A pack: up to `fuse.max_trials` claimed trials of one study, trained by one worker at once.

Each member is an ordinary trial through `TrialRunner`'s phases (start -> attach ->
prepare, then conclude -> tell and finish -> clean up); only training differs. Members are
grouped by `trainer.fused.structure_key` of their configs: a group of more than one trains
as one fused model (`fit_fused`), a singleton as any trial. Each member keeps its own curve
rows, Optuna reports and pruning (a pruned member stops, the others go on), its own model,
diagnosis and failure: a diverging member fails alone with its reason.

Device time: a fused group's training wall time is split evenly among its members; a
singleton's is its own. What is not fused: a re-run that resumes from a checkpoint trains
alone, and fused members save no checkpoints (a pack killed mid-way re-runs from epoch 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.scheduling.claims import Claim
from service.worker.trial import STORAGE_ERRORS, Prepared, Started, TrialRunner
from trainer import FitResult
from trainer.fused import fit_fused, structure_key
from trainer.loop import EpochMetrics

log = logging.getLogger("hpo.worker")


@dataclass
class Member:
    """One trial of the pack, and how its training ended (a result or an error)."""

    claim: Claim
    started: Started
    prepared: Prepared | None = None
    result: FitResult | BaseException | None = None
    device_seconds: float | None = None


class PackRunner:
    """Trains a pack of claims of one study with `runner`'s worker, device and data."""

    def __init__(self, runner: TrialRunner) -> None:
        self.runner = runner

    def run(self, claims: Sequence[Claim]) -> None:
        """Run every claim of the pack to its end and record each. Database errors while
        starting or finishing propagate (the worker fails its claims once the database is
        back); any other error fails only the trials it concerns."""
        members: list[Member] = []
        try:
            for claim in claims:
                started = self.runner.start(claim)
                if started is not None and self.runner.attach(claim, started):
                    members.append(Member(claim, started))
            ready = [m for m in members if self._prepare(m)]
            for group in _groups(ready):
                self._train(group)
            for member in ready:
                self._finish(member)
        finally:
            for member in members:
                self.runner.clean_up(member.started)

    def _prepare(self, member: Member) -> bool:
        """Suggest the member's parameters (one after another: TPE's `constant_liar` sees
        the members already suggested); False, and the trial failed, if that raised."""
        try:
            member.prepared = self.runner.prepare(member.claim, member.started)
        except STORAGE_ERRORS:
            raise
        except Exception as e:
            self.runner.fail(member.claim, member.started, e)
            return False
        return True

    def _train(self, group: list[Member]) -> None:
        """Train the group (fused when it has more than one member); each member's result
        or error, and its share of the wall time, are kept on it."""
        began = time.monotonic()
        if len(group) == 1:
            (member,) = group
            assert member.prepared is not None
            try:
                member.result = self.runner.fit_prepared(
                    member.claim, member.started, member.prepared
                )
            except STORAGE_ERRORS:
                raise
            except Exception as e:
                member.result = e
        else:
            results = self._fit_fused(group)
            for member, result in zip(group, results, strict=True):
                member.result = result
        share = (time.monotonic() - began) / len(group)
        for member in group:
            member.device_seconds = share

    def _fit_fused(self, group: list[Member]) -> list[FitResult | BaseException]:
        """`fit_fused` over the group's members; an error of the whole pack (the worker's
        stop, out of memory) becomes every member's."""
        prepared = [m.prepared for m in group if m.prepared is not None]
        first = prepared[0]

        def on_epoch(i: int, m: EpochMetrics) -> bool:
            return prepared[i].report(m)

        log.info(
            "study %s: training %d trials fused (%s)",
            group[0].started.spec.name,
            len(group),
            ", ".join(str(m.started.trial.number) for m in group),
        )
        try:
            with self.runner.interruptible():
                return fit_fused(
                    [p.config for p in prepared],
                    first.data,
                    on_epoch,
                    prepare_models=[p.prepare for p in prepared],
                    model_builder=first.builder,
                )
        except STORAGE_ERRORS:
            raise
        except Exception as e:
            return [e] * len(group)

    def _finish(self, member: Member) -> None:
        """Conclude (save the model, test accuracy), tell and finish the member, or fail it
        with its own error."""
        runner, claim, started = self.runner, member.claim, member.started
        result, seconds = member.result, member.device_seconds
        if isinstance(result, BaseException):
            runner.fail(claim, started, result, device_seconds=seconds)
            return
        assert result is not None and member.prepared is not None
        try:
            outcome = runner.conclude(started, member.prepared, result)
        except STORAGE_ERRORS:
            raise
        except Exception as e:
            runner.fail(claim, started, e, device_seconds=seconds)
            return
        runner.finish(claim, started, replace(outcome, device_seconds=seconds))


def _groups(members: list[Member]) -> list[list[Member]]:
    """The members grouped by structure key, in claim order; a re-run that resumes from a
    checkpoint is a group of its own (fused training does not resume)."""
    groups: dict[object, list[Member]] = {}
    for i, member in enumerate(members):
        assert member.prepared is not None
        resumes = member.prepared.plan.state is not None
        key = ("alone", i) if resumes else structure_key(member.prepared.config)
        groups.setdefault(key, []).append(member)
    return list(groups.values())
