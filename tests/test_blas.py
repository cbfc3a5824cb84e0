"""fastmlp._blas takes scipy's sgemm/dgemm from scipy.linalg.cython_blas at import.

Each case imports fastmlp._blas in a fresh interpreter (an extension module initializes
once per process) with a stand-in for ``scipy.linalg.cython_blas``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp

# The interpreter must import the same fastmlp as this process (a source tree or installed).
ROOT = str(Path(fastmlp.__file__).resolve().parent.parent)

SCRIPT = """
import sys, types
import scipy.linalg
from scipy.linalg import cython_blas
fake = types.ModuleType("scipy.linalg.cython_blas")
fake.__pyx_capi__ = {CAPI}
sys.modules["scipy.linalg.cython_blas"] = fake
scipy.linalg.cython_blas = fake
try:
    import fastmlp._blas
except ImportError as exc:
    print("ImportError:", exc)
else:
    print("imported")
"""


def import_blas_with(capi: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    script = SCRIPT.replace("{CAPI}", capi)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_real_capsules_import():
    assert import_blas_with("dict(cython_blas.__pyx_capi__)") == "imported"


@pytest.mark.parametrize(
    "capi, missing",
    [
        ("{}", "sgemm"),
        ('{k: v for k, v in cython_blas.__pyx_capi__.items() if k != "dgemm"}', "dgemm"),
        # A capsule of another signature under the name: its pointer must not be used.
        ('dict(cython_blas.__pyx_capi__, sgemm=cython_blas.__pyx_capi__["sdot"])', "sgemm"),
        ('dict(cython_blas.__pyx_capi__, dgemm=cython_blas.__pyx_capi__["sgemm"])', "dgemm"),
    ],
)
def test_missing_or_mismatched_capsule_is_a_clear_import_error(capi, missing):
    out = import_blas_with(capi)
    assert out.startswith("ImportError:"), out
    assert f"scipy.linalg.cython_blas.{missing}" in out
    assert "Install a SciPy" in out
