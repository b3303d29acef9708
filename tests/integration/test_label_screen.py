"""The label screen in the retrain flow (issue 28): real MiniLM, Feast, review queue.

A TREC model is bootstrapped; a window with half its labels flipped is refused before
fitting (``labels_suspect``), its flagged samples wait in the review queue with the reason,
and the refusal is in the history and `flywheel status`; a clean window trains, the
reviewers' answers in it are trusted (never screened), and what the screen flagged there
is left out of training and never replayed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.feast_utils import feed_labelled
from tests.integration.test_orchestration import small
from training.corpora import trec_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "questions"


def feed(settings, store, frame, ids: list[str]) -> int:
    return feed_labelled(settings, store, frame, model=MODEL, ids=ids)


def flipped(frame, share: float, seed: int):
    rng = np.random.default_rng(seed)
    labels = sorted(frame["label"].unique())
    out = frame.copy().reset_index(drop=True)
    for i in rng.choice(len(out), round(share * len(out)), replace=False):  # to a random other class
        others = [lab for lab in labels if lab != out.at[i, "label"]]
        out.at[i, "label"] = others[int(rng.integers(len(others)))]
    return out


def test_a_window_of_wrong_labels_is_refused_before_fitting_and_a_clean_one_trains(settings):
    from feature_repo.store import open_store
    from orchestration import history
    from orchestration.flow import bootstrap_model, retrain
    from orchestration.status import model_status
    from pipelines.review_queue import ReviewQueue
    from training.model_store import ModelStore
    from training.version import VersionFolder

    s = small(settings)
    s = s.model_copy(
        update={
            "training": s.training.model_copy(update={"epochs": 2, "min_steps": 30, "min_new_samples": 50})
        }
    )
    corpus = trec_frame().sample(frac=1.0, random_state=0).reset_index(drop=True)
    boot, bad, good = corpus.iloc[:300], corpus.iloc[300:440], corpus.iloc[440:580]
    assert bootstrap_model(s, MODEL, "text-classification", boot, progress=False).status == "promoted"
    store = open_store(s)

    # half the labels flipped: refused before fitting, nothing trained
    feed(s, store, flipped(bad, 0.5, 1), [f"bad-{i}" for i in range(len(bad))])
    out = retrain(s, MODEL, progress=False)
    assert out.status == "data-rejected" and out.exit_code == 13, out.reasons
    assert "labels_suspect" in out.reasons[0] and "before fitting" in out.reasons[0]
    runs = sorted((s.state_dir / "models" / MODEL / "runs").iterdir())
    screen = VersionFolder(runs[-1], "").label_screen()
    assert screen.suspect and screen.flagged == screen.sent_to_review > 0
    assert not (runs[-1] / "adapter_model.safetensors").exists()  # no fit was run
    last = history.entries(s.state_dir, MODEL)[-1]
    assert last.action == "data-rejected" and last.reason.startswith("labels_suspect") and last.champion == 1
    status = model_status(s, MODEL)
    assert status["data_rejected_windows"][-1]["reasons"][0].startswith("labels_suspect")
    queue = ReviewQueue(s)
    items = queue.pending(MODEL)
    assert len(items) == screen.flagged
    assert all(i.record.flag and i.record.flag.startswith("label disputed") for i in items)
    assert all(i.record.prediction_label for i in items)  # the models' suggestion is shown
    queue.close()
    flagged_first = set(ModelStore(s.state_dir).state(MODEL).flagged)
    assert {i.event_id for i in items} == flagged_first

    # a clean window, with reviewers' answers whose labels the models dispute: trusted, not screened
    reviewed = flipped(corpus.iloc[580:600], 1.0, 2)
    feed(s, store, good, [f"good-{i}" for i in range(len(good))])
    feed(s, store, reviewed, [f"bad-{i}.review" for i in range(len(reviewed))])
    out = retrain(s, MODEL, progress=False)
    assert out.status in ("promoted", "rejected"), out.reasons
    folder = VersionFolder(out_dir(s, out.version), "")
    screen = folder.label_screen()
    assert not screen.suspect and screen.bypassed >= 18 and screen.screened >= 120, screen
    train, validation, holdouts = folder.dataset()
    now_flagged = set(ModelStore(s.state_dir).state(MODEL).flagged) - flagged_first
    assert len(now_flagged) == screen.flagged
    kept = set(train["sample_id"]) | set(validation["sample_id"]) | set(holdouts["new"]["sample_id"])
    assert not kept & (now_flagged | flagged_first)  # flagged samples are not trained on
    assert folder.lineage().flagged == screen.flagged
    assert {f"bad-{i}.review" for i in range(len(reviewed))} & kept  # the reviewers' answers train


def out_dir(settings, version: int):
    from training.model_store import ModelStore

    return ModelStore(settings.state_dir).version_dir(MODEL, version)
