"""The review queue over HTTP: a small JSON API and the page that is its client.

Routes (added to the HTTP app by ``add_review_routes``):

- ``GET /review``: the page (``review_page``); ``POST /review/session`` {"token"} signs a
  reviewer in (an HttpOnly, SameSite=Strict cookie), ``DELETE /review/session`` signs out.
- ``GET /v1/review/models``: models with items, and who is signed in.
- ``GET /v1/review/{model}/next``: the most uncertain item this reviewer has not answered,
  with the answers to pick from, and the queue's figures.
- ``POST /v1/review/{model}/{item}`` {"label": answer} or {"skip": true}: an answer; a lead's
  answer to an escalated item settles it.
- ``DELETE /v1/review/{model}/answers/last``: undo this reviewer's last answer or skip.
- ``GET /v1/review/{model}/escalated`` and ``GET /v1/review/{model}/stats``.

Every ``/v1/review`` call names its reviewer by ``Authorization: Bearer <token>`` or the
page's cookie (then writes must be ``application/json``, which a cross-site form cannot
send). A worker thread moves new review-topic items into the queue and sends agreed answers
past their undo window, every ``review.sync_interval_s``.
"""

import logging
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from flywheel.errors import BrokerError, FlywheelError
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.settings import Settings
from flywheel.tasks import spec_class
from pipelines import review
from pipelines.http_body import ErrorBody, error
from pipelines.http_guard import BodyProblem, foreign_origin, is_json, read_body
from pipelines.review_page import render_page
from pipelines.review_queue import Item, ReviewError, ReviewQueue

COOKIE = "flywheel_reviewer"
BODY_LIMIT = 64 * 1024


log = logging.getLogger("flywheel.review")


def item_json(settings: Settings, item: Item) -> dict[str, Any]:
    record = item.record
    return {
        "event_id": item.event_id,
        "model_name": item.model_name,
        "task": record.task,
        "uncertainty": round(item.uncertainty, 4),
        "confidence": record.confidence,
        "model_version": record.model_version,
        "event_time": record.event_time.isoformat(),
        "votes": item.votes,
        "status": item.status,
        "choices": review.choices(settings, item.model_name, record.task),
        "flag": record.flag,  # the label screen's reason, when it sent the sample here
        **spec_class(record.task).review_view(record),
    }


class ReviewWorker:
    """Moves review-topic items into the queue and sends due answers, in a thread."""

    def __init__(self, settings: Settings, queue: ReviewQueue, get_client):
        self.settings, self.queue, self.get_client = settings, queue, get_client
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="review-worker", daemon=True)
        self._last_problem = ""

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def once(self) -> tuple[int, int]:
        return review.sync_and_send(self.queue, self.get_client())

    def _loop(self) -> None:
        while not self.stop_event.wait(self.settings.review.sync_interval_s):
            try:
                self.once()
                self._last_problem = ""
            except Exception as exc:  # the worker outlives any one failure (reported once)
                said = f"{type(exc).__name__}: {exc}"
                if said != self._last_problem:  # said once, not every second
                    expected = isinstance(exc, BrokerError | FlywheelError)  # e.g. the broker is down
                    log.warning(
                        "review queue: %s (retrying every %ss)",
                        exc if expected else said,
                        self.settings.review.sync_interval_s,
                        exc_info=not expected,
                    )
                    self._last_problem = said


class ReviewAnswerIn(BaseModel):
    """What ``POST /v1/review/{model}/{item}`` takes: one of the item's choices, or a skip."""

    model_config = ConfigDict(extra="forbid", title="ReviewAnswer")

    label: str | None = Field(None, description="one of the item's choices (keys 1-9 on the page)")
    skip: bool | None = Field(None, description="true: not now, show me the next item")


_WHY = {
    401: "no reviewer token, or not a configured reviewer's",
    403: "this reviewer may not do that (an escalated item is settled by a lead)",
    404: "no such item in this model's queue, no such model, or nothing to undo",
    409: "the item takes no more answers, the answer is not one of its choices, or it is final",
    413: "body too large",
    415: "with the page's cookie, send application/json",
    422: "not a JSON object of the documented shape",
}


