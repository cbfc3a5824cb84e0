"""Build of fastmlp's C/Cython extensions.

build_ext compiles every C file in one pool, one compiler process per core, the longest
first: csrc/'s kernels, archived into a static library that every extension module links,
and the extensions' C, which Cython generates meanwhile, one module at a time. Cython's
utility code goes once into fastmlp._cyutility instead of into each module. Building
needs only setuptools and Cython >= 3.1 (no NumPy, no SciPy: _blas takes SciPy's GEMMs at
import). Debug information is left out (-g0) unless CFLAGS asks for -g. OpenMP is
detected once here: a compiler without it gets a serial build and a loud warning
(FASTMLP_NO_OPENMP=1 asks for that build). The default build targets any x86-64 (or
other) CPU, fm_dense choosing its instruction set at run time; FASTMLP_NATIVE=1 tunes for
the building machine with -march=native. Timings: benches/results.md, "Build time".
"""

import itertools
import os
import queue
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_clib import build_clib
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

# The extension modules fastmlp.<name>, each from fastmlp/<name>.pyx.
MODULES = ["_blas", "_network", "_trainer", "_kernels", "_int8"]
# Cython's utility code (memoryviews above all) is generated once into this module, which
# the others import, instead of into each of them (Cython >= 3.1).
SHARED_UTILITY = "fastmlp._cyutility"

# The C kernels.
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
    "csrc/fm_int8_vnni.c",
]
# CPU seconds of each compile (GCC 12, Zen 3, -g0), so that the pool starts the longest
# first and the last ones to start are short. Files not listed count as 0.
COMPILE_SECONDS = {
    "csrc/fm_dense_avx512.c": 17,
    "csrc/fm_dense_avx2.c": 8,
    "csrc/fm_dense_base.c": 5,
    "csrc/fm_dense_wide.c": 5,
    "csrc/fm_kernels.c": 3,
    "csrc/fm_int8_vnni.c": 1,
    "fastmlp/_network.c": 10,
    "fastmlp/_trainer.c": 10,
    "fastmlp/_kernels.c": 11,
    "fastmlp/_int8.c": 7,
    "fastmlp/_cyutility.c": 4,
    "fastmlp/_blas.c": 1,
}
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
    "csrc/fm_int8_strip_impl.h",
]
# The wide variant only lets tests run the AVX-512 tile shape on AVX2 machines, so its
# speed does not matter: at -O3 GCC took 80% of fm_dense's compile time on its spilled
# 64-byte vectors, at -O1 15 s, at -O0 5 s on a Zen 3 (benches/results.md).
CSRC_FLAGS = {"csrc/fm_dense_wide.c": ["-O0"]} if sys.platform != "win32" else {}
# The int8 kernels' float epilogue is one multiply then one add, never fused, so that every
# variant (and the NumPy reference) gives the same bits.
if sys.platform != "win32":
    CSRC_FLAGS.update(
        {f"csrc/fm_int8{v}.c": ["-ffp-contract=off"] for v in ("", "_avx2", "_vnni")}
    )


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
elif not any(flag.startswith("-g") for flag in os.environ.get("CFLAGS", "").split()):
    # Python's own CFLAGS carry -g: debug information took a quarter of the compile time
    # (and most of the objects' size) without changing the code. CFLAGS="-g" keeps it.
    compile_args.append("-g0")
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
    """Compiles nothing: BuildExt compiles the libraries' sources in the same pool as the
    extensions' generated C (`build` runs this command first; it would make the extensions
    wait for the whole library)."""

    def run(self):
        pass


class CompilePool:
    """Compiles on `workers` threads (each waiting on one compiler process), always starting
    the longest queued job (COMPILE_SECONDS), so that the last ones to start are short; jobs
    may be added while others run. Nothing starts before `start()` (or the end of the `with`
    block), which then waits for every job and raises the first error."""

    def __init__(self, workers):
        self.jobs = queue.PriorityQueue()
        self.order = itertools.count()  # ties (and unknown files) in submission order
        self.errors = []
        self.threads = [threading.Thread(target=self.work) for _ in range(workers)]

    def start(self):
        for thread in self.threads:
            if thread.ident is None:  # not started yet
                thread.start()

    def submit(self, source, compile_fn):
        self.jobs.put((-COMPILE_SECONDS.get(source, 0), next(self.order), compile_fn))

    def work(self):
        while True:
            _, _, compile_fn = self.jobs.get()
            if compile_fn is None:
                return
            try:
                compile_fn()
            except BaseException as exc:
                self.errors.append(exc)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.start()
        for _ in self.threads:  # after every job (priority +inf), one stop per thread
            self.jobs.put((float("inf"), next(self.order), None))
        for thread in self.threads:
            thread.join()
        if self.errors and exc_type is None:
            raise self.errors[0]


