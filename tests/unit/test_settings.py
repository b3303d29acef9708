from __future__ import annotations

import pytest

from flywheel.errors import ConfigError
from flywheel.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_run_embedded():
    s = load_settings()
    assert s.embedded_broker
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.stream.review_threshold == 0.5
    assert s.stream.dedupe_ttl_hours == 168
    assert s.mlflow_tracking_uri.startswith("sqlite:///")


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "flywheel.yaml"
    cfg.write_text("kafka:\n  topic_prefix: fromfile\n  partitions: 2\nstream:\n  review_threshold: 0.3\n")
    assert load_settings().kafka.topic_prefix == "fromfile"  # ./flywheel.yaml is picked up
    monkeypatch.setenv("FLYWHEEL_KAFKA__TOPIC_PREFIX", "fromenv")
    s = load_settings(cfg)
    assert (s.kafka.topic_prefix, s.kafka.partitions, s.stream.review_threshold) == (
        "fromenv",
        2,
        0.3,
    )
    assert load_settings(cfg, state_dir="/x").state_dir.as_posix() == "/x"


def test_unknown_yaml_key_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: x:1\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server: Extra inputs"):
        load_settings(cfg)


def test_unknown_env_names_are_errors(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKAA", "1")
    with pytest.raises(ConfigError, match="FLYWHEEL_KAFKAA"):
        load_settings()
    monkeypatch.delenv("FLYWHEEL_KAFKAA")
    monkeypatch.setenv("FLYWHEEL_KAFKA__NOPE", "1")
    with pytest.raises(ConfigError, match=r"kafka\.nope"):
        load_settings()


def test_invalid_values_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_STREAM__REVIEW_THRESHOLD", "1.7")
    with pytest.raises(ConfigError, match=r"stream\.review_threshold"):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(tmp_path / "list.yaml")


def test_per_model_threshold():
    s = load_settings(stream={"review_threshold_per_model": {"fraud": 0.8}})
    assert s.stream.threshold_for("fraud") == 0.8
    assert s.stream.threshold_for("other") == 0.5
    with pytest.raises(ConfigError, match="must be in"):
        load_settings(stream={"review_threshold_per_model": {"fraud": 2}})


def test_secrets_are_redacted_but_usable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS", "kafka:9093")
    s = load_settings(kafka={"extra": {"sasl.oauthbearer.client.secret": "s3"}})
    shown = s.redacted()
    assert "hunter2" not in str(shown) and "s3" not in str(shown.get("kafka", {}).get("extra"))
    from flywheel.kafka import security_properties

    assert security_properties(s.kafka)["sasl.password"] == "hunter2"
    assert not s.embedded_broker and s.bootstrap_servers == "kafka:9093"


def test_credentials_inside_uris_and_connection_strings_are_redacted():
    s = load_settings(
        mlflow={"tracking_uri": "postgresql://flywheel:pg-s3cret@db:5432/mlflow"},
        feast={"redis_connection_string": "redis:6379,password=r3dis-pw,ssl=true"},
        kafka={
            "extra": {
                "sasl.oauthbearer.config": "clientId=app clientSecret=oauth-pw scope=x",
                "sasl.oauthbearer.token.endpoint.url": "https://u:url-pw@idp/token?api_key=k3y",
                "client.id": "flywheel",
            }
        },
    )
    shown = str(s.redacted())
    for secret in ("pg-s3cret", "r3dis-pw", "oauth-pw", "url-pw", "k3y"):
        assert secret not in shown, secret
    assert "postgresql://flywheel:**********@db:5432/mlflow" in shown
    assert "'client.id': 'flywheel'" in shown  # plain values are left alone


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:p@ss-PW@db:5432/x", "postgresql://u:**********@db:5432/x"),
        ("postgresql://u:a/b-PW@db", "postgresql://u:**********@db"),
        ("https://ghp_TOKEN@github.com/x", "https://**********@github.com/x"),
        ("user:PW@host:6379", "user:**********@host:6379"),
        ("rediss://:pw@host", "rediss://:**********@host"),
        ("http://host/p?sig=abc&x=1", "http://host/p?sig=**********&x=1"),
        ("Endpoint=https;AccountKey=KEY123;", "Endpoint=https;AccountKey=**********;"),
        ("write to me@example.com", "write to me@example.com"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        # HTTP credentials (an attacker's review found these left in clear)
        ("Authorization: Bearer Zq9SECRETqq", "Authorization: Bearer **********"),
        ("GET /x?Authorization=Bearer%20Zq9SECRETqq&y=1", "GET /x?Authorization=Bearer%20**********&y=1"),
        (
            "https://h/cb?jwt=eyJhbGciOi.x.y&sessionid=Zq9SECRETqq",
            "https://h/cb?jwt=**********&sessionid=**********",
        ),
        ("basic dXNlcjpwYXNz", "basic **********"),
        ("the token is ok", "the token is ok"),
    ],
)
def test_redact_text(text, shown):
    from flywheel.redact import redact_text

    assert redact_text(text) == shown


