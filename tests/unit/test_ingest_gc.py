"""``Ingestor.run`` freezes the heap while it runs (gc.freeze: its collections then skip
Feast, pandas and pyarrow) and thaws it when it returns, even on an error."""

from __future__ import annotations

import gc

import pytest

from flywheel.settings import load_settings
from pipelines.ingest import Ingestor


class _Consumer:
    def __init__(self, ingestor: Ingestor, fail: bool = False):
        self.ingestor, self.fail, self.frozen = ingestor, fail, []

    def consume(self, count, timeout):
        self.frozen.append(gc.get_freeze_count())
        if self.fail:
            raise RuntimeError("broker gone")
        self.ingestor.stop()
        return []

    def assignment(self):
        return []

    def close(self):
        pass


@pytest.mark.parametrize("fail", [False, True])
def test_the_heap_is_frozen_while_the_ingestor_runs(tmp_path, monkeypatch, fail):
    ingestor = Ingestor(load_settings(state_dir=tmp_path / "state"), store=object(), settle=False)
    consumer = _Consumer(ingestor, fail)
    monkeypatch.setattr(ingestor, "_consumer", lambda: consumer)
    assert gc.get_freeze_count() == 0
    if fail:
        with pytest.raises(RuntimeError, match="broker gone"):
            ingestor.run()
    else:
        ingestor.run()
    assert consumer.frozen and consumer.frozen[0] > 10_000  # the modules' objects, at least
    assert gc.get_freeze_count() == 0
