"""The MLflow registry's alias state machine: decide candidates, move aliases, roll back, repair.

Registered model = model name; a version's number is the same in MLflow, in its folder
(``versions/v<N>``), in the history and in ``flywheel status``. Aliases: ``champion``
(serving), ``previous`` (the last champion, the rollback target), ``candidate`` (the last
registered). A version carries params, the gate metrics, the data window and sample
counts, the data gate's result, the resolved config, the code revision, a review note and
review artifacts.

**Registering** a run is ``orchestration.registration``; a version it leaves pending (a
crash after the version exists) is finished by :meth:`Registry.repair`.

**Deciding** (promote, reject) and **rolling back** are one state machine under the model's
alias lock: the verdict and review note are written, then the move is journalled in the
model's local state (``Decision``), then applied step by step (``previous`` alias,
``champion`` alias, verdict tag, history entry) and completed in the local state (champion,
watermark, rejected window; journal cleared). Every step is idempotent, so
:meth:`Registry.repair` completes a journalled move from the start, whatever step a crash
stopped it at; a move not yet journalled has changed no alias. ``flywheel.faults`` names
each step boundary for fault-injection tests.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.errors import FlywheelError
from flywheel.faults import crash_point
from flywheel.layout import StateLayout
from flywheel.locks import file_lock
from flywheel.tasks import spec_class, spec_for
from orchestration import history, mlflow_store
from orchestration.live_plot import log_live_plot
from orchestration.mlflow_store import CANDIDATE, CHAMPION, PREVIOUS, quiet_mlflow, use_credentials
from orchestration.promotion import Reference, Verdict, decide
from orchestration.review_note import description
from training.model_store import Decision, ModelStore, Window
from training.run import load_run

if TYPE_CHECKING:
    from flywheel.settings import Settings

VERDICT, RUN_ID, AGAINST = "flywheel.verdict", "flywheel.run_id", "flywheel.evaluated_against"
TRAINED_ON_FORGOTTEN = "flywheel.trained_on_forgotten"  # how many erased samples it trained on
FINAL_TAG = {
    "promote": "promoted",
    "force-promote": "force-promoted",
    "reject": "rejected",
    "stale": "stale",
    "rollback": "rolled-back-to",
    "auto-rollback": "rolled-back-to",
}
AUTO_ROLLED_BACK = (
    "flywheel.auto_rolled_back"  # on a version the monitor took out: never re-promoted automatically
)


class RegistryError(FlywheelError):
    exit_code = 7


def alias_lock(state_dir: Path, model: str, timeout_s: float = 600):
    """The lock of a model's alias moves (decide, rollback, repair)."""
    return file_lock(StateLayout.of(state_dir).alias_lock(model), timeout_s)