def test_java_properties_escape_jaas_and_inline_the_client_certificate(tmp_path):
    from flywheel.kafka import Topics, java_kafka_properties
    from pipelines.stream_job import source_ddl

    (tmp_path / "c.pem").write_text("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n")
    (tmp_path / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n")
    s = load_settings(
        kafka={
            "bootstrap_servers": "k:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": 'u"ser',
            "sasl_password": 'p"a\\ss\nword=x;',
            "ssl_certificate_location": str(tmp_path / "c.pem"),
            "ssl_key_location": str(tmp_path / "k.pem"),
            "ssl_key_password": "kp'w",
            "extra": {"client.id": "flywheel"},
        }
    )
    props = java_kafka_properties(s)
    assert props["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="u\\"ser" password="p\\"a\\\\ss\\nword=x;";'
    )
    assert "BBB" in props["ssl.keystore.key"] and "AAA" in props["ssl.keystore.certificate.chain"]
    assert props["ssl.key.password"] == "kp'w" and props["client.id"] == "flywheel"
    ddl = source_ddl(s, Topics.from_prefix("t"), None)
    assert "'properties.ssl.key.password' = 'kp''w'" in ddl
    assert "'properties.fetch.max.wait.ms' = '50'" in ddl  # tansu waits this long before answering


def test_settings_renamed_with_the_two_gates_say_their_new_names():
    with pytest.raises(ConfigError, match=r"`gate` is now `promotion`"):
        load_settings(gate={"confidence": 0.9})
    with pytest.raises(ConfigError, match=r"`training.gate` is now `training.data_gate`"):
        load_settings(training={"gate": {"max_text_chars": 100}})
    assert (
        load_settings(training={"data_gate": {"max_text_chars": 100}}).training.data_gate.max_text_chars
        == 100
    )


def test_more_stream_subtasks_than_partitions_is_refused_on_the_embedded_broker():
    with pytest.raises(ConfigError, match=r"raise kafka\.partitions to at least stream\.parallelism"):
        load_settings(stream={"parallelism": 4}, kafka={"partitions": 3})
    assert load_settings(stream={"parallelism": 3}, kafka={"partitions": 3}).stream.parallelism == 3
    external = load_settings(
        stream={"parallelism": 4}, kafka={"partitions": 3, "bootstrap_servers": "k:9092"}
    )
    assert external.stream.parallelism == 4  # an external cluster's topics are sized by its owner


@pytest.mark.parametrize(
    ("review", "said"),
    [
        ({"reviewers": {"alice": {"token": "short"}}}, "at least 16 characters"),
        ({"reviewers": {"Alice!": {"token": "x" * 20}}}, "reviewer id 'Alice!' is not valid"),
        ({"reviewers": {"a": {"token": "x" * 20}, "b": {"token": "x" * 20}}}, "share a token"),
        ({"reviewers": {"a": {"token": "x" * 20}}, "required_reviews": 2}, "only 1 reviewer"),
        ({"required_reviews": 4}, "less than or equal to 3"),
    ],
)
def test_review_settings_say_what_is_wrong(review, said):
    with pytest.raises(ConfigError, match=said):
        load_settings(review=review)


def test_reviewer_tokens_are_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REVIEW__REVIEWERS", '{"alice": {"token": "alice-token-0123456789"}}')
    s = load_settings()
    assert s.review.reviewers["alice"].token.get_secret_value() == "alice-token-0123456789"
    assert "alice-token-0123456789" not in s.model_dump_json() and "alice-token" not in repr(s)
    assert "alice-token" not in str(s.redacted())  # `flywheel config show`


def test_the_redis_password_reaches_feast_quoted_and_stays_secret():
    from feature_repo.store import redis_connection_string

    s = load_settings(
        feast={"online_store": "redis", "redis_connection_string": "r:6379", "redis_password": "007"}
    )
    assert redis_connection_string(s) == 'r:6379,password="007"'  # a string for Feast, not the number 7
    assert "007" not in str(s.redacted())
    with pytest.raises(ConfigError, match="may not contain ','"):
        load_settings(feast={"redis_password": "a,b"})


def test_mlflow_credentials_come_together_and_the_password_stays_secret():
    with pytest.raises(ConfigError, match="together"):
        load_settings(mlflow={"username": "admin"})
    s = load_settings(mlflow={"tracking_uri": "http://m:5000", "username": "admin", "password": "pw-123456"})
    assert "pw-123456" not in str(s.redacted()) and s.mlflow.password.get_secret_value() == "pw-123456"


def test_the_feast_sql_registry_uri_is_a_secret_and_reaches_feast():
    from feature_repo.store import repo_config

    uri = "postgresql+psycopg2://feast:pw-98765@db:5432/feast"
    s = load_settings(feast={"registry_uri": uri})
    assert "pw-98765" not in str(s.redacted())
    registry = repo_config(s).registry
    assert (registry.registry_type, registry.path) == ("sql", uri)
