"""Split minibatches against whole ones, on the standard workloads.

fastprop runs a minibatch one of three ways (see README.md, "Threads"):

- ``rows``: cut in two halves of rows (minibatches of ``SPLIT_MIN_BATCH``, 128, rows or
  more), each half's forward and backward on its own thread;
- ``units``: every layer's units cut in two parts, each part of every product on its
  own thread (shorter minibatches on a network where rows x n_params reaches
  ``UNITS_MIN_WORK``, and minibatches of 128-191 rows where it reaches
  ``UNITS_OVER_ROWS_WORK``);
- ``whole``: on the calling thread.

This times one ``core.Trainer`` epoch (Adam, shuffled order, the suite's loss and data)
each way, interleaved in one process, at 1 and 2 threads (threadpoolctl limits); BLAS
runs on one thread in all three, as fastprop runs every training pass. It is the
measurement behind the thresholds; run it again before moving them. Times only: the
ways differ in their rounding, not in what they compute.

    python benchmarks/bench_split.py [--workloads W1,W2,W3,W4,W6] [--repeats 7] [--quick]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workloads import ALPHA, WORKLOADS, init_params, layer_sizes, make_data  # noqa: E402

from fastprop import core  # noqa: E402
from fastprop.core import _kernels  # noqa: E402

LOSS = {"multiclass": "log_loss", "binary": "binary_log_loss", "regression": "squared_error"}


def epoch_seconds(key, data, mode, order, epochs):
    """Seconds per epoch of a fresh Trainer after one warm-up epoch."""
    w = WORKLOADS[key]
    sizes = layer_sizes(key, data)
    coefs, intercepts = init_params(sizes, data.X.dtype)
    old = _kernels._set_split_min_batch(1 if mode == "rows" else 1 << 62)
    old_units = _kernels._set_units_min_work(1 if mode == "units" else 1 << 62)
    # rows: split lengths stay split by rows on a big network too
    old_over = _kernels._set_units_over_rows_work(1 << 62)
    try:
        trainer = core.Trainer(sizes, "relu", LOSS[w["task"]], core.pack(coefs, intercepts),
                               "adam")
        kw = dict(batch_size=w["batch"], alpha=ALPHA, order=order, check_input=False)
        trainer.run_epoch(data.X, data.Y, **kw)
        t = time.perf_counter()
        for _ in range(epochs):
            trainer.run_epoch(data.X, data.Y, **kw)
        return (time.perf_counter() - t) / epochs
    finally:
        _kernels._set_split_min_batch(old)
        _kernels._set_units_min_work(old_units)
        _kernels._set_units_over_rows_work(old_over)


def main():
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W6")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="the suite's reduced data sets")
    args = ap.parse_args()
    print(f"# fastprop bench_split  {time.strftime('%Y-%m-%dT%H:%M:%S')}")
    print(f"# command: python {' '.join(sys.argv)}")
    threshold = next(b for b in range(1, 1 << 16) if _kernels.split_rows(b))
    units_min = _kernels._set_units_min_work(1)
    _kernels._set_units_min_work(units_min)
    over = _kernels._set_units_over_rows_work(1)
    _kernels._set_units_over_rows_work(over)
    print(f"# in production, minibatches of {threshold}+ rows are split by rows; shorter "
          f"ones by units when rows x n_params >= {units_min} (else whole); up to 191 "
          f"rows by units when rows x n_params >= {over}")
    modes = ("rows", "units", "whole")
    print("wl   thr    rows s   units s   whole s  rows/whole units/whole  (medians; "
          "per-repeat units/whole)")
    rng = np.random.default_rng(0)
    for key in args.workloads.split(","):
        data = make_data(key, quick=args.quick)
        n = data.X.shape[0]
        epochs = max(1, int(4e7 // (n * data.X.shape[1])))  # W1-W3: 1 epoch, W4: 40
        for nt in (1, 2):
            times = {m: [] for m in modes}
            with threadpool_limits(limits=nt):
                for _ in range(args.repeats):
                    order = rng.permutation(n).astype(np.intp)
                    for mode in modes:
                        times[mode].append(epoch_seconds(key, data, mode, order, epochs))
            med = {m: statistics.median(times[m]) for m in modes}
            ratios = " ".join(f"{a / b:.2f}" for a, b in zip(times["units"], times["whole"]))
            print(f"{key:4} {nt:3} {med['rows']:9.4f} {med['units']:9.4f} {med['whole']:9.4f}"
                  f" {med['rows'] / med['whole']:10.2f} {med['units'] / med['whole']:11.2f}"
                  f"   ({ratios})", flush=True)


if __name__ == "__main__":
    main()
