"""Run the fastmlp benchmarks once and print a Markdown summary ready for the README.

Usage, from the repository root::

    pip install '.[bench]' && python benches/report.py [--threads N]

(or ``PYTHONPATH=. python benches/report.py`` after ``python setup.py build_ext
--inplace``). The peers (PyTorch, scikit-learn, ONNX Runtime, JAX) are raced when installed.

One run measures, on this machine and in this order:

1. the sgemm peak: NumPy float32 matmul of 4096 x 4096 matrices at the benchmark thread
   count (best of 3), the yardstick of the GFLOP/s figures;
2. the pytest-benchmark suites of SUITES (kernels, prediction, training, serving and the
   shape grid), run by pytest with ``--benchmark-json`` into a temporary file; medians and
   ratios come from that file, so fastmlp and its peers are compared within one run;
3. the source material's four MNIST networks (``benches/reproduce.py``: test accuracy and
   training time; the first is the README's main job, ``examples/train_mnist.py``);
4. the time fastmlp needs to reach 98.0% MNIST test accuracy with 784-128-64-10, plain
   Adam lr 1e-3, trained epoch by epoch with a callback that scores the test set and stops
   training; only the training time is counted (the scoring is subtracted).

The NumPy peer is ``fastmlp.reference``, the readable specification the tests hold the
kernels to, not a tuned NumPy MLP (it allocates fresh arrays every step, computes the L2
penalty at l2=0 and the softmax's exponential twice); the tables name it so.

It prints the tables, writes them to ``benches/results.md`` and says how much CPU other
processes took meanwhile, since a busy machine makes every figure here meaningless.
Absolute times drift between machines; the ratios are the figures to compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from paired import YARDSTICK, fmt_paired, paired_ratio
from threadpoolctl import threadpool_info, threadpool_limits

import fastmlp

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent

LAYER_SIZES = (784, 128, 64, 10)
N_TRAIN = 60_000
TARGET_ACCURACY = 0.98
TARGET_BATCH_SIZES = (32, 128)
MAX_EPOCHS = 40
PEERS = ("numpy", "torch", "sklearn", "onnxruntime")
PEER_NAMES = {
    "fastmlp": "fastmlp",
    "numpy": "NumPy reference (untuned)",
    "torch": "PyTorch",
    "sklearn": "scikit-learn",
    "onnxruntime": "ONNX Runtime",
    "jax": "JAX",
}
# The suites summarised here, in the order `pytest benches/` runs them: order matters (run
# after the training suite, PyTorch's 1-sample predict_proba was once 10x slower).
# Other files in benches/ are run by `pytest benches/` only.
SUITES = (
    "test_bench_kernels.py",
    "test_bench_predict.py",
    "test_bench_training.py",
    "test_bench_serving.py",
    "test_bench_shared_cores.py",
    # Last: JAX's import starts XLA's thread pool, which then stays in the process.
    "test_bench_grid.py",
)
# The issue-15 goals of every shape of the grid: at least GRID_VS_TORCH times PyTorch's
# speed, or at least GRID_PEAK_SHARE of the sgemm peak, and faster than JAX.
GRID_VS_TORCH = 1.5
GRID_PEAK_SHARE = 0.85
# Issue 15: with the cores shared, all threads at most this much slower than one.
SHARED_SLACK = 1.2
# Distributions whose versions the Machine section names.
VERSIONS_SHOWN = ("numpy", "scipy", "torch", "scikit-learn", "onnxruntime", "jax", "optax")
# Above this share of the CPUs taken by other processes, the figures are flagged.
BUSY_WARNING = 0.05


# -- FLOP counts -------------------------------------------------------------------------


def training_flops_per_sample(sizes=LAYER_SIZES) -> int:
    """GEMM FLOPs of one training sample: forward, weight gradient, input gradient.

    Each layer costs ``2 * fan_in * fan_out`` per GEMM: the forward product, the weight
    gradient ``A^T dZ`` and the input gradient ``dZ W^T``. The first layer needs no input
    gradient (nothing learns below it), so it has two GEMMs and the others three.
    Element-wise work, the loss and the Adam update are not counted.
    """
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * (2 * sum(macs) + sum(macs[1:]))


def forward_flops_per_sample(sizes=LAYER_SIZES) -> int:
    """GEMM FLOPs of one forward pass: ``2 * fan_in * fan_out`` per layer."""
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


# -- the machine -------------------------------------------------------------------------


def cpu_model() -> str:
    """CPU model name and whether it has AVX-512, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()

    def field(name: str) -> str:
        return next(
            (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith(name)),
            "?",
        )

    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    if "avx512f" in flags and "avx512_vnni" in flags:
        isa += " + VNNI"
    family, number = field("cpu family"), field("model\t")  # "model\t", not "model name"
    return f"{model} (family {family}, model {number}), {isa}"


