"""Names that become paths, and ids derived from ids: one rule each, no escapes, no collisions."""

from __future__ import annotations

import pytest

from flywheel.errors import InvalidEventError
from flywheel.events import validate_event
from flywheel.layout import StateLayout
from flywheel.names import InvalidNameError, check_model_name
from pipelines.review import review_event_id
from tests.helpers import make_event
from training.model_store import ModelStore


@pytest.mark.parametrize(
    "name", ["..", ".", ".hidden", "a/b", "../etc", "a\\b", "", "x" * 129, "a b", "a\x00"]
)
def test_bad_model_names_are_refused_everywhere_they_would_become_paths(tmp_path, name):
    with pytest.raises(InvalidNameError, match="not valid"):
        check_model_name(name)
    with pytest.raises(InvalidNameError):
        ModelStore(tmp_path).dir(name)
    with pytest.raises(InvalidNameError):
        StateLayout(tmp_path).history(name)
    with pytest.raises(InvalidEventError):
        validate_event(make_event(model_name=name))


@pytest.mark.parametrize("name", ["sentiment", "a", "Model_2.v-1", "x" * 128])
def test_good_model_names_pass(tmp_path, name):
    assert check_model_name(name) == name
    assert ModelStore(tmp_path).dir(name).parent == tmp_path / "models"
    validate_event(make_event(model_name=name))


def test_review_ids_fit_the_contract_and_never_collide():
    assert review_event_id("evt-1") == "evt-1.review"
    long_a, long_b = "a" * 125 + "x", "a" * 125 + "y"  # differ only past the cut
    ids = {review_event_id(i) for i in (long_a, long_b, "a" * 121, "a" * 122, "a" * 128)}
    assert len(ids) == 5
    for event_id in ids:
        assert len(event_id) <= 128
        validate_event(make_event(event_id=event_id))
    assert review_event_id(long_a) == review_event_id(long_a)  # stable: a relabel is a duplicate
