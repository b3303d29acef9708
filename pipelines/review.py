"""The human review queue: what reviewers may answer, who they are, and how an agreed
answer goes back into the loop. The page (``review_api``) and ``flywheel review`` both use
these functions over the durable queue (``review_queue.ReviewQueue``).

An agreed answer is sent into ``feedback.raw`` as a new event: ``review_event_id``
(``<event_id>.review``), ``label_source=review``, ``source=review:<reviewers>`` (who agreed,
so it reaches Feast), the task's feedback for the answer (a label; for images, accepted or
not), and the reviewed prediction's ``prediction_id`` when it was served by ``/v1/predict``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

from flywheel.errors import FlywheelError
from flywheel.events import MAX_ID_CHARS, feedback_event, validate_event
from flywheel.model_info import read_model_info
from flywheel.names import REVIEW_SOURCE_PREFIX, REVIEW_SUFFIX, check_reviewer_id, review_source
from flywheel.tasks import spec_class
from pipelines import review_sync
from pipelines.records import Origin, RoutedRecord
from pipelines.review_queue import NotAllowed, ReviewError, ReviewQueue, UnknownModel, VoteResult

if TYPE_CHECKING:
    from flywheel.settings import Settings


def review_event_id(event_id: str) -> str:
    """The id of the reviewer's answer to ``event_id``: ``<event_id>.review`` when it fits,
    else a prefix of the id plus a hash of the whole id, so two long ids never collide."""
    plain = event_id + REVIEW_SUFFIX
    if len(plain) <= MAX_ID_CHARS:
        return plain
    digest = hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:32]
    tail = f"{REVIEW_SUFFIX}.{digest}"
    return event_id[: MAX_ID_CHARS - len(tail)] + tail


def review_claims(event) -> list[tuple[str, str]]:
    """Why an event from outside may not pass for a reviewers' label (empty: it may not claim
    to be one). Only the review queue sends them: a forged one would credit reviewers who never
    answered, and its event id would make the real answer a dropped duplicate."""
    problems = []
    if event.label_source == "review":
        problems.append(("label_source", "'review' is for answers from the review queue; use 'user'"))
    if event.source.startswith(REVIEW_SOURCE_PREFIX):
        problems.append(
            ("source", f"'{REVIEW_SOURCE_PREFIX}…' names reviewers; only the review queue uses it")
        )
    if event.event_id.endswith(REVIEW_SUFFIX) or f"{REVIEW_SUFFIX}." in event.event_id:
        problems.append(("event_id", f"ids with '{REVIEW_SUFFIX}' are the review queue's answers; rename it"))
    return problems


# ---- who reviews --------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def reviewer_for_token(settings: Settings, token: str | None) -> str | None:
    """The configured reviewer whose token this is, else None. Compares SHA-256 digests in
    constant time (no timing hint of a token's length or its first differing character)."""
    if not token or not isinstance(token, str):
        return None
    given = _digest(token)
    found = None
    for name, reviewer in settings.review.reviewers.items():
        if hmac.compare_digest(given, _digest(reviewer.token.get_secret_value())):
            found = name
    return found


SESSION_HOURS = 12


def session_cookie(settings: Settings, reviewer: str, generation: int = 0, now: float | None = None) -> str:
    """The page's session: ``reviewer.generation.expiry.signature``, signed with the
    reviewer's token (which the cookie does not hold); a new token ends every session of
    the old one, and signing out moves the reviewer's generation on (the review queue keeps
    it), which ends every session issued before."""

    expiry = int((time.time() if now is None else now) + SESSION_HOURS * 3600)
    return f"{reviewer}.{generation}.{expiry}.{_session_signature(settings, reviewer, generation, expiry)}"


def _session_signature(settings: Settings, reviewer: str, generation: int, expiry: int) -> str:
    key = _digest(settings.review.reviewers[reviewer].token.get_secret_value())
    message = f"flywheel-review|{reviewer}|{generation}|{expiry}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _small_number(text: str) -> int | None:
    """ASCII digits only, at most 12 of them (a cookie may hold anything: '²', 5,000 digits)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None


def reviewer_for_session(
    settings, cookie: str | None, generation_of=lambda _reviewer: 0, now: float | None = None
) -> str | None:
    """The reviewer a session cookie names, if its signature holds, it has not expired and
    it is of the reviewer's current generation (``generation_of(reviewer)``). Any other
    value, however malformed, is None, never an exception."""

    parts = (cookie or "").split(".")
    if len(parts) != 4 or parts[0] not in settings.review.reviewers:
        return None
    reviewer, generation, expiry = parts[0], _small_number(parts[1]), _small_number(parts[2])
    if generation is None or expiry is None or expiry < (time.time() if now is None else now):
        return None
    if generation != generation_of(reviewer):
        return None
    expected = _session_signature(settings, reviewer, generation, expiry)
    return (
        reviewer
        if hmac.compare_digest(expected.encode(), parts[3].encode("utf-8", "surrogatepass"))
        else None
    )


def check_reviewer(settings: Settings, reviewer: str) -> str:
    """``reviewer`` if it may review here: one of ``review.reviewers`` when any are configured."""
    check_reviewer_id(reviewer)
    known = settings.review.reviewers
    if known and reviewer not in known:
        raise NotAllowed(
            f"{reviewer!r} is not one of the configured reviewers ({', '.join(sorted(known))}); "
            "add them under review.reviewers in flywheel.yaml"
        )
    return reviewer


# ---- what they answer -----------------------------------------------------------------


def check_model(settings: Settings, model: str):
    """``model``'s ModelInfo; UnknownModel (404) unless it exists in this state dir."""

    try:
        return read_model_info(settings.state_dir, model)
    except FlywheelError as exc:
        raise UnknownModel(str(exc)) from exc


def choices(settings: Settings, model: str, task: str) -> list[str]:
    """The answers a reviewer picks from for ``model`` (its labels; accept/reject for images)."""

    return spec_class(task).review_choices(check_model(settings, model).labels)


def answer(
    settings: Settings,
    queue: ReviewQueue,
    model: str,
    event_id: str,
    reviewer: str,
    given: str | None,
    undo_window_s: float = 0.0,
) -> VoteResult:
    """Record a reviewer's answer (None: skip) after checking who they are and the answer."""
    check_reviewer(settings, reviewer)
    item = queue.get(event_id)
    if given is not None:
        allowed = choices(settings, model, item.record.task)
        if given not in allowed:
            raise ReviewError(
                f"answer {given[:80]!r} for {event_id} is not one of model {model!r}'s answers "
                f"{allowed}; answer with one of them"
            )
        if queue.status(event_id) == "escalated":
            return settle(settings, queue, model, event_id, reviewer, given)
    return queue.vote(model, event_id, reviewer, given, undo_window_s=undo_window_s)


def settle(
    settings: Settings, queue: ReviewQueue, model: str, event_id: str, reviewer: str, given: str
) -> VoteResult:
    """A lead's answer to an escalated item (final at once)."""
    known = settings.review.reviewers
    if reviewer not in known or not known[reviewer].lead:
        raise NotAllowed(
            f"{event_id} is escalated (its reviewers disagreed, or too few are left to agree); only a "
            "lead reviewer settles it (review.reviewers.<id>.lead: true)"
        )
    return queue.settle(model, event_id, reviewer, given)


# ---- back into the loop ---------------------------------------------------------------


def review_event(item: RoutedRecord, given: str, reviewers: list[str]) -> dict:
    """The agreed answer to ``item`` as a feedback event (``label_source=review``)."""

    return feedback_event(
        review_event_id(item.event_id),
        item.model_name,
        item.task,
        text=item.text,
        image_png_b64=item.image_png_b64,
        prediction=item.prediction,
        feedback=spec_class(item.task).review_feedback(given),
        label_source="review",
        source=review_source(reviewers),
        model_version=item.model_version,
        prediction_id=item.prediction_id,  # the served prediction reviewed, if it was one
        subject_id=item.subject,  # the item's pseudonym: the answer is erased with its subject
    )


def sync_and_send(queue: ReviewQueue, client, timeout_s: float = 20.0) -> tuple[int, int]:
    """The review queue's worker step: new review-topic items into the queue, then every
    agreed answer past its undo window into the loop; returns (items added, answers sent)."""
    added = review_sync.sync(queue, timeout_s=timeout_s)
    return added, send_due(queue, client)


def send_due(queue: ReviewQueue, client, now: float | None = None, wait: bool = False) -> int:
    """Send every agreed answer past its undo window; return how many Kafka confirmed. One the
    contract refuses is kept out of the queue's sending with its reason (shown in stats).
    One process sends at a time: while another does, this returns 0 (or waits, ``wait``)."""
    with review_sync.exclusive(queue, wait) as mine:
        return _send_due(queue, client, now) if mine else 0


def _send_due(queue: ReviewQueue, client, now: float | None) -> int:
    decisions = queue.due(now)
    if not decisions:
        return 0
    ids = [d.record.event_id for d in decisions]
    result = client.submit_many([review_event(d.record, d.answer, d.reviewers) for d in decisions])
    by_review_id = {review_event_id(i): i for i in ids}
    sent = [by_review_id[e] for e in result.accepted]
    queue.mark_sent(sent)
    if result.rejected:
        why = {ids[r.index]: "; ".join(f"{f}: {m}" for f, m in r.problems) for r in result.rejected}
        queue.mark_unsendable(why)
    return len(sent)


def queue_flagged(settings: Settings, spec, model: str, flagged, reasons: dict, suggested: dict) -> int:
    """Put samples the label screen flagged (``training.label_screen``; ``flagged``: their
    rows) in the review queue, each with its reason as ``flag``; return how many. Raises
    FlywheelError when one cannot be queued: the retrain fails and is retried, rather than
    leaving out a sample no reviewer will see."""

    records = []
    for _, row in flagged.iterrows():
        sid = str(row["sample_id"])
        event = spec.flagged_event(row, model, suggested[sid])
        if event is None:
            raise FlywheelError(f"the {spec.name} task cannot show flagged sample {sid} to reviewers")
        routed = RoutedRecord.of(validate_event(event), True, 0, Origin("label-screen", 0, 0))
        records.append(dataclasses.replace(routed, flag=reasons[sid]))
    queue = ReviewQueue(settings)
    try:
        queue.add(records)
    except OSError as exc:
        raise FlywheelError(f"could not queue {len(records)} flagged sample(s) for review: {exc}") from exc
    finally:
        queue.close()
    return len(records)
