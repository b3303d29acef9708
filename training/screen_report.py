"""What the label screen did to one run's window: ``screen.json`` in the version folder.

Its one writer is ``training.label_screen``; ``training.version.VersionFolder`` saves and reads
it. Kept apart from the screen so the version folder does not import the screen's models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SUSPECT = "labels_suspect"


@dataclass
class LabelScreenReport:
    """What the screen did to one run's window (``screen.json`` in the version folder)."""

    screened: int = 0  # new-window samples judged
    bypassed: int = 0  # reviewers' answers: trusted, not judged
    flagged: int = 0
    max_share: float = 1.0
    by_reason: dict[str, int] = field(default_factory=dict)  # kind of reason → count
    examples: list[dict[str, Any]] = field(default_factory=list)  # sample_id, reason, shown values
    sent_to_review: int = 0
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was judged (disabled, too few samples, no champion)
    artifacts: list[str] = field(default_factory=list)  # files in the run's review/ folder showing flags

    @property
    def share(self) -> float:
        return self.flagged / self.screened if self.screened else 0.0

    @property
    def suspect(self) -> bool:
        return self.screened > 0 and self.share > self.max_share

    def reason(self) -> str:
        """The refusal's reason, ``labels_suspect: …``."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1]))
        return (
            f"{SUSPECT}: {self.flagged} of {self.screened} labels flagged ({100 * self.share:.0f} % > "
            f"{100 * self.max_share:.0f} % allowed; {kinds})"
        )

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"label screen: not run ({self.skipped})"]
        head = (
            f"label screen: {self.flagged} of {self.screened} new labels flagged ({100 * self.share:.1f} %, "
            f"{100 * self.max_share:.0f} % allowed), {self.bypassed} reviewers' labels trusted, "
            f"{self.seconds:.1f}s"
        )
        out = [head]
        out += [f"  {n} {kind}" for kind, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1])]
        if self.flagged:
            out.append(f"  {self.sent_to_review} sent to the review queue")
        for e in self.examples:
            shown = ", ".join(f"{k} {v!r}" for k, v in e.items() if k not in ("sample_id", "reason"))
            out.append(f"  e.g. {e['sample_id']!s:.40}: {e['reason']}" + (f" ({shown})" if shown else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LabelScreenReport:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def kind_of(reason: str) -> str:
    """A reason's kind for counting: its words before the first figure or quote."""
    words = []
    for word in reason.split():
        if any(c.isdigit() for c in word) or word[:1] in "'\"+(":
            break
        words.append(word.rstrip(":;,"))
    return " ".join(words) or reason
