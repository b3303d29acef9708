"""The edge journal: frames round-trip, torn tails are found and kept out, trimming, limits."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from flywheel.journal import (
    RECORD,
    VOID,
    Entry,
    JournalWriteError,
    JournalWriter,
    Position,
    SpoolFull,
    journal_bytes,
    new_ident,
    read_segment,
    trim,
    unsettled,
    writer_alive,
)


def entries(n: int, start: int = 0, size: int = 50) -> list[Entry]:
    return [Entry("t.raw", f"e-{i}".encode(), b"v" * size, f"e-{i}") for i in range(start, start + n)]


def test_round_trip_keeps_order_kinds_and_keyless_records(tmp_path):
    w = JournalWriter(tmp_path, max_bytes=10**7)
    w.append(entries(3))
    w.append([Entry("t.predictions", None, b"", "p-1")])
    w.void(entries(1, start=1))
    frames = list(unsettled(w.folder))
    assert [f.entry.ident for f in frames] == ["e-0", "e-1", "e-2", "p-1", "e-1"]
    assert [f.kind for f in frames] == [RECORD] * 4 + [VOID]
    assert frames[3].entry.key is None and frames[3].entry.value == b""
    assert frames[0].entry == entries(1)[0]
    assert all(a.end == b.at for a, b in itertools.pairwise(frames))


@pytest.mark.parametrize("cut", [1, 5, 12, 20, -1])
def test_torn_tail_is_reported_and_the_good_prefix_kept(tmp_path, cut):
    w = JournalWriter(tmp_path, max_bytes=10**7)
    w.append(entries(2))
    w.append(entries(1, start=2))
    w.close()
    seg = next(w.folder.glob("*.seg"))
    data = seg.read_bytes()
    last_start = list(unsettled(w.folder))[-1].at.offset
    seg.write_bytes(data[: last_start + cut] if cut > 0 else data[:-1])
    frames, tear = read_segment(seg)
    assert [f.entry.ident for f in frames] == ["e-0", "e-1"]
    assert tear is not None and tear.offset == last_start
    assert "torn record" in tear.describe()


def test_corrupt_checksum_is_a_tear_not_a_record(tmp_path):
    w = JournalWriter(tmp_path, max_bytes=10**7)
    w.append(entries(2))
    seg = next(w.folder.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # flip a byte inside the last payload
    seg.write_bytes(bytes(data))
    frames, tear = read_segment(seg)
    assert [f.entry.ident for f in frames] == ["e-0"]
    assert tear.reason == "checksum mismatch"


def test_trim_moves_the_cursor_and_deletes_whole_segments(tmp_path):
    w = JournalWriter(tmp_path, max_bytes=10**7, segment_bytes=400)
    for i in range(10):
        w.append(entries(1, start=i, size=100))
    segs = sorted(w.folder.glob("*.seg"))
    assert len(segs) >= 3
    frames = list(unsettled(w.folder))
    trim(w.folder, frames[6].at)
    left = list(unsettled(w.folder))
    assert [f.entry.ident for f in left] == [f"e-{i}" for i in range(6, 10)]
    assert sorted(w.folder.glob("*.seg"))[0].name == f"{frames[6].at.segment:08d}.seg"
    trim(w.folder, frames[-1].end)
    assert list(unsettled(w.folder)) == []


def test_spool_full_refuses_and_writes_nothing(tmp_path):
    w = JournalWriter(tmp_path, max_bytes=2000)
    w.append(entries(5, size=100))
    before = journal_bytes(tmp_path)
    with pytest.raises(SpoolFull, match=r"journal\.max_bytes"):
        w.append(entries(20, size=100))
    assert journal_bytes(tmp_path) == before


def test_a_write_that_fails_says_what_to_do(tmp_path):
    w = JournalWriter(tmp_path, max_bytes=10**7)
    w.append(entries(1))
    w._file.close()
    w._file = open(os.devnull, "rb")  # noqa: SIM115 - a file that refuses writes, as a full disk does
    with pytest.raises(JournalWriteError, match="then retry"):
        w.append(entries(1, start=1))
    w.append(entries(1, start=2))  # a new segment: the writer goes on
    assert [f.entry.ident for f in unsettled(w.folder)] == ["e-0", "e-2"]


def test_writer_alive_follows_the_process_holding_the_lock(tmp_path):
    code = (
        "import sys, time; from flywheel.journal import JournalWriter, Entry\n"
        f"w = JournalWriter({str(tmp_path)!r}, 10**6); w.append([Entry('t', None, b'x', 'i')])\n"
        "print(w.folder, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        folder = tmp_path / os.path.basename(proc.stdout.readline().strip())
        assert writer_alive(folder)
        proc.kill()
        proc.wait()
        assert not writer_alive(folder)
        assert [f.entry.ident for f in unsettled(folder)] == ["i"]  # what it wrote is still there
    finally:
        proc.kill()


def test_generated_idents_hold_no_digits():
    ident = new_ident()
    assert ident.startswith("~raw-") and not any(c.isdigit() for c in ident)
    assert Position(0, 5) < Position(1, 0)


def test_a_void_covers_only_the_earlier_records_of_its_ident_not_a_retry_after_it(tmp_path):
    """A client told "not delivered" sends the same event again; that retry was acknowledged
    and must stay unsettled until it has a fate (the 2-hour soak lost 6 such retries)."""
    from flywheel.journal import Entry, JournalWriter
    from flywheel.layout import StateLayout
    from flywheel.settings import load_settings
    from pipelines.settler import settle

    settings = load_settings(state_dir=tmp_path)
    writer = JournalWriter(StateLayout.of(settings).journal, 1 << 20, fsync=False)
    first = [Entry("raw", None, b'{"event_id": "x"}', "x"), Entry("raw", None, b'{"event_id": "y"}', "y")]
    writer.append(first)
    writer.void(first)  # the request failed: 503, the client retries x only
    writer.append([first[0]])  # the retry, acknowledged
    report = settle(settings, log=lambda _m: None)
    assert report.unsettled == 1 and report.trimmed == 2  # x's retry waits for its fate; the voided go
    writer.close()


def test_a_void_does_not_cover_an_earlier_acknowledged_copy_of_its_ident(tmp_path):
    """An event acknowledged once, then resent in a batch that failed: the failed resend is
    voided, the acknowledged copy still waits for its fate (the third 2-hour soak lost 36 such
    events when the broker lost the first copy and the void had trimmed it)."""
    from flywheel.journal import Entry, JournalWriter
    from flywheel.layout import StateLayout
    from flywheel.settings import load_settings
    from pipelines.settler import settle

    settings = load_settings(state_dir=tmp_path)
    writer = JournalWriter(StateLayout.of(settings).journal, 1 << 20, fsync=False)
    x = Entry("raw", None, b'{"event_id": "x"}', "x")
    writer.append([x])  # acknowledged (202)
    writer.append([x])  # the client resends its batch after another item's 503 ...
    writer.void([x])  # ... and that resend fails
    report = settle(settings, log=lambda _m: None)
    assert report.unsettled == 1 and report.trimmed == 0  # the acknowledged copy waits for a fate
    writer.close()