def version(dist: str) -> str:
    """Installed version of a distribution, or "not installed" (nothing is imported)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def blas_libraries() -> list[str]:
    """The BLAS and OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, the one fastmlp calls)

    lines = []
    for lib in threadpool_info():
        desc = f"{lib['internal_api']} {lib.get('version') or ''}".strip()
        extra = [f"{k} {lib[k]}" for k in ("architecture", "threading_layer") if lib.get(k)]
        path = Path(lib["filepath"])
        owner = {"numpy.libs": ", NumPy's", "scipy.libs": ", SciPy's (fastmlp calls it)"}
        lines.append(
            f"{lib['user_api']}: {desc}{owner.get(path.parent.name, '')} "
            f"({', '.join(extra + [path.name])})"
        )
    return lines


# OpenBLAS kernels without AVX-512 (OPENBLAS_CORETYPE can choose them on any CPU).
NARROW_BLAS_KERNELS = {"haswell", "zen", "sandybridge", "nehalem", "prescott", "core2"}


def yardstick_note() -> str | None:
    """A line saying the sgemm peak is below the CPU's, when SciPy's OpenBLAS runs kernels
    without AVX-512 on a CPU that has it (fastmlp's own kernels use it), else None."""
    import scipy.linalg  # noqa: F401

    try:
        if "avx512f" not in Path("/proc/cpuinfo").read_text():
            return None
    except OSError:
        return None
    for lib in threadpool_info():
        arch = (lib.get("architecture") or "").lower()
        if Path(lib["filepath"]).parent.name == "scipy.libs" and arch in NARROW_BLAS_KERNELS:
            return (
                f"- the sgemm peak is OpenBLAS's {lib['architecture']} kernels (no AVX-512) on a "
                "CPU with AVX-512, which fastmlp's kernels use: its shares of that peak can "
                "pass 100%"
            )
    return None


class CpuByOthers:
    """CPU time used by other processes while this one ran, from /proc/stat.

    All CPUs' busy time (steal included: a hypervisor's other guests count too) minus this
    process's and its children's CPU time.
    """

    def __init__(self) -> None:
        self.wall0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def share(self) -> float | None:
        """Share of all CPUs that other processes kept busy since construction."""
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.wall0
        others = (busy - self.busy0) - (self._own() - self.own0)
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


# -- measurements ------------------------------------------------------------------------


