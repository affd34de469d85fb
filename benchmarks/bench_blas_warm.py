"""The BLAS workspace, cold and warm: the speed of the products fastprop's minibatches
make, on a thread whose BLAS workspace is fresh (cold) and on one that first ran
fastprop's warm-up product (warm). Each case runs in a fresh process, at one BLAS thread,
through scipy's BLAS (the library fastprop's kernels call).

Why this is measured (fastprop/core/_layers.pxi, BLAS_WARM_COLS): OpenBLAS packs op(B)
of each product into a per-thread workspace; when the product's rows fit one block, it
packs every panel into the same slot, and its x86 kernels prefetch one panel past it,
into workspace pages nothing wrote. On a virtual machine each such prefetch walks the
nested page tables, every time. fastprop's first product on each thread, in each
precision, is preceded by one product whose rows span several blocks (cols x depth x
rows below: 1024 x 256 x 256 in OpenBLAS's column-major terms), which packs op(B)
across the workspace.

    python benchmarks/bench_blas_warm.py [--seconds 0.5] [--output FILE.json]

Prints, per product, GFLOP/s cold and warm and their ratio, and the CPU.
"""

import argparse
import json
import os
import subprocess
import sys

# fastprop's row-major products (rows x depth times depth x cols) of W1-W6's
# minibatches and their parts: forward A @ W, backward A.T @ D and D @ W.T
CASES = [
    ("W3 forward, layer 1 (part of 512 rows)", "float32", 512, 784, 256, "NN"),
    ("W3 dW, layer 1", "float32", 784, 512, 256, "TN"),
    ("W3 forward, layer 2", "float32", 512, 256, 128, "NN"),
    ("W3 delta, layer 2", "float32", 512, 128, 256, "NT"),
    ("W1 forward, layer 1 (128 rows, units of 128)", "float32", 128, 784, 128, "NN"),
    ("W6 forward, layer 1 (part of 128 rows)", "float32", 128, 100, 128, "NN"),
    ("W4 forward (200 rows)", "float64", 200, 50, 100, "NN"),
    ("W4 dW", "float64", 50, 200, 100, "TN"),
]

CHILD = r"""
import sys, time
import numpy as np
from scipy.linalg import blas
from threadpoolctl import threadpool_limits
warm, dt, m, k, n, tr, seconds = sys.argv[1] == "1", sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6], float(sys.argv[7])
gemm = blas.sgemm if dt == "float32" else blas.dgemm
rng = np.random.default_rng(0)
# row-major operands of C (m, n) = op(A) @ op(B), handed to column-major BLAS as
# C.T = op(B).T @ op(A).T (what fastprop's _blas_gemm does)
A = rng.standard_normal((k, m) if tr[0] == "T" else (m, k)).astype(dt)
B = rng.standard_normal((n, k) if tr[1] == "T" else (k, n)).astype(dt)
C = np.zeros((m, n), dt)
with threadpool_limits(1):
    if warm:   # fastprop's warm-up: 256 x 256 times 256 x 1024, on zeros
        gemm(1.0, np.zeros((1024, 256), dt, order="F"), np.zeros((256, 256), dt, order="F"))
    f = lambda: gemm(1.0, B.T, A.T, c=C.T, overwrite_c=1,
                     trans_a=int(tr[1] == "T"), trans_b=int(tr[0] == "T"))
    f()
    t0 = time.perf_counter(); count = 0
    while time.perf_counter() - t0 < seconds:
        f(); count += 1
    print(2.0 * m * n * k * count / (time.perf_counter() - t0) / 1e9)
"""


def _rate(warm, dt, m, k, n, tr, seconds):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "1" if warm else "0", dt, str(m), str(k), str(n),
         tr, str(seconds)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per case")
    ap.add_argument("--rounds", type=int, default=3,
                    help="fresh processes per case and state, cold and warm alternating")
    ap.add_argument("--output", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _workloads import cpu_name

    rows = []
    print(f"# BLAS workspace cold / warm, 1 thread, {args.rounds} fresh processes each; "
          f"CPU: {cpu_name()}")
    print(f"{'product':48s} {'dtype':8s} {'m x k x n':>15s} {'op':>3s} "
          f"{'cold GF/s':>10s} {'warm GF/s':>10s} {'warm/cold':>9s}")
    for name, dt, m, k, n, tr in CASES:
        cold, warm = [], []
        for _ in range(args.rounds):
            cold.append(_rate(False, dt, m, k, n, tr, args.seconds))
            warm.append(_rate(True, dt, m, k, n, tr, args.seconds))
        c, w = sorted(cold)[len(cold) // 2], sorted(warm)[len(warm) // 2]
        rows.append(dict(product=name, dtype=dt, m=m, k=k, n=n, op=tr, cold=cold,
                         warm=warm, ratio=w / c))
        print(f"{name:48s} {dt:8s} {f'{m}x{k}x{n}':>15s} {tr:>3s} {c:10.1f} {w:10.1f} "
              f"{w / c:9.2f}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(dict(cpu=cpu_name(), seconds=args.seconds, rounds=args.rounds,
                           rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
