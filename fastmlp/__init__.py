"""fastmlp: fast multi-layer perceptrons on CPUs.

C kernels and Cython loops with OpenMP do the work; this package is the thin API:

>>> import fastmlp
>>> model = fastmlp.train(X, y, hidden=(128, 64), epochs=5)   # doctest: +SKIP
>>> model.predict(X_test)                                     # doctest: +SKIP
"""

import os

# libgomp spins for ~300,000 iterations (milliseconds) at each barrier before it sleeps.
# When other processes share the cores, a spinning thread burns the time slice its
# partner needs, and training ran 10-40x slower in our measurements (docs/ARCHITECTURE.md).
# libgomp reads this once, when it loads, so it is set before the extension is imported,
# and only if the user has not chosen a value.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

try:
    from fastmlp import _network, _trainer  # noqa: F401  (the compiled extension)
except ImportError as exc:  # a source tree without an in-place build, most often
    if exc.name is None:  # raised by an extension's own import code (_blas: SciPy's BLAS)
        raise
    raise ImportError(
        f"fastmlp's compiled extension is missing from {os.path.dirname(__file__)}. If that "
        "is a source checkout, run `python setup.py build_ext --inplace` there, or run from "
        "another directory so that the installed fastmlp (pip install .) is imported."
    ) from exc

from fastmlp import datasets, reference
from fastmlp.int8 import QuantizedMLP, quantize
from fastmlp.model import MLP
from fastmlp.persistence import load, save
from fastmlp.training import train

__all__ = [
    "MLP",
    "MLPClassifier",
    "MLPRegressor",
    "QuantizedMLP",
    "datasets",
    "load",
    "quantize",
    "reference",
    "save",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The scikit-learn estimators load on first use: scikit-learn is an optional extra.
    if name in ("MLPClassifier", "MLPRegressor"):
        try:
            from fastmlp import sklearn
        except ImportError as exc:
            raise ImportError(
                f"fastmlp.{name} needs scikit-learn: pip install 'fastmlp[sklearn]'"
            ) from exc
        return getattr(sklearn, name)
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
