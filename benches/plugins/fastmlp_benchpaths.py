"""pytest plugin: ``pytest --benchmark-only`` with no paths runs the benchmarks in benches/.

pyproject.toml loads it (``addopts = "-p fastmlp_benchpaths"``, with this directory in
``pythonpath``). Plain ``pytest`` collects ``testpaths`` (tests/), the quick test run; with
``--benchmark-only`` that would skip every test and run no benchmark, so this plugin puts
``benches`` on the command line instead, as if the user had typed it. Paths given on the
command line are left alone, and so is a run from another directory than the root (pytest
uses ``testpaths`` only from there).

Why a plugin and not a root conftest.py: a conftest hook cannot change the paths before
pytest picks its initial conftests, so benches/conftest.py would load late, after
pytest-benchmark read its options; and under pytest's default import mode a root
conftest.py puts the repository root on ``sys.path``, so ``import fastmlp`` would find the
source tree (no compiled modules after ``pip install .``) instead of the installed package.
This directory holds nothing but this file, so having it on ``sys.path`` imports nothing
else.
"""

from __future__ import annotations

BENCHES = "benches"


def pytest_load_initial_conftests(early_config, parser, args):
    options = early_config.known_args_namespace
    if not getattr(options, "benchmark_only", False) or options.file_or_dir or options.pyargs:
        return
    root = early_config.rootpath
    if early_config.invocation_params.dir != root or not (root / BENCHES).is_dir():
        return
    # `args` is the command line pytest parses next (pytest's documented way to add
    # arguments here); the early namespace picks the initial conftests right after this.
    args.insert(0, BENCHES)
    options.file_or_dir = [BENCHES]
