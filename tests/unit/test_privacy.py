"""Pseudonyms, the forgotten list, the per-record lineage file and the offline erasure."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_repo.definitions import SUBJECT
from feature_repo.store import erase_offline, find_offline, offline_dir, offline_uris, write_offline_batch
from flywheel.errors import ConfigError, InvalidEventError
from flywheel.events import json_schema, validate_event
from flywheel.privacy import PSEUDONYM, Forgotten, PrivacyError, event_digest, pseudonym, subject_key
from flywheel.settings import load_settings
from pipelines.records import Origin, RoutedRecord
from pipelines.transform import pseudonymised, route_raw
from tests.helpers import make_event
from training.version import SampleLineage

KEY = b"k" * 32


@pytest.fixture
def settings(tmp_path):
    return load_settings(state_dir=tmp_path / "state")


def test_the_key_is_made_once_private_and_a_configured_key_wins(settings):
    key = subject_key(settings)
    path = settings.state_dir / "privacy" / "subject.key"
    assert len(key) == 32 and subject_key(settings) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    configured = load_settings(state_dir=settings.state_dir, privacy={"subject_key": "x" * 40})
    assert subject_key(configured) == b"x" * 40
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings(state_dir=settings.state_dir, privacy={"subject_key": "short"})


def test_a_torn_key_file_is_an_error_that_says_what_to_do(settings):
    path = settings.state_dir / "privacy" / "subject.key"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half")
    with pytest.raises(PrivacyError, match="restore it from a backup"):
        subject_key(settings)


@given(st.text(min_size=1, max_size=128))
def test_pseudonyms_are_keyed_stable_and_shaped(subject):
    p = pseudonym(KEY, subject)
    assert PSEUDONYM.fullmatch(p) and pseudonym(KEY, subject) == p
    assert pseudonym(KEY, p) == p  # a stored pseudonym passes through unchanged
    if not PSEUDONYM.fullmatch(subject):
        assert pseudonym(b"o" * 32, subject) != p


def test_subject_id_is_optional_bounded_and_in_the_schema():
    assert validate_event(make_event(1)).subject_id is None
    assert validate_event(make_event(1, subject_id="alice@example.com")).subject_id == "alice@example.com"
    for bad in ("", " ", "a" * 129, "bad\x00id", 42):
        with pytest.raises(InvalidEventError):
            validate_event(make_event(1, subject_id=bad))
    assert json_schema()["properties"]["subject_id"]["anyOf"][0]["maxLength"] == 128


def test_the_stream_step_stores_the_pseudonym_never_the_subject():
    raw = validate_event(make_event(1, subject_id="alice@example.com")).to_json_bytes()
    _, _, record, _ = route_raw(raw, None, "t.raw", 0, 1, subject_key=KEY)
    routed = RoutedRecord.from_json(record)
    assert routed.subject == pseudonym(KEY, "alice@example.com") and "alice" not in record
    _, _, keyless, _ = route_raw(raw, None, "t.raw", 0, 1)  # no key: dropped, not kept as it came
    assert RoutedRecord.from_json(keyless).subject is None and "alice" not in keyless
    assert pseudonymised(validate_event(make_event(2)), KEY).subject_id is None


def test_forgotten_ids_and_subjects_are_found_and_the_list_names_nobody(settings):
    plain = "evt-plaintext-0001"  # not a hex string: cannot appear inside a digest by chance
    forgotten = Forgotten.of(settings)
    assert forgotten.which([(plain, None)]) == set() and not forgotten.path.exists()  # nothing, no file
    forgotten.add("r1", [plain], [pseudonym(forgotten.key, "bob")])
    forgotten.add("r1", [plain], [])  # idempotent
    bob = pseudonym(forgotten.key, "bob")
    asked = [(plain, None), ("e2", bob), ("e3", None), ("e4", "ps1:" + "0" * 32)]
    assert forgotten.which(asked) == {plain, "e2"}
    assert forgotten.counts() == {"events": 1, "subjects": 1}
    forgotten.close()  # the last connection's close checkpoints the WAL into the file read below
    body = forgotten.path.read_bytes()
    assert event_digest(forgotten.key, plain).encode() in body
    assert plain.encode() not in body and b"bob" not in body
    assert stat.S_IMODE(forgotten.path.stat().st_mode) == 0o600


def test_the_forgotten_list_refuses_another_key(settings):
    Forgotten.of(settings).add("r1", ["e1"])
    other = Forgotten(settings.state_dir / "privacy" / "forgotten.sqlite", b"o" * 32)
    with pytest.raises(PrivacyError, match="another pseudonym key"):
        other.which([("e1", None)])


def test_a_refused_events_subject_is_masked_in_the_dlq_and_the_admin_route_checks_it_like_the_contract():
    from flywheel.events import subject_problem
    from pipelines.dlq import DlqRecord

    raw = b'{"schema_version": 2, "event_id": "x1", "subject_id": "user-8812", "input": {}}'
    _, _, record, _ = route_raw(raw, b"x1", "t.raw", 0, 3, subject_key=KEY)
    letter = DlqRecord.from_json(record)
    assert "user-8812" not in record and '"subject_id": "[SUBJECT]"' in letter.raw.text
    assert subject_problem("user/8812") is None and subject_problem("tab\tok") is None
    assert "control character" in subject_problem("bad\x00") and "characters" in subject_problem("x" * 129)


def test_the_access_log_names_no_subject():
    import logging

    from pipelines.http_api import _redact_subject_paths

    record = logging.LogRecord(
        "uvicorn.access", 20, "", 0, "%s - %s %s", ("1.2.3.4", "DELETE", "/v1/subjects/bob"), None
    )
    assert _redact_subject_paths(record) and record.args[2] == "/v1/subjects/[SUBJECT]"


def _rows(ids, subject=None, uri=None):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return [
        {
            "sample_id": i,
            "event_timestamp": now,
            "ingested_at": now,
            "model_name": "m",
            "text": "t",
            SUBJECT: subject,
            "input_uri": uri,
        }
        for i in ids
    ]


def test_offline_erasure_rewrites_only_the_files_that_hold_the_rows(settings):
    offline_dir(settings).mkdir(parents=True)
    write_offline_batch(settings, _rows(["a1", "a2"], "ps-a", "file:///x/shared.png"), "one")
    write_offline_batch(settings, _rows(["b1"], "ps-b", "file:///x/shared.png"), "two")
    write_offline_batch(settings, _rows(["a3"], "ps-a", "file:///x/own.png"), "three")
    untouched = offline_dir(settings) / "part-two.parquet"
    before = (untouched.stat().st_mtime_ns, untouched.read_bytes())
    found = find_offline(settings, set(), {"ps-a"}, ("input_uri",))
    assert found.sample_ids == {"a1", "a2", "a3"}
    assert found.files == {"part-one.parquet": 2, "part-three.parquet": 1}
    assert found.uris == {"file:///x/shared.png", "file:///x/own.png"}
    assert offline_uris(settings, ("input_uri",), found.sample_ids) == {"file:///x/shared.png"}  # b1's
    assert erase_offline(settings, sorted(found.files), found.sample_ids) == 3
    assert erase_offline(settings, sorted(found.files), found.sample_ids) == 0  # again: nothing left
    assert not (offline_dir(settings) / "part-one.parquet").exists()  # emptied files go
    assert (untouched.stat().st_mtime_ns, untouched.read_bytes()) == before
    assert not find_offline(settings, {"a1"}, {"ps-a"}).sample_ids
    assert not [p for p in os.listdir(offline_dir(settings).parent) if p.startswith(".tmp")]


def test_sample_lineage_keeps_ids_roles_and_a_digest_of_the_set(tmp_path):
    import pandas as pd

    train = pd.DataFrame({"sample_id": ["b", "a"], "label": ["x", "y"], "origin": ["new", "replay"]})
    validation = pd.DataFrame({"sample_id": ["c"], "label": ["x"]})
    holdouts = {"golden": pd.DataFrame({"sample_id": ["g"], "label": ["x"]})}
    lineage = SampleLineage.of(train, validation, holdouts)
    lineage.save(tmp_path / "samples.parquet")
    back = SampleLineage.load(tmp_path / "samples.parquet")
    assert back.ids("train") == {"a", "b"} and back.ids() == {"a", "b", "c", "g"}
    assert dict(zip(back.frame["sample_id"], back.frame["origin"], strict=True))["c"] == "new"
    same = SampleLineage.of(train.iloc[::-1], validation, holdouts)
    assert back.digest() == same.digest() != SampleLineage.of(train.head(1), validation, {}).digest()
    assert pq.ParquetFile(tmp_path / "samples.parquet").metadata.row_group(0).column(0).compression == "ZSTD"


def test_a_routed_record_exposes_only_a_string_subject():
    event = validate_event(make_event(1, subject_id="ps1:" + "a" * 32))
    record = RoutedRecord.of(event, False, 0, Origin("t", 0, 0))
    assert record.subject == "ps1:" + "a" * 32


def test_a_receipt_after_a_torn_audit_line_starts_its_own_line_and_is_written_once(settings):
    from flywheel.layout import StateLayout
    from orchestration.forget import STEPS, Erasure, _receipt, receipts

    audit = StateLayout.of(settings).audit_log
    audit.parent.mkdir(parents=True)
    audit.write_text('{"receipt": "fg-old", "by": "ev')  # a kill mid-append
    erasure = Erasure(
        "fg-new", "subject", "ps1:" + "a" * 32, ["e1", "e1.review", "e2"], "2026-12-07T00:00:00+00:00"
    )
    erasure.found = ["e1", "e2"]  # the synthetic review-answer id is erased, not counted
    erasure.counts = {"feast_offline": {"rows": 2}}
    _receipt(settings, erasure)
    _receipt(settings, erasure)  # a retry after a kill between the append and the journal's removal
    (receipt,) = receipts(settings)
    assert (
        receipt.receipt == "fg-new"
        and receipt.events == 2
        and receipt.removed == {"feast_offline": {"rows": 2}}
    )
    assert (
        "e1" not in audit.read_text().replace(receipt.event_ids_hmac, "") and "ps1:" not in audit.read_text()
    )
    assert STEPS[0] == "tombstones" and STEPS[-1] == "receipt"


def test_a_version_folder_forgets_examples_and_labels_but_keeps_the_ids(tmp_path):
    import pandas as pd

    from training.data_gate import DataGateReport, Quarantine
    from training.screen_report import LabelScreenReport
    from training.version import VersionFolder

    folder = VersionFolder.create(tmp_path / "v2", "run-1")
    train = pd.DataFrame(
        {"sample_id": ["a", "b"], "text": ["secret a", "b"], "label": ["x", "y"], "origin": "new"}
    )
    folder.save_dataset(train, train.head(0), {"golden": train.head(0)})
    examples = [
        {"sample_id": "a", "reason": "too_long", "text": "secret a"},
        {"sample_id": "b", "reason": "r"},
    ]
    folder.save_data_gate(DataGateReport(True, 2, quarantine=Quarantine(2, {"too_long": 2}, list(examples))))
    folder.save_label_screen(LabelScreenReport(flagged=2, examples=list(examples)))
    assert folder.erase_samples({"a"}) == 1
    for name in ("gate.json", "gate.txt", "screen.json", "data/train.parquet"):
        assert b"secret a" not in (folder.path / name).read_bytes(), name
    lineage = folder.sample_lineage()
    assert lineage.ids() == {"a", "b"}  # who learned from what stays known ...
    assert lineage.frame.set_index("sample_id")["label"].isna().to_dict() == {
        "a": True,
        "b": False,
    }  # ... not what
