"""Dependencies declared at the top of a module, loaded on first use.

``np = lazy_import("numpy")`` at the top of a module says what it depends on where a reader
looks for it (and where ``tests/unit/test_import_graph.py`` finds it), while ``import
flywheel.tasks``, ``flywheel --help`` and the stream job's UDF worker do not pay for libraries
they never touch: the module is imported the first time an attribute is read, then answers as
the real one. This is the lazy loading of scientific Python's SPEC 1 (``lazy_loader``), without
replacing anything in ``sys.modules``: an ordinary ``import numpy`` elsewhere is unaffected.

Use it for a whole module (``np.asarray``, ``flow.retrain``); a name imported from a module
(``from x import Y``) stays an ordinary import, at the top or, for the heaviest libraries
(torch, transformers, peft, mlflow, pyflink, feast, great_expectations, airflow), inside the
function that needs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_LOADING_DUNDERS = ("__version__", "__path__", "__file__", "__all__")


class LazyModule(ModuleType):
    """Stands for module ``name`` until an attribute is read; then imports it and answers from it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def _load(self) -> ModuleType:
        module = importlib.import_module(self.__dict__["_lazy_target"])
        # later reads are plain attribute hits; names a module adds later still come by __getattr__
        self.__dict__.update({k: v for k, v in vars(module).items() if k != "__dict__"})
        return module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__") and attr not in _LOADING_DUNDERS:
            raise AttributeError(attr)  # copy, pickle and inspect probe dunders: no import for them
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"


def lazy_import(name: str) -> Any:
    """The module ``name``, imported when first used (see the module docstring)."""
    return LazyModule(name)