class BuildExt(build_ext):
    """Compiles every out-of-date C file, the libraries' and the extensions', in one pool
    (CompilePool), then archives the libraries and links the extensions. The libraries
    compile while Cython generates the extensions' C, one module at a time (the longest
    to compile first), each module's C queued as soon as it is written. An object is
    rebuilt when its source or a header/.pxd it depends on is newer (Cython skips a .pyx
    whose C is up to date); an extension is relinked when an object or a library is newer."""

    def build_extensions(self):
        self.check_extensions_list(self.extensions)
        clib = self.get_finalized_command("build_clib")
        archives = []  # (name, objects, path)
        with CompilePool(os.cpu_count() or 1) as pool:
            for name, info in clib.libraries:
                objects = self.compiler.object_filenames(
                    info["sources"], output_dir=clib.build_temp
                )
                path = os.path.join(clib.build_clib, self.compiler.library_filename(name))
                for source, obj in zip(info["sources"], objects):
                    if self.force or newer_group([source, *info["depends"]], obj):
                        flags = info["cflags"] + info["source_cflags"].get(source, [])
                        pool.submit(
                            source,
                            self.compile_fn(source, clib.build_temp, flags, info["include_dirs"]),
                        )
                archives.append((name, objects, path))
            pool.start()  # with every library job queued, so the longest starts first
            c_file = {ext.name: ext.name.replace(".", "/") + ".c" for ext in self.extensions}
            for ext in sorted(
                self.extensions, key=lambda e: -COMPILE_SECONDS.get(c_file[e.name], 0)
            ):
                # Cython's own check missed a .pxd cimported through another (_int8 through
                # _network's inline functions from _ckernels): a newer .pxd regenerates.
                pxds = [d for d in ext.depends if d.endswith(".pxd")]
                ext.sources = cythonize(
                    [ext],
                    compiler_directives={"language_level": 3},
                    compile_time_env={"FASTMLP_OPENMP": openmp},
                    shared_utility_qualified_name=SHARED_UTILITY,
                    force=self.force or newer_group(pxds, c_file[ext.name]),
                )[0].sources
                objects = self.compiler.object_filenames(ext.sources, output_dir=self.build_temp)
                for source, obj in zip(ext.sources, objects):
                    if self.force or newer_group([source, *ext.depends], obj):
                        pool.submit(
                            source,
                            self.compile_fn(
                                source,
                                self.build_temp,
                                ext.extra_compile_args,
                                ext.include_dirs,
                                ext.depends,
                                ext.define_macros + [(m,) for m in ext.undef_macros],
                            ),
                        )
        # Against the objects, not this run's compiles: a build stopped between the two
        # (a failing extension) left new objects in an old archive.
        for name, objects, path in archives:
            if not os.path.exists(path) or newer_group(objects, path):
                self.compiler.create_static_lib(
                    objects, name, output_dir=clib.build_clib, debug=self.debug
                )
        paths = [path for _, _, path in archives]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(lambda ext: self.link(ext, paths), self.extensions))

    def compile_fn(self, source, output_dir, flags, include_dirs, depends=(), macros=()):
        return lambda: self.compiler.compile(
            [source],
            output_dir=output_dir,
            macros=list(macros),
            include_dirs=include_dirs,
            debug=self.debug,
            extra_postargs=flags,
            depends=list(depends),
        )

    def link(self, ext, archives):
        """Links `ext` (distutils' build_extension without the compile). The archives are
        given as objects too: the compiler relinks when one of its inputs is newer."""
        objects = self.compiler.object_filenames(ext.sources, output_dir=self.build_temp)
        self.compiler.link_shared_object(
            objects + archives + (ext.extra_objects or []),
            self.get_ext_fullpath(ext.name),
            libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs,
            runtime_library_dirs=ext.runtime_library_dirs,
            extra_postargs=ext.extra_link_args or [],
            export_symbols=self.get_export_symbols(ext),
            debug=self.debug,
            build_temp=self.build_temp,
            target_lang=ext.language or self.compiler.detect_language(ext.sources),
        )


# _kernels only hands single kernels to tests and benchmarks (the kernels are csrc's, at
# -O3): at -O1 GCC compiled its Cython output in 22 s instead of 47 s (issue 14). The
# shared utility code (memoryview objects, argument parsing) runs once per call: -O1
# compiles it in 4 s instead of 10.
MODULE_FLAGS = {"_kernels": ["-O1"], "_cyutility": ["-O1"]} if sys.platform != "win32" else {}

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
] + [
    Extension(
        SHARED_UTILITY,
        [SHARED_UTILITY.replace(".", "/") + ".c"],
        extra_compile_args=compile_args + MODULE_FLAGS.get("_cyutility", []),
        extra_link_args=link_args,
    )
]

setup(
    libraries=libraries,
    ext_modules=extensions,
    cmdclass={"build_clib": BuildClib, "build_ext": BuildExt},
)
