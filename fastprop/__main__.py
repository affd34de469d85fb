"""``python -m fastprop demo`` trains fastprop's and scikit-learn's MLPClassifier side by
side; ``python -m fastprop info`` prints ``fastprop.show_config()``."""

import argparse
import sys
import time
import warnings


def _datasets(quick):
    import numpy as np
    from sklearn.datasets import load_digits, make_classification
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    yield "digits (1797 x 64)", train_test_split(X / 16.0, y, random_state=0), 0
    n = 4000 if quick else 20000
    X, y = make_classification(
        n, 100, n_informative=30, n_redundant=20, n_classes=5,
        n_clusters_per_class=1, random_state=0,
    )
    X = X.astype(np.float32)
    yield (
        "synthetic (%d x 100, float32)" % n,
        train_test_split(X, y, random_state=0),
        1,
    )


def demo(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastprop demo",
        description="Train fastprop's and scikit-learn's MLPClassifier on the same data.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer epochs")
    parser.add_argument("--plot", metavar="FILE.png", help="write loss curves and timings")
    args = parser.parse_args(argv)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastprop

    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            print(
                "--plot needs matplotlib: pip install 'fastprop[bench]' "
                "(or pip install matplotlib)",
                file=sys.stderr,
            )
            return 2

    epochs = 20 if args.quick else 50
    params = dict(hidden_layer_sizes=(128, 64), max_iter=epochs, random_state=0, tol=0)
    rows, curves = [], []
    for name, (Xtr, Xte, ytr, yte), _ in _datasets(args.quick):
        result = {}
        for label, cls in (("fastprop", fastprop.MLPClassifier), ("scikit-learn", SkMLP)):
            print(f"  {name}: training {label} ({epochs} epochs) ...", flush=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                model = cls(**params).fit(Xtr, ytr)
                elapsed = time.perf_counter() - t0
            acc = model.score(Xte, yte)
            result[label] = (acc, elapsed, model.loss_curve_)
            print(f"  {name}: {label} done in {elapsed:.2f} s, accuracy {acc:.4f}",
                  flush=True)
        rows.append((name, result))
        curves.append((name, result))

    print()
    header = f"{'data':32} {'model':13} {'accuracy':>8} {'fit (s)':>8} {'speed-up':>8}"
    print(header)
    print("-" * len(header))
    for name, result in rows:
        sk_time = result["scikit-learn"][1]
        for label in ("scikit-learn", "fastprop"):
            acc, elapsed, _ = result[label]
            speed = f"{sk_time / elapsed:7.1f}x"
            print(f"{name:32} {label:13} {acc:8.4f} {elapsed:8.2f} {speed:>8}")
    print(f"\nSame hyperparameters for both: {params}; fastprop {fastprop.__version__}.")

    if args.plot:
        _plot(args.plot, curves)
        print(f"wrote {args.plot}")
    return 0


def _plot(path, curves):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves) + 1, figsize=(5 * (len(curves) + 1), 4))
    for ax, (name, result) in zip(axes, curves):
        # same initial weights and shuffles: the curves coincide, so draw scikit-learn's
        # wide and pale underneath fastprop's
        ax.plot(result["scikit-learn"][2], "-", lw=6, alpha=0.35, label="scikit-learn")
        ax.plot(result["fastprop"][2], "-", lw=1.5, label="fastprop")
        ax.set_title(f"training loss: {name}")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend()
    ax = axes[-1]
    names = [name.split(" (")[0] for name, _ in curves]
    x = range(len(curves))
    sk = [r["scikit-learn"][1] for _, r in curves]
    fp = [r["fastprop"][1] for _, r in curves]
    width = 0.38
    ax.bar([i - width / 2 for i in x], sk, width, label="scikit-learn")
    ax.bar([i + width / 2 for i in x], fp, width, label="fastprop")
    for i in x:
        ax.annotate(f"{sk[i] / fp[i]:.1f}x", (i + width / 2, fp[i]), ha="center",
                    va="bottom")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names)
    ax.set_ylabel("fit time (s)")
    ax.set_title("fit time, same epochs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: python -m fastprop {demo [--quick] [--plot FILE.png] | info}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return demo(rest)
    if command == "info":
        from . import show_config

        show_config()
        return 0
    print(f"unknown command {command!r}; use 'demo' or 'info'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
