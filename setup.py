"""Build of fastmlp's C/Cython extensions.

OpenMP is detected once here: a compiler without it gets a serial build and a loud
warning. The default build targets any x86-64 (or other) CPU; set FASTMLP_NATIVE=1 to
tune for the building machine with -march=native.
"""

import os
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup


def compiler_accepts(flags: list[str]) -> bool:
    """True if the C compiler builds and links a small OpenMP program with `flags`."""
    cc = sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        cmd = cc.split() + flags + [path, "-o", os.path.join(tmp, "t")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


compile_args = ["-O3", "-std=c99", "-fno-math-errno", "-ffp-contract=fast"]
link_args = []
if sys.platform == "win32":
    compile_args = ["/O2"]
if os.environ.get("FASTMLP_NATIVE") == "1":
    compile_args.append("-march=native")

openmp = (
    os.environ.get("FASTMLP_NO_OPENMP") != "1"
    and sys.platform != "win32"
    and compiler_accepts(["-fopenmp"])
)
if openmp:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
else:
    print(
        "*" * 72 + "\nWARNING: fastmlp is being built WITHOUT OpenMP: training and "
        "prediction\nwill use one thread. Install a compiler with OpenMP (gcc) for the "
        "parallel build.\n" + "*" * 72,
        file=sys.stderr,
    )

# The C kernels are compiled once, into a static library that every extension links.
kernels = (
    "fastmlp_kernels",
    {
        "sources": ["csrc/fm_kernels.c", "csrc/fm_dense.c"],
        "include_dirs": ["csrc"],
        "cflags": compile_args,
    },
)
headers = [
    "csrc/fm_kernels.h",
    "csrc/fm_openmp.h",
    "csrc/fm_fpu.h",
    "csrc/fm_kernels_impl.h",
    "csrc/fm_dense_impl.h",
    "csrc/fm_dense_variants.h",
]
extensions = [
    Extension(
        f"fastmlp.{name}",
        [f"fastmlp/{name}.pyx"],
        include_dirs=["csrc"],
        depends=headers + ["fastmlp/_blas.pxd", "fastmlp/_ckernels.pxd", "fastmlp/_network.pxd"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_blas", "_network", "_trainer", "_kernels")
]

setup(
    libraries=[kernels],
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        compile_time_env={"FASTMLP_OPENMP": openmp},
    ),
)
