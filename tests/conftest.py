"""Settings of the test session.

With ``FASTMLP_TEST_NO_SKIP=1`` (set by ``.ci/run``) a skipped test is a failure: the
``test`` extra installs every optional dependency and the MNIST files are in the repository,
so in CI a skip can only mean that something the README promises went untested. A test
whose skip depends on the machine rather than on the installation (running as root, not on
Linux) says so with ``@pytest.mark.may_skip(reason)``; ``pytest -rs`` lists those skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

NO_SKIP_ENV = "FASTMLP_TEST_NO_SKIP"

# scikit-learn's check_array_api_input (run by test_sklearn.py's estimator checks) skips
# unless SciPy's array API support is on, which SciPy reads once, at import.
os.environ.setdefault("SCIPY_ARRAY_API", "1")


def _no_skip() -> bool:
    return os.environ.get(NO_SKIP_ENV, "") not in ("", "0")


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"{what} skipped ({_reason(report)}), and {NO_SKIP_ENV}=1 allows no skip: install "
        "the test extra (pip install '.[test]') or mark a machine-dependent skip may_skip"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        _no_skip()
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("may_skip") is None
    ):
        _fail(report, "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module-level pytest.importorskip skips the whole file at collection.
    outcome = yield
    report = outcome.get_result()
    if _no_skip() and report.skipped:
        _fail(report, f"{collector.nodeid} was")


def _unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `a` that starts one byte past an aligned address."""
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


class _SubArray(np.ndarray):
    pass


def _not_ready_requests(X: np.ndarray) -> list:
    """Variants of a ready request X (2-D, C-contiguous, aligned, 2 to 63 rows) that a
    compiled request path must leave to the checks: another dtype or byte order, another
    layout, row order or shape, no rows or more than one block of them, an unaligned
    buffer, a subclass, a list."""
    n, k = X.shape
    return [
        X.astype(np.float64 if X.dtype == np.float32 else np.float32),
        X.astype(X.dtype.newbyteorder()),
        np.asfortranarray(X),
        np.ones((n, 2 * k), X.dtype)[:, ::2],
        X[::-1],
        X.reshape(-1),
        X[None],
        X[:0],
        np.ones((64, k), X.dtype),
        np.ones((n, k + 1), X.dtype),
        _unaligned(X),
        X.view(_SubArray),
        X.tolist(),
    ]


@pytest.fixture
def unaligned() -> Callable[[np.ndarray], np.ndarray]:
    """:func:`_unaligned`: an unaligned C-contiguous copy of an array."""
    return _unaligned


@pytest.fixture
def not_ready_requests() -> Callable[[np.ndarray], list]:
    """:func:`_not_ready_requests`: what a request path must not take as it stands."""
    return _not_ready_requests
