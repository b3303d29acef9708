"""The ingestor's Python cost per clean row, stage by stage, in-process and without Kafka.

Builds ``--events`` payloads of the stream benchmark (``bench/stream_load.py``), routes them
with the stream job's step (``pipelines.transform.route_raw``) and keeps the clean routed
records (one per event id: the job sends a repeat to the duplicates topic), as the bytes the
ingestor reads. Then, batch by batch (``--batch`` clean rows), it runs what
``pipelines.ingest.Ingestor._write_and_commit`` runs for them and times each stage into a
fresh state dir (``load_settings(state_dir=tmp)``, Feast applied by ``open_store``):

    parse        parse_clean of every value (RoutedRecord.from_json)
    lock+forget  the erasure lock, and Forgotten.which of the batch (nothing forgotten)
    live ledger  LiveLedger.ingest (the outcome of each event that names its version)
    sample_row   the Feast row of every record
    online       OnlineWriter.write (the SQLite online store, one transaction)
    offline      write_offline_batch (one parquet file)
    fates        FateLedger.record of the batch's clean fates (one transaction)
    (gc)         the garbage collections that ran during the stages (taken out of each stage)

``total`` is their sum. Figures are µs per row: a configuration's time over all its batches
(collections included, hence the mean) divided by its rows, the median of ``--rounds`` runs
(the configurations alternate, each on a fresh state dir). ``end to end`` times
``Ingestor._write_and_commit`` itself on the same batches (fake Kafka messages and consumer),
which adds what the stages leave out (offsets, the other topics' fates, the epoch file).

A batch is ``--batch`` clean rows (default 1,000): at 2,000 events/s the stream bench's
``feast.ingest_batch_ms`` = 500 gives 1,000 records, about 88 % of them clean, but
``feast.ingest_batch_size`` (500 by default) caps a batch first. The first batch warms up
and is not counted.

The baseline is the ingestor's code, the heap frozen as ``Ingestor.run`` freezes it
(``gc.freeze``, once the stores are open). ``--variant NAME`` runs an experiment beside it:
not the code the ingestor runs, but the same batches through a changed stage (see VARIANTS;
each says what it changes). Three undo a change of issue 30.5, to measure what it gives:
``no-gc-freeze``, ``checked-parse`` (``json.loads`` + ``field_of`` only) and
``online-protos`` (a ``ValueProto`` per feature per row, through Feast's provider); ``before``
runs the three at once, the ingestor as it was. ``--variant all`` runs each; ``combined``
runs PROPOSED together; ``combined+sync``, ``combined+derived`` and ``combined+overlap`` add
sync-normal, sync-derived or overlap-commits to them.

    python bench/bench_ingest_rows.py [--events 20000] [--batch 1000] [--rounds 3] [--json F]
        [--variant NAME ...] [--no-end-to-end]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("parse", "lock+forget", "live ledger", "sample_row", "online", "offline", "fates")


class GcClock:
    """Seconds the garbage collector ran (all generations), from gc.callbacks."""

    def __init__(self):
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start


def clean_values(events: int) -> list[bytes]:
    """The clean routed records of ``events`` stream-bench payloads, first copy of each event id."""
    from bench.stream_load import corpus_texts, payloads, plan
    from pipelines.fates import CLEAN
    from pipelines.transform import route_raw

    key = b"0123456789abcdef0123456789abcdef"
    items = payloads(plan("ingest", events, 0), 0, corpus_texts())
    seen: set[str] = set()
    values = []
    for offset, (k, v) in enumerate(items):
        destination, event_id, record, _ = route_raw(v, k, "feedback.raw", 0, offset, {}, 0.5, 4096, key)
        if destination == CLEAN and event_id not in seen:
            seen.add(event_id)
            values.append(record.encode())
    return values


class Stages:
    """The ingestor's writers on one state dir, and its stages as callables (overridable by a variant)."""

    def __init__(self, settings):
        from feature_repo.online_write import OnlineWriter
        from feature_repo.store import open_store
        from flywheel.images import open_image_store
        from flywheel.privacy import Forgotten
        from pipelines.fates import FateLedger
        from pipelines.live import LiveLedger

        self.settings = settings
        self.store = open_store(settings)
        self.online = OnlineWriter(self.store)
        self.images = open_image_store(settings.image_store_uri)
        self.ledger = LiveLedger.of(settings)
        self.fates = FateLedger.of(settings)
        self.forgotten = Forgotten.of(settings)
        self.defer_live_commit = False  # the live ledger's commit left to a variant (overlap-commits)

    def close(self) -> None:
        self.ledger.close()
        self.fates.close()

    def parse(self, values: list[bytes]) -> list:
        from pipelines.ingest import parse_clean

        return [parse_clean(v) for v in values]

    def lock_forget(self, records: list) -> set[str]:
        from flywheel.privacy import ERASURE_LOCK
        from flywheel.stores import store_lock

        with store_lock(self.settings.state_dir, ERASURE_LOCK):
            return self.forgotten.which((r.event_id, r.subject) for r in records)

    def live(self, records: list, now: datetime) -> list:
        from pipelines.ingest import live_value

        return self.ledger.ingest([], records, live_value, now)

    def rows(self, records: list, now: datetime) -> list[dict]:
        from pipelines.ingest import sample_row

        return [sample_row(r, now, self.images) for r in records]

    def write_online(self, rows: list[dict]) -> None:
        self.online.write(rows)

    def write_offline(self, rows: list[dict], name: str) -> None:
        from feature_repo.store import write_offline_batch

        write_offline_batch(self.settings, rows, name)

    def write_fates(self, records: list) -> None:
        from pipelines.fates import CLEAN, Fate
        from pipelines.ingest import _epoch_number

        self.fates.record([Fate(r.event_id, CLEAN) for r in records], _epoch_number(self.settings), {})


