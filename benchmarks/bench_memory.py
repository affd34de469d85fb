"""Memory of fitting: peak resident set size against the size of X, and a leak check.

Two measurements, each in a fresh subprocess so that one cannot inherit another's heap:

1. **Peak RSS of fit on W1** (benchmarks/README.md, "The workloads": ``make_classification(60000,
   784, n_informative=64, n_redundant=64, n_classes=10, n_clusters_per_class=1,
   random_state=0)`` as float32; hidden (256, 128) relu, Adam, batch 128, alpha 1e-4,
   ``tol=0``, ``--epochs`` epochs, 2 threads), for fastprop and for scikit-learn. The
   child imports everything, reads RSS (the *import baseline*), loads X and y from a
   ``.npy`` cache (the *data baseline*), resets the kernel's peak counter
   (``/proc/self/clear_refs`` = 5, so VmHWM covers the fit only), fits, and reads VmHWM.
   Target (issue text): the memory the fit needs on top of the interpreter and its
   libraries, ``peak - import baseline``, is at most ``1.25 * X.nbytes + 64 MiB``; that
   is, X itself plus at most a quarter of X plus 64 MiB of training state.
2. **Leak check**: on a small problem, repeated fit + predict + predict_proba cycles of
   a fresh estimator; RSS (after ``gc.collect()``) after 10 cycles against after 100.
   No growth beyond allocator noise is expected (reported with the per-cycle slope).

Usage::

    python benchmarks/bench_memory.py              # both contenders, both measurements
    python benchmarks/bench_memory.py --epochs 1 --cycles 10,100 --impl fastprop

Writes ``benchmarks/results/bench_memory.json`` (``--output``) and prints a table.
Linux only (reads /proc/self/status).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
W1 = dict(n_samples=60000, n_features=784, n_informative=64, n_redundant=64, n_classes=10,
          n_clusters_per_class=1, random_state=0)


# -- helpers run in the children ---------------------------------------------------------

def _status():
    """VmRSS and VmHWM of this process, in bytes (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _reset_peak():
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _imports():
    import numpy  # noqa: F401
    import scipy  # noqa: F401
    import sklearn.neural_network  # noqa: F401
    from threadpoolctl import threadpool_limits  # noqa: F401

    import fastprop  # noqa: F401


def _estimator(impl, **params):
    if impl == "fastprop":
        from fastprop import MLPClassifier
    else:
        from sklearn.neural_network import MLPClassifier
    return MLPClassifier(**params)


def child_fit(args):
    """Peak RSS of one fit on W1; prints one JSON line."""
    import gc
    import resource
    import warnings

    _imports()
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    gc.collect()
    imports = _status()["VmRSS"]
    X = np.load(os.path.join(args.data, "X.npy"))
    y = np.load(os.path.join(args.data, "y.npy"))
    gc.collect()
    data = _status()["VmRSS"]
    reset = _reset_peak()
    est = _estimator(args.impl, hidden_layer_sizes=(256, 128), solver="adam",
                     batch_size=128, learning_rate_init=1e-3, alpha=1e-4,
                     max_iter=args.epochs, tol=0.0, shuffle=True, random_state=0)
    tic = time.perf_counter()
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    seconds = time.perf_counter() - tic
    st = _status()
    result = {
        "impl": args.impl,
        "epochs": int(est.n_iter_),
        "fit_seconds": seconds,
        "X_bytes": int(X.nbytes),
        "X_dtype": str(X.dtype),
        "y_bytes": int(y.nbytes),
        "rss_after_imports": imports,
        "rss_after_data": data,
        "peak_rss_fit": st["VmHWM"] if reset else None,
        # whole-process high-water mark, loading X included (Linux: also inherited from
        # the parent at fork, which is why the parent stays small)
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_fit": st["VmRSS"],
        "peak_reset_worked": reset,
        "final_loss": float(est.loss_),
    }
    print("RESULT " + json.dumps(result), flush=True)


def child_cycles(args):
    """RSS after each of ``max(cycles)`` fit / predict cycles on a small problem."""
    import gc
    import warnings

    _imports()
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    X, y = make_classification(n_samples=2000, n_features=40, n_informative=10,
                               n_classes=3, random_state=0)
    X = X.astype(np.float32)
    n = max(args.cycles)
    rss = []
    with threadpool_limits(limits=args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(n):
            est = _estimator(args.impl, hidden_layer_sizes=(64, 32), max_iter=3,
                             batch_size=64, random_state=i)
            est.fit(X, y)
            est.predict(X)
            est.predict_proba(X)
            est.partial_fit(X[:500], y[:500])
            del est
            gc.collect()
            rss.append(_status()["VmRSS"])
    print("RESULT " + json.dumps({"impl": args.impl, "rss": rss}), flush=True)


# -- the parent --------------------------------------------------------------------------

def _run_child(mode, impl, args, data_dir=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--impl", impl,
           "--epochs", str(args.epochs), "--threads", str(args.threads),
           "--cycles", ",".join(map(str, args.cycles))]
    if data_dir is not None:
        cmd += ["--data", data_dir]
    # from an empty directory, so the installed fastprop is imported (not the source tree)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child {mode}/{impl} failed ({proc.returncode}):\n{proc.stdout}\n"
                       f"{proc.stderr[-3000:]}")


def _make_w1(directory):
    import numpy as np
    from sklearn.datasets import make_classification

    X, y = make_classification(**W1)
    np.save(os.path.join(directory, "X.npy"), X.astype(np.float32))
    np.save(os.path.join(directory, "y.npy"), y)


def _machine():
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        import numpy
        import sklearn

        import fastprop

        info.update(numpy=numpy.__version__, sklearn=sklearn.__version__,
                    fastprop=fastprop.__version__)
    except ImportError:
        pass
    info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", default="fastprop,sklearn",
                    help="comma-separated: fastprop, sklearn (default both)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the W1 fit (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP threads (default 2)")
    ap.add_argument("--cycles", default="10,100",
                    help="leak check: RSS after these cycle counts (default 10,100)")
    ap.add_argument("--skip-fit", action="store_true", help="only the leak check")
    ap.add_argument("--skip-cycles", action="store_true", help="only the W1 peak")
    ap.add_argument("--output", default=os.path.join(HERE, "results", "bench_memory.json"))
    ap.add_argument("--child", choices=["fit", "cycles", "data"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.cycles = sorted({int(c) for c in str(args.cycles).split(",")})
    if args.child == "fit":
        return child_fit(args)
    if args.child == "cycles":
        return child_cycles(args)
    if args.child == "data":
        return _make_w1(args.data)

    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    report = {"machine": _machine(), "protocol": {
        "workload": "W1", "data": W1, "dtype": "float32", "hidden_layer_sizes": [256, 128],
        "solver": "adam", "batch_size": 128, "epochs": args.epochs, "tol": 0.0,
        "threads": args.threads, "cycles": args.cycles,
        "target": "peak_rss_fit - rss_after_imports <= 1.25 * X_bytes + 64 MiB",
    }, "fit": {}, "cycles": {}}

    if not args.skip_fit:
        with tempfile.TemporaryDirectory() as d:
            print("making W1 data ...", flush=True)
            # in a child too: Linux children inherit the parent's ru_maxrss high-water
            # mark, so a parent that built the float64 data would pollute theirs
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "data",
                            "--data", d], check=True, cwd=tempfile.gettempdir())
            for impl in impls:
                print(f"fit {impl} ...", flush=True)
                r = _run_child("fit", impl, args, d)
                target = 1.25 * r["X_bytes"] + 64 * MiB
                peak = r["peak_rss_fit"] if r["peak_rss_fit"] is not None else r["ru_maxrss"]
                r["fit_need"] = peak - r["rss_after_imports"]
                r["fit_overhead"] = peak - r["rss_after_data"]
                r["target_bytes"] = target
                r["ratio_to_target"] = r["fit_need"] / target
                r["meets_target"] = bool(r["fit_need"] <= target)
                report["fit"][impl] = r

    if not args.skip_cycles:
        for impl in impls:
            print(f"leak check {impl} ...", flush=True)
            r = _run_child("cycles", impl, args)
            rss = r["rss"]
            lo, hi = args.cycles[0], args.cycles[-1]
            r["rss_at"] = {str(c): rss[c - 1] for c in args.cycles}
            r["growth_bytes"] = rss[hi - 1] - rss[lo - 1]
            r["growth_per_cycle_bytes"] = r["growth_bytes"] / max(1, hi - lo)
            report["cycles"][impl] = r

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)

    def mib(b):
        return "%.1f" % (b / MiB)

    if report["fit"]:
        print("\nPeak RSS of fit on W1 (MiB; %d epochs, %d threads)" % (args.epochs,
                                                                      args.threads))
        head = ("impl", "X", "imports", "+data", "peak", "peak-imports", "target",
                "ratio", "overhead", "fit s")
        print("%-9s %7s %8s %7s %7s %12s %7s %6s %9s %6s" % head)
        for impl, r in report["fit"].items():
            peak = r["peak_rss_fit"] if r["peak_rss_fit"] is not None else r["ru_maxrss"]
            print("%-9s %7s %8s %7s %7s %12s %7s %6.2f %9s %6.1f" % (
                impl, mib(r["X_bytes"]), mib(r["rss_after_imports"]), mib(r["rss_after_data"]),
                mib(peak), mib(r["fit_need"]), mib(r["target_bytes"]), r["ratio_to_target"],
                mib(r["fit_overhead"]), r["fit_seconds"]))
        print("target: peak - imports <= 1.25 X + 64 MiB (ratio <= 1); overhead = peak - "
              "(imports + data)")
    if report["cycles"]:
        lo, hi = args.cycles[0], args.cycles[-1]
        print(f"\nLeak check: RSS after {lo} vs {hi} fit/predict/partial_fit cycles (MiB)")
        print("%-9s %9s %9s %9s %14s" % ("impl", f"after {lo}", f"after {hi}", "growth",
                                         "KiB per cycle"))
        for impl, r in report["cycles"].items():
            print("%-9s %9s %9s %9s %14.1f" % (
                impl, mib(r["rss_at"][str(lo)]), mib(r["rss_at"][str(hi)]),
                mib(r["growth_bytes"]), r["growth_per_cycle_bytes"] / 1024))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
