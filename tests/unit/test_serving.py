"""What a registered version records to be rebuilt for serving (its base model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flywheel.errors import FlywheelError
from flywheel.tasks.text import TextClassification
from flywheel.tasks.text.model import default_base_model
from orchestration.serving import serving_meta

RECORD = SimpleNamespace(max_length=64)


def test_the_packaged_encoder_is_recorded_as_the_default_and_another_by_its_path(tmp_path):
    packaged = serving_meta(TextClassification(default_base_model()), ["a", "b"], RECORD)
    assert packaged["base_model"] is None and packaged["task"] == "text-classification"
    assert TextClassification.from_serving_meta(packaged).base_model == default_base_model()
    custom = serving_meta(TextClassification(tmp_path), ["a", "b"], RECORD)
    assert custom["base_model"] == str(tmp_path)
    assert TextClassification.from_serving_meta(custom).base_model == tmp_path


def test_a_version_whose_base_model_is_missing_here_fails_with_the_fix():
    meta = serving_meta(TextClassification("/nowhere/encoder"), ["a"], RECORD)
    with pytest.raises(FlywheelError, match="/nowhere/encoder, which is not on this machine; install it"):
        TextClassification.from_serving_meta(meta)