def _mark(marks: list[tuple[float, float]], clock: GcClock) -> None:
    marks.append((time.perf_counter(), clock.seconds))


def time_stages(stages: Stages, batches: list[list[bytes]]) -> dict[str, list[float]]:
    """Seconds per stage per batch, less the garbage collections that ran inside it, and those
    collections as "(gc)" (the first batch is a warm-up, not returned)."""
    from pipelines.ingest import batch_name

    spent: dict[str, list[float]] = {s: [] for s in [*STAGES, "(gc)"]}
    clock = GcClock()
    gc.callbacks.append(clock)
    offset = 0
    try:
        for i, values in enumerate(batches):
            now = datetime.now(UTC)
            name = batch_name({0: (offset, offset + len(values) - 1)})
            offset += len(values)
            marks: list[tuple[float, float]] = []
            mark = partial(_mark, marks, clock)
            mark()
            records = stages.parse(values)
            mark()
            stages.lock_forget(records)
            mark()
            joined = stages.live(records, now)
            mark()
            rows = stages.rows(joined, now)
            mark()
            stages.write_online(rows)
            mark()
            stages.write_offline(rows, name)
            mark()
            stages.write_fates(records)
            mark()
            if i:
                for stage, (t0, gc0), (t1, gc1) in zip(STAGES, marks, marks[1:], strict=False):
                    spent[stage].append((t1 - t0) - (gc1 - gc0))
                spent["(gc)"].append(marks[-1][1] - marks[0][1])
    finally:
        gc.callbacks.remove(clock)
    return spent


class _Message:
    """What the ingestor reads of a confluent_kafka.Message."""

    __slots__ = ("_offset", "_topic", "_value")

    def __init__(self, topic: str, offset: int, value: bytes):
        self._topic, self._offset, self._value = topic, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self):
        return None


class _Consumer:
    def commit(self, offsets, asynchronous: bool = True) -> None:
        pass


def time_end_to_end(settings, batches: list[list[bytes]]) -> list[float]:
    """Seconds of Ingestor._write_and_commit per batch (the first one a warm-up, not returned)."""
    from pipelines.ingest import Ingestor, IngestStats

    ingestor = Ingestor(settings, log=lambda _line: None, settle=False)
    ingestor._pruned_at = time.monotonic()  # the hourly prune is not a per-row cost
    stats, consumer, offset, spent = IngestStats(), _Consumer(), 0, []
    thaw = freeze_heap()  # as Ingestor.run does before its first batch
    try:
        for i, values in enumerate(batches):
            messages = [_Message(ingestor.topic, offset + k, v) for k, v in enumerate(values)]
            offset += len(values)
            start = time.perf_counter()
            ingestor._write_and_commit(consumer, messages, stats)
            if i:
                spent.append(time.perf_counter() - start)
    finally:
        thaw()
        ingestor.ledger.close()
        ingestor.fates.close()
        ingestor.queue.close()
    return spent


