"""What the stream benchmark watches with: its child processes and their CPU, topic tails
(how many records are readable, read_committed), the ingestor's committed offsets, and a
Feast online-store poller that times when sampled events become visible."""

from __future__ import annotations

import bisect
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The benchmark cannot go on (a child died, something did not happen in time)."""


# ---- child processes ----------------------------------------------------------------


class Children:
    """Child processes, each in its own session with its output in ``<folder>/<name>.log``;
    ``stop`` and ``close`` end a child's whole process group (a Flink job's JVM included)."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], pipe_stdout: bool = False) -> subprocess.Popen:
        from flywheel.procs import die_with_parent

        with (self.folder / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def alive(self, *names: str) -> None:
        """BenchError with the end of its log if one of these children has exited."""
        for name in names:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 25) -> str:
        text = (self.folder / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(f"    {line}" for line in text[-lines:])

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout_s)
                break
            except ProcessLookupError:
                proc.poll()  # gone already: reap it
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


class Generator:
    """A running ``stream_load.py`` child: its JSON lines arrive on a queue."""

    def __init__(self, children: Children, name: str, config: Path, phase: str, count: int, rate, seed: int):
        argv = [sys.executable, str(ROOT / "bench" / "stream_load.py"), "--config", str(config)]
        argv += ["--phase", phase, "--count", str(count), "--seed", str(seed)]
        argv += ["--flood"] if rate is None else ["--rate", str(rate)]
        self.children, self.name = children, name
        self.proc = children.start(name, argv, pipe_stdout=True)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self.lines.put(json.loads(line))
        except (OSError, ValueError):  # closed by Children.stop
            return

    def wait_for(self, key: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                line = {}
            if key in line:
                return line
            if not line and not self.reader.is_alive() and self.lines.empty():  # it wrote nothing more
                self.children.alive(self.name)
                raise BenchError(f"the load generator ended without reporting {key!r}")
        raise BenchError(f"the load generator did not report {key!r} within {timeout_s:.0f}s")

    def finish(self, timeout_s: float = 120.0) -> dict:
        done = self.wait_for("done", timeout_s)
        self.children.stop(self.name)
        if done["failed"] or done["unconfirmed"]:
            raise BenchError(f"the broker did not confirm every event: {done}")
        return done


def tree_sum(pid: int, measure, tree: bool = True) -> float:
    """``measure(process)`` summed over a process and (``tree``) its descendants (psutil);
    processes that are gone count 0."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *(root.children(recursive=True) if tree else [])]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            total += measure(p)
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU seconds of a process and (``tree``) its descendants (psutil, else /proc)."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return _proc_cpu_seconds(pid, tree)
    return tree_sum(pid, lambda p: sum(p.cpu_times()[:2]), tree)


def _proc_cpu_seconds(pid: int, tree: bool) -> float:
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    found, frontier = {pid}, [pid] if tree else []
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier and c not in found]
        found.update(frontier)
    return sum(ticks.get(p, 0) for p in found) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of named process trees between ``start`` and ``stop``, in % of one core;
    ``alone``: the names whose descendants are not theirs (this process: its children are)."""

    def __init__(self, pids: dict[str, int], alone: tuple[str, ...] = ()):
        self.pids, self.alone = pids, alone

    def _now(self) -> dict[str, float]:
        return {n: cpu_seconds(p, tree=n not in self.alone) for n, p in self.pids.items()}

    def start(self) -> None:
        self.t0, self.before = time.monotonic(), self._now()

    def stop(self) -> dict[str, float]:
        wall, after = time.monotonic() - self.t0, self._now()
        return {n: round(100 * (after[n] - self.before[n]) / wall, 1) for n in self.pids}


# ---- Kafka ---------------------------------------------------------------------------


class Tail:
    """Counts the records of some topics as they become readable (read_committed), from the
    beginning, in a thread; keeps the offsets of ``offsets_of`` to count records below a
    committed offset, and notes when the events named by ``watch`` appear there."""

    EVENT_ID = b'"event_id":"'  # as RoutedRecord.to_json writes it

    def __init__(
        self,
        settings,
        topics: Iterable[str],
        offsets_of: str | None = None,
        isolation: str = "read_committed",
    ):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from flywheel.kafka import client_config

        self.topics, self.offsets_of = list(topics), offsets_of
        self.consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": "bench-tail",
                    "enable.auto.commit": False,
                    "isolation.level": isolation,
                    # tansu holds every fetch this long, data or not: 100 ms is the tail's resolution
                    # (20 ms cost the broker 7 % of a core idle, 100 ms 3 %)
                    "fetch.wait.max.ms": 100,
                },
            )
        )
        metadata = self.consumer.list_topics(timeout=10)
        self.partitions = {t: sorted(metadata.topics[t].partitions) for t in self.topics}
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t, ps in self.partitions.items() for p in ps]
        )
        self.n = dict.fromkeys(self.topics, 0)
        self.offsets: dict[int, list[int]] = {p: [] for p in self.partitions.get(offsets_of, [])}
        self.watched: set[str] = set()
        self.seen_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(5000, 0.05)
                now = time.monotonic()
                with self.lock:
                    for m in messages:
                        if m.error() is not None:
                            continue  # partition EOF and transient errors: the next fetch retries
                        self.n[m.topic()] += 1
                        if m.topic() == self.offsets_of:
                            self.offsets[m.partition()].append(m.offset())
                            if self.watched:
                                self._stamp(m.value(), now)
        except Exception as exc:  # noqa: BLE001 - any failure: reported by counts()
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.consumer.close()

    def _stamp(self, value: bytes, now: float) -> None:
        start = value.find(self.EVENT_ID) + len(self.EVENT_ID)
        event_id = value[start : value.find(b'"', start)].decode()
        if event_id in self.watched:
            self.watched.discard(event_id)
            self.seen_at[event_id] = now

    def watch(self, ids: Iterable[str]) -> None:
        with self.lock:
            self.watched.update(ids)

    def seen(self, ids: Iterable[str]) -> list[float | None]:
        """When each event first appeared in ``offsets_of`` (time.monotonic(); None: not yet)."""
        with self.lock:
            return [self.seen_at.get(i) for i in ids]

    def counts(self) -> dict[str, int]:
        if self.error:
            raise BenchError(f"the topic tail failed: {self.error}")
        with self.lock:
            return dict(self.n)

    def below(self, committed: dict[int, int]) -> int:
        """Records of ``offsets_of`` below the committed offset of their partition."""
        with self.lock:
            return sum(bisect.bisect_left(self.offsets[p], committed.get(p, 0)) for p in self.offsets)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)


