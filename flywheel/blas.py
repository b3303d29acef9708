"""BLAS threads for small linear solvers.

sklearn's logistic-regression probes (the baseline fitted beside every version, the label
screen's cross-validated probe) solve problems of a few thousand rows by a few hundred
columns. On a 2-core machine beside torch or the JVM, OpenBLAS's two threads spin-wait on
each other for every small product: ``fit_probe`` on 1,500 tweet embeddings took 13.3 s with
two BLAS threads and 0.45 s with one (``bench/bench_training.py``, docs/guide/training.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flywheel.lazy import lazy_import

_threadpoolctl = lazy_import("threadpoolctl")


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS and OpenMP limited to one thread for the block (restored after it)."""
    with _threadpoolctl.threadpool_limits(1):
        yield