# ---- experiments (--variant): not what the ingestor runs ----------------------------------
# Each patches one Stages object (or the process) and returns what undoes it.

Undo = Callable[[], None] | None


def freeze_heap() -> Callable[[], None]:
    """What ``Ingestor.run`` does once its stores are open (gc.collect, gc.freeze); returns the undo."""
    gc.collect()
    gc.freeze()
    return gc.unfreeze


def _variant_no_gc_freeze(stages: Stages) -> Undo:
    """process: the heap not frozen (before issue 30.5), so each batch's garbage collections walk
    the whole of it (Feast, pandas, pyarrow, protobuf) again and again."""
    gc.unfreeze()
    return freeze_heap


def _variant_checked_parse(stages: Stages) -> Undo:
    """parse: RoutedRecord.from_json_checked only (json.loads and field_of: the parse before issue
    30.5; from_json now tries msgspec and the same checks inline first)."""
    from pipelines.records import RoutedRecord

    def parse(values: list[bytes]) -> list:
        return [RoutedRecord.from_json_checked(v) for v in values]

    stages.parse = parse  # type: ignore[method-assign]
    return None


def _variant_online_protos(stages: Stages) -> Undo:
    """online: OnlineWriter.write_protos (a ValueProto per feature per row, serialized again by the
    store, through the provider's online_write_batch: the write before issue 30.5) instead of the
    rows encoded by RowEncoder and upserted by CompactSqliteOnlineStore.write_encoded."""
    stages.write_online = stages.online.write_protos  # type: ignore[method-assign]
    return None


def _variant_sync_normal(stages: Stages) -> Undo:
    """measurement: PRAGMA synchronous=NORMAL on the online store, live ledger and fate ledger
    (their WAL is then not fsynced at each commit): what the three fsyncs per batch cost. Not a
    proposal as such: a power cut could then lose a batch whose offsets are committed."""
    stages.online.provider.online_store._get_conn(stages.store.config).execute("PRAGMA synchronous=NORMAL")
    stages.ledger.conn.execute("PRAGMA synchronous=NORMAL")
    stages.fates.db.execute("PRAGMA synchronous=NORMAL")
    return None


def _variant_event_time_once(stages: Stages) -> Undo:
    """records: RoutedRecord.event_time parsed once per record (kept in the instance) instead of
    on every access (from_json checks it, then the live ledger and sample_row parse it again)."""
    from pipelines.records import RoutedRecord

    original = RoutedRecord.__dict__["event_time"]
    parse = original.fget

    def event_time(self):
        try:
            return self.__dict__["_event_time"]
        except KeyError:
            when = self.__dict__["_event_time"] = parse(self)
            return when

    RoutedRecord.event_time = property(event_time)  # type: ignore[method-assign, assignment]

    def undo() -> None:
        RoutedRecord.event_time = original  # type: ignore[method-assign]

    return undo


def _variant_columns_offline(stages: Stages) -> Undo:
    """offline: Arrow columns from per-column lists (pa.array with the field's type) instead of
    pa.Table.from_pylist over the row dicts; the same table."""
    import pyarrow as pa

    from feature_repo.store import _atomic_write, offline_dir, offline_schema

    schema = offline_schema()

    def write_offline(rows: list[dict], name: str) -> None:
        columns = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema]
        _atomic_write(
            pa.Table.from_arrays(columns, schema=schema),
            offline_dir(stages.settings) / f"part-{name}.parquet",
        )

    stages.write_offline = write_offline  # type: ignore[method-assign]
    return None


