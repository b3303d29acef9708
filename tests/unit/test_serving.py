"""What a registered version records to be rebuilt for serving (its base model)."""

from __future__ import annotations

import pytest

from flywheel.errors import FlywheelError
from orchestration.serving import base_model_of, serving_meta
from training.tasks import default_base_model


def test_the_packaged_encoder_is_recorded_as_the_default_and_another_by_its_path(tmp_path):
    packaged = serving_meta("text-classification", ["a", "b"], str(default_base_model()), 64)
    assert packaged["base_model"] is None and base_model_of(packaged) is None
    custom = serving_meta("text-classification", ["a", "b"], str(tmp_path), 64)
    assert custom["base_model"] == str(tmp_path) and base_model_of(custom) == str(tmp_path)


def test_a_version_whose_base_model_is_missing_here_fails_with_the_fix():
    meta = serving_meta("text-classification", ["a"], "/nowhere/encoder", 64)
    with pytest.raises(FlywheelError, match="/nowhere/encoder, which is not on this machine; install it"):
        base_model_of(meta)
