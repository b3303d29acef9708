"""Kafka helpers shared by every stage: topic names, client configs, topic creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.broker import current_epoch
from flywheel.errors import BrokerError, ConfigError
from flywheel.events import MAX_EVENT_BYTES, MAX_RECORD_BYTES
from flywheel.lazy import lazy_import
from flywheel.redact import REDACTED, SECRET_HINTS

if TYPE_CHECKING:
    from flywheel.settings import KafkaSettings, Settings


_confluent_kafka = lazy_import("confluent_kafka")
_kafka_admin = lazy_import("confluent_kafka.admin")


# librdkafka's own log lines (connection refused every 50 ms, ...) go to Python logging
# instead of raw stderr; Flywheel reports the actionable error itself.
RDKAFKA_LOGGER = logging.getLogger("flywheel.rdkafka")


@dataclass(frozen=True)
class Topics:
    """The topics of the loop, under a configurable prefix.

    Every event in ``raw`` ends in exactly one of clean, review, dlq or duplicates
    (the audit trail of dropped duplicates: event_id and source offset).
    """

    raw: str
    clean: str
    review: str
    dlq: str
    duplicates: str
    predictions: str  # the prediction log: every answer of POST /v1/predict (not part of the accounting)

    @classmethod
    def from_prefix(cls, prefix: str) -> Topics:
        return cls(
            *(f"{prefix}.{name}" for name in ("raw", "clean", "review", "dlq", "duplicates", "predictions"))
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls.from_prefix(settings.kafka.topic_prefix)

    def all(self) -> list[str]:
        return [self.raw, self.clean, self.review, self.dlq, self.duplicates, self.predictions]


def group_id(settings: Settings, base: str) -> str:
    """The consumer group to use for ``base`` (``stream.group_id``, ``feast.group_id``).

    On the embedded broker the group is per epoch (``base.e<N>``, ``flywheel.broker``): a
    process of the old epoch that commits after the broker came back empty (the chaos drill
    saw an ingestor commit offset 4,624 into a fresh topic) commits to its own epoch's
    group, never past the end of the new topics, where tansu answers an empty fetch forever
    instead of "offset out of range"."""

    epoch = current_epoch(settings)
    return f"{base}.e{epoch.number}" if epoch is not None else base


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka config: bootstrap servers, security passthrough, user extras, then ``extra``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": RDKAFKA_LOGGER,
    }
    conf.update(security_properties(settings.kafka))
    conf.update(settings.kafka.extra)
    conf.update(extra)
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """An idempotent producer: acks=all, no duplicates on retry, bounded delivery time."""
    return client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": int(settings.kafka.delivery_timeout_s * 1000),
            # room for a maximal event (MAX_EVENT_BYTES) with its key and headers
            "message.max.bytes": MAX_EVENT_BYTES + 64 * 1024,
            **extra,
        },
    )


def unreachable_hint(settings: Settings) -> str:
    if settings.embedded_broker:
        return "start the embedded broker with `flywheel broker start`"
    return "check FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS and the security settings"


def check_reachable(settings: Settings, timeout_s: float = 5.0) -> set[str]:
    """Return the cluster's topic names, or raise BrokerError saying what to do."""

    admin = _kafka_admin.AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except _confluent_kafka.KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers} within {timeout_s:.0f}s "
            f"({exc.args[0]}); {unreachable_hint(settings)}"
        ) from exc
    return set(metadata.topics)


def ensure_topics(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Create the loop's topics if missing (idempotent). Returns the ones created."""

    topics = Topics.from_settings(settings).all()
    existing = check_reachable(settings)
    wanted = [t for t in topics if t not in existing]
    if not wanted:
        return []
    admin = _kafka_admin.AdminClient(client_config(settings))
    futures = admin.create_topics(
        [
            _kafka_admin.NewTopic(
                t,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                config={
                    "max.message.bytes": str(MAX_RECORD_BYTES),
                    "retention.ms": str(int(settings.kafka.retention_hours * 3600 * 1000)),
                },
            )
            for t in wanted
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(topic)
        except _confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != _confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"could not create topic {topic}: {exc.args[0].str()}") from exc
    return created


class KafkaProperties(dict[str, str]):
    """Client properties whose repr (and so str, logs, test failures) hides secret values."""

    def __repr__(self) -> str:
        shown = {
            k: REDACTED if v and any(h in k.lower() for h in SECRET_HINTS) else v for k, v in self.items()
        }
        return f"{type(self).__name__}({shown!r})"


def security_properties(kafka: KafkaSettings) -> KafkaProperties:
    """The one translation of ``kafka.security_protocol``, ``sasl_*`` and ``ssl_*``.

    Named as librdkafka names them, so ``client_config`` uses them as they are;
    ``java_kafka_properties`` derives the Java client's from these, rewriting only
    what Java names differently. Raises ConfigError when the client
    certificate and its key are not set together.
    """
    if bool(kafka.ssl_certificate_location) != bool(kafka.ssl_key_location):
        raise ConfigError(
            "kafka.ssl_certificate_location and kafka.ssl_key_location must be set together "
            "(the client certificate and its private key)"
        )
    props = KafkaProperties({"security.protocol": kafka.security_protocol})
    if kafka.sasl_mechanism:
        props["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        props["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password:
        props["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.ssl_ca_location:
        props["ssl.ca.location"] = str(kafka.ssl_ca_location)
    if kafka.ssl_certificate_location:
        props["ssl.certificate.location"] = str(kafka.ssl_certificate_location)
    if kafka.ssl_key_location:
        props["ssl.key.location"] = str(kafka.ssl_key_location)
    if kafka.ssl_key_password:
        props["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return props


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's JaasConfig honours backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def java_kafka_properties(settings: Settings) -> KafkaProperties:
    """The same connection settings as ``client_config``, as Java Kafka client properties
    for the Flink job (source and sinks).

    Derived from ``security_properties``; only what Java names differently is rewritten:
    the SASL credentials become one escaped JAAS line, the CA a PEM trust store, and the
    client certificate and key are inlined into a PEM key store (so a job shipped to a
    cluster carries them). Then ``kafka.extra`` verbatim (use names both clients know).
    """
    security = security_properties(settings.kafka)
    props = KafkaProperties()
    for key, value in security.items():
        match key:
            case "sasl.mechanism":
                module = "plain.PlainLoginModule" if value == "PLAIN" else "scram.ScramLoginModule"
                username = _jaas_quote(security.get("sasl.username", ""))
                password = _jaas_quote(security.get("sasl.password", ""))
                props[key] = value
                props["sasl.jaas.config"] = (
                    f"org.apache.kafka.common.security.{module} required "
                    f"username={username} password={password};"
                )
            case "sasl.username" | "sasl.password":
                pass  # in the JAAS line
            case "ssl.ca.location":
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = value
            case "ssl.certificate.location":
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.certificate.chain"] = _read_pem(value, "ssl_certificate_location")
            case "ssl.key.location":
                props["ssl.keystore.key"] = _read_pem(value, "ssl_key_location")
            case _:
                props[key] = value
    props.update(settings.kafka.extra)
    return props


def _read_pem(path: str, setting: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kafka.{setting} = {path}: cannot read a PEM file there ({exc})") from exc