def sgemm_peak(threads: int, n: int = 4096, repeats: int = 3) -> float:
    """Best GFLOP/s of a float32 ``n x n`` matmul in NumPy with BLAS at `threads`."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n), dtype=np.float32)
    B = rng.standard_normal((n, n), dtype=np.float32)
    C = np.empty_like(A)
    best = math.inf
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(A, B, out=C)  # warm-up: page faults, thread start
        for _ in range(repeats):
            tic = time.perf_counter()
            np.matmul(A, B, out=C)
            best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def run_suites(
    threads: int, max_time: float, log: Path, keep_json: Path | None
) -> tuple[dict, float, str]:
    """Run the SUITES with ``pytest --benchmark-only`` and a JSON report.

    Returns
    -------
    data : dict
        pytest-benchmark's JSON report.
    seconds : float
        Wall time of the pytest run.
    summary : str
        pytest's closing lines (pass/skip counts and skip reasons).
    """
    # The suites import the same fastmlp as this process: installed, or the source tree
    # through the caller's PYTHONPATH after an in-place build. `python -m pytest` puts its
    # working directory first on sys.path, so it runs in an empty one: from the checkout it
    # would import the source tree, which has no compiled modules after `pip install .`.
    # PYTHONPATH's entries are made absolute, so `PYTHONPATH=.` still names the checkout.
    pythonpath = [
        str(Path(entry).resolve())
        for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if entry
    ]
    env = dict(os.environ, FASTMLP_BENCH_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *(str(BENCHES / name) for name in SUITES),
            "--benchmark-only",
            f"--benchmark-json={out}",
            f"--benchmark-max-time={max_time}",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ]
        tic = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not out.exists():
            sys.exit(f"the benchmark suites failed (exit {proc.returncode}); see {log}")
        data = json.loads(out.read_text())
        if keep_json is not None:
            keep_json.write_text(out.read_text())
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    closing = [ln for ln in lines if ln.startswith("SKIPPED")] + lines[-1:]
    return data, seconds, "\n".join(closing)


def time_to_accuracy(mnist: tuple, threads: int, batch_size: int) -> dict:
    """Train 784-128-64-10 (float32, Adam) until the test accuracy reaches the target.

    Parameters
    ----------
    mnist : tuple
        ``((X, y), (X_test, y_test))`` as ``fastmlp.datasets.load_mnist`` returns it.
    threads : int
        fastmlp's ``n_threads``.
    batch_size : int
        Mini-batch size.

    Returns
    -------
    dict
        ``seconds`` of training (scoring excluded), ``epochs``, the last ``accuracy`` and
        whether the target was ``reached`` within MAX_EPOCHS.
    """
    (X, y), (X_test, y_test) = mnist
    scoring = 0.0
    accuracies: list[float] = []

    def check(figures: dict) -> bool:
        nonlocal scoring
        tic = time.perf_counter()
        accuracies.append(figures["model"].score(X_test, y_test))
        scoring += time.perf_counter() - tic
        return accuracies[-1] >= TARGET_ACCURACY

    tic = time.perf_counter()
    fastmlp.train(
        X,
        y,
        hidden=LAYER_SIZES[1:-1],
        epochs=MAX_EPOCHS,
        batch_size=batch_size,
        dtype=np.float32,
        seed=0,
        n_threads=threads,
        callbacks=[check],
    )
    wall = time.perf_counter() - tic
    return {
        "seconds": wall - scoring,
        "epochs": len(accuracies),
        "accuracy": accuracies[-1],
        "reached": accuracies[-1] >= TARGET_ACCURACY,
    }


# -- tables ------------------------------------------------------------------------------


def medians(data: dict) -> dict:
    """``{(suite, workload, impl, dtype, size, threads): median seconds}`` from the JSON."""
    table = {}
    keys = ("suite", "workload", "impl", "dtype", "threads")
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if not all(k in info for k in keys):
            continue  # not one of SUITES' benchmarks
        size = info.get("batch_size", info.get("n_samples"))
        key = (info["suite"], info["workload"], info["impl"], info["dtype"], size, info["threads"])
        table[key] = bench["stats"]["median"]
    return table


def fmt_time(seconds: float | None, unit: str) -> str:
    """A median in the given unit ("s", "ms" or "us"), or a dash when not measured."""
    if seconds is None:
        return "—"
    scale = {"s": 1, "ms": 1e3, "us": 1e6}[unit]
    value = seconds * scale
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    """``num / den`` as "3.2x", or a dash when either is missing."""
    if num is None or den is None:
        return "—"
    return f"{num / den:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def peak_share(info: dict, flops: float) -> tuple[float, float, float] | None:
    """The share of the sgemm peak of an epoch of `flops` FLOPs in a paired race: per
    round, the epoch's GFLOP/s over the round's peak; the median, least and greatest over
    the rounds.

    A round's peak is the best rate of the yardstick (conftest's ``sgemm_round``) in it and
    the rounds beside it: one 0.25 s product now and then reads 40% low on these hosts,
    which would put the epoch beside it far above the peak, while the drift over minutes
    that pairing follows moves slower than three rounds."""
    seconds = info["seconds"]
    rates = [info["sgemm_flops"] / t for t in seconds.get(YARDSTICK, [])]
    shares = [
        flops / t / max(rates[max(i - 1, 0) : i + 2])
        for i, t in enumerate(seconds["fastmlp"][: len(rates)])
    ]
    return (statistics.median(shares), min(shares), max(shares)) if shares else None


def fmt_share(share: tuple[float, float, float] | None) -> str:
    """A paired share of the peak as "66% (56%-77%)", or a dash."""
    return "—" if share is None else "{:.0%} ({:.0%}-{:.0%})".format(*share)


def training_table(data: dict) -> tuple[str, dict]:
    """One MNIST epoch per batch size and dtype, and the figures the targets need.

    Times are medians over the paired rounds; ratios and shares of the peak are medians of
    the per-round figures (least-greatest in brackets)."""
    flops = training_flops_per_sample() * N_TRAIN
    runs = [b["extra_info"] for b in data["benchmarks"]
            if b.get("extra_info", {}).get("suite") == "training"]  # fmt: skip
    threads = runs[0]["threads"] if runs else 1
    # fastmlp's runs: "fastmlp" at the session's count, "fastmlp {t} thr" at the others.
    counts = runs[0]["thread_counts"] if runs else [threads]
    peers = ("numpy", "torch", "sklearn")
    header = (
        ["dtype", "batch"]
        + [f"fastmlp {t} thr (s)" for t in counts]
        + [f"{PEER_NAMES[p]} (s)" for p in peers]
        + [f"vs {PEER_NAMES[p]}" for p in peers]
        + [f"scaling 1→{threads} thr", "GFLOP/s", "% of the rounds' sgemm peak"]
    )
    rows, figures = [], {}
    for info in runs:
        seconds = info["seconds"]

        def at(t, seconds=seconds):
            return seconds.get("fastmlp" if t == threads else f"fastmlp {t} thr", [])

        fast = statistics.median(seconds["fastmlp"])
        vs = {p: paired_ratio(seconds.get(p, []), seconds["fastmlp"]) for p in peers}
        scaling = {t: paired_ratio(at(t), seconds["fastmlp"]) for t in counts}
        share = peak_share(info, flops)
        figures[(info["dtype"], info["batch_size"])] = {
            "fastmlp": fast,
            "vs_torch": vs["torch"] and vs["torch"][0],
            "share": share and share[0],
            # Per count: its epoch over the session's count's, per round (median).
            "scaling": {t: r[0] for t, r in scaling.items() if r},
        }
        rows.append(
            [info["dtype"], str(info["batch_size"])]
            + [fmt_time(statistics.median(at(t)) if at(t) else None, "s") for t in counts]
            + [fmt_time(statistics.median(seconds[p]) if seconds.get(p) else None, "s")
               for p in peers]
            + [fmt_paired(vs[p]) for p in peers]
            + [fmt_paired(scaling.get(1)), f"{flops / fast / 1e9:.0f}", fmt_share(share)]
        )  # fmt: skip
    return table(header, rows), figures


def grid_table(data: dict) -> tuple[str, list[dict]]:
    """test_bench_grid.py: one epoch per shape, ratios to PyTorch and JAX, share of the peak.

    The shapes, row counts and each round's seconds come from the benchmarks' extra_info,
    in the order they ran. A ratio is the median over the paired rounds (benches/paired.py)
    of the peer's epoch over fastmlp's, with the least and greatest in brackets; so is the
    share of the sgemm peak, against the products each round timed (conftest's
    ``sgemm_round``).
    """
    header = [
        "shape",
        "batch",
        "GFLOP per epoch",
        "fastmlp (s)",
        "PyTorch (s)",
        "JAX (s)",
        "PyTorch / fastmlp",
        "JAX / fastmlp",
        "fastmlp GFLOP/s",
        "% of the rounds' sgemm peak",
        f"≥ {GRID_VS_TORCH}x PyTorch or ≥ {GRID_PEAK_SHARE:.0%} of peak",
        "faster than JAX",
    ]
    rows, figures = [], []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("suite") != "grid":
            continue
        sizes, bs, n_rows = tuple(info["layer_sizes"]), info["batch_size"], info["rows"]
        seconds = info["seconds"]
        t = {impl: statistics.median(v) if v else None for impl, v in seconds.items()}
        fast = t["fastmlp"]
        ratio = {peer: paired_ratio(seconds.get(peer, []), seconds["fastmlp"])
                 for peer in ("torch", "jax")}  # fmt: skip
        vs_torch, vs_jax = (ratio[p][0] if ratio[p] else None for p in ("torch", "jax"))
        flops = training_flops_per_sample(sizes) * n_rows
        share_range = peak_share(info, flops)
        share = share_range and share_range[0]
        goal = None
        if share is not None:
            goal = share >= GRID_PEAK_SHARE or (vs_torch is not None and vs_torch >= GRID_VS_TORCH)
        beats_jax = None if vs_jax is None else vs_jax > 1
        shape = "-".join(map(str, sizes))
        figures.append(
            {"shape": f"{shape} / {bs}", "share": share, "vs_torch": vs_torch,
             "vs_jax": vs_jax, "goal": goal, "beats_jax": beats_jax, "rows": n_rows,
             "rounds": len(seconds["fastmlp"])}
        )  # fmt: skip

        def status(ok):
            return "—" if ok is None else "met" if ok else "**not met**"

        rows.append(
            [
                shape,
                str(bs),
                f"{flops / 1e9:.2f}",
                *(fmt_time(t.get(i), "s") for i in ("fastmlp", "torch", "jax")),
                fmt_paired(ratio["torch"]),
                fmt_paired(ratio["jax"]),
                "—" if fast is None else f"{flops / fast / 1e9:.0f}",
                fmt_share(share_range),
                status(goal),
                status(beats_jax),
            ]
        )
    return table(header, rows), figures


def predict_table(m: dict, threads: int, peak: float) -> tuple[str, dict]:
    """predict_proba medians per input size; ratios are peer time over fastmlp's."""
    impls = ["fastmlp", *PEERS]
    header = (
        ["input", "unit"]
        + [PEER_NAMES[i] for i in impls]
        + [f"{PEER_NAMES[p]} / fastmlp" for p in PEERS]
    )
    rows, figures = [], {}
    # (rows, workload, label): MNIST test images, and one dense row of random pixels.
    cases = [
        (1, "predict_proba dense", "1 dense row"),
        (1, "predict_proba", "1 MNIST row"),
        (8, "predict_proba", "8 MNIST rows"),
        (64, "predict_proba", "64 MNIST rows"),
        (10_000, "predict_proba", "10,000 MNIST rows"),
    ]
    for n, workload, label in cases:
        unit = "us" if n <= 64 else "ms"
        t = {i: m.get(("predict", workload, i, "float32", n, threads)) for i in impls}
        figures[label] = t
        rows.append(
            [label, unit]
            + [fmt_time(t[i], unit) for i in impls]
            + [fmt_ratio(t[p], t["fastmlp"]) for p in PEERS]
        )
    floor = forward_flops_per_sample() * 10_000 / peak / 1e9
    figures["floor_10000"] = floor
    return table(header, rows), figures


