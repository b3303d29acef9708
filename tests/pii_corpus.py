"""The labelled PII corpus (``tests/data/pii_corpus.jsonl``) and how masking is scored on it.

Each line: ``text``, ``category`` (email, phone, card, iban, ssn, ipv4, ipv6, or none),
``kind`` (a sub-kind such as ``card/dashes/luhn-invalid``) and ``pii`` (the exact PII
substring, null for none). A PII line counts as found when the masked text no longer
contains its ``pii`` and at least one token was placed; a PII-free line counts as a false
positive when masking changed it at all. Used by the unit test and ``bench/bench_pii.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"
# Written independently, in another style (support chats, several languages), to check that
# the masker generalises beyond the corpus it was first measured on.
CORPUS_2 = Path(__file__).parent / "data" / "pii_corpus_2.jsonl"
CORPORA = (CORPUS, CORPUS_2)
STRUCTURED = ("email", "phone", "card", "iban", "ssn", "ipv4", "ipv6")


def load(path: Path = CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Score:
    found: Counter = field(default_factory=Counter)
    total: Counter = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, text, masked)
    false_positives: list[tuple[str, str, str]] = field(default_factory=list)

    def recall(self, category: str) -> float:
        return self.found[category] / self.total[category]

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_positives) / self.total["none"]


def score(rows: list[dict], mask: Callable[[str], tuple[str, int]]) -> Score:
    result = Score()
    for row in rows:
        masked, count = mask(row["text"])
        result.total[row["category"]] += 1
        if row["category"] == "none":
            if masked != row["text"]:
                result.false_positives.append((row["kind"], row["text"], masked))
        elif row["pii"] not in masked and count > 0:
            result.found[row["category"]] += 1
        else:
            result.misses.append((row["kind"], row["text"], masked))
    return result
