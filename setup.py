"""Build fastprop's compiled core.

Compiler directives and flags live here, in one place. Two switches, read from the
environment at build time:

- ``FASTPROP_DEBUG=1``: bounds checks, wraparound and initialised-memoryview checks back
  on in every kernel, ``-O0 -g``: for chasing a memory error.
- ``FASTPROP_SANITIZE=address,undefined``: build with those sanitizers (implies debug).

OpenMP is detected by compiling and linking a tiny program, the way scikit-learn's
``openmp_helpers`` does: ``-fopenmp`` for gcc/clang, ``/openmp`` for MSVC, and a clean
build without it where neither works (Apple clang without libomp). Nothing here uses
``-march=native``: a wheel built here must run on any x86-64 / aarch64 CPU.
"""

import glob
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("FASTPROP_DEBUG", "0") not in ("", "0")
SANITIZE = os.environ.get("FASTPROP_SANITIZE", "")
if SANITIZE:
    DEBUG = True

OPENMP_TEST = textwrap.dedent(
    """\
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", omp_get_max_threads() > 0 && n > 0);
        return 0;
    }
    """
)


def _openmp_flags(compiler):
    """Return (compile_flags, link_flags) for OpenMP, or ([], []) if it does not build."""
    if os.environ.get("FASTPROP_NO_OPENMP", "0") not in ("", "0"):
        return [], []
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    for cflags, lflags in candidates:
        tmp = tempfile.mkdtemp()
        cwd = os.getcwd()
        try:
            os.chdir(tmp)
            with open("omp_test.c", "w") as f:
                f.write(OPENMP_TEST)
            objs = compiler.compile(["omp_test.c"], extra_postargs=cflags)
            exe = "omp_test" + (".exe" if sys.platform == "win32" else "")
            compiler.link_executable(objs, "omp_test", extra_postargs=lflags)
            out = subprocess.run([os.path.join(tmp, exe)], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() == "1":
                return cflags, lflags
        except Exception:
            pass
        finally:
            os.chdir(cwd)
            shutil.rmtree(tmp, ignore_errors=True)
    return [], []


def _accepts(compiler, flags):
    """Whether the compiler builds a trivial file with these flags."""
    tmp = tempfile.mkdtemp()
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("probe.c", "w") as f:
            f.write("int fp_probe(int x) { return x + 1; }\n")
        compiler.compile(["probe.c"], extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that adds optimisation and OpenMP flags the compiler supports."""

    def build_extensions(self):
        omp_c, omp_l = _openmp_flags(self.compiler)
        msvc = self.compiler.compiler_type == "msvc"
        if msvc:
            opt = ["/Od", "/Zi"] if DEBUG else ["/O2"]
        else:
            # -O3 without -march=native: SSE2 (x86-64) / NEON (aarch64) baseline only.
            opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0", "-fno-math-errno"]
            opt += ["-Wno-unused-function", "-Wno-unreachable-code"]
        # `#pragma omp simd` (vectorised reductions in csrc/fp_optim.h) needs no OpenMP
        # runtime: -fopenmp-simd enables just the pragma, also where OpenMP is missing.
        simd = []
        if not msvc and _accepts(self.compiler, ["-fopenmp-simd", "-Werror"]):
            simd = ["-fopenmp-simd", "-DFP_OMP_SIMD"]
        opt += simd
        san = []
        if SANITIZE and not msvc:
            san = ["-fsanitize=" + SANITIZE, "-fno-omit-frame-pointer"]
        for ext in self.extensions:
            ext.extra_compile_args = opt + omp_c + san + ext.extra_compile_args
            ext.extra_link_args = omp_l + san + ext.extra_link_args
        targets = [os.path.join(HERE, "fastprop")]
        if not self.inplace:
            # build_py has already copied the package: put the record next to the extension.
            targets.append(os.path.join(self.build_lib, "fastprop"))
        _write_build_info(targets, self.compiler, opt + omp_c + san, bool(omp_c))
        super().build_extensions()


def _write_build_info(targets, compiler, cflags, openmp):
    cc = getattr(compiler, "compiler", None) or [compiler.compiler_type]
    version = ""
    try:
        version = subprocess.run(
            [cc[0], "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0]
    except Exception:
        pass
    info = {
        "compiler": cc[0],
        "compiler_version": version,
        "cflags": " ".join(list(cc[1:]) + list(cflags)),
        "openmp": openmp,
        "debug": DEBUG,
        "sanitize": SANITIZE,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    for target in targets:
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "_build_info.py"), "w") as f:
            f.write('"""Written by setup.py at build time; not in version control."""\n')
            f.write(f"BUILD_INFO = {info!r}\n")


def extensions():
    from Cython.Build import cythonize

    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "nonecheck": DEBUG,
        "embedsignature": True,
        "cpow": True,
    }
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
    exts = [
        Extension(
            "fastprop.core._kernels",
            ["fastprop/core/_kernels.pyx"],
            include_dirs=["csrc"],
            # rebuild when a C header or an included part changes, not only the .pyx
            depends=sorted(glob.glob("csrc/*.h") + glob.glob("fastprop/core/*.pxi")
                           + glob.glob("fastprop/core/*.pxd")),
            define_macros=macros,
        ),
    ]
    return cythonize(exts, compiler_directives=directives, annotate=False)


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