class Registry:
    def __init__(self, settings: Settings):
        import mlflow
        from mlflow import MlflowClient

        quiet_mlflow()
        use_credentials(settings)
        self.settings = settings
        self.models = ModelStore(settings.state_dir)

        mlflow_store.ensure(settings)  # created or migrated once, whoever comes first
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)  # for the fluent logging API
        self.client = MlflowClient(settings.mlflow_tracking_uri)

    # ---- reading -------------------------------------------------------------------

    def alias_version(self, model: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException:
            return None

    def version_tags(self, model: str, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(model, str(version)).tags)

    def tag_forgotten(self, model: str, version: int, count: int) -> bool:
        """Tag ``version`` with how many erased samples it trained on (``flywheel forget``);
        False when MLflow does not have the version."""
        if not self._exists(model, version):
            return False
        self.client.set_model_version_tag(model, str(version), TRAINED_ON_FORGOTTEN, str(count))
        return True

    def versions(self, model: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{model}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda v: int(v.version))

    def pending(self, model: str) -> list[int]:
        return [int(v.version) for v in self.versions(model) if v.tags.get(VERDICT) == "pending"]

    # ---- deciding ------------------------------------------------------------------

    def decide(self, model: str, version: int, review_files: list[Path] | None = None) -> Verdict:
        """Gate the registered ``version`` and move the aliases (compare-and-set, under the lock)."""
        with alias_lock(self.settings.state_dir, model):
            self._finish_open_decision(model)
            verdict = self._decide(model, version, review_files)
        if verdict.passed:
            self._live_plot(model, version)
        return verdict

    def _live_plot(self, model: str, version: int) -> None:
        """The live metric so far, with the champion's moves, logged to the version just made champion."""

        log_live_plot(self.settings, self, model, version, log=logging.getLogger("flywheel.registry").warning)

    def _decide(self, model: str, version: int, review_files: list[Path] | None) -> Verdict:
        info = self.models.info(model)
        tags = self.version_tags(model, version)
        if tags.get(VERDICT) not in (None, "pending"):
            raise RegistryError(f"{model} v{version} was already decided ({tags[VERDICT]})")
        run = load_run(self._folder(model, version, tags), model)
        against = None if tags.get(AGAINST) in (None, "none") else int(tags[AGAINST])
        current = self.alias_version(model, CHAMPION)
        if current != against:
            verdict = Verdict(
                False,
                [
                    f"stale: the champion moved from v{against} to v{current} while this "
                    "candidate was evaluated; its window is retrained against the new champion"
                ],
                stale=True,
            )
        else:
            direction = spec_class(self.models.info(model).task).primary_direction
            reference = None if current is None else self.reference(model, run.evaluated.metric, direction)
            verdict = decide(
                run.evaluated,
                self.settings.promotion,
                model,
                info.task,
                first=current is None,
                reference=reference,
            )
        record = run.folder.training_record()
        if record.kept == "probe":  # the trainer's rule (training.trainer._probe_or_trained)
            verdict.notes.append(f"this version is its baseline's state: {record.kept_because}")
        spec = spec_for(self.settings, info.task)
        note = description(
            model, version, run.report, verdict, run.lineage, run.data_gate, spec, run.label_screen
        )
        self.client.update_model_version(model, str(version), description=note)
        run_id = self.client.get_model_version(model, str(version)).run_id
        for path in review_files or []:
            self.client.log_artifact(run_id, str(path), "review")
        reasons = verdict.explanation or ["all guards within tolerance"]
        self.client.set_model_version_tag(model, str(version), "flywheel.reasons", "; ".join(reasons))
        crash_point("decide.described")
        lineage = run.lineage
        action = "promote" if verdict.passed else "stale" if verdict.stale else "reject"
        # A stale candidate was never judged: its window is not consumed and is retrained.
        consumed = not lineage.bootstrap and action != "stale"
        window = Window(lineage.window_start, lineage.window_end) if consumed else None
        decision = Decision(f"v{version}-{action}", action, version, current, tuple(reasons), window)
        self.models.begin_decision(model, decision)
        crash_point("decide.journalled")
        self._apply(model, decision)
        return verdict

    def reference(self, model: str, metric: str, direction: str = "max"):
        """The ratchet's reference (``orchestration.promotion``): the pinned
        ``promotion.reference_version`` of ``model``, else the promoted version with the best
        golden ``metric`` (the highest, or the lowest for a ``direction`` of ``min``; each read
        from its own version folder's evaluation report)."""

        pinned = self.settings.promotion.reference_version.get(model)
        promoted = {
            e.version
            for e in history.entries(self.settings.state_dir, model)
            if e.action in ("promote", "force-promote") and e.version is not None
        }
        if pinned is not None:
            promoted = {pinned}
        best = None
        for version in sorted(promoted):
            try:
                folder = self.models.version(model, version)
            except FlywheelError:
                continue  # registered on another machine: its score is not here to compare
            if not folder.has_report():
                continue
            value = folder.report().value("golden", "candidate", metric)
            if value is None:
                continue
            if best is None or (value < best.value if direction == "min" else value > best.value):
                best = Reference(version, value, pinned=pinned is not None)
        return best

    def _folder(self, model: str, version: int, tags: dict):
        """The version's folder, moving it from ``runs/`` if a crash came before that."""
        if RUN_ID in tags:
            return self.models.adopt(model, tags[RUN_ID], version)
        return self.models.version(model, version)

    def _apply(self, model: str, d: Decision) -> None:
        """Every step of a journalled move, each idempotent; the local state is completed last."""
        if d.moves_champion:
            if d.champion_before is not None:
                self.client.set_registered_model_alias(model, PREVIOUS, str(d.champion_before))
            crash_point("move.previous")
            self.client.set_registered_model_alias(model, CHAMPION, str(d.version))
            crash_point("move.champion")
        self.client.set_model_version_tag(model, str(d.version), VERDICT, FINAL_TAG[d.action])
        if d.action == "auto-rollback" and d.champion_before is not None:
            summary = json.dumps(d.evidence or {}, default=str)[:5000]
            self.client.set_model_version_tag(model, str(d.champion_before), AUTO_ROLLED_BACK, summary)
        crash_point("move.tagged")
        if not history.has_decision(self.settings.state_dir, model, d.id):
            after = d.version if d.moves_champion else d.champion_before
            extra = {"evidence": d.evidence} if d.evidence is not None else {}
            history.record(
                self.settings.state_dir,
                model,
                d.action,
                version=d.version,
                previous=d.champion_before,
                champion=after,
                reason="; ".join(d.reasons),
                decision=d.id,
                **extra,
            )
        crash_point("move.history")
        self.models.complete_decision(model, d)

    def _finish_open_decision(self, model: str) -> Decision | None:
        """Complete a move a crash interrupted (journalled but not completed)."""
        if not self.models.exists(model):
            return None
        open_decision = self.models.state(model).decision
        if open_decision is None:
            return None
        if not self._exists(model, open_decision.version):  # deleted by hand: it can never complete
            self.models.abandon_decision(model, open_decision)
            history.record(
                self.settings.state_dir,
                model,
                "abandon",
                version=open_decision.version,
                champion=self.alias_version(model, CHAMPION),
                reason=f"{open_decision.action} of v{open_decision.version} abandoned: it no longer exists",
                decision=open_decision.id,
            )
            return open_decision
        self._apply(model, open_decision)
        return open_decision

    def _exists(self, model: str, version: int) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(model, str(version))
            return True
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise

    # ---- rollback and repair --------------------------------------------------------

    def check_loads(self, model: str, version: int) -> None:
        """Load ``models:/model/version`` and predict a few golden samples, or raise RegistryError."""
        import mlflow.pyfunc

        try:
            loaded = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
            spec = spec_for(self.settings, self.models.info(model).task)
            example = spec.serving_example(self.models.golden(model).head(8))
            out = loaded.predict(example)
            if len(out) != len(example) or spec.serving_output not in out:
                raise RegistryError(
                    f"{model} v{version} predicted {len(out)} rows for {len(example)} samples "
                    f"(columns {list(out.columns)}; {spec.serving_output!r} expected)"
                )
        except RegistryError:
            raise
        except Exception as exc:  # any load/predict failure makes the version unfit to serve
            raise RegistryError(
                f"{model} v{version} does not load or predict: {type(exc).__name__}: {exc}"
            ) from exc

    def rollback(
        self,
        model: str,
        to: int | None = None,
        reason: str = "manual rollback",
        *,
        evidence: dict | None = None,
        expect_champion: int | None = None,
    ) -> tuple[int, int]:
        """Move ``champion`` to ``to`` (default: the ``previous`` alias) after checking it serves.

        With ``evidence`` it is the live monitor's automatic rollback (``auto-rollback`` in
        the history, the evidence kept with it, the version taken out tagged): it happens
        only if the champion is still ``expect_champion`` (what the evidence is about), and
        never onto a version an earlier automatic rollback took out."""
        auto = evidence is not None
        with alias_lock(self.settings.state_dir, model):
            finished = self._finish_open_decision(model)
            this = ("auto-rollback", expect_champion, to)
            if (
                auto
                and finished is not None
                and expect_champion is not None
                and to is not None
                and (finished.action, finished.champion_before, finished.version) == this
            ):
                return expect_champion, to  # this very rollback, cut off by a crash: now complete
            current = self.alias_version(model, CHAMPION)
            target = to if to is not None else self.alias_version(model, PREVIOUS)
            if current is None:
                raise RegistryError(f"{model} has no champion; nothing to roll back")
            if target is None:
                raise RegistryError(
                    f"{model} has no previous champion to roll back to (champion is v{current}); "
                    "pass --to VERSION to choose one"
                )
            if target == current:
                raise RegistryError(f"v{target} is already the champion of {model}")
            if auto and expect_champion != current:
                raise RegistryError(
                    f"the champion of {model} moved to v{current} while the monitor judged "
                    f"v{expect_champion}; nothing rolled back"
                )
            if (auto or to is None) and AUTO_ROLLED_BACK in self.version_tags(model, target):
                raise RegistryError(
                    f"{model} v{target} was itself rolled back automatically (live metric worse); it is "
                    "not brought back without a person choosing it: `flywheel model rollback --to VERSION`"
                )
            self.check_loads(model, target)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            action = "auto-rollback" if auto else "rollback"
            decision = Decision(
                f"{action}-v{target}-{stamp}", action, target, current, (reason,), evidence=evidence
            )
            self.models.begin_decision(model, decision)
            self._apply(model, decision)
        return current, target

    def force_promote(self, model: str, version: int, reason: str) -> tuple[int | None, int]:
        """Make ``version`` the champion past the gate (an engineer's override): checked to
        load and predict first, recorded as ``force-promote`` with the actor and the reason.
        The live monitor watches it like any promotion."""
        if not reason.strip():
            raise RegistryError(
                "a forced promotion needs a reason: pass --reason TEXT (it is kept in the history)"
            )
        with alias_lock(self.settings.state_dir, model):
            self._finish_open_decision(model)
            if not self._exists(model, version):
                raise RegistryError(f"{model} has no version {version}; see `flywheel status`")
            current = self.alias_version(model, CHAMPION)
            if current == version:
                raise RegistryError(f"v{version} is already the champion of {model}")
            self.check_loads(model, version)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            decision = Decision(f"force-v{version}-{stamp}", "force-promote", version, current, (reason,))
            self.models.begin_decision(model, decision)
            self._apply(model, decision)
        self._live_plot(model, version)
        return current, version

    def repair(self, model: str) -> list[tuple[int, str]]:
        """Finish what a crash left: a journalled move, then every version still pending
        (its folder moved into place, then decided). Returns (version, what was done)."""
        done = []
        with alias_lock(self.settings.state_dir, model):
            finished = self._finish_open_decision(model)
            if finished is not None:
                done.append((finished.version, f"completed {finished.action}"))
            for version in self.pending(model):
                try:
                    self.client.set_registered_model_alias(model, CANDIDATE, str(version))
                    verdict = self._decide(model, version, None)  # moves its folder into place first
                except Exception as exc:  # noqa: BLE001 - its folder or records are unreadable: never judgeable
                    reason = f"abandoned by repair: {type(exc).__name__}: {exc}"
                    self.client.set_model_version_tag(model, str(version), VERDICT, "abandoned")
                    self.client.set_model_version_tag(model, str(version), "flywheel.reasons", reason[:5000])
                    done.append((version, "abandoned"))
                    continue
                done.append((version, verdict.label))
        return done
