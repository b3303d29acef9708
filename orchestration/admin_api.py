"""The HTTP app's admin routes: erasure and lineage, behind ``http.admin_token``.

``flywheel serve`` adds them to the app of ``pipelines.http_api`` (its ``extend`` hook):

* ``DELETE /v1/subjects/{subject_id}`` runs ``flywheel forget --subject-id`` and answers the
  receipt (``?dry_run=true``: what would be erased; nothing changes).
* ``GET /v1/lineage/events/{event_id}`` answers ``flywheel lineage event``.

The admin token is apart from the feedback token (``http.auth_token``): whoever may send
feedback may not erase it. With no admin token set the routes answer 403.
"""

import re
from typing import Any

from pydantic import BaseModel

from flywheel.errors import FlywheelError
from orchestration.forget import forget
from orchestration.lineage import event_lineage
from pipelines.http_body import ErrorBody, bearer_ok, error

_EVENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ReceiptOut(BaseModel):
    receipt: str
    by: str
    started_at: str
    finished_at: str
    events: int
    event_ids_sha256: str
    removed: dict[str, Any]
    dry_run: bool


def add_admin_routes(app, settings) -> None:
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    token = settings.http.admin_token.get_secret_value() if settings.http.admin_token else None
    errors = {
        status: {"model": ErrorBody, "description": text}
        for status, text in (
            (401, "no or wrong admin token"),
            (403, "admin routes are off (http.admin_token unset)"),
            (422, "the id is not a valid id"),
        )
    }

    def refused(request: Request) -> JSONResponse | None:
        if token is None:
            return error(403, "admin_off", "the admin routes are off; set http.admin_token to use them")
        if not bearer_ok(request, token):
            return error(401, "unauthorized", "send 'Authorization: Bearer <http.admin_token>'")
        return None

    @app.delete(
        "/v1/subjects/{subject_id}",
        response_model=ReceiptOut,
        responses=errors,
        summary="erase every event of one data subject (flywheel forget --subject-id)",
        openapi_extra={"security": [{"admin": []}]},
    )
    async def delete_subject(subject_id: str, request: Request, dry_run: bool = False):
        no = refused(request)
        if no is not None:
            return no
        if not subject_id.strip() or len(subject_id) > 128 or _CONTROL.search(subject_id):
            return error(
                422, "invalid_subject", "a subject_id has 1 to 128 characters and no control characters"
            )
        try:
            receipt = await run_in_threadpool(
                lambda: forget(settings, subject_id=subject_id, dry_run=dry_run, log=lambda _m: None)
            )
        except FlywheelError as exc:
            return error(503, "erasure_failed", f"{exc}; the erasure's journal completes it on the next try")
        return receipt.to_dict()

    @app.get(
        "/v1/lineage/events/{event_id}",
        responses=errors,
        summary="where one event went: fate, Feast rows, images, review, versions (flywheel lineage event)",
        openapi_extra={"security": [{"admin": []}]},
    )
    async def get_event_lineage(event_id: str, request: Request):
        no = refused(request)
        if no is not None:
            return no
        if not _EVENT_ID.match(event_id):
            return error(422, "invalid_event_id", "an event_id has 1 to 128 of A-Z a-z 0-9 . _ : -")
        found = await run_in_threadpool(event_lineage, settings, event_id)
        return found.to_dict()