def add_review_routes(app, settings: Settings, get_queue, get_client) -> None:
    """Add the review page and API to ``app`` (a FastAPI app); errors have the app's one
    shape (``pipelines.http_body``)."""

    window = settings.review.undo_window_s

    def documented(*statuses: int) -> dict:
        bearer: dict[str, Any] = {"security": [{"reviewer": []}]}
        return {
            "responses": {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses},
            "openapi_extra": bearer,
        }

    def session_reviewer(request: Request) -> str | None:
        return review.reviewer_for_session(
            settings, request.cookies.get(COOKIE), get_queue().session_generation
        )

    def cross_site(request: Request) -> bool:
        """A browser's write from another origin (its Origin header names another host)."""
        return foreign_origin(request.headers.get("origin"), request.headers.get("host"))

    def not_json(request: Request) -> bool:
        return not is_json(request.headers.get("content-type"))

    def who(request: Request, writing: bool) -> tuple[str | None, JSONResponse | None]:
        if not settings.review.reviewers:
            return None, error(
                401,
                "no_reviewers",
                "no reviewers are configured: add review.reviewers (id → token) to flywheel.yaml",
            )
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            reviewer, by_cookie = review.reviewer_for_token(settings, header[7:]), False
        else:
            reviewer, by_cookie = session_reviewer(request), True
        if reviewer is None:
            return None, error(
                401,
                "unauthorized",
                "sign in with your reviewer token (or send 'Authorization: Bearer <token>')",
            )
        if writing and by_cookie:  # the page's writes: JSON from this origin (no cross-site forms)
            if not_json(request):
                return None, error(415, "json_only", "send the request as application/json")
            if cross_site(request):
                return None, error(403, "cross_site", "this page's requests come from its own origin")
        return reviewer, None

    async def body(request: Request) -> tuple[dict, JSONResponse | None]:

        try:
            raw = await read_body(request, BODY_LIMIT, settings.http.body_timeout_s)
        except BodyProblem as exc:
            if exc.status == 413:
                return {}, error(
                    413, "too_large", f"a review request is a JSON object under {BODY_LIMIT} bytes"
                )
            return {}, error(exc.status, exc.code, exc.message)
        try:
            data = loads_json(bytes(raw)) if raw else {}
        except (JsonProblem, UnicodeDecodeError) as exc:
            return {}, error(422, "invalid_json", f"body cannot be parsed: {exc}")
        if not isinstance(data, dict):
            return {}, error(422, "invalid_request", "send a JSON object")
        return data, None

    def item_id(item: str) -> str:
        # "~" is not in an event id: the page prefixes ids with it, so that ids such as ".."
        # are not taken for path steps by the browser
        return item[1:] if item.startswith("~") else item

    async def guarded(work) -> Any:
        """``work()`` in a worker thread; a review error (or an item this install cannot
        show) becomes its documented 4xx answer."""
        try:
            return await run_in_threadpool(work)
        except ReviewError as exc:
            return answer_of(exc)
        except FlywheelError as exc:
            return error(409, "unreviewable", str(exc))

    def answer_of(exc: ReviewError) -> JSONResponse:
        return error(exc.status, exc.code, str(exc))

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request):
        reviewer = session_reviewer(request)
        html, nonce = render_page(settings, reviewer, get_queue().models() if reviewer else {})
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    "img-src data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
                ),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.post("/review/session", include_in_schema=False)
    async def sign_in(request: Request):
        # no signing a victim in from another site; failed sign-ins are limited per client
        # address with every other failed credential (http_guard.GuessLimit)
        if cross_site(request):
            return error(403, "cross_site", "sign in from the review page itself")
        if not_json(request):
            return error(415, "json_only", "sign in from the review page (application/json)")
        data, problem = await body(request)
        if problem is not None:
            return problem
        token = data.get("token")
        reviewer = review.reviewer_for_token(settings, token if isinstance(token, str) else None)
        if reviewer is None:
            return error(
                401, "unauthorized", "that is not a reviewer token; ask for yours (review.reviewers)"
            )
        response = JSONResponse({"reviewer": reviewer})
        https = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        response.set_cookie(
            COOKIE,
            review.session_cookie(settings, reviewer, get_queue().session_generation(reviewer)),
            httponly=True,
            samesite="strict",
            secure=https,
            max_age=review.SESSION_HOURS * 3600,
        )
        return response

    @app.delete("/review/session", include_in_schema=False)
    def sign_out(request: Request):
        reviewer = session_reviewer(request)
        if reviewer is not None:
            get_queue().end_sessions(reviewer)  # the cookie, even if kept, no longer signs in
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE)
        return response

    @app.get("/v1/review/models", summary="models with review items", **documented(401))
    def models(request: Request):
        reviewer, problem = who(request, writing=False)
        if problem is not None:
            return problem
        return {"reviewer": reviewer, "models": get_queue().models()}

    @app.get(
        "/v1/review/{model}/next",
        summary="the most uncertain item you have not answered",
        **documented(401, 404),
    )
    async def next_item(model: str, request: Request):
        reviewer, problem = who(request, writing=False)
        if problem is not None:
            return problem

        def work():
            queue = get_queue()
            item = queue.next_for(model, reviewer)
            if item is None and model not in queue.models():
                review.check_model(settings, model)  # 404 for a model nobody knows
            return {
                "reviewer": reviewer,
                "item": None if item is None else item_json(settings, item),
                "stats": queue.stats(model, reviewer).to_dict(),
                "undo_window_s": window,
            }

        return await guarded(work)

    answer_doc = documented(401, 403, 404, 409, 413, 415, 422)
    answer_doc["openapi_extra"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewAnswer"}}},
    }

    @app.post("/v1/review/{model}/{item}", summary="answer (or skip) a review item", **answer_doc)
    async def post_answer(model: str, item: str, request: Request):
        reviewer, problem = who(request, writing=True)
        if problem is not None:
            return problem
        data, problem = await body(request)
        if problem is not None:
            return problem
        skip, label = data.get("skip") is True, data.get("label")
        if skip == isinstance(label, str) or set(data) - {"skip", "label"}:
            return error(422, "invalid_request", 'send {"label": "<one of the choices>"} or {"skip": true}')

        def work():
            queue = get_queue()
            given = None if skip else label
            verdict = review.answer(settings, queue, model, item_id(item), reviewer, given, window)
            return {**verdict.__dict__, "stats": queue.stats(model, reviewer).to_dict()}

        return await guarded(work)

    @app.delete(
        "/v1/review/{model}/answers/last",
        summary="undo your last answer or skip",
        **documented(401, 404, 409, 415),
    )
    async def undo(model: str, request: Request):
        reviewer, problem = who(request, writing=True)
        if problem is not None:
            return problem
        event_id = await guarded(lambda: get_queue().undo(model, reviewer))
        if not isinstance(event_id, str | None):
            return event_id  # an error answer
        if event_id is None:
            return error(404, "nothing_to_undo", f"you have no answer on {model!r} to undo")
        return {"undone": event_id}

    @app.get(
        "/v1/review/{model}/escalated", summary="items whose reviewers disagreed", **documented(401, 404)
    )
    async def escalated(model: str, request: Request):
        reviewer, problem = who(request, writing=False)
        if problem is not None:
            return problem

        def work():
            items = [{**item_json(settings, i), "answers": a} for i, a in get_queue().escalated(model)]
            return {"lead": settings.review.reviewers[reviewer].lead, "items": items}

        return await guarded(work)

    @app.get(
        "/v1/review/{model}/stats",
        summary="the queue's figures and each reviewer's agreement",
        **documented(401),
    )
    def stats(model: str, request: Request):
        reviewer, problem = who(request, writing=False)
        if problem is not None:
            return problem
        return get_queue().stats(model, reviewer).to_dict()
