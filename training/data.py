"""Labelled data: files, deterministic splits and samples (bundled corpora: ``training.corpora``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flywheel.errors import FlywheelError

COLUMNS = ["sample_id", "text", "label"]


class DataError(FlywheelError):
    """A labelled data file that cannot be used."""


def bucket(sample_id: str) -> float:
    """A stable number in [0, 1) from a sample_id: the same sample always lands in the same split."""
    digest = hashlib.blake2b(sample_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def load_labelled(path: str | Path, text_column: str = "text", label_column: str = "label"):
    """A JSONL or CSV file with text and label columns → DataFrame(sample_id, text, label).

    ``sample_id`` is taken from a ``sample_id``/``id`` column, or made from the file name and line.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is not a file; give a JSONL or CSV file with text and label columns")
    try:
        if path.suffix in (".jsonl", ".json"):
            frame = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{path}: unknown file type {path.suffix!r}; use .jsonl or .csv")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); it must be UTF-8 JSONL or CSV") from exc
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))}); "
            "name them text and label, or pass --text-column/--label-column"
        )
    ids = frame["sample_id"] if "sample_id" in frame else frame.get("id")
    out = pd.DataFrame(
        {
            "sample_id": ids.astype(str)
            if ids is not None
            else [f"{path.stem}-{i}" for i in range(len(frame))],
            "text": frame[text_column].astype(str),
            "label": frame[label_column].astype(str),
        }
    )
    bad = out["text"].str.strip().eq("") | frame[label_column].isna()
    if bad.any():
        rows = ", ".join(str(i + 1) for i in out.index[bad][:5])
        raise DataError(f"{path}: {int(bad.sum())} rows have an empty text or label (rows {rows}, ...)")
    if not out["sample_id"].is_unique:
        raise DataError(f"{path}: sample ids are not unique")
    return out


def split_by_hash(frame, holdout: float, validation: float, salt: str = ""):
    """(train, validation, holdout) by the hash of sample_id: stable as data grows."""
    b = frame["sample_id"].map(lambda s: bucket(salt + s))
    return (
        frame[b >= holdout + validation],
        frame[(b >= holdout) & (b < holdout + validation)],
        frame[b < holdout],
    )


def stratified_share(frame, fraction: float, salt: str, column: str = "label"):
    """(rest, share): ``fraction`` of every class, chosen by hash, so the same rows every time."""
    import pandas as pd

    keys = frame["sample_id"].map(lambda s: bucket(salt + s))
    picked = []
    for _, group in frame.assign(_key=keys).groupby(column, sort=True):
        n = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        picked.append(group.nsmallest(n, "_key"))
    share = pd.concat(picked).drop(columns="_key") if picked else frame.iloc[:0]
    return frame[~frame["sample_id"].isin(share["sample_id"])], share


def stratified_sample(frame, n: int, seed: int = 0, column: str = "label"):
    """About ``n`` rows with the class proportions of ``frame`` (every class kept when possible)."""
    if n >= len(frame):
        return frame
    if n <= 0 or frame.empty:
        return frame.iloc[:0]
    share = n / len(frame)
    parts = [
        g.sample(n=max(1, round(len(g) * share)), random_state=seed)
        for _, g in frame.groupby(column, sort=True)
    ]
    import pandas as pd

    return pd.concat(parts).sort_values("sample_id")
