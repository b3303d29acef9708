"""`flywheel submit`'s file reader: every unparsable line is reported by number, the rest go on."""

from __future__ import annotations

import json

from pipelines.sdk import SubmitResult
from pipelines.submit import submit_file
from tests.helpers import make_event


class FakeClient:
    def __init__(self):
        self.sent = []

    def submit_many(self, events, on_progress=None):
        self.sent += events
        return SubmitResult(accepted=[e.event_id for e in events])


def test_hostile_lines_are_reported_by_number_and_the_good_ones_are_sent(tmp_path):
    lines = [
        json.dumps(make_event(1)).encode(),
        b"[" * 50_000 + b"]" * 50_000,
        b'{"schema_version": 1, "schema_version": 1}',
        b"\xff\xfe not utf-8",
        b"9" * 5_000,
        b"\xef\xbb\xbf" + json.dumps(make_event(2)).encode(),
        json.dumps(make_event(3, schema_version=True)).encode(),
        json.dumps(make_event(4)).encode(),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    client = FakeClient()
    report = submit_file(client, path)
    assert [e.event_id for e in client.sent] == ["evt-000001", "evt-000004"]
    assert [(p.line, p.reason.split(":")[0]) for p in report.rejected] == [
        (2, "too_deep"),
        (3, "duplicate_key"),
        (4, "not_utf8"),
        (5, "not_json"),
        (6, "not_json"),
        (7, "schema_invalid"),
    ]
