"""Where the team pays: one training epoch at the default thread count against one
thread, over a grid of minibatch sizes, widths, depths and dtypes, dense and CSR.

For each cell this makes 4096 x 256 data (3 classes; CSR at 5 % density), fits
``MLPClassifier(hidden_layer_sizes=(width,) * depth, batch_size=batch, solver="adam")``
for one epoch, then times further ``partial_fit`` epochs at the default thread count
and under ``threadpool_limits(1)``, interleaved, best of ``--repeats`` each. The ratio
team / one is what the team costs or gains. A cell whose minibatches run whole (on the
calling thread at any thread count: ``core._kernels.epoch_partition``)
runs the same code either way and is reported as ``whole`` without timing.

Target: no cell above 1.05 (the team never slower than one thread).

    python benchmarks/bench_sweep.py [--repeats 3] [--quick] [--data "csr float32"] [--output FILE]
"""

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fastprop import MLPClassifier
from fastprop.core import _kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workloads import cpu_name  # noqa: E402

BATCHES = (16, 32, 64, 128, 256, 512, 1024)
WIDTHS = (32, 64, 128, 256, 512, 1024)
DEPTHS = (1, 2, 3)
N, D = 4096, 256




def kind(batch, width, depth, X):
    """The epoch's partition: "whole", or "rows" / "units" and its parts ("rows4")."""
    sizes = np.array([D, *([width] * depth), 3], dtype=np.intp)
    if sp.issparse(X):
        k, parts, _ = _kernels.epoch_partition(sizes, batch, X.nnz, X.shape[0])
    else:
        k, parts, _ = _kernels.epoch_partition(sizes, batch)
    return k if k == "whole" else f"{k}{parts}"


def epoch(clf, X, y, limit):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=limit):
        t = time.perf_counter()
        clf.partial_fit(X, y)
        return time.perf_counter() - t


def cell(X, y, batch, width, depth, repeats):
    clf = MLPClassifier(hidden_layer_sizes=(width,) * depth, batch_size=batch,
                        random_state=0)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    team, one = [], []
    for r in range(repeats):
        for limit in ((None, 1) if r % 2 == 0 else (1, None)):
            (team if limit is None else one).append(epoch(clf, X, y, limit))
    return min(team), min(one)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="depth 1-2, widths 64/256/1024, float32 and CSR only")
    ap.add_argument("--data", default=None,
                    help="comma-separated subset of: float32, float64, csr float32")
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_sweep.json"))
    args = ap.parse_args()
    rng = np.random.RandomState(0)
    X64 = rng.randn(N, D)
    y = rng.randint(0, 3, N)
    data = {"float32": X64.astype(np.float32), "float64": X64}
    mask = rng.uniform(size=(N, D)) < 0.05
    data["csr float32"] = sp.csr_matrix(np.where(mask, X64, 0.0).astype(np.float32))
    widths, depths, dtypes = WIDTHS, DEPTHS, ("float32", "float64", "csr float32")
    if args.quick:
        widths, depths, dtypes = (64, 256, 1024), (1, 2), ("float32", "csr float32")
    if args.data:
        dtypes = tuple(d.strip() for d in args.data.split(","))
    out = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
           "threads": _kernels.openmp_max_threads(), "repeats": args.repeats,
           "shape": [N, D], "cells": []}
    print(f"{out['cpu']}, {out['cores']} cores, default threads "
          f"{out['threads']}; best of {args.repeats}")
    print(f"{'data':12} {'batch':>5} {'width':>5} {'depth':>5} {'kind':>6} "
          f"{'team s':>8} {'one s':>8} {'team/one':>8}")
    worst = 0.0
    for dtype, batch, width, depth in itertools.product(dtypes, BATCHES, widths, depths):
        k = kind(batch, width, depth, data[dtype])
        row = {"data": dtype, "batch": batch, "width": width, "depth": depth, "kind": k}
        if k == "whole":
            print(f"{dtype:12} {batch:5} {width:5} {depth:5} {k:>6} {'':>8} {'':>8} {'-':>8}")
        else:
            team, one = cell(data[dtype], y, batch, width, depth, args.repeats)
            row.update(team_s=team, one_s=one, ratio=team / one)
            worst = max(worst, team / one)
            flag = "  > 1.05" if team / one > 1.05 else ""
            print(f"{dtype:12} {batch:5} {width:5} {depth:5} {k:>6} {team:8.4f} "
                  f"{one:8.4f} {team / one:8.2f}{flag}", flush=True)
        out["cells"].append(row)
    out["worst_ratio"] = worst
    print(f"worst team/one: {worst:.2f} (target: at most 1.05)")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    return 0 if worst <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
