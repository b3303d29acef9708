"""Kafka helpers shared by every stage: topic names, client configs, topic creation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.errors import BrokerError, ConfigError
from flywheel.events import MAX_EVENT_BYTES, MAX_RECORD_BYTES

if TYPE_CHECKING:
    from flywheel.settings import Settings


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

    @classmethod
    def from_prefix(cls, prefix: str) -> Topics:
        return cls(*(f"{prefix}.{name}" for name in ("raw", "clean", "review", "dlq", "duplicates")))

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls.from_prefix(settings.kafka.topic_prefix)

    def all(self) -> list[str]:
        return [self.raw, self.clean, self.review, self.dlq, self.duplicates]


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka config: bootstrap servers, security passthrough, user extras, then ``extra``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": RDKAFKA_LOGGER,
    }
    conf.update(settings.kafka.security_config())
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
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers} within {timeout_s:.0f}s "
            f"({exc.args[0]}); {unreachable_hint(settings)}"
        ) from exc
    return set(metadata.topics)


def ensure_topics(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Create the loop's topics if missing (idempotent). Returns the ones created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = Topics.from_settings(settings).all()
    existing = check_reachable(settings)
    wanted = [t for t in topics if t not in existing]
    if not wanted:
        return []
    admin = AdminClient(client_config(settings))
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                config={"max.message.bytes": str(MAX_RECORD_BYTES)},
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
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"could not create topic {topic}: {exc.args[0].str()}") from exc
    return created


def _jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's JaasConfig honours backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def java_kafka_properties(settings: Settings) -> dict[str, str]:
    """The same connection settings as ``client_config``, as Java Kafka client properties.

    This is the one translation of the security settings for the Flink job (source and
    sinks): SASL as an escaped JAAS line, PEM trust store, client certificate and key
    (inlined, so a job shipped to a cluster carries them) with the key's password, then
    ``kafka.extra`` verbatim (use property names both clients know).
    """
    k = settings.kafka
    props: dict[str, str] = {"security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        props["sasl.mechanism"] = k.sasl_mechanism
        module = "plain.PlainLoginModule" if k.sasl_mechanism == "PLAIN" else "scram.ScramLoginModule"
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        props["sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.{module} required "
            f"username={_jaas_quote(k.sasl_username or '')} password={_jaas_quote(password)};"
        )
    if k.ssl_ca_location:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(k.ssl_ca_location)
    if k.ssl_certificate_location or k.ssl_key_location:
        if not (k.ssl_certificate_location and k.ssl_key_location):
            raise ConfigError(
                "kafka.ssl_certificate_location and kafka.ssl_key_location must be set together "
                "(the client certificate and its private key)"
            )
        props["ssl.keystore.type"] = "PEM"
        props["ssl.keystore.certificate.chain"] = _read_pem(
            k.ssl_certificate_location, "ssl_certificate_location"
        )
        props["ssl.keystore.key"] = _read_pem(k.ssl_key_location, "ssl_key_location")
    if k.ssl_key_password:
        props["ssl.key.password"] = k.ssl_key_password.get_secret_value()
    props.update(k.extra)
    return props


def _read_pem(path, setting: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kafka.{setting} = {path}: cannot read a PEM file there ({exc})") from exc
