"""PII masking benchmark: quality on the labelled corpus, and speed per event and per length.

Prints recall per category and the false-positive rate on ``tests/data/pii_corpus.jsonl``,
the mean µs per corpus line, the time to mask 100k-character texts of several shapes
(prose, digits, hostile runs), and the old e-mail pattern (no anchor) against the new one
on 20,000 x ``a`` in the same run, to show the quadratic case is gone.

    python bench/bench_pii.py
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.pii import _EMAIL_RE, mask_pii  # noqa: E402
from tests import pii_corpus  # noqa: E402

OLD_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def best_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    for path in pii_corpus.CORPORA:
        rows = pii_corpus.load(path)
        s = pii_corpus.score(rows, mask_pii)
        n_pii = sum(s.total[c] for c in pii_corpus.STRUCTURED)
        print(f"{path.name}: {len(rows)} lines ({n_pii} with PII, {s.total['none']} without)")
        print(f"  {'category':10} {'found':>7} {'recall':>7}")
        for category in pii_corpus.STRUCTURED:
            print(f"  {category:10} {s.found[category]:>3}/{s.total[category]:<3} {s.recall(category):7.3f}")
        print(f"  false positives: {len(s.false_positives)}/{s.total['none']} = {s.false_positive_rate:.3%}")
        for kind, text, masked in s.misses[:10]:
            print(f"    missed {kind}: {text!r} -> {masked!r}")
        for kind, text, masked in s.false_positives[:10]:
            print(f"    altered {kind}: {text!r} -> {masked!r}")

    rows = pii_corpus.load()
    texts = [r["text"] for r in rows]
    ms = best_ms(lambda: [mask_pii(t) for t in texts])
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"speed: {ms * 1000 / len(texts):.1f} µs per corpus line (mean {mean_chars:.0f} chars)")

    prose = "Thanks for the quick reply, the app crashed again after the 2.3 update on my phone. "
    shapes = {
        "prose": prose,
        "prose with PII": prose + "Mail jane@example.com or call +44 20 7946 0958. ",
        "a" * 10: "a",
        "digits and spaces": "1 ",
        "a@ runs": "a@",
        "zero-width chars": "\u200b",
    }
    print("100k-character texts (best of 5):")
    for name, unit in shapes.items():
        text = (unit * (100_000 // len(unit) + 1))[:100_000]
        print(f"  {name:20} {best_ms(lambda t=text: mask_pii(t)):8.1f} ms")

    text = "a" * 20_000
    old, new = best_ms(lambda: OLD_EMAIL.findall(text), 1), best_ms(lambda: _EMAIL_RE.findall(text), 3)
    print(f"e-mail pattern on 20,000 x 'a': old {old:.0f} ms, new {new:.2f} ms ({old / new:,.0f}x)")


if __name__ == "__main__":
    main()
