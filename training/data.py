"""Labelled data: files, deterministic splits and samples (bundled corpora: ``training.corpora``)."""

from __future__ import annotations

import hashlib

import pandas as pd

from flywheel.errors import DataError

__all__ = ["DataError", "bucket", "split_by_hash", "stratified_sample", "stratified_share"]


def bucket(sample_id: str) -> float:
    """A stable number in [0, 1) from a sample_id: the same sample always lands in the same split."""
    digest = hashlib.blake2b(sample_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_by_hash(frame, holdout: float, validation: float, salt: str = ""):
    """(train, validation, holdout) by the hash of sample_id: stable as data grows."""
    b = frame["sample_id"].map(lambda s: bucket(salt + s))
    return (
        frame[b >= holdout + validation],
        frame[(b >= holdout) & (b < holdout + validation)],
        frame[b < holdout],
    )


def stratified_share(frame, fraction: float, salt: str, column: str | None = "label"):
    """(rest, share): ``fraction`` of every class (of all rows when ``column`` is None), chosen
    by hash, so the same rows every time."""

    keys = frame["sample_id"].map(lambda s: bucket(salt + s))
    picked = []
    groups = (
        [(None, frame.assign(_key=keys))]
        if column is None
        else frame.assign(_key=keys).groupby(column, sort=True)
    )
    for _, group in groups:
        n = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        picked.append(group.nsmallest(n, "_key"))
    share = pd.concat(picked).drop(columns="_key") if picked else frame.iloc[:0]
    return frame[~frame["sample_id"].isin(share["sample_id"])], share


def stratified_sample(frame, n: int, seed: int = 0, column: str | None = "label"):
    """About ``n`` rows with the class proportions of ``frame`` (every class kept when possible;
    a plain sample when ``column`` is None)."""
    if n >= len(frame):
        return frame
    if n <= 0 or frame.empty:
        return frame.iloc[:0]
    if column is None:
        return frame.sample(n=n, random_state=seed).sort_values("sample_id")
    share = n / len(frame)
    parts = [
        g.sample(n=max(1, round(len(g) * share)), random_state=seed)
        for _, g in frame.groupby(column, sort=True)
    ]

    return pd.concat(parts).sort_values("sample_id")
