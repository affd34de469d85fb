"""Which BLAS fastprop's products should call: each of the workloads' product shapes
through every OpenBLAS the process has loaded (NumPy's and SciPy's, in the wheels), at
one thread, workspaces warm, interleaved round after round in one process.
fastprop/core/_blas.py routes the products to the newest release loaded; this says what
that is worth (benchmarks/README.md, "Which BLAS").

Usage::

    python benchmarks/bench_blas_route.py [--rounds 7] [--output results/bench_blas_route.json]

Each library is called through its own Fortran ``sgemm_``/``dgemm_`` (found as
``fastprop.core._blas`` finds them), with fastprop's operand order: a row-major product
is the column-major one with the operands swapped.
"""

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, dtype, trans_a, trans_b, rows, depth, cols, lda, ldb): fastprop's row-major
# C (rows, cols) = op(A) op(B), as _blas_gemm gets it
SHAPES = [
    ("W1 forward, layer 1, one unit part", "float32", False, False, 128, 784, 128, 784, 256),
    ("W1 dW, layer 1, one unit part", "float32", True, False, 400, 128, 256, 784, 256),
    ("W1 delta, layer 2, one unit part", "float32", False, True, 128, 128, 128, 128, 128),
    ("W3 forward, layer 1", "float32", False, False, 1024, 784, 256, 784, 256),
    ("W3 dW, layer 1", "float32", True, False, 784, 1024, 256, 784, 256),
    ("W6 forward, layer 1, one row part", "float32", False, False, 64, 100, 128, 100, 128),
    ("W4 forward", "float64", False, False, 200, 50, 100, 50, 100),
    ("W4 dW", "float64", True, False, 50, 200, 100, 50, 100),
]


def _caller(address, ilp64, dtype):
    I = ctypes.c_int64 if ilp64 else ctypes.c_int
    F = ctypes.c_float if dtype == "float32" else ctypes.c_double
    P = ctypes.POINTER
    fn = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, P(I), P(I), P(I), P(F),
                          ctypes.c_void_p, P(I), ctypes.c_void_p, P(I), P(F),
                          ctypes.c_void_p, P(I))(address)

    def gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc):
        fn(b"T" if tb else b"N", b"T" if ta else b"N", I(n), I(m), I(k), F(1.0),
           b.ctypes.data, I(ldb), a.ctypes.data, I(lda), F(0.0), c.ctypes.data, I(ldc))
    return gemm


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=30, help="products per timed block")
    p.add_argument("--output", default=None, metavar="FILE.json")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    from _workloads import cpu_name

    from fastprop.core import _blas, gemm_library

    libs = [(".".join(map(str, version)), filepath, gemms)
            for version, filepath, gemms in _blas._loaded_openblas()]
    if len(libs) < 2:
        print("fewer than two OpenBLAS libraries loaded: nothing to compare")
        return 0
    rng = np.random.default_rng(0)
    cases = []
    for name, dtype, ta, tb, m, k, n, lda, ldb in SHAPES:
        a = rng.standard_normal((k, lda) if ta else (m, lda)).astype(dtype)
        b = rng.standard_normal((n, ldb) if tb else (k, ldb)).astype(dtype)
        c = np.zeros((m, n), dtype)
        cases.append((name, dtype, ta, tb, m, k, n, a, lda, b, ldb, c))
    times = {}
    with threadpool_limits(1, user_api="blas"):
        for version, _, (s, d, ilp64) in libs:  # warm each thread workspace (_warm_blas)
            for dtype, address in (("float32", s), ("float64", d)):
                z = np.zeros((256, 1024), dtype)
                _caller(address, ilp64, dtype)(False, False, 256, 1024, 256, z, 1024, z,
                                               1024, np.zeros((256, 1024), dtype), 1024)
        for _ in range(args.rounds):
            for version, _, (s, d, ilp64) in libs:
                for name, dtype, ta, tb, m, k, n, a, lda, b, ldb, c in cases:
                    gemm = _caller(s if dtype == "float32" else d, ilp64, dtype)
                    gemm(ta, tb, m, n, k, a, lda, b, ldb, c, n)
                    t0 = time.perf_counter()
                    for _ in range(args.calls):
                        gemm(ta, tb, m, n, k, a, lda, b, ldb, c, n)
                    times.setdefault((name, version), []).append(
                        (time.perf_counter() - t0) / args.calls)
    chosen = gemm_library()
    print(f"# bench_blas_route: {cpu_name()}; {args.rounds} rounds x {args.calls} products; "
          f"fastprop routes to {chosen['via']} {chosen['version'] or ''}")
    for version, filepath, (_, _, ilp64) in libs:
        print(f"# OpenBLAS {version}{' (ILP64)' if ilp64 else ''}: {filepath}")
    versions = [lib[0] for lib in libs]
    labels = [f"{c[0]} ({c[4]} x {c[5]} x {c[6]}, {c[1]})" for c in cases]
    width = max(map(len, labels)) + 2
    print(f"{'product (rows x depth x cols)':<{width}}"
          + "".join(f"{v:>15}" for v in versions) + f"{'ratio':>8}")
    rows = []
    for label, (name, dtype, ta, tb, m, k, n, *_) in zip(labels, cases):
        gflops = [2.0 * m * n * k / statistics.median(times[(name, v)]) / 1e9
                  for v in versions]
        ratio = gflops[-1] / gflops[0]
        print(f"{label:<{width}}" + "".join(f"{g:>10.1f} GF/s" for g in gflops)
              + f"{ratio:>8.3f}")
        rows.append({"product": name, "dtype": dtype, "rows": m, "depth": k, "cols": n,
                     "trans_a": ta, "trans_b": tb,
                     "gflops": dict(zip(versions, gflops)),
                     "seconds": {v: times[(name, v)] for v in versions}})
    print(f"# ratio: GFLOP/s of OpenBLAS {versions[-1]} / {versions[0]}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"cpu": cpu_name(), "rounds": args.rounds, "calls": args.calls,
                       "libraries": [{"version": v, "filepath": fp, "ilp64": g[2]}
                                     for v, fp, g in libs],
                       "fastprop_route": chosen, "products": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