def serving_table(data: dict) -> tuple[str, str]:
    """test_bench_serving.py: latency of 1, 8, 64 rows; calls/s of 1, 2, 4 client threads."""
    latency, clients = [], []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("suite") != "serving":
            continue
        if "batch" in info:
            latency.append((info["batch"], bench["stats"]["median"]))
        elif "clients" in info:
            clients.append((info["clients"], info["calls_per_s"], info["us_per_call"]))
    lat = table(
        ["rows per call", "median (us)", "us per row"],
        [[str(n), fmt_time(t, "us"), f"{t * 1e6 / n:.2f}"] for n, t in sorted(latency)],
    )
    conc = table(
        ["client threads", "calls/s (all clients)", "us per call"],
        [[str(c), f"{calls:,}", f"{us:.2f}"] for c, calls, us in sorted(clients)],
    )
    return lat, conc


def reproduce_table(rows: list[tuple]) -> str:
    """benches/reproduce.py's networks: accuracy reached and training time."""
    return table(
        ["network", "source claim", "must reach", "fastmlp (seed 0)", "training time"],
        [
            [name, claim, f"{target}%", f"{final:.2f}%" + ("" if ok else " (missed)"),
             f"{seconds:.2f} s"]
            for name, claim, target, final, seconds, ok in rows
        ],
    )  # fmt: skip