class Committed:
    """A consumer group's committed offsets on one topic (the group is not joined)."""

    def __init__(self, settings, group: str, topic: str, partitions: list[int]):
        from confluent_kafka import Consumer, TopicPartition

        from flywheel.kafka import client_config

        self.consumer = Consumer(client_config(settings, **{"group.id": group, "enable.auto.commit": False}))
        self.tps = [TopicPartition(topic, p) for p in partitions]

    def offsets(self) -> dict[int, int]:
        return {tp.partition: max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=10)}

    def close(self) -> None:
        self.consumer.close()


# ---- Feast ---------------------------------------------------------------------------


class OnlineProbe:
    """Polls the Feast online store (``get_online_features``, as a reader would) for sampled
    event ids, in a thread, and records when each is first seen.

    An id is looked up once its intended send time has passed; it was seen at the end of
    the lookup that returned it, so a latency is an upper bound, late by at most one poll
    period (``poll_s``, longer while many ids are pending: one lookup per 100 ids, and a
    rest of 9x the lookups' time, so the poller stays under a tenth of a core).
    """

    CHUNK = 100

    def __init__(self, settings, poll_s: float = 0.1):
        self.settings, self.poll_s = settings, poll_s
        self.pending: dict[str, float] = {}  # event id -> intended send time (monotonic)
        self.latency: dict[str, float] = {}
        self.polls, self.poll_time = 0, 0.0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, intended: dict[str, float], restart_period: bool = False) -> None:
        """Look these ids up from their intended send time on (``restart_period``: the
        resolution counts from now)."""
        with self.lock:
            self.pending.update(intended)
            if restart_period:
                self.polls, self.poll_time = 0, 0.0

    def _run(self) -> None:
        from feature_repo.definitions import FEATURE_VIEW, JOIN_KEY
        from feature_repo.store import open_store

        try:
            store = open_store(self.settings, apply=False)
            feature = f"{FEATURE_VIEW}:task"  # set on every row
            while not self.stopping.is_set():
                started = time.monotonic()
                with self.lock:
                    due = [i for i, t in self.pending.items() if t <= started]
                for k in range(0, len(due), self.CHUNK):
                    ids = due[k : k + self.CHUNK]
                    rows = [{JOIN_KEY: i} for i in ids]
                    found = store.get_online_features(features=[feature], entity_rows=rows).to_dict()
                    seen = time.monotonic()
                    with self.lock:
                        for i, value in zip(ids, found["task"], strict=True):
                            if value is not None:
                                self.latency[i] = seen - self.pending.pop(i)
                took = time.monotonic() - started
                # Rest 9x as long as the lookups took: the poller never takes more than a tenth
                # of a core from the pipeline it measures (in a soak, a growing latency made it
                # look up ever more ids and starve the pipeline: a feedback loop). Its coarser
                # resolution under load is reported.
                rest = max(self.poll_s - took, 9 * took)
                with self.lock:
                    self.polls, self.poll_time = self.polls + 1, self.poll_time + took + rest
                self.stopping.wait(rest)
        except Exception as exc:  # noqa: BLE001 - any failure: reported by results()
            self.error = f"{type(exc).__name__}: {exc}"

    def results(self, ids: Iterable[str]) -> list[float | None]:
        if self.error:
            raise BenchError(f"the Feast online poller failed: {self.error}")
        with self.lock:
            return [self.latency.get(i) for i in ids]

    def waiting(self) -> int:
        with self.lock:
            return len(self.pending)

    def period(self) -> float:
        """The mean time between two lookups of the same id so far (the latency resolution)."""
        return self.poll_time / self.polls if self.polls else self.poll_s

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def follow(count, total: int, timeout_s: float, alive=lambda: None, every_s: float = 0.05) -> list:
    """(time, count()) every ``every_s`` until count() reaches ``total``; BenchError when it has
    not moved for a minute, or not got there within ``timeout_s``."""
    series: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    moved = time.monotonic()
    while True:
        n, now = count(), time.monotonic()
        if not series or n != series[-1][1]:
            moved = now
        series.append((now, n))
        if n >= total:
            return series
        if now > deadline or now - moved > 60:
            raise BenchError(f"only {n:,} of {total:,} records arrived ({now - moved:.0f} s without any)")
        alive()
        time.sleep(every_s)


# ---- figures -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def drain_rate(series: list[tuple[float, int]], total: int) -> tuple[float | None, float]:
    """(records/s, seconds) from the first count past 10 % of ``total`` to the first past 90 %
    in a (time, count) series: how fast a backlog was worked off, start-up and tail left out
    (counts move in steps, one per checkpoint or batch: both ends are step edges). None when
    both are the same step: the backlog was too small to time."""
    t_lo, n_lo = next((t, n) for t, n in series if n >= 0.1 * total)
    t_hi, n_hi = next((t, n) for t, n in series if n >= 0.9 * total)
    return ((n_hi - n_lo) / (t_hi - t_lo) if t_hi > t_lo else None), t_hi - t_lo
