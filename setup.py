"""Build of fastmlp's C/Cython extensions.

csrc/ is compiled once, one compiler process per file and per core, into a static library
that every extension module links. OpenMP is detected once here: a compiler without it
gets a serial build and a loud warning (FASTMLP_NO_OPENMP=1 asks for that build). The
default build targets any x86-64 (or other) CPU, fm_dense choosing its instruction set at
run time; FASTMLP_NATIVE=1 tunes for the building machine with -march=native.
"""

import multiprocessing
import os
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_clib import build_clib
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

# The extension modules fastmlp.<name>, each from fastmlp/<name>.pyx.
MODULES = ["_blas", "_network", "_trainer", "_kernels", "_int8"]

# The C kernels, longest compile first so that the last one to start is short.
CSRC = [
    "csrc/fm_dense_wide.c",
    "csrc/fm_dense_avx512.c",
    "csrc/fm_dense_avx2.c",
    "csrc/fm_dense_base.c",
    "csrc/fm_kernels.c",
    "csrc/fm_sparse.c",
    "csrc/fm_dense.c",
    "csrc/fm_tuner.c",
    "csrc/fm_int8.c",
    "csrc/fm_int8_avx2.c",
]
CSRC_HEADERS = [
    "csrc/fm_fpu.h",
    "csrc/fm_openmp.h",
    "csrc/fm_kernels.h",
    "csrc/fm_dispatch.h",
    "csrc/fm_tuner.h",
    "csrc/fm_kernels_impl.h",
    "csrc/fm_sparse_impl.h",
    "csrc/fm_dense_variants.h",
    "csrc/fm_dense_impl.h",
    "csrc/fm_dense_types.h",
    "csrc/fm_dense_dispatch_impl.h",
    "csrc/fm_int8.h",
    "csrc/fm_int8_shared.h",
]
# The wide variant only lets tests run the AVX-512 tile shape on AVX2 machines, so its
# speed does not matter: at -O3 GCC took 80% of fm_dense's compile time on its spilled
# 64-byte vectors, at -O1 15 s, at -O0 5 s on a Zen 3 (benches/results.md).
CSRC_FLAGS = {"csrc/fm_dense_wide.c": ["-O0"]} if sys.platform != "win32" else {}
# The int8 kernels' float epilogue is one multiply then one add, never fused, so that every
# variant (and the NumPy reference) gives the same bits.
if sys.platform != "win32":
    CSRC_FLAGS.update({f"csrc/fm_int8{v}.c": ["-ffp-contract=off"] for v in ("", "_avx2")})


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


class BuildClib(build_clib):
    """Compiles each source of a library in its own compiler process, as many at once as
    there are cores, then archives them (setuptools' build_clib compiles one at a time)."""

    def build_libraries(self, libraries):
        for name, info in libraries:
            sources = info["sources"]
            objects = self.compiler.object_filenames(sources, output_dir=self.build_temp)

            def compile_one(source, obj, info=info):
                if self.force or newer_group([source, *info["depends"]], obj):
                    self.compiler.compile(
                        [source],
                        output_dir=self.build_temp,
                        include_dirs=info["include_dirs"],
                        extra_postargs=info["cflags"] + info["source_cflags"].get(source, []),
                        debug=self.debug,
                    )

            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                list(pool.map(compile_one, sources, objects))
            self.compiler.create_static_lib(
                objects, name, output_dir=self.build_clib, debug=self.debug
            )


class BuildExt(build_ext):
    """Builds the libraries first (also for `build_ext --inplace`), relinks an extension
    when they change, and compiles the extension modules in parallel."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self):
        clib = self.get_finalized_command("build_clib")
        clib.force = clib.force or self.force
        self.run_command("build_clib")
        archives = [
            os.path.join(clib.build_clib, self.archive_name(name))
            for name in clib.get_library_names()
        ]
        for ext in self.extensions:
            ext.depends = ext.depends + archives
        super().run()

    @staticmethod
    def archive_name(name):
        return f"{name}.lib" if sys.platform == "win32" else f"lib{name}.a"


# _kernels only hands single kernels to tests and benchmarks (the kernels are csrc's, at
# -O3): at -O1 GCC compiles its 2.9 MB of Cython output in 22 s instead of 47 s.
MODULE_FLAGS = {"_kernels": ["-O1"]} if sys.platform != "win32" else {}

libraries = [
    (
        "fastmlp_csrc",
        {
            "sources": CSRC,
            "depends": CSRC_HEADERS,
            "include_dirs": ["csrc"],
            "cflags": compile_args,
            "source_cflags": CSRC_FLAGS,
        },
    )
]

extensions = [
    Extension(
        f"fastmlp.{name}",
        [f"fastmlp/{name}.pyx"],
        include_dirs=["csrc"],
        # csrc's headers so that sdists carry them too; the .pxd files so that a change
        # to one rebuilds the modules that cimport it.
        depends=CSRC_HEADERS
        + [f"fastmlp/{pxd}.pxd" for pxd in ("_blas", "_ckernels", "_network")],
        extra_compile_args=compile_args + MODULE_FLAGS.get(name, []),
        extra_link_args=link_args,
    )
    for name in MODULES
]

setup(
    libraries=libraries,
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
        compile_time_env={"FASTMLP_OPENMP": openmp},
        # Cythonizes the modules in parallel; under spawn the workers would rerun setup.py.
        nthreads=(os.cpu_count() or 1) if multiprocessing.get_start_method() == "fork" else 0,
    ),
    cmdclass={"build_clib": BuildClib, "build_ext": BuildExt},
)
