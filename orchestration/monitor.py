"""The live monitor: after a promotion, is the new champion worse on live traffic than the
version it replaced? If the data show it, roll back to ``previous``, automatically.

What it judges: the history's last move of the champion. Only a promotion (``promote``, or
an engineer's ``force-promote``) is watched; after a rollback of any kind there is nothing
to judge until the next promotion, so a rollback happens once. For a watched switch at time
T from version A to version B, from the live ledger (``pipelines.live``; verified feedback
joined to the prediction it is about):

- B's labelled predictions made after T, and A's made before T (the latest
  ``monitor.window_labelled`` of each, none older than ``monitor.window_s``): each version
  is judged on predictions *it* made, whenever their labels arrive;
- nothing is decided until both have ``monitor.min_labelled``;
- ``orchestration.live_stats.compare`` at ``monitor.confidence`` with the task's tolerance
  (``monitor.tolerance[task]``, else the spec's ``live_tolerance``).

When B is worse: roll back to A (``Registry.rollback`` with the evidence: it checks A loads
and predicts, records ``auto-rollback`` with the evidence in the history, tags B
``flywheel.auto_rolled_back``), log an alert, POST it to ``monitor.webhook_url`` if set, and
log a plot of the live metric with the promotion and rollback marked to B's MLflow run.

No flapping: nothing is rolled back within ``monitor.cooldown_s`` of an earlier rollback,
and the registry never rolls back *onto* a version an automatic rollback took out.
``flywheel model monitor --once`` (cron, Airflow) and ``flywheel run`` call :func:`monitor_once`.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flywheel.layout import StateLayout
from flywheel.redact import redact_text
from flywheel.tasks import spec_for
from flywheel.tasks.protocols import Policy
from orchestration import history
from orchestration.live_plot import log_live_plot
from orchestration.live_stats import LiveComparison, compare
from orchestration.registry import CHAMPION, Registry, RegistryError
from pipelines.live import LiveLedger

if TYPE_CHECKING:
    from flywheel.settings import Settings

WATCHED = ("promote", "force-promote")
ROLLBACKS = ("rollback", "auto-rollback")


@dataclass(frozen=True)
class Watch:
    """A promotion the monitor judges: ``old`` → ``new`` at ``switched_at``."""

    model: str
    new: int
    old: int
    switched_at: datetime
    action: str


@dataclass(frozen=True)
class MonitorResult:
    """What one look at one model found: ``state`` idle | cooldown | waiting | held |
    rolled-back | failed."""

    model: str
    state: str
    message: str
    comparison: LiveComparison | None = None
    version: int | None = None  # the promoted champion judged

    @property
    def alert(self) -> bool:
        return self.state in ("rolled-back", "failed")


def watched(entries: list[history.Entry], model: str) -> Watch | None:
    """The promotion to judge: the last champion move, if it was a promotion from a version."""
    moves = [e for e in entries if e.action in (*WATCHED, *ROLLBACKS)]
    if not moves or moves[-1].action not in WATCHED:
        return None
    last = moves[-1]
    if last.version is None or last.previous is None:
        return None  # a model's first champion: nothing to compare it with
    return Watch(model, last.version, last.previous, last.time, last.action)


def in_cooldown(entries: list[history.Entry], now: datetime, cooldown_s: float) -> datetime | None:
    """The end of the cool-down after the last rollback, while it lasts."""
    rollbacks = [e for e in entries if e.action in ROLLBACKS]
    if not rollbacks:
        return None
    ends = rollbacks[-1].time.timestamp() + cooldown_s
    return datetime.fromtimestamp(ends, UTC) if now.timestamp() < ends else None


def tolerance_for(settings: Settings, spec: Policy) -> float:
    return settings.monitor.tolerance.get(spec.name, spec.live_tolerance)


def planned_looks(min_labelled: int, window_labelled: int) -> list[int]:
    """The new version's sample sizes at which it is judged: min_labelled, doubling, up to
    window_labelled (at least one look)."""
    looks = [min_labelled]
    while looks[-1] * 2 <= window_labelled:
        looks.append(looks[-1] * 2)
    return looks


def judge(settings: Settings, ledger, spec: Policy, watch: Watch, now: datetime) -> MonitorResult:
    """The verdict on one watched promotion, from the ledger (no side effects).

    Planned looks (group-sequential, Bonferroni alpha spending): B is judged when its
    labelled predictions reach each of ``planned_looks`` (n_1 = min_labelled, doubling up
    to window_labelled), always on its *first* n_k after the switch, at one-sided level
    (1 - confidence) / K for K looks, so however often the monitor runs, the chance of rolling
    back a version that is not worse stays below 1 - confidence. After the last look held,
    the promotion is cleared and no longer judged. Both sides count only labels received
    within ``monitor.label_delay_s`` of their prediction (a matched label delay: labels that
    come late for the old version do not count where the new one has had no time to get
    them)."""
    m = settings.monitor
    t = watch.switched_at.timestamp()
    since = now.timestamp() - m.window_s
    looks = planned_looks(m.min_labelled, m.window_labelled)
    new = ledger.outcomes(
        watch.model, watch.new, predicted_after=max(t, since), max_delay=m.label_delay_s,
        limit=looks[-1], latest=False,
    )  # fmt: skip
    old = ledger.outcomes(
        watch.model, watch.old, predicted_before=t, predicted_after=t - m.window_s, max_delay=m.label_delay_s,
        limit=m.window_labelled,
    )  # fmt: skip
    metric = spec.live_metric
    reached = [n for n in looks if n <= len(new)]
    if not reached or len(old) < m.min_labelled:
        return MonitorResult(
            watch.model,
            "waiting",
            f"v{watch.new} has {len(new)} and v{watch.old} {len(old)} labelled predictions around the "
            f"switch; {m.min_labelled} each are needed before judging live {metric}",
            version=watch.new,
        )
    n = reached[-1]
    level = 1 - (1 - m.confidence) / len(looks)
    tolerance = tolerance_for(settings, spec)
    comparison = compare(
        metric,
        [o.value for o in new[:n]],
        [o.value for o in old],
        tolerance,
        level,
        direction=spec.live_direction,
    )
    look = f"look {len(reached)} of {len(looks)}"
    text = f"v{watch.new} against v{watch.old} ({look}): {comparison.describe(spec.live_unit)}"
    if comparison.worse:
        state = "worse"
    elif len(reached) == len(looks):
        state, text = "cleared", f"{text}; cleared after the last planned look"
    else:
        state, text = "held", f"{text}; next look at {looks[len(reached)]} labelled predictions"
    return MonitorResult(watch.model, state, text, comparison, watch.new)


def check_model(
    settings: Settings, registry, ledger, model: str, now: datetime | None = None
) -> MonitorResult:
    """Look at one model; roll it back if its promoted champion is worse (module docstring)."""

    now = now or datetime.now(UTC)
    entries = history.entries(settings.state_dir, model)
    watch = watched(entries, model)
    if watch is None:
        return MonitorResult(
            model, "idle", "no promotion to watch (the last champion move was not a promotion)"
        )
    if registry.alias_version(model, CHAMPION) != watch.new:
        return MonitorResult(
            model, "idle", f"the champion is no longer v{watch.new}; run `flywheel model repair {model}`"
        )
    spec = spec_for(settings, registry.models.info(model).task)
    result = judge(settings, ledger, spec, watch, now)
    if result.state != "worse" or result.comparison is None:
        return result
    until = in_cooldown(entries, now, settings.monitor.cooldown_s)
    if until is not None:
        return MonitorResult(
            model,
            "cooldown",
            f"{result.message}; no automatic rollback before {until:%H:%M:%S} UTC (cool-down)",
            result.comparison,
            watch.new,
        )
    evidence = {
        **result.comparison.to_dict(),
        "switched_at": watch.switched_at.isoformat(),
        "promotion": watch.action,
        "looks": planned_looks(settings.monitor.min_labelled, settings.monitor.window_labelled),
        "label_delay_s": settings.monitor.label_delay_s,
    }
    reason = f"live {spec.live_metric} worse: {result.comparison.describe(spec.live_unit)}"
    try:
        registry.rollback(model, watch.old, reason, evidence=evidence, expect_champion=watch.new)
    except RegistryError as exc:
        last = history.entries(settings.state_dir, model)[-1:]
        if last and last[0].action == "auto-rollback" and last[0].previous == watch.new:
            return MonitorResult(model, "idle", f"v{watch.new} was rolled back by another monitor run")
        message = f"{result.message}; rollback refused: {exc}"
        return MonitorResult(model, "failed", message, result.comparison, watch.new)
    return MonitorResult(
        model, "rolled-back", f"champion v{watch.new} -> v{watch.old}: {reason}", result.comparison, watch.new
    )


def monitor_once(
    settings, models: list[str] | None = None, log: Callable[[str], None] = print
) -> list[MonitorResult]:
    """One look at every model (or ``models``); alerts for rollbacks and refused rollbacks,
    each sent once (``AlertOutbox``), also for a rollback whose alert a crash cut off."""

    registry = Registry(settings)
    ledger = LiveLedger.of(settings, readonly=True)
    results = []
    try:
        for model in models or registry.models.names():
            try:
                result = check_model(settings, registry, ledger, model)
            except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                result = MonitorResult(model, "failed", f"monitor failed: {type(exc).__name__}: {exc}")
            results.append(result)
            log(f"monitor {model}: {result.state}: {result.message}")
            send_alerts(settings, registry, model, result, log)
    finally:
        ledger.close()
    return results


class AlertOutbox:
    """Which alerts were sent (``registry/<model>.alerts.jsonl``, written only here): an
    automatic rollback is alerted once, even when a crash came between the rollback and its
    alert; a refused rollback is alerted once per promotion and message."""

    def __init__(self, settings: Settings, model: str):
        self.path = StateLayout.of(settings).alerts(model)

    def sent(self) -> set[str]:
        if not self.path.is_file():
            return set()
        keys = set()
        for line in self.path.read_text().splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: that alert is sent again
        return keys

    def mark(self, key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write("\n" + json.dumps({"key": key, "time": datetime.now(UTC).isoformat()}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def send_alerts(
    settings: Settings, registry, model: str, result: MonitorResult, log: Callable[[str], None]
) -> None:
    """Alert every automatic rollback of the history not alerted yet (and log the live plot
    to the version it took out), and a failed look once."""
    outbox = AlertOutbox(settings, model)
    sent = outbox.sent()
    for entry in history.entries(settings.state_dir, model):
        key = f"auto-rollback:{entry.time.isoformat()}:v{entry.previous}"
        if entry.action != "auto-rollback" or key in sent:
            continue
        text = f"automatic rollback v{entry.previous} -> v{entry.version}: {entry.reason}"
        alert(settings, MonitorResult(model, "rolled-back", text, None, entry.previous), log, entry.evidence)
        if entry.previous is not None:
            log_live_plot(settings, registry, model, entry.previous, log)
        outbox.mark(key)
    if result.state == "failed":
        key = f"failed:v{result.version}:{result.message[:300]}"
        if key not in sent:
            alert(settings, result, log)
            outbox.mark(key)


def alert(
    settings: Settings, result: MonitorResult, log: Callable[[str], None], evidence: dict | None = None
) -> None:
    """An alert: a log line, and a JSON POST to ``monitor.webhook_url`` when set (a failed
    webhook is reported, never raised: the rollback already happened)."""
    log(f"ALERT {result.model}: {result.state}: {result.message}")
    secret = settings.monitor.webhook_url
    if not secret:
        return
    url = secret.get_secret_value()

    if evidence is None and result.comparison is not None:
        evidence = result.comparison.to_dict()
    body = {
        "model": result.model,
        "state": result.state,
        "message": result.message,
        "version": result.version,
        "evidence": evidence,
        "time": datetime.now(UTC).isoformat(),
    }
    request = urllib.request.Request(
        url, json.dumps(body, default=str).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read(1024)
    except Exception as exc:  # noqa: BLE001 - reported: an alert channel must not fail the monitor
        host = urlsplit(url).hostname or "?"  # the path and query often are the credential
        why = redact_text(str(exc)).replace(url, "<webhook>")
        log(f"alert webhook at {host} failed: {type(exc).__name__}: {why}")
