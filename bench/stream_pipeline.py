"""The pipeline the stream benchmark measures (topics ``bench.*``): its settings, its job and
ingestor processes, the watchers on it, and the check of what it should hold."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stream_load import CLEAN, DLQ, DUPLICATE, REVIEW, REVIEW_THRESHOLD
from stream_watch import Children, Committed, OnlineProbe, Tail


@dataclass
class Bench:
    """What every part of a run shares: its folder, the broker, the children, the options."""

    folder: Path
    broker: object  # flywheel.broker.EmbeddedBroker
    children: Children
    args: argparse.Namespace

    def settings(self, prefix: str):
        """Settings (and their resolved YAML, for child processes) for topics ``<prefix>.*``."""
        from flywheel.kafka import ensure_topics
        from flywheel.settings import load_settings

        wait = self.args.fetch_wait_ms
        settings = load_settings(
            state_dir=self.folder / prefix,
            broker={"port": self.broker.port},
            kafka={"topic_prefix": prefix, "extra": {"fetch.wait.max.ms": str(wait)} if wait else {}},
            stream={"checkpoint_interval_ms": self.args.checkpoint_ms, "review_threshold": REVIEW_THRESHOLD},
            feast={"ingest_batch_ms": self.args.ingest_batch_ms},
        )
        ensure_topics(settings)
        return settings, settings.write_resolved(self.folder / f"{prefix}.yaml")


@dataclass
class Sample:
    t: float
    raw: int  # records readable in raw
    out: int  # ... in clean + review + dlq + duplicates
    clean: int
    ingested: int  # clean records below the ingestor's committed offsets
    done: int  # review + dlq + duplicates + ingested

    @property
    def job_lag(self) -> int:
        return self.raw - self.out

    @property
    def ingest_lag(self) -> int:
        return self.clean - self.ingested


class Pipeline:
    """The measured pipeline (topics ``bench.*``): job and ingestor processes, the watchers,
    and what its topics and Feast should hold after the events sent so far."""

    def __init__(self, bench: Bench):
        from feature_repo.store import apply_definitions, open_store
        from flywheel.kafka import Topics

        self.bench = bench
        self.settings, self.config = bench.settings("bench")
        apply_definitions(self.settings)
        self.store = open_store(self.settings, apply=False)
        self.topics = t = Topics.from_settings(self.settings)
        self.tail = Tail(self.settings, [t.raw, t.clean, t.review, t.dlq, t.duplicates], offsets_of=t.clean)
        group = self.settings.feast.group_id
        self.committed = Committed(self.settings, group, t.clean, self.tail.partitions[t.clean])
        self.probe = OnlineProbe(self.settings)
        self.expected: Counter[str] = Counter()
        self.clean_ids: set[str] = set()
        self.pii: dict[str, str] = {}  # a sample of clean events with PII: event id -> the PII sent

    def start(self, name: str, *command: str) -> None:
        argv = [sys.executable, "-m", "flywheel.cli", "--config", str(self.config), *command]
        self.bench.children.start(name, argv)

    def pid(self, name: str) -> int:
        return self.bench.children.procs[name].pid

    def alive(self) -> None:
        self.bench.children.alive(*(n for n in ("job", "ingestor") if n in self.bench.children.procs))

    def sample(self) -> Sample:
        c, t = self.tail.counts(), self.topics
        ingested = self.tail.below(self.committed.offsets())
        out = c[t.clean] + c[t.review] + c[t.dlq] + c[t.duplicates]
        return Sample(time.monotonic(), c[t.raw], out, c[t.clean], ingested, out - c[t.clean] + ingested)

    def expect(self, planned: list) -> None:
        self.expected["raw"] += len(planned)
        self.expected.update(p.kind for p in planned)
        self.clean_ids.update(p.event_id for p in planned if p.kind == CLEAN)
        with_pii = [p for p in planned if p.kind == CLEAN and p.pii]
        self.pii.update({p.event_id: p.pii for p in with_pii[:: max(1, len(with_pii) // 50)]})

    def wait_drained(self, timeout_s: float, stall_s: float = 15.0) -> float | None:
        """Seconds until every event sent so far completed; None when that did not happen
        within ``timeout_s``, or nothing moved for ``stall_s`` (see ``stuck``)."""
        start = moved = time.monotonic()
        last = None
        while time.monotonic() - start < timeout_s and time.monotonic() - moved < stall_s:
            s, e = self.sample(), self.expected
            if s.raw >= e["raw"] and s.out >= e["raw"] and s.ingested >= e[CLEAN]:
                return time.monotonic() - start
            if (s.raw, s.out, s.ingested) != last:
                last, moved = (s.raw, s.out, s.ingested), time.monotonic()
            self.alive()
            time.sleep(0.1)
        return None

    def stuck(self) -> list[str]:
        """Why the pipeline did not drain: records a read_committed reader cannot see (kept in
        transactions never committed) per topic and partition, and what the ingestor has left."""
        from pipelines.stats import read_topic

        found = []
        for name in ("raw", CLEAN, REVIEW, DLQ, DUPLICATE):
            topic = getattr(self.topics, name)
            seen = {(m.partition(), m.offset()) for m in read_topic(self.settings, topic)}
            hidden = Counter(
                p
                for m in read_topic(self.settings, topic, isolation="read_uncommitted")
                if (p := m.partition(), m.offset()) not in seen
            )
            found += [f"{topic}[{p}]: {n:,} records only read_uncommitted shows" for p, n in hidden.items()]
        s, e = self.sample(), self.expected
        found.append(
            f"readable (read_committed): raw {s.raw:,} of {e['raw']:,} sent, outputs {s.out:,}; "
            f"ingested {s.ingested:,} of {e[CLEAN]:,} clean"
        )
        return found

    def check(self) -> list[str]:
        """What is wrong with the topics and Feast once drained (nothing: an empty list)."""
        from pipelines.records import RoutedRecord
        from pipelines.stats import accounting, read_topic

        a, e = accounting(self.settings), self.expected
        problems = [] if a.balanced else [f"raw {a.raw:,} != clean+review+dlq+duplicates {a.accounted:,}"]
        for kind in ("raw", CLEAN, REVIEW, DLQ, DUPLICATE):
            if getattr(a, kind) != e[kind]:
                problems.append(f"{kind} holds {getattr(a, kind):,} events, the mix sent {e[kind]:,}")
        if a.redelivered:
            problems.append(f"{a.redelivered:,} output records delivered twice")
        ids = Counter(
            RoutedRecord.from_json(m.value()).event_id
            for topic in (self.topics.clean, self.topics.review)
            for m in read_topic(self.settings, topic)
        )
        twice = [i for i, n in ids.items() if n > 1]
        if twice:
            problems.append(f"{len(twice):,} event ids more than once in clean/review, e.g. {twice[:3]}")
        online = online_ids(self.settings)
        missing, extra = self.clean_ids - online, online - self.clean_ids
        if missing or extra:
            problems.append(
                f"Feast online rows: {len(missing):,} clean events missing, {len(extra):,} rows not clean "
                f"(e.g. {sorted(missing)[:2]} {sorted(extra)[:2]})"
            )
        leaks = self.pii_leaks()
        if leaks:
            problems.append(f"{len(leaks)} e-mails/phones reached Feast unmasked, e.g. {leaks[:2]}")
        return problems

    def pii_leaks(self) -> list[str]:
        from feature_repo.definitions import FEATURE_VIEW, JOIN_KEY

        ids, leaks = list(self.pii), []
        for k in range(0, len(ids), 100):
            chunk = ids[k : k + 100]
            rows = [{JOIN_KEY: i} for i in chunk]
            texts = self.store.get_online_features([f"{FEATURE_VIEW}:text"], rows).to_dict()["text"]
            leaks += [i for i, text in zip(chunk, texts, strict=True) if text is None or self.pii[i] in text]
        return leaks

    def close(self) -> None:
        for watcher in (self.probe, self.tail, self.committed):
            watcher.close()


def online_ids(settings) -> set[str]:
    """The sample ids of every row in the Feast online store."""
    from feature_repo.store import online_sample_ids

    return online_sample_ids(settings)
