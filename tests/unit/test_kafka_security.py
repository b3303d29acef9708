"""The Kafka security settings reach both clients through one translation.

``security_properties`` (librdkafka names) is what ``client_config`` uses as is and what
``java_kafka_properties`` (the Flink job) derives its properties from; each case below
checks all three.
"""

from __future__ import annotations

import pytest

from flywheel.errors import ConfigError
from flywheel.kafka import client_config, java_kafka_properties, security_properties
from flywheel.settings import load_settings

CERT = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required"


@pytest.fixture
def pem_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./flywheel.yaml from elsewhere
    (tmp_path / "ca.pem").write_text(CERT)
    (tmp_path / "c.pem").write_text(CERT)
    (tmp_path / "k.pem").write_text(KEY)
    return tmp_path


def _settings(kafka: dict, d) -> object:
    kafka = {k: v.format(d=d) if isinstance(v, str) else v for k, v in kafka.items()}
    return load_settings(kafka={"bootstrap_servers": "k:9093", **kafka})


# (settings, librdkafka properties = security_properties, Java properties); "{d}" is the
# folder holding ca.pem, c.pem (CERT) and k.pem (KEY).
CASES = {
    "plaintext": ({}, {"security.protocol": "PLAINTEXT"}, {"security.protocol": "PLAINTEXT"}),
    "ssl-with-ca": (
        {"security_protocol": "SSL", "ssl_ca_location": "{d}/ca.pem"},
        {"security.protocol": "SSL", "ssl.ca.location": "{d}/ca.pem"},
        {
            "security.protocol": "SSL",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": "{d}/ca.pem",
        },
    ),
    "mutual-tls-with-key-password": (
        {
            "security_protocol": "SSL",
            "ssl_ca_location": "{d}/ca.pem",
            "ssl_certificate_location": "{d}/c.pem",
            "ssl_key_location": "{d}/k.pem",
            "ssl_key_password": "kp",
        },
        {
            "security.protocol": "SSL",
            "ssl.ca.location": "{d}/ca.pem",
            "ssl.certificate.location": "{d}/c.pem",
            "ssl.key.location": "{d}/k.pem",
            "ssl.key.password": "kp",
        },
        {
            "security.protocol": "SSL",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": "{d}/ca.pem",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": CERT,
            "ssl.keystore.key": KEY,
            "ssl.key.password": "kp",
        },
    ),
    "mutual-tls-without-key-password": (
        {
            "security_protocol": "SSL",
            "ssl_certificate_location": "{d}/c.pem",
            "ssl_key_location": "{d}/k.pem",
        },
        {
            "security.protocol": "SSL",
            "ssl.certificate.location": "{d}/c.pem",
            "ssl.key.location": "{d}/k.pem",
        },
        {
            "security.protocol": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": CERT,
            "ssl.keystore.key": KEY,
        },
    ),
    "sasl-ssl-plain": (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": "pw",
            "ssl_ca_location": "{d}/ca.pem",
        },
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "pw",
            "ssl.ca.location": "{d}/ca.pem",
        },
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": f'{PLAIN} username="u" password="pw";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": "{d}/ca.pem",
        },
    ),
    "sasl-plaintext-scram-256": (
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "u",
            "sasl_password": "pw",
        },
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "u",
            "sasl.password": "pw",
        },
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.jaas.config": f'{SCRAM} username="u" password="pw";',
        },
    ),
    "sasl-ssl-scram-512-escaped-with-mutual-tls": (
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": 'u"ser',
            "sasl_password": 'p"a\\ss\nword=x;',
            "ssl_certificate_location": "{d}/c.pem",
            "ssl_key_location": "{d}/k.pem",
            "ssl_key_password": "kp'w",
        },
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": 'u"ser',
            "sasl.password": 'p"a\\ss\nword=x;',
            "ssl.certificate.location": "{d}/c.pem",
            "ssl.key.location": "{d}/k.pem",
            "ssl.key.password": "kp'w",
        },
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": f'{SCRAM} username="u\\"ser" password="p\\"a\\\\ss\\nword=x;";',
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": CERT,
            "ssl.keystore.key": KEY,
            "ssl.key.password": "kp'w",
        },
    ),
    "sasl-mechanism-without-credentials": (
        {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"},
        {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": f'{PLAIN} username="" password="";',
        },
    ),
    "key-password-alone": (
        {"security_protocol": "SSL", "ssl_key_password": "kp"},
        {"security.protocol": "SSL", "ssl.key.password": "kp"},
        {"security.protocol": "SSL", "ssl.key.password": "kp"},
    ),
}


