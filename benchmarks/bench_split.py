"""Split minibatches against whole ones, on the standard workloads.

fastprop cuts minibatches of ``SPLIT_MIN_BATCH`` (128) rows or more in two halves run by
a team of two threads (see README.md, "Threads"). This times one ``core.Trainer`` epoch
(Adam, shuffled order, the suite's loss and data) both ways, interleaved in one process:
``split`` with every minibatch split, ``whole`` with none (on the calling thread), at 1
and 2 threads (threadpoolctl limits); BLAS runs on one thread in both, as fastprop runs
every training pass. It is the measurement behind the threshold; run it again before
moving it. Times only: the two ways differ in their rounding, not in what they compute.

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
    old = _kernels._set_split_min_batch(1 if mode == "split" else 1 << 62)
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
    print(f"# in production, minibatches of {threshold}+ rows are split")
    print("wl   thr   split s   whole s  split/whole  (medians; per-repeat ratios)")
    rng = np.random.default_rng(0)
    for key in args.workloads.split(","):
        data = make_data(key, quick=args.quick)
        n = data.X.shape[0]
        epochs = max(1, int(4e7 // (n * data.X.shape[1])))  # W1-W3: 1 epoch, W4: 40
        for nt in (1, 2):
            times = {"split": [], "whole": []}
            with threadpool_limits(limits=nt):
                for _ in range(args.repeats):
                    order = rng.permutation(n).astype(np.intp)
                    for mode in ("split", "whole"):
                        times[mode].append(epoch_seconds(key, data, mode, order, epochs))
            s, w = statistics.median(times["split"]), statistics.median(times["whole"])
            ratios = " ".join(f"{a / b:.2f}" for a, b in zip(times["split"], times["whole"]))
            print(f"{key:4} {nt:3} {s:9.4f} {w:9.4f} {s / w:11.2f}   ({ratios})", flush=True)


if __name__ == "__main__":
    main()
