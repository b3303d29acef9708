"""A third task that lives only in tests: a tiny tabular regressor judged by mean absolute
error. It proves the task seam: it registers itself and runs through readiness, dataset, data
gate, fit, evaluate, register and decide without a change to any file outside this folder
(``tests/integration/test_toy_task.py``), and through the contract table
(``tests/unit/test_task_contract.py``)."""

from tests.toy_task.spec import ToyRegression

__all__ = ["ToyRegression"]
