"""Where the partition's constants come from: one training epoch with minibatches cut into
more or fewer parts, on one thread and on two.

A pass is cut from the shapes alone (``core._kernels.epoch_partition``), the same on every
machine and for every thread count. More parts let more threads work, but every part
costs something whatever the thread count: a row part packs every weight matrix again
(BLAS copies its operand into panels) and has a gradient buffer that the step adds up;
a unit part packs the layer's input again. This times each case with the parts that
the cost model's constants give and with the alternatives (``--rows`` sets the fewest
rows of a row part, ``--units`` the fewest units of the widest layer's part), one
``partial_fit`` epoch per timing, 12000 rows, medians of ``--repeats`` interleaved
rounds, under ``threadpool_limits(1)`` and ``(2)``. Ratios are against the first
setting of each case.

    python benchmarks/bench_parts.py [--repeats 5] [--output FILE]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fastprop import MLPClassifier
from fastprop.core import _kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import cpu_name  # noqa: E402

# name: (n_features, hidden, n_classes, batch, dtype, what to vary, its settings)
CASES = {
    "W3 784-256-128-10 b1024": (784, (256, 128), 10, 1024, "float32", "rows", (512, 256, 128)),
    "784-512-10 b512": (784, (512,), 10, 512, "float32", "rows", (256, 128, 64)),
    "100-1024-3 b512": (100, (1024,), 3, 512, "float32", "rows", (256, 128, 64)),
    "W6 100-128-64-1 b256": (100, (128, 64), 1, 256, "float32", "rows", (128, 64)),
    "W1 784-256-128-10 b128": (784, (256, 128), 10, 128, "float32", "units", (128, 64)),
    "W2 784-256-128-10 b32": (784, (256, 128), 10, 32, "float32", "units", (128, 64)),
    "100-256-3 b64": (100, (256,), 3, 64, "float32", "units", (128, 64)),
}
N = 12000




def setting(vary, value):
    """Set the constant that the case varies; return what puts it back."""
    if vary == "rows":
        old = _kernels._set_row_parts(min_rows=value, pack=1e18)  # rows alone decide
        return lambda: _kernels._set_row_parts(min_rows=old[0], pack=old[2])
    old = _kernels._set_unit_part_min(value)
    return lambda: _kernels._set_unit_part_min(old)


def main():
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_parts.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    out = {"benchmark": "bench_parts", "command": "python " + " ".join(sys.argv),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu": cpu_name(),
           "nproc": os.cpu_count(), "cases": []}
    print(f"# fastprop bench_parts  {out['date']}  {out['cpu']}")
    for name, (nf, hidden, nc, batch, dtype, vary, values) in CASES.items():
        X = rng.standard_normal((N, nf)).astype(dtype)
        y = rng.integers(0, nc, N)
        sizes = np.array([nf, *hidden, nc], dtype=np.intp)
        models, parts = {}, {}
        for v in values:
            restore = setting(vary, v)
            try:
                parts[v] = _kernels.epoch_partition(sizes, batch)[:2]
                models[v] = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch,
                                          random_state=0)
                models[v].partial_fit(X, y, classes=np.arange(nc))  # warm-up epoch
            finally:
                restore()
        times = {(t, v): [] for t in (1, 2) for v in values}
        for _ in range(args.repeats):
            for t in (1, 2):
                for v in values:
                    restore = setting(vary, v)
                    try:
                        with threadpool_limits(limits=t):
                            start = time.perf_counter()
                            models[v].partial_fit(X, y)
                            times[(t, v)].append(time.perf_counter() - start)
                    finally:
                        restore()
        default = _kernels.epoch_partition(sizes, batch)[:2]
        for v in values:
            row = {"case": name, "vary": vary, "value": v, "partition": list(parts[v]),
                   "default": parts[v] == default}
            for t in (1, 2):
                med = float(np.median(times[(t, v)]))
                row[f"median_s_{t}"] = med
                row[f"ratio_{t}"] = med / float(np.median(times[(t, values[0])]))
            out["cases"].append(row)
            print(f"{name:26} {vary}>={v:<4} {str(tuple(parts[v])):14} "
                  f"1T {row['median_s_1'] * 1e3:7.1f} ms ({row['ratio_1']:.3f})  "
                  f"2T {row['median_s_2'] * 1e3:7.1f} ms ({row['ratio_2']:.3f})"
                  f"{'  <- default' if row['default'] else ''}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
