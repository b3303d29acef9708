"""Shared fixtures. Integration fixtures start real services on free loopback ports."""

from __future__ import annotations

import os
import uuid

import pytest

from flywheel.broker import EmbeddedBroker, free_port
from flywheel.kafka import ensure_topics
from flywheel.settings import load_settings


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch):
    """Tests build their settings explicitly; a developer's FLYWHEEL_* vars must not leak in."""
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real tansu broker for the whole session, on a free loopback port."""
    b = EmbeddedBroker(tmp_path_factory.mktemp("broker"), port=free_port())
    b.start()
    yield b
    b.stop()


@pytest.fixture
def settings(broker, tmp_path):
    """Settings pointing at the session broker, with topics under a prefix unique to the test."""
    s = load_settings(
        state_dir=tmp_path / "state",
        broker={"port": broker.port},
        kafka={"topic_prefix": f"t{uuid.uuid4().hex[:10]}", "delivery_timeout_s": 20},
    )
    ensure_topics(s)
    return s