def shared_table(data: dict, threads: int) -> tuple[str, list[str]]:
    """test_bench_shared_cores.py: epochs beside a competing process or after the peers,
    and the cases where more threads were slower than one by more than the goal allows.

    Times are medians over the paired rounds; a ratio is the median of the per-round
    ratios to the 1-thread epoch (least-greatest in brackets)."""
    header = [
        "situation",
        "batch",
        "1 thr (s)",
        f"{threads} thr pinned (s)",
        f"{threads} thr adaptive (s)",
        "pinned / 1 thr",
        "adaptive / 1 thr",
    ]
    rows, missed = [], []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if info.get("suite") != "shared":
            continue
        seconds, bs = info["seconds"], info["batch_size"]
        runs = ("fastmlp", "fastmlp pinned", "fastmlp adaptive")
        pinned, adaptive = (paired_ratio(seconds[k], seconds["fastmlp"]) for k in runs[1:])
        rows.append(
            [info["workload"], str(bs)]
            + [fmt_time(statistics.median(seconds[k]), "s") for k in runs]
            + [fmt_paired(pinned), fmt_paired(adaptive)]
        )
        if adaptive is not None and adaptive[0] > SHARED_SLACK:
            missed.append(f"{info['workload']} bs{bs} ({adaptive[0]:.2f}x)")
    return table(header, rows), missed


def kernel_table(m: dict, threads: int) -> str:
    """Kernel medians at batch 128: fastmlp beside the NumPy reference."""
    rows = []
    for kernel in ("forward", "loss_and_gradients", "train_step", "softmax_xent", "adam"):
        for dtype in ("float32", "float64"):
            fast = m.get(("kernels", kernel, "fastmlp", dtype, 128, threads))
            ref = m.get(("kernels", kernel, "numpy", dtype, 128, threads))
            rows.append(
                [kernel, dtype, fmt_time(fast, "us"), fmt_time(ref, "us"), fmt_ratio(ref, fast)]
            )
    return table(["kernel", "dtype", "fastmlp (us)", "NumPy reference (us)", "speed-up"], rows)