@pytest.mark.parametrize(("kafka", "librdkafka", "java"), CASES.values(), ids=CASES.keys())
def test_each_combination_reaches_both_clients(pem_dir, kafka, librdkafka, java):
    s = _settings(kafka, pem_dir)
    librdkafka = {k: v.format(d=pem_dir) for k, v in librdkafka.items()}
    java = {k: v.format(d=pem_dir) if "{d}" in v else v for k, v in java.items()}
    assert security_properties(s.kafka) == librdkafka
    conf = client_config(s)
    assert conf.pop("bootstrap.servers") == "k:9093" and conf.pop("logger")
    assert conf == librdkafka
    assert java_kafka_properties(s) == java


def test_both_clients_take_the_security_properties_from_the_one_translation(pem_dir, monkeypatch):
    import flywheel.kafka as kafka

    def translated(k):
        return kafka.KafkaProperties(
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"}
        )

    monkeypatch.setattr(kafka, "security_properties", translated)
    s = _settings({}, pem_dir)
    assert client_config(s)["ssl.endpoint.identification.algorithm"] == "none"
    assert java_kafka_properties(s)["ssl.endpoint.identification.algorithm"] == "none"
    assert client_config(s)["security.protocol"] == java_kafka_properties(s)["security.protocol"] == "SSL"


def test_extra_is_passed_verbatim_to_both_after_the_security_properties(pem_dir):
    s = _settings(
        {"security_protocol": "SSL", "extra": {"client.id": "fw", "security.protocol": "SASL_SSL"}},
        pem_dir,
    )
    for props in (client_config(s), java_kafka_properties(s)):
        assert props["client.id"] == "fw" and props["security.protocol"] == "SASL_SSL"


@pytest.mark.parametrize("only", ["ssl_certificate_location", "ssl_key_location"])
def test_certificate_and_key_must_be_set_together_for_both_clients(pem_dir, only):
    s = _settings({"security_protocol": "SSL", only: "{d}/c.pem"}, pem_dir)
    for build in (lambda: client_config(s), lambda: java_kafka_properties(s)):
        with pytest.raises(ConfigError, match="must be set together"):
            build()


def test_an_unreadable_pem_is_named_where_it_is_inlined(pem_dir):
    s = _settings(
        {
            "security_protocol": "SSL",
            "ssl_certificate_location": "{d}/missing.pem",
            "ssl_key_location": "{d}/k.pem",
        },
        pem_dir,
    )
    assert client_config(s)["ssl.certificate.location"] == f"{pem_dir}/missing.pem"  # librdkafka reads it
    with pytest.raises(ConfigError, match=r"kafka\.ssl_certificate_location = .*missing\.pem"):
        java_kafka_properties(s)


def test_secrets_stay_out_of_reprs(pem_dir):
    s = _settings(CASES["sasl-ssl-scram-512-escaped-with-mutual-tls"][0], pem_dir)
    rdkafka, java = security_properties(s.kafka), java_kafka_properties(s)
    for props in (rdkafka, java):
        shown = f"{props!r} {props}"
        for secret in ("word=x", "kp'w", "BBB"):  # SASL password, key password, private key
            assert secret not in shown, (secret, shown)
        assert "SCRAM-SHA-512" in shown
    assert "sasl.password" in repr(rdkafka) and 'u"ser' in repr(rdkafka)  # the user is not secret
    assert "sasl.jaas.config" in repr(java) and "AAA" in repr(java)  # the certificate is public