def _variant_overlap(stages: Stages) -> Undo:
    """online ∥ offline: the online write (its commit's fsync releases the GIL) in a thread while
    the offline file is written; the fates still after both."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="online")
    write_online = stages.write_online
    write_offline = stages.write_offline
    pending = []

    def online(rows: list[dict]) -> None:
        pending.append(pool.submit(write_online, rows))

    def offline(rows: list[dict], name: str) -> None:
        write_offline(rows, name)
        pending.pop().result()

    stages.write_online = online  # type: ignore[method-assign]
    stages.write_offline = offline  # type: ignore[method-assign]
    return pool.shutdown


def _variant_overlap_commits(stages: Stages) -> Undo:
    """live ledger ∥ online ∥ offline: the live ledger's statements run as before but its commit
    (an fsync) waits until the rows are built, then runs while a thread writes the online store
    (its own fsync; Feast's connection allows other threads) and this one the offline file; the
    fates still after all three. (The ingestor commits the live ledger first today; the order of
    the three does not matter to a re-delivery, which rewrites all of them.)"""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.ingest import live_value

    pool = ThreadPoolExecutor(1, thread_name_prefix="online")
    ledger = stages.ledger
    write_online = stages.write_online
    write_offline = stages.write_offline
    pending = []

    def live(records: list, now: datetime) -> list:
        received = now.timestamp()
        return [ledger._join(record, live_value, received) for record in records]  # commit: below

    def online(rows: list[dict]) -> None:
        pending.append(pool.submit(write_online, rows))
        ledger.conn.commit()

    def offline(rows: list[dict], name: str) -> None:
        write_offline(rows, name)
        pending.pop().result()

    stages.defer_live_commit = True
    if "live" not in vars(stages):  # else live-many's, which leaves the commit to us now
        stages.live = live  # type: ignore[method-assign]
    stages.write_online = online  # type: ignore[method-assign]
    stages.write_offline = offline  # type: ignore[method-assign]
    return pool.shutdown


def _variant_sync_derived(stages: Stages) -> Undo:
    """measurement: PRAGMA synchronous=NORMAL on the online store and the live ledger only (the
    fate ledger keeps FULL: the settler trims the edge journal on its word)."""
    stages.online.provider.online_store._get_conn(stages.store.config).execute("PRAGMA synchronous=NORMAL")
    stages.ledger.conn.execute("PRAGMA synchronous=NORMAL")
    return None


def _variant_live_many(stages: Stages) -> Undo:
    """live ledger: the outcomes of events that name their version and no prediction_id (what
    LiveLedger._join inserts one execute at a time) gathered and inserted by executemany, flushed
    before any other record's _join so the statements keep their order; the same rows."""
    from pipelines.ingest import live_value
    from pipelines.live import version_number

    ledger = stages.ledger
    insert = "INSERT OR REPLACE INTO outcomes VALUES (?,?,?,?,?,?,?,?,?,?)"

    def live(records: list, now: datetime) -> list:
        received = now.timestamp()
        joined: list = []
        rows: list[tuple] = []

        def flush() -> None:
            if rows:
                ledger.conn.executemany(insert, rows)
                rows.clear()

        def body() -> None:
            for record in records:
                named = version_number(record.model_version)
                if record.prediction_id is not None or named is None:
                    flush()
                    joined.append(ledger._join(record, live_value, received))
                    continue
                value = live_value(record)
                if value is not None:
                    event_id, when = record.event_id, record.event_time.timestamp()
                    outcome = (f"event:{event_id}", record.model_name, named, when, received, float(value))
                    rows.append((*outcome, event_id, 0, 0, None))
                joined.append(record)
            flush()

        if stages.defer_live_commit:  # overlap-commits commits it later
            body()
        else:
            with ledger.conn:
                body()
        return joined

    stages.live = live  # type: ignore[method-assign]
    return None


VARIANTS: dict[str, Callable[[Stages], Undo]] = {
    "no-gc-freeze": _variant_no_gc_freeze,
    "checked-parse": _variant_checked_parse,
    "online-protos": _variant_online_protos,
    "sync-normal": _variant_sync_normal,
    "event-time-once": _variant_event_time_once,
    "live-many": _variant_live_many,
    "columns-offline": _variant_columns_offline,
    "overlap": _variant_overlap,
    "overlap-commits": _variant_overlap_commits,
    "sync-derived": _variant_sync_derived,
}
# the proposals measured together ("combined"; "combined+..." adds one of the fsync experiments);
# gc-freeze, fast-parse and online-encoded, proposed before, are the ingestor's code since issue 30.5
PROPOSED = ("live-many",)
BEFORE = ("no-gc-freeze", "checked-parse", "online-protos")  # "before": the ingestor before issue 30.5


def per_row(spent: list[float], rows: int) -> float:
    """µs per row over the counted batches (their mean: garbage collections included)."""
    return sum(spent) / (len(spent) * rows) * 1e6


def run_config(root: Path, label: str, patches: list[str], batches: list[list[bytes]], batch: int) -> dict:
    from flywheel.settings import load_settings

    stages = Stages(load_settings(state_dir=root / label.replace(" ", "-").replace("+", "_")))
    undo = [freeze_heap()]  # as Ingestor.run does once its stores are open
    undo += [VARIANTS[name](stages) for name in patches]
    try:
        spent = time_stages(stages, batches)
    finally:
        stages.close()
        for u in reversed(undo):
            if u is not None:
                u()
    figures = {stage: per_row(spent[stage], batch) for stage in [*STAGES, "(gc)"]}
    figures["total"] = sum(figures.values())
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="stream-bench payloads to route")
    parser.add_argument("--batch", type=int, default=1000, help="clean rows per ingestor batch")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration, alternating")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=[
            *VARIANTS,
            "all",
            "before",
            "combined",
            "combined+sync",
            "combined+derived",
            "combined+overlap",
        ],
        help="an experiment beside the baseline (repeatable; 'all': each; 'before': BEFORE at once, the "
        "ingestor before issue 30.5; 'combined': PROPOSED at once)",
    )
    parser.add_argument("--no-end-to-end", action="store_true", help="skip Ingestor._write_and_commit")
    args = parser.parse_args(argv)

    from flywheel.settings import load_settings

    started = time.perf_counter()
    values = clean_values(args.events)
    batches = [values[i : i + args.batch] for i in range(0, len(values), args.batch)]
    if len(batches) > 2 and len(batches[-1]) < args.batch:
        batches.pop()  # equal batches only
    print(
        f"{len(values)} clean records from {args.events} events ({time.perf_counter() - started:.1f} s); "
        f"{len(batches)} batches of {args.batch} (the first a warm-up)"
    )
    configs: dict[str, list[str]] = {"baseline": []}
    for name in args.variant:
        if name == "all":
            configs.update({n: [n] for n in VARIANTS})
        elif name == "before":
            configs["before"] = list(BEFORE)
        elif name == "combined":
            configs["combined"] = list(PROPOSED)
        elif name in ("combined+sync", "combined+derived", "combined+overlap"):
            extra = {"sync": "sync-normal", "derived": "sync-derived", "overlap": "overlap-commits"}
            configs[name] = [*PROPOSED, extra[name.partition("+")[2]]]
        else:
            configs[name] = [name]
    runs: dict[str, list[dict]] = {label: [] for label in configs}
    end_to_end: list[float] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-ingest-bench-") as tmp:
        for r in range(args.rounds):
            for label, patches in configs.items():
                runs[label].append(run_config(Path(tmp) / f"r{r}", label, patches, batches, args.batch))
            if not args.no_end_to_end:
                settings = load_settings(state_dir=Path(tmp) / f"r{r}" / "end-to-end")
                from feature_repo.store import open_store

                open_store(settings)  # applied before the clock starts, as in a running ingestor
                end_to_end.append(per_row(time_end_to_end(settings, batches), args.batch))

    results = {
        label: {key: statistics.median(run[key] for run in found) for key in found[0]}
        for label, found in runs.items()
    }
    if end_to_end:
        results["baseline"]["end to end"] = statistics.median(end_to_end)
    labels = list(results)
    width = max(10, *(len(label) + 2 for label in labels))
    print(f"µs per clean row (batches of {args.batch}; mean over batches, median of {args.rounds} rounds):")
    print(f"  {'stage':12}" + "".join(f"{label:>{width}}" for label in labels))
    for stage in [*STAGES, "(gc)", "total", "end to end"]:
        cells = [results[label].get(stage) for label in labels]
        if any(c is not None for c in cells):
            print(f"  {stage:12}" + "".join(" " * width if c is None else f"{c:>{width}.1f}" for c in cells))
    print(
        "  (gc): garbage collections during the stages (each stage's figure is without them); "
        f"{len(gc.get_objects()):,} objects tracked with the stores loaded"
    )
    if end_to_end:
        print(
            "  end to end: Ingestor._write_and_commit, baseline code (rounds: "
            f"{[round(x, 1) for x in end_to_end]})"
        )
    if args.json:
        payload = {"events": args.events, "clean": len(values), "batch": args.batch, "rounds": args.rounds}
        args.json.write_text(json.dumps({**payload, "us_per_row": results, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
