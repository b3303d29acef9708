"""Where everything lives under ``state_dir``: every path of the local state, computed here.

<state_dir>/
    models/<name>/            a model (training.model_store owns it)
        model.json            what it predicts: task, labels, base model
        golden.parquet        the golden set, fixed at bootstrap
        bootstrap.parquet     the bootstrap data (the first "old" data)
        state.json            champion, watermark, windows, a decision under way
        state.lock            the lock its writer takes
        runs/<run id>/        a run being trained (no MLflow version yet)
        versions/v<N>/        version N, the same N as in MLflow
    registry/<name>.lock          alias moves of a model
    registry/<name>.retrain.lock  one retrain of a model at a time
    registry/<name>.history.jsonl promotions, rejections, rollbacks
    review/queue.sqlite       the review queue: items, votes, agreed labels
    privacy/                  subject.key (the pseudonym key), forgotten.sqlite (what was
                              forgotten), forget/<id>.json (an erasure under way), audit.jsonl
    run/                      `flywheel run`: health, resolved config, logs, its lock
    broker.json, broker.log   the embedded broker's pid and port, its log
    feast/ mlflow.db mlartifacts/ flink-checkpoints/ flink-logs/
    flink-tmp/                the stream job JVM's temp folder (one per live job)
    flink-cluster/ flink-savepoints/  a standalone Flink cluster (`flywheel stream cluster`)
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from flywheel.names import check_model_name


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @classmethod
    def of(cls, settings_or_dir) -> StateLayout:
        """The layout of a Settings object's ``state_dir`` (or of a directory)."""
        root = getattr(settings_or_dir, "state_dir", settings_or_dir)
        return cls(Path(root))

    # ---- models ----------------------------------------------------------------------

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        return self.models / check_model_name(name)

    def model_info(self, name: str) -> Path:
        return self.model(name) / "model.json"

    def golden(self, name: str) -> Path:
        return self.model(name) / "golden.parquet"

    def bootstrap_data(self, name: str) -> Path:
        return self.model(name) / "bootstrap.parquet"

    def model_state(self, name: str) -> Path:
        return self.model(name) / "state.json"

    def model_state_lock(self, name: str) -> Path:
        return self.model(name) / "state.lock"

    def runs(self, name: str) -> Path:
        return self.model(name) / "runs"

    def run(self, name: str, run_id: str) -> Path:
        return self.runs(name) / run_id

    def versions(self, name: str) -> Path:
        return self.model(name) / "versions"

    def version(self, name: str, number: int) -> Path:
        return self.versions(name) / f"v{int(number)}"

    # ---- registry ----------------------------------------------------------------------

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    def alias_lock(self, name: str) -> Path:
        return self.registry / f"{check_model_name(name)}.lock"

    def retrain_lock(self, name: str) -> Path:
        return self.registry / f"{check_model_name(name)}.retrain.lock"

    def history(self, name: str) -> Path:
        return self.registry / f"{check_model_name(name)}.history.jsonl"

    def alerts(self, name: str) -> Path:
        """The live monitor's alert outbox (which alerts were sent)."""
        return self.registry / f"{check_model_name(name)}.alerts.jsonl"

    # ---- the running parts -------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def health(self) -> Path:
        return self.run_dir / "health.json"

    @property
    def supervisor_lock(self) -> Path:
        return self.run_dir / "supervisor.lock"

    @property
    def broker_state(self) -> Path:
        return self.root / "broker.json"

    @property
    def broker_log(self) -> Path:
        return self.root / "broker.log"

    @property
    def broker_epoch(self) -> Path:
        """The embedded broker's incarnation: a new one each start (its topics start empty)."""
        return self.root / "broker-epoch.json"

    @property
    def journal(self) -> Path:
        """The edge journal (``flywheel.journal``): one folder per writer process."""
        return self.root / "journal"

    @property
    def fates(self) -> Path:
        """The fate ledger (``pipelines.fates``): every delivered record's recorded fate."""
        return self.root / "fates.sqlite"

    @property
    def settler_state(self) -> Path:
        return self.run_dir / "settler.json"

    @property
    def stream_job_health(self) -> Path:
        return self.run_dir / "stream-job.json"

    @property
    def stream_python_step(self) -> Path:
        """Where the stream job's Python step says which process runs it (thread mode: the JVM)."""
        return self.run_dir / "stream-python-step.json"

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "flywheel.resolved.yaml"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def review_queue(self) -> Path:
        """The review queue: items, reviewers' votes, agreed labels (``pipelines.review_queue``)."""
        return self.root.resolve() / "review" / "queue.sqlite"

    @property
    def legacy_review_ledger(self) -> Path:
        """The ledger of labelled items before the queue had its own store (imported once)."""
        return self.root / "review" / "labelled.jsonl"

    @property
    def live_ledger(self) -> Path:
        """Served predictions and their verified outcomes (``pipelines.live``; the ingestor writes it)."""
        return self.root.resolve() / "live" / "live.sqlite"

    @property
    def feast(self) -> Path:
        return (self.root / "feast").resolve()  # Feast resolves relative paths against its repo

    @property
    def flink_checkpoints(self) -> Path:
        return (self.root / "flink-checkpoints").resolve()

    @property
    def flink_cluster(self) -> Path:
        """A standalone Flink cluster's config, logs, pids and address (``pipelines.flink_cluster``)."""
        return (self.root / "flink-cluster").resolve()

    @property
    def flink_savepoints(self) -> Path:
        return (self.root / "flink-savepoints").resolve()

    @property
    def flink_tmp(self) -> Path:
        """The stream job JVM's temp folders, one per job (``pipelines.jvm_tmp`` owns it)."""
        return (self.root / "flink-tmp").resolve()

    @property
    def flink_logs(self) -> Path:
        return (self.root / "flink-logs").resolve()

    @property
    def mlflow_db(self) -> Path:
        return self.root.resolve() / "mlflow.db"

    @property
    def images(self) -> Path:
        """The local image store: content-addressed PNGs of image tasks' samples."""
        return self.root.resolve() / "images"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root.resolve() / "mlartifacts"

    # ---- privacy (flywheel.privacy, orchestration.forget) ------------------------------

    @property
    def privacy(self) -> Path:
        return self.root.resolve() / "privacy"

    @property
    def subject_key(self) -> Path:
        """The per-install key of subject pseudonyms (``privacy.subject_key`` overrides it)."""
        return self.privacy / "subject.key"

    @property
    def forgotten(self) -> Path:
        """Event ids and subjects that were forgotten (``flywheel.privacy.Forgotten``)."""
        return self.privacy / "forgotten.sqlite"

    @property
    def forget_journals(self) -> Path:
        """One journal per erasure under way (``orchestration.forget``)."""
        return self.privacy / "forget"

    @property
    def audit_log(self) -> Path:
        """Deletion receipts, append-only (``orchestration.forget``)."""
        return self.privacy / "audit.jsonl"


SECRET_FILES = (
    "mlflow.db",
    "fates.sqlite",
    "review/queue.sqlite",
    "live/live.sqlite",
    "privacy/subject.key",
    "privacy/forgotten.sqlite",
    "run/flywheel.resolved.yaml",
)


def secure_state_dir(root: Path) -> None:
    """The state dir holds personal data (feedback texts, review answers) and secrets (the
    resolved config): the folder is made 0700 and the stores in it 0600, whatever modes they
    had (a folder made before this rule, or by a looser umask)."""

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if stat.S_IMODE(root.stat().st_mode) != 0o700:
            root.chmod(0o700)
        for name in SECRET_FILES:
            for path in (root / name, *root.glob(name + "-*")):  # with SQLite's -wal and -shm
                if path.is_file() and stat.S_IMODE(path.stat().st_mode) != 0o600:
                    path.chmod(0o600)
    except PermissionError as exc:  # not ours (a shared mount): its owner decides its modes
        logging.getLogger("flywheel").warning("could not restrict %s to its owner: %s", root, exc)
