#!/usr/bin/env bash
# Build fastmlp's extensions with AddressSanitizer + UndefinedBehaviorSanitizer in a
# scratch copy of the tree and run the test suite against that build.
#
# Usage:  tools/sanitize.sh [pytest args...]
#   e.g.  tools/sanitize.sh -x -q test_kernels.py    (test paths are relative to tests/)
#         FASTMLP_SANITIZE_DIR=/tmp/asan-tree tools/sanitize.sh -k persistence
#
# The caller's tree (and its in-place .so files) is never written to: the sources are
# copied to $FASTMLP_SANITIZE_DIR (default: a fresh temporary directory), built there with
# `setup.py build_ext --inplace`, and pytest runs from the copy's tests/ with PYTHONPATH
# pointing at the copy. The copy is kept on failure (to rerun a single test) and removed
# on success unless FASTMLP_SANITIZE_KEEP=1. Needs gcc (libasan, libubsan), Cython,
# setuptools, numpy, scipy and pytest, as a normal build and test run do.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${FASTMLP_SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastmlp-sanitize.XXXXXX")}"
python="${PYTHON:-python3}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"
# The copy's sources are deleted and rewritten below: never let that be the caller's tree.
case "$dir/" in
    "$(cd "$src" && pwd -P)/"*)
        echo "sanitize.sh: FASTMLP_SANITIZE_DIR must lie outside the source tree $src" >&2
        exit 2
        ;;
esac

# The sanitizer runtimes must match the compiler that builds the extension (Python's
# CC, gcc here), so take them from gcc rather than guessing a path.
asan_rt="$(gcc -print-file-name=libasan.so)"
ubsan_rt="$(gcc -print-file-name=libubsan.so)"
for rt in "$asan_rt" "$ubsan_rt"; do
    # -print-file-name echoes the bare name back when the library is not installed.
    if [[ "$rt" != /* || ! -e "$rt" ]]; then
        echo "sanitize.sh: gcc has no sanitizer runtime ($rt); install gcc's libasan/libubsan" >&2
        exit 2
    fi
done

# Fresh copy of the sources. Built artefacts are left out so nothing from the caller's
# build (its .so files, build/ with csrc/'s static library, or Cython's generated
# fastmlp/*.c, which would be reused if newer than the .pyx) can end up in, or stand in
# for, the sanitized build. tar rather than rsync: it is on every machine.
rm -rf "${dir:?}/fastmlp" "${dir:?}/csrc" "${dir:?}/tests" "${dir:?}/build"
tar -C "$src" \
    --exclude=.git --exclude=build --exclude='*.so' --exclude='*.o' \
    --exclude='./fastmlp/*.c' \
    --exclude=.venv --exclude=.hypothesis --exclude=.benchmarks --exclude=.ruff_cache \
    --exclude='./benches/data' --exclude=__pycache__ \
    -cf - . | tar -C "$dir" -xf -
# The MNIST files are large; link them instead of copying, for tests that read them.
if [[ -d "$src/benches/data" ]]; then
    ln -sfn "$src/benches/data" "$dir/benches/data"
fi

# -fsanitize=float-cast-overflow is not part of gcc's -fsanitize=undefined; it is added
# because the kernels convert doubles to integers (dropout's threshold), where an
# out-of-range value is undefined behaviour. -fno-sanitize-recover=all: UBSan aborts on
# the first report instead of printing and carrying on, so undefined behaviour fails the
# run. -fno-omit-frame-pointer and -g give readable stacks. No -O level: setup.py puts
# its -O3 after CFLAGS, and the last -O wins, so the code is checked as users run it
# (ASan and UBSan work at any level; -g keeps inlined frames in the stacks). setuptools
# adds CFLAGS to every compile (csrc/'s static library too) and link command and LDFLAGS
# to the link, so every extension module links the sanitizer runtimes.
san="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all"
san="$san -fno-omit-frame-pointer"
export CFLAGS="$san -g"
export LDFLAGS="$san"
echo "== building the sanitized extension in $dir"
(cd "$dir" && "$python" setup.py build_ext --inplace --force) >"$dir/build.log" 2>&1 || {
    tail -n 40 "$dir/build.log" >&2
    echo "sanitize.sh: build failed; full log in $dir/build.log" >&2
    exit 1
}
# Proof that the flags reached the compiler and the linker.
for so in "$dir"/fastmlp/*.so; do
    if ! readelf -d "$so" | grep -q 'libasan'; then
        echo "sanitize.sh: $so is not linked against libasan; CFLAGS/LDFLAGS were lost" >&2
        exit 1
    fi
done

# Python is not built with ASan, so the ASan runtime must be loaded before anything
# else (it intercepts malloc/free): hence LD_PRELOAD, libasan first.
export LD_PRELOAD="$asan_rt:$ubsan_rt"
# detect_leaks=0: CPython deliberately never frees interned strings, type objects and
# module state at exit, so LeakSanitizer would report thousands of "leaks" that are not
# ours. allocator_may_return_null=1: tests that ask for impossible sizes expect NULL ->
# MemoryError, whereas ASan by default aborts on an allocation above its maximum.
# log_path: pytest captures file descriptor 2 while a test runs and loses what was captured
# when the process dies, which is exactly when a sanitizer reports; so reports go to
# files (one per process, subprocesses of tests included) that are printed at the end.
logs="$dir/sanitizer-logs"
rm -rf "$logs" && mkdir -p "$logs"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$logs/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan:${UBSAN_OPTIONS:-}"
# Route Python's small objects through malloc too, so ASan also sees use-after-free and
# overflows on Python objects (e.g. a refcount bug in the Cython code), not only on numpy
# buffers and C allocations.
export PYTHONMALLOC=malloc
export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
# Two threads (this machine's size) so the OpenMP regions really run in parallel.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

cd "$dir/tests"
# Fail early, and visibly, if the tests would import some other fastmlp build.
"$python" - "$dir" <<'EOF'
import glob
import importlib
import os
import sys

import fastmlp._network

# Every extension module of the copy: fastmlp/<name>.<abi tag>.so.
for so in sorted(glob.glob(os.path.join(sys.argv[1], "fastmlp", "*.so"))):
    name = os.path.basename(so).split(".")[0]
    mod = importlib.import_module(f"fastmlp.{name}")
    print(f"== {mod.__name__} from {mod.__file__}")
    if not os.path.realpath(mod.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep):
        sys.exit(f"sanitize.sh: {mod.__name__} is not the sanitized build in {sys.argv[1]}")
print("== OpenMP (built, max threads):", fastmlp._network.openmp_info())
EOF

echo "== pytest $*"
status=0
# -p no:cacheprovider: the copy is scratch; --rootdir keeps pytest's config in the copy.
# The RSS test measures memory growth, which ASan inflates by design (freed blocks wait in
# a 256 MB quarantine so that use-after-free is caught; redzones and shadow memory add
# more), so its limit means nothing here; the normal test run keeps checking it.
"$python" -m pytest --rootdir="$dir" -p no:cacheprovider \
    --deselect tests/test_serving.py::test_memory_stays_flat_over_many_calls "$@" || status=$?
if compgen -G "$logs/*" >/dev/null; then
    for log in "$logs"/*; do
        echo "== sanitizer report $log"
        cat "$log"
    done
    [[ $status -ne 0 ]] || status=1
fi
if [[ $status -eq 0 && "${FASTMLP_SANITIZE_KEEP:-0}" != 1 && -z "${FASTMLP_SANITIZE_DIR:-}" ]]; then
    rm -rf "$dir"
else
    echo "== sanitized tree kept in $dir"
fi
exit "$status"
