"""The chaos drill, short (issue 26): ``flywheel run`` on embedded defaults under HTTP and
SDK traffic; the broker is SIGKILLed twice, the stream job, the ingestor and the HTTP app
once each; afterwards every acknowledged event has exactly one recorded fate and none is
missing. No timing is asserted (times are printed); ``bench/bench_soak.py`` runs it for hours.

The drill runs ``FLYWHEEL_DRILL_S`` seconds (default 180, to keep ``make test`` within its
budget); ``FLYWHEEL_DRILL_S=600 make test`` runs the 10-minute version, the kills spread over
it in the same proportions."""

from __future__ import annotations

import os

from bench.chaos import Drill, Kill
from flywheel.model_info import ModelInfo, write_model_info

DRILL_S = float(os.environ.get("FLYWHEEL_DRILL_S", "180"))


def at(share: float) -> float:
    """A moment of the drill, as a share of its length."""
    return round(share * DRILL_S, 1)


def known_model(drill: Drill) -> None:
    """The drill's model exists (its review items are queued, not dead-lettered as
    ``unknown_model``); no training needed for that."""
    info = ModelInfo("sentiment", "text-classification", ["negative", "neutral", "positive"], "")
    write_model_info(drill.settings.state_dir, info)


def test_chaos_drill_every_acknowledged_event_reaches_one_fate(tmp_path):
    drill = Drill(tmp_path, rate=30, batch=6)
    known_model(drill)
    drill.start()
    try:
        kills = [
            Kill(at(0.11), "broker"),
            Kill(at(0.33), "stream"),
            Kill(at(0.55), "ingest"),
            Kill(at(0.70), "http"),
            Kill(at(0.83), "broker"),
        ]
        drill.run(DRILL_S, kills, sample_every_s=60)
        report = drill.account(timeout_s=300)
    finally:
        rc = drill.stop()
    print(
        f"acknowledged {report.acknowledged}, refused {report.refused}, fates {report.fates}; "
        + "; ".join(f"{k.part} back in {k.recovered_s:.1f}s" for k in report.kills if k.recovered_s)
    )
    assert len(report.kills) == 5 and all(k.pid for k in report.kills)
    assert report.acknowledged > 4 * DRILL_S
    assert report.missing == [], (
        f"{len(report.missing)} acknowledged event(s) without a fate: {report.missing[:10]}"
    )
    assert sum(report.fates.values()) == report.acknowledged
    assert report.fates.get("clean") and report.fates.get("review") and report.fates.get("dlq")
    assert report.repeats > 0  # the resent batches: their copies went to the duplicates topic
    assert rc == 0


def test_chaos_drill_with_an_external_broker(tmp_path):
    """The same accounting with ``kafka.bootstrap_servers`` set: a separately started broker
    stands in for the external one (never killed: it is not the loop's); its parts are."""
    from flywheel.broker import EmbeddedBroker, free_port

    external = EmbeddedBroker(tmp_path / "external", port=free_port())
    external.start()
    try:
        drill = Drill(tmp_path / "loop", rate=30, batch=6, external_broker=external.address)
        known_model(drill)
        drill.start()
        try:
            kills = [Kill(15, "stream"), Kill(45, "ingest"), Kill(65, "http")]
            drill.run(90, kills, sample_every_s=45)
            report = drill.account(timeout_s=300)
        finally:
            rc = drill.stop()
        assert external.status().running  # `flywheel run` left the external broker alone
    finally:
        external.stop()
    print(f"external broker: acknowledged {report.acknowledged}, fates {report.fates}")
    assert len(report.kills) == 3 and report.acknowledged > 400
    assert report.missing == [], report.missing[:10]
    assert sum(report.fates.values()) == report.acknowledged
    assert rc == 0
