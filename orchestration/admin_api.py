"""The HTTP app's admin routes: erasure and lineage, behind ``http.admin_token``.

``flywheel serve`` adds them to the app of ``pipelines.http_api`` (its ``extend`` hook):

* ``DELETE /v1/subjects/{subject_id}`` runs ``flywheel forget --subject-id`` and answers the
  receipt (``?dry_run=true``: what would be erased; nothing changes).
* ``GET /v1/lineage/events/{event_id}`` answers ``flywheel lineage event``.

The admin token is apart from the feedback token (``http.auth_token``): whoever may send
feedback may not erase it. With no admin token set the routes answer 403.
"""

import re

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flywheel.errors import FlywheelError
from flywheel.events import subject_problem
from orchestration.forget import Receipt, forget
from orchestration.lineage import event_lineage
from pipelines.http_body import ErrorBody, bearer_ok, error, hidden

_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # the contract's Id (fullmatch)


def add_admin_routes(app, settings) -> None:

    token = settings.http.admin_token.get_secret_value() if settings.http.admin_token else None
    errors = {
        status: {"model": ErrorBody, "description": text}
        for status, text in (
            (401, "no or wrong admin token"),
            (403, "admin routes are off (http.admin_token unset)"),
            (422, "the id is not a valid id"),
            (503, "a store behind the route failed (the reply carries an error id; the log says more)"),
        )
    }

    def refused(request: Request) -> JSONResponse | None:
        if token is None:
            return error(403, "admin_off", "the admin routes are off; set http.admin_token to use them")
        if not bearer_ok(request, token):
            return error(401, "unauthorized", "send 'Authorization: Bearer <http.admin_token>'")
        return None

    @app.delete(
        "/v1/subjects/{subject_id:path}",  # a subject id may hold '/'; it is the rest of the path
        response_model=Receipt,
        responses=errors,
        summary="erase every event of one data subject (flywheel forget --subject-id)",
        openapi_extra={"security": [{"admin": []}]},
    )
    async def delete_subject(subject_id: str, request: Request, dry_run: bool = False):
        no = refused(request)
        if no is not None:
            return no
        problem = subject_problem(subject_id)
        if problem is not None:
            return error(422, "invalid_subject", f"subject_id {problem}; send it as the contract takes it")
        try:
            receipt = await run_in_threadpool(
                lambda: forget(settings, subject_id=subject_id, dry_run=dry_run, log=lambda _m: None)
            )
        except FlywheelError as exc:
            return error(503, "erasure_failed", f"{exc}; the erasure's journal completes it on the next try")
        except Exception as exc:  # noqa: BLE001 - a store behind it failed (MLflow down): said, retried
            message = "a store could not be reached; the erasure's journal completes it on the next try"
            return hidden(503, "erasure_incomplete", message, exc)
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
        if not _EVENT_ID.fullmatch(event_id):
            return error(422, "invalid_event_id", "an event_id has 1 to 128 of A-Z a-z 0-9 . _ : -")
        try:
            found = await run_in_threadpool(event_lineage, settings, event_id)
        except Exception as exc:  # noqa: BLE001 - a store behind it failed: said with an error id, logged
            return hidden(503, "lineage_unavailable", "a store could not be read; try again later", exc)
        return found.to_dict()
