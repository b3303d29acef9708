"""The review page: one server-rendered HTML document with a little JavaScript, a client of
the review API (``review_api``). No build step, no external assets: ``review_assets/`` holds
the document, its style and its script, and a strict CSP allows only those (by nonce).

Keys: 1-9 answer with the n-th choice, ``s`` skips, ``u`` undoes the last answer or skip.
User data is set with ``textContent`` (never as HTML); images are ``data:`` PNGs.
"""

from __future__ import annotations

import html
import secrets
from functools import cache
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flywheel.settings import Settings

ASSETS = Path(__file__).resolve().parent / "review_assets"


@cache
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def render_page(settings: Settings, reviewer: str | None, models: dict[str, int]) -> tuple[str, str]:
    """The page for ``reviewer`` (None: the sign-in form) and the nonce of its script/style."""
    nonce = secrets.token_urlsafe(16)
    esc = html.escape
    configured = bool(settings.review.reviewers)
    if reviewer is None:
        note = (
            "Sign in with your reviewer token."
            if configured
            else ("No reviewers are configured: add review.reviewers (id → token) to flywheel.yaml.")
        )
        who = ""
    else:
        note = ""
        who = (
            f'<span class="who">signed in as <b id="reviewer">{esc(reviewer)}</b></span> '
            '<button id="signout" type="button">sign out</button>'
        )
    options = "".join(
        f'<option value="{esc(name)}">{esc(name)} ({count} pending)</option>'
        for name, count in models.items()
    )
    signed_in_with_items = reviewer is not None and bool(models)
    page = Template(_asset("review.html")).substitute(
        nonce=nonce,
        style=_asset("review.css"),
        script=_asset("review.js"),
        picker=f'<label>model <select id="model">{options}</select></label>' if signed_in_with_items else "",
        who=who,
        signin_hidden="" if reviewer is None else "hidden",
        note=esc(note),
        disabled="" if configured else "disabled",
        empty_models=(
            '<p class="card">The review queue is empty: no model has items yet.</p>'
            if reviewer is not None and not models
            else ""
        ),
        desk_hidden="" if signed_in_with_items else "hidden",
    )
    return page, nonce
