"""flywheel.lazy: a module declared at the top, imported on first use."""

from __future__ import annotations

import subprocess
import sys


def test_a_lazy_module_is_imported_on_first_attribute_read_and_then_is_the_module():
    code = """
import sys
from flywheel.lazy import lazy_import
wave = lazy_import("wave")
assert "wave" not in sys.modules, "imported too early"
print(repr(wave))
assert wave.Error is sys.modules["wave"].Error  # first read imports it
assert wave.open is sys.modules["wave"].open
assert "open" in dir(wave)
assert not hasattr(lazy_import("colorsys"), "__wrapped__")  # probing dunders imports nothing
assert "colorsys" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["<lazy module 'wave'>", "ok"]


def test_an_unknown_module_fails_when_used_naming_it():
    import pytest

    from flywheel.lazy import lazy_import

    missing = lazy_import("no_such_module_here")
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        _ = missing.anything
