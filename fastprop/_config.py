"""``fastprop.show_config()``: what the build and the runtime are."""

import platform
import sys


def _build_info():
    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # a source tree that was never built
        return {}
    return dict(BUILD_INFO)


def _simd_level(dispatch=False):
    """The widest x86 / Arm SIMD the CPU offers, and what fastprop's loops use.

    The kernels are compiled without -march=native (a wheel must run on any CPU of its
    architecture), so most auto-vectorised loops use the baseline; with ``dispatch``
    the flat-vector loops (optimizer steps, gradient normalisation) are also compiled
    for AVX2 and AVX-512 and the widest the CPU supports is picked at load time. BLAS
    picks its own kernels at run time (see the thread pools section)."""
    machine = platform.machine().lower()
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    if machine in ("x86_64", "amd64"):
        cpu = next(
            (name for name in ("avx512f", "avx2", "avx", "sse4_2") if name in flags),
            "sse2" if flags else "unknown",
        )
        if dispatch:
            level = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse2"
            return cpu, f"optimizer loops {level} (run-time dispatch); other loops sse2 (x86-64 baseline)"
        return cpu, "sse2 (x86-64 baseline)"
    if machine in ("aarch64", "arm64"):
        cpu = "sve" if "sve" in flags else "neon"
        return cpu, "neon (aarch64 baseline)"
    return "unknown", "compiler default"


def config():
    """The facts ``show_config`` prints, as a dict."""
    import numpy
    import scipy
    import sklearn

    from . import __version__
    from .core import _kernels, gemm_library

    info = _build_info()
    cpu_simd, build_simd = _simd_level(getattr(_kernels, "SIMD_DISPATCH", False))
    blas = []
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            blas.append(
                {k: pool.get(k) for k in ("user_api", "internal_api", "version",
                                          "num_threads", "architecture", "filepath")}
            )
    except ImportError:
        blas.append({"note": "install threadpoolctl to see the BLAS and OpenMP runtimes"})
    return {
        "fastprop": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "compiler": info.get("compiler", "unknown (no build record)"),
        "compiler_version": info.get("compiler_version", ""),
        "cflags": info.get("cflags", ""),
        "debug_build": info.get("debug", False),
        "openmp": bool(_kernels.HAS_OPENMP),
        "openmp_threads": _kernels.openmp_max_threads(),
        "simd_cpu": cpu_simd,
        "simd_kernels": build_simd,
        "gemm": gemm_library(),
        "blas_and_threadpools": blas,
    }


def show_config():
    """Print fastprop's version, build (compiler, flags, OpenMP), threads, BLAS, SIMD
    and dependency versions: what a bug report needs."""
    cfg = config()
    print("fastprop %s" % cfg["fastprop"])
    print("\nbuild:")
    print("  compiler:      %s %s" % (cfg["compiler"], cfg["compiler_version"]))
    print("  flags:         %s" % cfg["cflags"])
    print("  debug build:   %s" % cfg["debug_build"])
    print("  OpenMP:        %s (%d threads)" % (
        "on" if cfg["openmp"] else "off", cfg["openmp_threads"]))
    print("  SIMD:          kernels %s; CPU offers %s" % (
        cfg["simd_kernels"], cfg["simd_cpu"]))
    print("\nruntime:")
    for key in ("python", "platform", "numpy", "scipy", "scikit-learn"):
        print("  %-14s %s" % (key + ":", cfg[key]))
    gemm = cfg["gemm"]
    if gemm["via"] == "direct":
        products = "OpenBLAS %s%s, %s" % (
            gemm["version"], " (64-bit integers)" if gemm["ilp64"] else "", gemm["filepath"])
    else:
        products = "scipy.linalg.cython_blas"
    print("  %-14s %s" % ("products:", products))
    print("\nthread pools (BLAS, OpenMP):")
    for pool in cfg["blas_and_threadpools"]:
        print("  " + ", ".join("%s=%s" % kv for kv in pool.items()))
