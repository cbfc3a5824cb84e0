"""fastmlp: fast multi-layer perceptrons on CPUs.

C kernels and Cython loops with OpenMP do the work; this package is the thin API:

>>> import fastmlp
>>> model = fastmlp.train(X, y, hidden=(128, 64), epochs=5)   # doctest: +SKIP
>>> model.predict(X_test)                                     # doctest: +SKIP
"""

from fastmlp import datasets, reference
from fastmlp.model import MLP
from fastmlp.persistence import load, save
from fastmlp.training import train

__all__ = ["MLP", "datasets", "load", "reference", "save", "train"]
__version__ = "0.1.0"
