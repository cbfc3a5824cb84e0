"""Settings of the test session.

With ``FASTMLP_TEST_NO_SKIP=1`` (set by ``.ci/run``) a skipped test is a failure: the
``test`` extra installs every optional dependency and the MNIST files are in the repository,
so in CI a skip can only mean that something the README promises went untested. A test
whose skip depends on the machine rather than on the installation (running as root, not on
Linux) says so with ``@pytest.mark.may_skip(reason)``; ``pytest -rs`` lists those skips.
"""

from __future__ import annotations

import os

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
