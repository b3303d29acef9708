"""The review queue's store and rules (real SQLite; a fake Kafka client records what is sent)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from flywheel.events import validate_event
from flywheel.model_info import ModelInfo, write_model_info
from flywheel.settings import load_settings
from pipelines import review
from pipelines.records import Origin, RoutedRecord
from pipelines.review_queue import NotAllowed, NotInQueue, ReviewError, ReviewQueue
from tests.helpers import make_event, png_b64

TOKENS = {"alice": "a" * 20, "bob": "b" * 20, "carol": "c" * 20}


def settings_for(tmp_path, required=1, lead="carol"):
    reviewers = {name: {"token": t, "lead": name == lead} for name, t in TOKENS.items()}
    s = load_settings(state_dir=tmp_path, review={"reviewers": reviewers, "required_reviews": required})
    write_model_info(tmp_path, ModelInfo("sentiment", "text-classification", ["negative", "positive"], ""))
    return s


def item(i: int, confidence: float, **overrides) -> RoutedRecord:
    event = validate_event(
        make_event(i, prediction={"label": "positive", "confidence": confidence}, feedback=None, **overrides)
    )
    return RoutedRecord.of(event, True, 0, Origin("t.raw", 0, i))


@dataclass
class FakeClient:
    sent: list[dict] = field(default_factory=list)
    fail_after_send: bool = False

    def submit_many(self, events):
        from pipelines.sdk import SubmitResult

        events = list(events)
        self.sent += events
        if self.fail_after_send:
            raise KeyboardInterrupt("killed between send and mark")  # what kill -9 leaves: sent, not marked
        return SubmitResult(accepted=[e["event_id"] if isinstance(e, dict) else e.event_id for e in events])

    def close(self) -> None:
        pass


def test_the_most_uncertain_item_comes_first_and_an_answered_or_skipped_one_not_again(tmp_path):
    s = settings_for(tmp_path)
    q = ReviewQueue(s)
    assert q.add([item(1, 0.9), item(2, 0.41), item(3, 0.6)]) == 3
    assert q.add([item(2, 0.41)]) == 0  # one item per event id
    assert q.next_for("sentiment", "alice").event_id == "evt-000002"
    assert [i.event_id for i in q.pending("sentiment")] == ["evt-000002", "evt-000003", "evt-000001"]
    review.answer(s, q, "sentiment", "evt-000002", "alice", None)  # skip: not for alice again
    assert q.next_for("sentiment", "alice").event_id == "evt-000003"
    assert q.next_for("sentiment", "bob").event_id == "evt-000002"  # others still see it
    assert q.stats("sentiment", "alice").waiting_for_you == 2
    assert q.next_for("other-model", "alice") is None


def test_one_review_agrees_at_once_and_is_sent_once_past_its_undo_window(tmp_path):
    s = settings_for(tmp_path)
    q = ReviewQueue(s)
    q.add([item(1, 0.3)])
    verdict = review.answer(s, q, "sentiment", "evt-000001", "alice", "negative", undo_window_s=10)
    assert (verdict.status, verdict.answer) == ("agreed", "negative")
    client = FakeClient()
    assert review.send_due(q, client) == 0  # still undoable
    assert review.send_due(q, client, now=verdict_time(q) + 11) == 1
    (event,) = client.sent
    checked = validate_event(event)
    assert (checked.event_id, checked.label_source, checked.source) == (
        "evt-000001.review",
        "review",
        "review:alice",
    )
    assert checked.verified_label == "negative"
    assert review.send_due(q, client, now=verdict_time(q) + 12) == 0  # sent once
    assert q.stats("sentiment").sent == 1


def verdict_time(q: ReviewQueue) -> float:
    (at,) = q.db.execute("SELECT MAX(at) FROM votes").fetchone()
    return at


def test_two_reviewers_must_agree_disagreement_escalates_and_a_lead_settles(tmp_path):
    s = settings_for(tmp_path, required=2)
    q = ReviewQueue(s)
    q.add([item(1, 0.3), item(2, 0.4)])
    assert review.answer(s, q, "sentiment", "evt-000001", "alice", "positive").status == "pending"
    client = FakeClient()
    assert review.send_due(q, client) == 0  # one answer is not a label yet
    assert review.answer(s, q, "sentiment", "evt-000001", "bob", "positive").status == "agreed"
    assert review.answer(s, q, "sentiment", "evt-000002", "alice", "positive").status == "pending"
    assert review.answer(s, q, "sentiment", "evt-000002", "bob", "negative").status == "escalated"
    assert review.send_due(q, client) == 1
    assert [e["source"] for e in client.sent] == ["review:alice+bob"]
    stats = q.stats("sentiment")
    assert (stats.agreed, stats.escalated, stats.pending) == (1, 1, 0)
    rates = {r.reviewer: (r.decided, r.agreed, r.agreement) for r in stats.reviewers}
    assert rates == {"alice": (2, 1, 0.5), "bob": (2, 1, 0.5)}
    (escalated, answers) = q.escalated("sentiment")[0]
    assert escalated.event_id == "evt-000002" and answers == {"alice": "positive", "bob": "negative"}
    with pytest.raises(NotAllowed, match="only a lead"):
        review.answer(s, q, "sentiment", "evt-000002", "alice", "negative")
    settled = review.answer(s, q, "sentiment", "evt-000002", "carol", "negative")
    assert (settled.status, settled.answer) == ("agreed", "negative")
    assert review.send_due(q, client) == 1
    assert client.sent[-1]["source"] == "review:bob+carol" and client.sent[-1]["feedback"] == {
        "label": "negative"
    }


def test_undo_takes_back_the_last_answer_only_inside_its_window_and_before_it_is_sent(tmp_path):
    s = settings_for(tmp_path, required=2)
    q = ReviewQueue(s)
    q.add([item(1, 0.3), item(2, 0.4)])
    review.answer(s, q, "sentiment", "evt-000001", "alice", "positive", undo_window_s=10)
    review.answer(s, q, "sentiment", "evt-000001", "bob", "positive", undo_window_s=10)
    assert q.status("evt-000001") == "agreed"
    assert q.undo("sentiment", "bob") == "evt-000001"
    assert q.status("evt-000001") == "pending" and q.get("evt-000001").votes == 1
    assert q.undo("sentiment", "carol") is None  # nothing of carol's
    review.answer(s, q, "sentiment", "evt-000002", "alice", "negative", undo_window_s=0)
    with pytest.raises(ReviewError, match="final"):
        q.undo("sentiment", "alice")  # alice's last answer (evt-000002) had no window
    with pytest.raises(ReviewError, match="already answered"):
        review.answer(s, q, "sentiment", "evt-000001", "alice", "negative")


def test_bad_answers_and_unknown_reviewers_are_refused_and_nothing_is_recorded(tmp_path):
    s = settings_for(tmp_path)
    q = ReviewQueue(s)
    q.add([item(1, 0.3)])
    with pytest.raises(ReviewError, match=r"'furious' .* is not one of model 'sentiment''s answers"):
        review.answer(s, q, "sentiment", "evt-000001", "alice", "furious")
    with pytest.raises(NotAllowed, match="not one of the configured reviewers"):
        review.answer(s, q, "sentiment", "evt-000001", "mallory", "positive")
    with pytest.raises(NotInQueue):
        review.answer(s, q, "sentiment", "evt-404", "alice", "positive")
    with pytest.raises(NotInQueue):  # an item is answered under its own model only
        q.vote("other", "evt-000001", "alice", "positive")
    assert q.get("evt-000001").votes == 0 and q.status("evt-000001") == "pending"
    assert review.reviewer_for_token(s, "a" * 20) == "alice"
    assert review.reviewer_for_token(s, "a" * 19) is None and review.reviewer_for_token(s, "") is None


def test_killed_between_send_and_mark_the_answer_is_resent_with_the_same_id(tmp_path):
    s = settings_for(tmp_path)
    q = ReviewQueue(s)
    q.add([item(1, 0.3)])
    review.answer(s, q, "sentiment", "evt-000001", "alice", "positive")
    crashing = FakeClient(fail_after_send=True)
    with pytest.raises(KeyboardInterrupt):
        review.send_due(q, crashing)
    q.close()
    again = ReviewQueue(s)  # a new process
    client = FakeClient()
    assert review.send_due(again, client) == 1
    # the same event id: the stream job drops the repeat as a duplicate, the label counts once
    assert (
        [e["event_id"] for e in crashing.sent]
        == [e["event_id"] for e in client.sent]
        == ["evt-000001.review"]
    )


def test_the_queue_survives_a_restart_and_takes_over_the_old_ledger(tmp_path):
    s = settings_for(tmp_path)
    ledger = tmp_path / "review" / "labelled.jsonl"
    ledger.parent.mkdir(parents=True)
    ledger.write_text('{"event_id": "evt-000001", "label": "positive", "reviewer": "demo", "time": "x"}\n')
    q = ReviewQueue(s)
    assert q.add([item(1, 0.3), item(2, 0.5)]) == 1  # evt-000001 was labelled before: not again
    review.answer(s, q, "sentiment", "evt-000002", "alice", None)
    q.close()
    again = ReviewQueue(s)
    assert [i.event_id for i in again.pending()] == ["evt-000002"]
    assert again.next_for("sentiment", "alice") is None  # the skip was kept
    assert not ledger.exists() and ledger.with_suffix(".jsonl.imported").exists()


def test_image_items_are_accepted_or_rejected_and_the_most_changed_comes_first(tmp_path):
    s = load_settings(state_dir=tmp_path)
    write_model_info(tmp_path, ModelInfo("denoiser", "image-restoration", [], ""))
    q = ReviewQueue(s)

    def image_item(i, restored):
        event = validate_event(
            make_event(
                i,
                model_name="denoiser",
                task="image-restoration",
                input={"image_png_b64": png_b64(16, 16)},
                prediction={"image_png_b64": restored},
                feedback=None,
            )
        )
        return RoutedRecord.of(event, True, 0, Origin("t.raw", 0, i))

    import numpy as np

    from flywheel.images import png_b64 as encode

    black = encode(np.zeros((16, 16, 3), dtype=np.uint8))  # the input is grey 128: a big change
    q.add([image_item(1, png_b64(16, 16)), image_item(2, black)])
    first = q.next_for("denoiser", "alice")
    assert first.event_id == "evt-000002" and first.uncertainty == pytest.approx(128 / 255)
    assert q.get("evt-000001").uncertainty == 0.0  # unchanged
    assert review.choices(s, "denoiser", "image-restoration") == ["accept", "reject"]
    review.answer(s, q, "denoiser", "evt-000002", "alice", "reject")
    client = FakeClient()
    review.send_due(q, client)
    assert client.sent[0]["feedback"] == {"accepted": False}


def test_a_leads_settle_is_kept_apart_from_the_votes_and_agreement(tmp_path):
    s = settings_for(tmp_path, required=2, lead="alice")
    q = ReviewQueue(s)
    q.add([item(1, 0.3)])
    review.answer(s, q, "sentiment", "evt-000001", "alice", "positive")
    assert review.answer(s, q, "sentiment", "evt-000001", "bob", "negative").status == "escalated"
    settled = review.answer(s, q, "sentiment", "evt-000001", "alice", "negative")  # alice leads
    assert (settled.status, settled.answer) == ("agreed", "negative")
    assert q.escalated("sentiment") == []
    # alice's own answer stays what she said: she did not agree with bob
    rates = {r.reviewer: (r.decided, r.agreed) for r in q.stats("sentiment").reviewers}
    assert rates == {"alice": (1, 0), "bob": (1, 1)}
    client = FakeClient()
    review.send_due(q, client)
    assert client.sent[0]["source"] == "review:alice+bob"  # the lead and bob, who gave the answer


def test_skips_that_leave_too_few_reviewers_to_agree_escalate_the_item(tmp_path):
    s = settings_for(tmp_path, required=2)  # three reviewers configured
    q = ReviewQueue(s)
    q.add([item(1, 0.3)])
    assert review.answer(s, q, "sentiment", "evt-000001", "alice", None).status == "pending"
    assert review.answer(s, q, "sentiment", "evt-000001", "bob", None).status == "escalated"  # carol alone
    settled = review.answer(s, q, "sentiment", "evt-000001", "carol", "positive")  # carol leads
    assert settled.status == "agreed"


def test_the_review_note_counts_review_labels_per_reviewer():
    from orchestration.review_note import lineage_lines
    from training.dataset import review_labels
    from training.version import Lineage

    counts = review_labels(["review:alice+bob", "review:alice", "tests", "review:", "review:BAD+bob"])
    assert counts == {"alice": 2, "bob": 2}
    lines = lineage_lines(Lineage(window_start=None, window_end="2026-11-26", review_labels=counts))
    assert lines[-1].endswith("alice 2, bob 2") and not any("review_labels" in line for line in lines)
    assert Lineage.from_dict(Lineage(None, "x", review_labels=counts).to_dict()).review_labels == counts