def targets_table(
    train: dict,
    predict: dict,
    grid: list[dict],
    main_job: tuple,
    threads: int,
    shared_missed: list[str] | None,
) -> str:
    """The targets of shared/BRIEF.md that this run measures, against its figures."""

    def target(name, goal, value, fmt, met):
        if value is None:
            return [name, goal, "—", "not measured"]
        return [name, goal, fmt.format(value), "met" if met(value) else "**not met**"]

    b128, b32 = train[("float32", 128)], train[("float32", 32)]
    floor = predict["floor_10000"]
    dense, sparse = predict["1 dense row"]["fastmlp"], predict["1 MNIST row"]["fastmlp"]
    big = predict["10,000 MNIST rows"]["fastmlp"]
    name, _, _, accuracy, seconds, _ = main_job
    counts = sorted({1, 2, threads})
    # More threads slower than fewer: a count's epoch over the session's count's, per round.
    slower = [
        f"{dtype} bs{bs} {t1}→{t2} thr"
        for (dtype, bs), fig in train.items()
        for t1, t2 in zip(counts, counts[1:])
        if t1 in fig["scaling"] and t2 in fig["scaling"]
        and fig["scaling"][t2] > fig["scaling"][t1]
    ]  # fmt: skip

    def every_shape(name, goal, key, describe):
        measured = [g for g in grid if g[key] is not None]
        if not measured:
            return [name, goal, "—", "not measured"]
        missed = [f"{g['shape']} ({describe(g)})" for g in measured if not g[key]]
        this_run = f"{len(measured) - len(missed)} of {len(measured)} shapes"
        if missed:
            this_run += "; missed: " + ", ".join(missed)
        met = not missed and len(measured) == len(grid)
        return [name, goal, this_run, "met" if met else "**not met**"]

    def vs_torch_and_peak(g):
        ratio = "—" if g["vs_torch"] is None else f"{g['vs_torch']:.2f}x"
        return f"{ratio}, {g['share']:.0%}"

    rows = [
        target("epoch, batch 128, float32: vs PyTorch", "≥ 1.5x",
               b128["vs_torch"], "{:.2f}x", lambda r: r >= 1.5),
        target("epoch, batch 128, float32: share of the sgemm peak", "≥ 80%",
               b128["share"], "{:.0%}", lambda r: r >= 0.8),
        target("epoch, batch 32, float32: share of the sgemm peak", "≥ 50%",
               b32["share"], "{:.0%}", lambda r: r >= 0.5),
        target(f"98.0% test accuracy, the main job ({accuracy:.2f}%)", "< 1.2 s of training",
               seconds, "{:.2f} s", lambda s: accuracy >= 98.0 and s < 1.2),
        target("predict_proba, 1 dense row", "< 3 us", dense and dense * 1e6, "{:.1f} us",
               lambda us: us < 3),
        target("predict_proba, 1 MNIST row", "< 3 us", sparse and sparse * 1e6, "{:.1f} us",
               lambda us: us < 3),
        target("predict_proba, 10,000 rows", f"at the GEMM floor ({floor * 1e3:.1f} ms)",
               big and big / floor, "{:.2f}x the floor", lambda r: r <= 1.15),
        every_shape("training grid: vs PyTorch, or share of the sgemm peak",
                    f"≥ {GRID_VS_TORCH}x or ≥ {GRID_PEAK_SHARE:.0%}, every shape", "goal",
                    vs_torch_and_peak),
        every_shape("training grid: vs JAX", "faster, every shape", "beats_jax",
                    lambda g: f"{g['vs_jax']:.2f}x"),
        [f"thread scaling, epochs at {', '.join(map(str, counts))} threads",
         "never slower with more", "; ".join(slower) or "never slower",
         "**not met**" if slower else "met"],
        ["shared cores: adaptive threads vs 1 thread (competing process, after peers)",
         f"≤ {SHARED_SLACK:.1f}x", "—" if shared_missed is None
         else "; ".join(shared_missed) or "within", "not measured" if shared_missed is None
         else "**not met**" if shared_missed else "met"],
    ]  # fmt: skip
    return table(["target", "goal", "this run", "status"], rows)


# Where results.md's hand-written part (measurements behind design choices) begins.
HISTORY_HEADING = "## Measurements behind the code"

# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    import reproduce  # the source material's networks, as benches/reproduce.py runs them
    from conftest import bench_threads  # one definition of the default thread count

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="default: all usable CPUs")
    parser.add_argument("--output", type=Path, default=BENCHES / "results.md")
    parser.add_argument(
        "--json", type=Path, default=None, help="also keep pytest-benchmark's JSON"
    )
    parser.add_argument(
        "--max-time",
        type=float,
        default=0.25,
        help="pytest-benchmark's --benchmark-max-time for the micro-benchmarks (s)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["FASTMLP_BENCH_THREADS"] = str(args.threads)
    threads = bench_threads()
    start = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    busy = {}  # phase -> share of the CPUs other processes used meanwhile

    print(f"sgemm peak at {threads} threads ...", flush=True)
    others = CpuByOthers()
    peak = sgemm_peak(threads)
    busy["sgemm"] = others.share()
    print(
        f"benchmark suites (pytest) ... log in {tempfile.gettempdir()}/fastmlp-bench.log",
        flush=True,
    )
    log = Path(tempfile.gettempdir()) / "fastmlp-bench.log"
    others = CpuByOthers()
    data, suite_seconds, summary = run_suites(threads, args.max_time, log, args.json)
    busy["pytest suites"] = others.share()
    mnist = fastmlp.datasets.load_mnist(BENCHES / "data" / "mnist", dtype=np.float32)
    print("the source material's networks (benches/reproduce.py) ...", flush=True)
    others = CpuByOthers()
    networks = reproduce.run(mnist, seed=0, threads=threads)
    busy["reproduce.py"] = others.share()
    print(f"time to {TARGET_ACCURACY:.1%} test accuracy ...", flush=True)
    others = CpuByOthers()
    reach = {bs: time_to_accuracy(mnist, threads, bs) for bs in TARGET_BATCH_SIZES}
    busy["time to accuracy"] = others.share()
    total = time.perf_counter() - start

    m = medians(data)
    train_md, train_fig = training_table(data)
    grid_md, grid_fig = grid_table(data)
    predict_md, predict_fig = predict_table(m, threads, peak)
    latency_md, concurrency_md = serving_table(data)
    shared_md, shared_missed = shared_table(data, threads)
    if not any(k[0] == "shared" for k in m):
        shared_missed = None
    flops = training_flops_per_sample() * N_TRAIN
    reach_rows = [
        [
            str(bs),
            str(r["epochs"]),
            f"{r['seconds']:.2f}",
            f"{r['seconds'] / r['epochs']:.3f}",
            f"{r['accuracy']:.2%}",
            "yes" if r["reached"] else f"no (stopped at {MAX_EPOCHS} epochs)",
        ]
        for bs, r in reach.items()
    ]
    shares = ", ".join(
        f"{phase} {'unknown' if share is None else f'{share:.0%}'}"
        for phase, share in busy.items()
    )
    warning = ""
    if any(share is not None and share > BUSY_WARNING for share in busy.values()):
        warning = (
            f"> **Warning:** other processes kept the CPUs busy during this run ({shares} of "
            "all CPUs; load average at start "
            f"{', '.join(f'{x:.2f}' for x in load_before)}). The figures below are not "
            "trustworthy: re-run on an idle machine."
        )
    sections = [
        "# fastmlp benchmarks",
        f"Generated by `python benches/report.py` on {started:%Y-%m-%d %H:%M} UTC in "
        f"{total:.0f} s (pytest suites {suite_seconds:.0f} s). Medians; ratios are the "
        "peer's time over fastmlp's (above 1x: fastmlp is faster), all measured in this run "
        f"with **{threads} threads** for fastmlp and every peer.",
        warning,
        "## Machine",
        "\n".join(
            [
                f"- CPU: {cpu_model()}; {os.cpu_count()} logical CPUs, "
                f"{len(os.sched_getaffinity(0))} usable",
                f"- Python {platform.python_version()}, fastmlp {fastmlp.__version__}, "
                + ", ".join(f"{d} {version(d)}" for d in VERSIONS_SHOWN),
                *(f"- {line}" for line in blas_libraries()),
                f"- sgemm peak (NumPy float32 4096³, {threads} threads, best of 3): "
                f"**{peak:.0f} GFLOP/s**",
                *([note] if (note := yardstick_note()) else []),
                f"- CPU used by other processes during the run (share of all CPUs): {shares}",
            ]
        ),
        "## The source material's MNIST networks (`benches/reproduce.py`, seed 0)",
        "Test accuracy after the last epoch and the time of the training epochs (the "
        "per-epoch test evaluation excluded). The first network is the main job, "
        "`examples/train_mnist.py`; the settings are in `benches/reproduce.py`.",
        reproduce_table(networks),
        "## Training: one MNIST epoch, 784-128-64-10, Adam",
        "Seconds per epoch over 60,000 images, in paired rounds: a warm-up round, then 5, "
        "each running one epoch of every implementation in turn (fastmlp at every thread "
        "count, the peers, and a yardstick of the peak: one float32 2048³ product per "
        "thread, all at once, each on one thread of SciPy's OpenBLAS, as fastmlp runs BLAS), "
        "each epoch from fresh parameters. Times are medians over the rounds; ratios, the "
        "thread scaling and the share of the peak (the epoch's GFLOP/s over the products', "
        "the best of that round's and its neighbours') are medians of the per-round figures "
        "(least-greatest in brackets). fastmlp's time "
        "is the whole `fastmlp.train(..., epochs=1)` call. "
        f"GFLOP/s counts the GEMMs only: {training_flops_per_sample():,} FLOP per sample "
        "(forward, weight gradient and input gradient of each layer, minus the first "
        f"layer's input gradient, which nothing needs), {flops / 1e9:.2f} GFLOP per epoch; "
        f"at the sgemm peak above an epoch would take {flops / peak / 1e9:.3f} s.",
        train_md,
        "## Training: one epoch at every shape of the grid (`benches/test_bench_grid.py`)",
        "float32, ReLU, softmax + cross-entropy, Adam lr 1e-3, on "
        f"{' or '.join(f'{n:,}' for n in sorted({g['rows'] for g in grid_fig})) or '—'} "
        "random rows (standard normal features, uniform labels, a fixed seed), in paired "
        f"rounds: {' or '.join(str(n) for n in sorted({g['rounds'] for g in grid_fig})) or '—'} "
        "rounds after one warm-up round, each running one epoch of every implementation in "
        "turn (10 ms apart), each epoch continuing from the last. Times are medians over "
        "the rounds; a ratio is the median of the per-round ratios (least-greatest in "
        "brackets), so that the machine's drift over minutes cancels. Epochs: fastmlp's "
        "whole "
        "`fastmlp.train(..., epochs=1, init=model)` call; PyTorch's `nn.Sequential` of "
        "`Linear` + `ReLU` with `torch.optim.Adam`; JAX's whole epoch as one jitted "
        "`jax.lax.scan` with `optax.adam` (compiled in the warm-up). GEMM FLOPs counted as "
        "for MNIST above, and the share of the sgemm peak timed in the same rounds, as above. "
        "The goal (issue 15): on every shape at least "
        f"{GRID_VS_TORCH}x PyTorch's speed or {GRID_PEAK_SHARE:.0%} of the sgemm peak, and "
        "faster than JAX.",
        grid_md,
        f"## Time to {TARGET_ACCURACY:.1%} MNIST test accuracy (fastmlp, float32, "
        f"784-128-64-10, Adam lr 1e-3, seed 0)",
        "Training time only: the test set is scored after every epoch by a callback that "
        "stops training, and the scoring time is subtracted.",
        table(
            ["batch", "epochs", "training seconds", "s per epoch", "test accuracy", "reached"],
            reach_rows,
        ),
        "## predict_proba, float32 784-128-64-10",
        "Latency of 1 to 64 rows (us) and throughput of 10,000 rows (ms), called from "
        "Python with NumPy in and out; every implementation warmed up alike. MNIST rows are "
        "test images (the one-row input, the first, is 85% zero pixels; fastmlp's one-row "
        "kernel skips the weights of zero inputs, the peers do not); the dense row is random "
        "pixels in (0, 1), nothing to skip. From 2 rows on fastmlp's first layer skips the "
        "input features zero in every row of a group of 32 rows, so on MNIST it can pass "
        "the floor of the whole product: the GEMM floor of 10,000 rows at the sgemm peak is "
        f"{predict_fig['floor_10000'] * 1e3:.2f} ms.",
        predict_md,
        "## Serving: fastmlp behind request threads (`benches/test_bench_serving.py`)",
        "Through the library (no HTTP), dense random rows. Latency of one `predict_proba` "
        "call (median):",
        latency_md,
        "Batch-1 calls from several client threads at once, 2,000 calls per client per "
        "round, median of 5 rounds after a warm-up round:",
        concurrency_md,
        "## Shared cores: MNIST epochs beside other work (`benches/test_bench_shared_cores.py`)",
        "float32, 784-128-64-10, Adam; a CPU-bound process running beside the epochs, or "
        "NumPy's and PyTorch's thread pools run just before each epoch. Pinned: "
        "`FASTMLP_ADAPTIVE_THREADS=0`; adaptive: the default. The three in paired rounds "
        "(a warm-up round, then 5, each running pinned, adaptive and 1 thread in turn): "
        "medians over the rounds, and ratios as medians of the per-round ratios.",
        shared_md,
        "## Kernels, batch 128, 784-128-64-10",
        "fastmlp's compiled entry points beside `fastmlp.reference` (median us).",
        kernel_table(m, threads),
        "## Targets (shared/BRIEF.md)",
        targets_table(train_fig, predict_fig, grid_fig, networks[0], threads, shared_missed),
        "## pytest",
        "```\n" + summary + "\n```",
    ]
    text = "\n\n".join(s.strip("\n") for s in sections if s) + "\n"
    # The hand-written history at the end of the file (from HISTORY_HEADING on) is kept.
    old = args.output.read_text() if args.output.exists() else ""
    if HISTORY_HEADING in old:
        text += "\n" + old[old.index(HISTORY_HEADING) :]
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}; total {total:.0f} s")


if __name__ == "__main__":
    main()
