"""fastprop's standard benchmark: workloads W1-W6 (benchmarks/README.md), one training
epoch as the unit, fastprop against scikit-learn's MLP, the NumPy reference training loop,
PyTorch eager and JAX (jit of the whole epoch) when they are importable, and the GEMM
floor (only the epoch's matrix products, on preallocated arrays).

Usage::

    python benchmarks/run.py                      # full run, 1 and 2 threads (~15 min quiet)
    python benchmarks/run.py --quick              # short pass on cut data (~2-3 min quiet)
    python benchmarks/run.py --workloads W1,W4 --threads 1
    python benchmarks/run.py --plot benchmarks/results/run.png
    python benchmarks/run.py --help

One command, one process per thread count: JAX fixes its thread pool when its CPU
backend starts, so the command runs each thread count's pass in a fresh subprocess of
itself (``--threads 1,2``: two passes, one after the other); within a pass every
contender lives in the same process and the contenders' epochs are interleaved. The
parent process gathers the passes, prints the table, writes the JSON and draws the plot.

Protocol per (thread count, workload) cell (see benchmarks/README.md for the reasons):

1. build every contender (untimed), then ``--warmup`` untimed epochs of each (the
   estimators' first ``partial_fit``, JAX's compilation, PyTorch's first calls);
2. ``--rounds`` rounds; in each, every contender runs one block, in an order that
   rotates (and reverses) from round to round. A block is: ``--settle`` seconds of sleep
   (the previous contender's spinning BLAS/OpenMP threads go idle), one untimed epoch
   when blocks hold several epochs, then ``m`` epochs each timed on its own with
   ``time.perf_counter`` (garbage collector off). ``m`` is chosen from the warm-up so a
   block takes about ``--block-time`` seconds (1 for the big workloads);
3. a block during which other processes took more than ``--max-other`` % of the
   machine's CPU is run again after waiting for a quiet machine (at most ``--retries``
   times per cell);
4. afterwards every contender that trails in epochs runs untimed epochs until all have
   run the same number, so the losses compare like with like: each one's mean training
   loss of its last epoch (what ``loss_`` reports) and its final weights' loss over the
   whole training set in float64 (``fastprop.reference``, the same formula for all).

Statistic: the median seconds per epoch per contender; ratios are ratios of medians
within the same cell.
"""

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import _workloads as wl  # noqa: E402
from bench_core import (  # noqa: E402
    _cpu_ticks, _git, _loadavg, _other_pct, environment_info, wait_quiet,
)

TARGET_FLOOR = {"W1": 1.25, "W3": 1.25}          # fastprop / GEMM floor at most
TARGET_JAX = {"W2": 0.8, "W4": 0.8, "W5": 0.8, "W6": 0.8}   # fastprop / JAX at most
# fastprop's and scikit-learn's losses "comparable": the relative difference of their
# last epoch's mean training loss (``loss_``) after the same number of epochs, at most
# 1 % in float64 (both follow the same arithmetic: their loss curves coincide) and 25 %
# in float32, where rounding alone separates the two trajectories after 1-3 epochs
# (measured on W2's data, 5 seeds: per-seed losses differ, the mean curves coincide) and
# the independent implementations of one run spread by 10-20 %.
LOSS_RTOL = {"float64": 0.01, "float32": 0.25}


def _available(name):
    mod = {"torch": "torch", "jax": "jax"}.get(name)
    return mod is None or importlib.util.find_spec(mod) is not None


def _meminfo_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


# -- worker: one thread count ----------------------------------------------------------

def _start_jax(nt):
    """Import JAX and start its CPU backend with an intra-op pool of ``nt`` threads.

    JAX 0.10 has no option for the CPU thread count (``XLA_FLAGS=
    --xla_cpu_multi_thread_eigen=false`` and ``intra_op_parallelism_threads`` change
    nothing: measured), and XLA sizes its pool from the CPUs the process may run on when
    the backend starts. So the process is restricted to ``nt`` CPUs while the backend
    starts, then every thread's affinity (the pool's threads included) is restored: the
    pool keeps ``nt`` threads and no thread stays pinned."""
    full = os.sched_getaffinity(0)
    pinned = nt < len(full)
    if pinned:
        os.sched_setaffinity(0, set(sorted(full)[:nt]))
    try:
        import jax

        jax.config.update("jax_enable_x64", True)   # W4, W5 are float64
        devices = [str(d) for d in jax.devices()]
    finally:
        if pinned:
            for tid in os.listdir("/proc/self/task"):
                try:
                    os.sched_setaffinity(int(tid), full)
                except OSError:
                    pass
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "devices": devices,
            "threads_method": (f"process affinity restricted to {nt} CPU(s) while the CPU "
                               "backend started, then restored for every thread"
                               if pinned else "default (all CPUs)")}


def _start_torch(nt):
    import torch

    torch.set_num_threads(nt)
    return {"torch": torch.__version__, "num_threads": torch.get_num_threads(),
            "parallel_info": torch.__config__.parallel_info(),
            "mkl_available": bool(torch.backends.mkl.is_available()),
            "config": torch.__config__.show()}


def _stats(times):
    t = np.asarray(times)
    q25, med, q75 = np.percentile(t, [25, 50, 75])
    return {"median_s": float(med), "q25_s": float(q25), "q75_s": float(q75),
            "min_s": float(t.min()), "mean_s": float(t.mean()), "n": int(t.size),
            "iqr_pct": float(100 * (q75 - q25) / med),
            "slow_pct": float(100 * (t > 1.5 * t.min()).mean())}


def effective_max_other(max_other, nt):
    """The disturbance threshold for a pass with ``nt`` threads: ``--max-other`` plus the
    share of the machine the pass leaves idle (a 1-thread pass on 2 CPUs: +50 %), since
    other processes may use the CPUs the pass does not."""
    nproc = len(os.sched_getaffinity(0))
    return max_other + 100.0 * max(0, nproc - nt) / nproc


def run_cell(key, names, nt, args, log):
    w = wl.WORKLOADS[key]
    data = wl.make_data(key, quick=args.quick)
    cell = {"workload": key, "name": w["name"], "threads": nt, "data": data.text,
            "n_samples": data.n, "batch": w["batch"], "dtype": w["dtype"],
            "hidden": list(w["hidden"]), "task": w["task"],
            "loss": wl.CORE_LOSS[w["task"]], "n_batches": wl.n_batches(data.n, w["batch"]),
            "loadavg_start": _loadavg(), "skipped": {}}
    t_cell = time.perf_counter()
    cons = {}
    for n in names:
        try:
            cons[n] = wl.make_contender(n, key, data)
        except Exception as e:  # a contender that cannot run is skipped, not fatal
            cell["skipped"][n] = f"{type(e).__name__}: {e}"
    names = [n for n in names if n in cons]
    if "floor" in cons:
        cell["floor_gflop"] = cons["floor"].flops / 1e9
    settle = args.settle if args.settle is not None else (0.25 if nt > 1 else 0.05)
    max_other = effective_max_other(args.max_other, nt)
    epochs = dict.fromkeys(names, 0)
    warm = {n: [] for n in names}
    for _ in range(args.warmup):
        for n in names:
            time.sleep(settle)
            warm[n].append(wl.timed(cons[n].epoch))
            epochs[n] += 1
    est = statistics.median(v[-1] for v in warm.values())
    m = int(min(args.max_block, max(1, round(args.block_time / max(est, 1e-6)))))
    pre = 1 if m > 1 else 0
    samples = {n: [] for n in names}
    cpu = {n: [0.0, 0.0] for n in names}
    blocks = []
    retries_left = args.retries
    t0_cell = _cpu_ticks()
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for n in order:
            c = cons[n]
            attempt = 0
            while True:
                gc.collect()
                ticks0 = _cpu_ticks()     # the window includes the settle: >= ~0.1 s
                time.sleep(settle)
                for _ in range(pre):
                    c.epoch()
                    epochs[n] += 1
                p0, w0 = time.process_time(), time.perf_counter()
                times = []
                gc.disable()
                try:
                    for _ in range(m):
                        t0 = time.perf_counter()
                        c.epoch()
                        times.append(time.perf_counter() - t0)
                finally:
                    gc.enable()
                p1, w1 = time.process_time(), time.perf_counter()
                other = _other_pct(ticks0, _cpu_ticks())
                epochs[n] += m
                attempt += 1
                if not other > max_other or retries_left <= 0:
                    break
                retries_left -= 1
                log(f"   ({key} {n}: other processes took {other:.0f}% of the CPU during "
                    f"the block; waiting for a quiet machine and running it again)")
                wait_quiet(max_other / 2, args.wait)
            samples[n].extend(times)
            cpu[n][0] += p1 - p0
            cpu[n][1] += w1 - w0
            blocks.append({"round": r, "contender": n, "other_pct": other,
                           "attempts": attempt, "times_s": times})
    cell["other_pct"] = _other_pct(t0_cell, _cpu_ticks())
    # the same number of epochs for every contender, then the losses
    target = max(epochs.values())
    for n in names:
        while epochs[n] < target:
            cons[n].epoch()
            epochs[n] += 1
    res = {}
    for n in names:
        st = _stats(samples[n])
        st["warmup_s"] = warm[n]
        st["cores"] = cpu[n][0] / max(cpu[n][1], 1e-9)
        st["epochs_trained"] = epochs[n]
        el = cons[n].epoch_loss()
        st["epoch_loss"] = None if el is None else float(el)
        wts = cons[n].weights()
        st["final_loss"] = None if wts is None else wl.full_loss(key, data, *wts)
        st["max_block_other_pct"] = max(b["other_pct"] for b in blocks if b["contender"] == n)
        res[n] = st
    cell.update({"block_epochs": m, "pre_epochs_per_block": pre, "settle_s": settle,
                 "max_other_pct": max_other,
                 "rounds": args.rounds, "warmup_epochs": args.warmup,
                 "epochs_per_contender": target, "retried_blocks": sum(
                     b["attempts"] - 1 for b in blocks),
                 "contenders": res, "blocks": blocks,
                 "elapsed_s": time.perf_counter() - t_cell, "loadavg_end": _loadavg()})
    add_ratios(cell)
    del cons
    gc.collect()
    return cell


def add_ratios(cell):
    res = cell["contenders"]
    med = {n: s["median_s"] for n, s in res.items()}
    comp = [med[n] for n in wl.COMPETITORS if n in med]
    best = min(comp) if comp else None
    cell["best_competitor"] = (min((n for n in wl.COMPETITORS if n in med), key=med.get)
                               if comp else None)
    for n, s in res.items():
        s["vs_fastprop"] = med[n] / med["fastprop"] if "fastprop" in med else None
        s["vs_sklearn"] = med[n] / med["sklearn"] if "sklearn" in med else None
        s["vs_best"] = med[n] / best if best else None
        s["vs_floor"] = med[n] / med["floor"] if "floor" in med else None
        s["vs_jax"] = med[n] / med["jax"] if "jax" in med else None
    cell["targets"] = targets(cell)


def targets(cell):
    """fastprop's targets (benchmarks/README.md, "The workloads") for this cell: list of
    (name, value, limit, met)."""
    res, key = cell["contenders"], cell["workload"]
    out = []
    if "fastprop" not in res:
        return out
    f = res["fastprop"]
    if f["vs_jax"] is not None:
        out.append({"target": "below JAX", "value": f["vs_jax"], "limit": 1.0,
                    "met": f["vs_jax"] < 1.0})
        if key in TARGET_JAX:
            out.append({"target": f"<= {TARGET_JAX[key]}x JAX", "value": f["vs_jax"],
                        "limit": TARGET_JAX[key], "met": f["vs_jax"] <= TARGET_JAX[key]})
    if key in TARGET_FLOOR and f["vs_floor"] is not None:
        out.append({"target": f"<= {TARGET_FLOOR[key]}x GEMM floor", "value": f["vs_floor"],
                    "limit": TARGET_FLOOR[key], "met": f["vs_floor"] <= TARGET_FLOOR[key]})
    if "sklearn" in res:
        a, b = f["epoch_loss"], res["sklearn"]["epoch_loss"]
        rel = abs(a - b) / max(abs(b), 1e-12)
        tol = LOSS_RTOL[cell["dtype"]]
        out.append({"target": "loss as sklearn's", "value": rel, "limit": tol,
                    "met": rel <= tol, "epochs": cell.get("epochs_per_contender"),
                    "fastprop_epoch_loss": f["epoch_loss"],
                    "sklearn_epoch_loss": res["sklearn"]["epoch_loss"],
                    "fastprop_final_loss": a, "sklearn_final_loss": b})
    return out


def worker(args, nt):
    names = [n for n in args.contenders.split(",") if n]
    info = {"threads": nt, "unavailable": {}}
    # fastprop (its kernels link the system's libgomp.so.1), scipy and scikit-learn first,
    # as a user without PyTorch has them: PyTorch ships its own libgomp.so.1, and the
    # first library loaded under that name is the one the whole process uses. They must
    # also load before _start_jax narrows the CPU affinity: libgomp and OpenBLAS size
    # their default pools from it when they load.
    import scipy.linalg  # noqa: F401
    import sklearn.neural_network  # noqa: F401

    import fastprop  # noqa: F401
    import fastprop.core  # noqa: F401
    # then JAX: its pool size is fixed when its backend starts (see _start_jax)
    for name, start in (("jax", _start_jax), ("torch", _start_torch)):
        if name not in names:
            continue
        if not _available(name):
            info["unavailable"][name] = "not importable"
            continue
        try:
            info[name] = start(nt)
        except Exception as e:
            info["unavailable"][name] = f"{type(e).__name__}: {e}"
    names = [n for n in names if n not in info["unavailable"]]

    from threadpoolctl import threadpool_info, threadpool_limits

    env = environment_info()
    info.update(env)
    info["machine"]["memory_gib"] = _meminfo_gib()

    def log(msg):
        print(msg, flush=True)

    cells = []
    t_pass = time.perf_counter()
    with threadpool_limits(limits=nt):
        info["threadpool_limited"] = [
            {"prefix": i["prefix"], "user_api": i["user_api"], "internal_api":
             i["internal_api"], "num_threads": i["num_threads"]} for i in threadpool_info()]
        log(f"\n## pass: threads = {nt}  (threadpool_limits(limits={nt}): "
            + ", ".join(f"{i['prefix']}={i['num_threads']}" for i in info["threadpool_limited"])
            + (f"; torch.set_num_threads({nt})" if "torch" in info else "")
            + (f"; jax: {info['jax']['threads_method']}" if "jax" in info else "")
            + f"; loadavg {_loadavg()})")
        features = [k for k in args.features.split(",") if k]
        for key in args.workloads.split(","):
            if args.max_other < 100:
                wait_quiet(effective_max_other(args.max_other, nt) / 2, args.wait)
            extra = ([f"fastprop+{f}" for f in wl.FEATURES]
                     if key in features and "fastprop" in names else [])
            cell = run_cell(key, names + extra, nt, args, log)
            cells.append(cell)
            for line in format_cell(cell):
                log(line)
    info["pass_elapsed_s"] = time.perf_counter() - t_pass
    info["machine"]["loadavg_at_end"] = _loadavg()
    return {"env": info, "cells": cells}


# -- output ----------------------------------------------------------------------------

def _fmt_s(x):
    return "-" if x is None else (f"{x:.4f}" if x >= 0.001 else f"{x:.2e}")


def _fmt_r(x):
    return "-" if x is None else f"{x:.2f}x"


def _fmt_r3(x):
    return "-" if x is None else f"{x:.3f}x"


def _fmt_l(x):
    return "" if x is None else f"{x:.5g}"


HEADER = (f"{'wl':<3} {'thr':>3} {'contender':<19} {'s/epoch':>9} {'IQR%':>5} "
          f"{'/sklearn':>8} {'/best':>7} {'/floor':>7} {'cores':>5} "
          f"{'epoch loss':>11} {'final loss':>11}")


def format_cell(cell, header=True):
    lines = []
    if header:
        lines += ["", f"### {cell['workload']} {cell['name']}: {cell['data']}, net "
                  f"{cell['hidden']}, batch {cell['batch']}, {cell['dtype']}; "
                  f"{cell['threads']} thread(s); {cell['rounds']} rounds x "
                  f"{cell['block_epochs']} timed epoch(s), {cell['epochs_per_contender']} "
                  f"epochs each in all; other% {cell['other_pct']:.0f}, retried blocks "
                  f"{cell['retried_blocks']}, loadavg {cell['loadavg_start']} -> "
                  f"{cell['loadavg_end']}; {cell['elapsed_s']:.0f} s", HEADER,
                  "-" * len(HEADER)]
    for n, s in cell["contenders"].items():
        lines.append(f"{cell['workload']:<3} {cell['threads']:>3} {n:<19} "
                     f"{_fmt_s(s['median_s']):>9} {s['iqr_pct']:>4.0f}% "
                     f"{_fmt_r(s['vs_sklearn']):>8} {_fmt_r(s['vs_best']):>7} "
                     f"{_fmt_r(s['vs_floor']):>7} {s['cores']:>5.2f} "
                     f"{_fmt_l(s['epoch_loss']):>11} {_fmt_l(s['final_loss']):>11}")
    for n, why in cell["skipped"].items():
        lines.append(f"{cell['workload']:<3} {cell['threads']:>3} {n:<19} skipped: {why}")
    tg = format_targets(cell)
    if tg:
        lines.append(tg)
    return lines


def format_targets(cell):
    parts = []
    for t in cell["targets"]:
        if t["target"] == "loss as sklearn's":
            parts.append(f"loss_ vs sklearn's {100 * t['value']:.2f}% "
                         f"{'ok' if t['met'] else 'DIFFERS'}")
        else:
            parts.append(f"{t['target']}: {t['value']:.3f}x {'met' if t['met'] else 'MISSED'}")
    return ("    fastprop targets: " + "; ".join(parts)) if parts else ""


def summary_lines(cells):
    lines = ["", "## Summary: median seconds per epoch; ratios of medians in the same cell",
             "(/best = over sklearn, numpy, torch, jax; /floor = over the GEMM floor; cores ="
             " process CPU time / wall time during the timed epochs)", HEADER,
             "-" * len(HEADER)]
    for cell in sorted(cells, key=lambda c: (c["threads"], c["workload"])):
        lines += format_cell(cell, header=False)
    lines += ["", "## fastprop's targets (loss_: last epoch's mean training loss, both "
              "after the same number of epochs)",
              f"{'wl':<3} {'thr':>3} {'vs JAX':>7} {'target':>7} {'vs floor':>9} "
              f"{'target':>7} {'epochs':>6} {'loss_ fastprop':>14} {'loss_ sklearn':>13} "
              f"{'diff':>6}  verdict"]
    for cell in sorted(cells, key=lambda c: (c["threads"], c["workload"])):
        t = {x["target"]: x for x in cell["targets"]}
        f = cell["contenders"].get("fastprop")
        if f is None:
            continue
        key = cell["workload"]
        jt = TARGET_JAX.get(key, 1.0)
        ft = TARGET_FLOOR.get(key)
        missed = [x["target"] for x in cell["targets"] if not x["met"]]
        lo = t.get("loss as sklearn's", {})
        diff = f"{100 * lo['value']:.2f}%" if lo else ""
        lines.append(
            f"{key:<3} {cell['threads']:>3} {_fmt_r3(f['vs_jax']):>7} "
            f"{('<' if jt == 1.0 else '<=') + str(jt) + 'x':>7} {_fmt_r3(f['vs_floor']):>9} "
            f"{('<=' + str(ft) + 'x') if ft else '':>7} "
            f"{cell.get('epochs_per_contender', ''):>6} "
            f"{_fmt_l(lo.get('fastprop_epoch_loss')):>14} "
            f"{_fmt_l(lo.get('sklearn_epoch_loss')):>13} "
            f"{diff:>6}  "
            + ("all met" if not missed else "MISSED: " + ", ".join(missed)))
    costs = [c for c in cells if any(n.startswith("fastprop+") for n in c["contenders"])]
    if costs:
        lines += ["", "## The cost of fastprop's options: median s/epoch with the option "
                  "on / without it (the default epoch), same cell"]
        for cell in sorted(costs, key=lambda c: (c["threads"], c["workload"])):
            lines.append(f"{cell['workload']} {cell['threads']} thr: " + ", ".join(
                f"{n[len('fastprop+'):]} {s['vs_fastprop']:.2f}x"
                for n, s in cell["contenders"].items() if n.startswith("fastprop+")))
    return lines


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    threads = sorted({c["threads"] for c in cells})
    keys = [k for k in wl.WORKLOADS if any(c["workload"] == k for c in cells)]
    colors = {"fastprop": "#d62728", "sklearn": "#1f77b4", "numpy": "#8c8c8c",
              "torch": "#ff7f0e", "jax": "#2ca02c", "floor": "#222222"}
    fig, axes = plt.subplots(len(threads), len(keys), squeeze=False,
                             figsize=(2.9 * len(keys) + 0.6, 3.5 * len(threads) + 1.0))
    for i, nt in enumerate(threads):
        for j, key in enumerate(keys):
            ax = axes[i][j]
            cell = next((c for c in cells if c["threads"] == nt and c["workload"] == key),
                        None)
            if cell is None:
                ax.axis("off")
                continue
            res = cell["contenders"]
            names = [n for n in wl.CONTENDERS if n in res]
            vals = [res[n]["median_s"] * 1e3 for n in names]
            bars = ax.bar(range(len(names)), vals, color=[colors[n] for n in names],
                          hatch=None)
            if "floor" in names:
                bars[names.index("floor")].set_hatch("//")
                bars[names.index("floor")].set_facecolor("white")
                bars[names.index("floor")].set_edgecolor("#222222")
            top = max(vals)
            # fastprop's target: the tightest of its limits, as a dashed red line
            lim = []
            if "jax" in res:
                lim.append((res["jax"]["median_s"] * 1e3 * TARGET_JAX.get(key, 1.0),
                            f"{TARGET_JAX.get(key, 1.0):g}x JAX"))
            if "floor" in res and key in TARGET_FLOOR:
                lim.append((res["floor"]["median_s"] * 1e3 * TARGET_FLOOR[key],
                            f"{TARGET_FLOOR[key]:g}x floor"))
            if lim and "fastprop" in res:
                y, label = min(lim)
                ax.axhline(y, color=colors["fastprop"], ls="--", lw=0.9, zorder=0)
            for k, (b, v) in enumerate(zip(bars, vals)):
                txt = f"{v:.3g}" if v < 100 else f"{v:.0f}"
                ax.text(b.get_x() + b.get_width() / 2, v + top * 0.01, txt, ha="center",
                        va="bottom", fontsize=7.5, rotation=0)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_ylim(0, top * 1.15)
            ax.tick_params(axis="y", labelsize=8)
            f = res.get("fastprop")
            sub = ""
            if f and f.get("vs_jax") is not None:
                sub = f"fastprop = {f['vs_jax']:.3f}x JAX"
            if f and key in TARGET_FLOOR and f.get("vs_floor") is not None:
                sub += f", {f['vs_floor']:.3f}x floor"
            speed = [t for t in cell["targets"] if t["target"] != "loss as sklearn's"]
            if speed:
                missed = [t["target"] for t in speed if not t["met"]]
                sub += "\ntargets " + ("met" if not missed else "missed: " + ", ".join(missed))
            ax.set_title(f"{key} {cell['name']}, batch {cell['batch']}\n{sub}", fontsize=8.5,
                         color="black" if not speed or not missed else "#a00000")
            if j == 0:
                ax.set_ylabel(f"{nt} thread{'s' if nt > 1 else ''}\nms per epoch")
    q = " (--quick: cut data)" if result["protocol"]["quick"] else ""
    fig.suptitle(f"fastprop benchmark: median ms per training epoch, lower is better{q}\n"
                 f"{result['machine_short']}.  Red dashed line: fastprop's tightest time "
                 "target (W1, W3: 1.25x GEMM floor; W2, W4-W6: 0.8x JAX)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- parent ----------------------------------------------------------------------------

def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short pass: W1-W3 on 6000 samples (not 60000), W6 on 10000 (not "
                        "50000), 3 rounds, ~0.05 s blocks")
    p.add_argument("--workloads", default=",".join(wl.WORKLOADS),
                   help="comma-separated subset of W1..W6 (default all)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts, one pass (subprocess) each")
    p.add_argument("--contenders", default=",".join(wl.CONTENDERS),
                   help=f"comma-separated subset of {','.join(wl.CONTENDERS)} (torch, jax "
                        "skipped when not importable)")
    p.add_argument("--features", default="W1",
                   help="workloads on which fastprop also runs with each of its own "
                        "options on (benchmarks/_workloads.py FEATURES), to report their "
                        "cost; '' for none (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds, one block per contender each (default 9, "
                        "--quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per contender "
                   "before timing (default 1)")
    p.add_argument("--block-time", type=float, default=None,
                   help="seconds a block of timed epochs should last: short epochs are "
                        "timed several per block (default 0.15, --quick 0.05)")
    p.add_argument("--max-block", type=int, default=20,
                   help="most timed epochs per block (default 20)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds of sleep before each block (default 0.25 at >1 thread, "
                        "0.05 at 1)")
    p.add_argument("--max-other", type=float, default=20.0,
                   help="re-run a block during which other processes used more than this %% "
                        "of the machine's CPU, plus the share the pass leaves idle (1 thread "
                        "on 2 CPUs: +50) (default 20; 100 disables)")
    p.add_argument("--retries", type=int, default=None,
                   help="most re-run blocks per cell (default 6, --quick 2)")
    p.add_argument("--wait", type=float, default=None,
                   help="longest wait for a quiet machine before a cell and before a "
                        "re-run, s (default 30, --quick 5)")
    p.add_argument("--output", default=os.path.join(HERE, "results", "run.json"),
                   help="JSON path (default benchmarks/results/run.json)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the comparison (bars per workload and thread count)")
    p.add_argument("--load", default=None, metavar="RUN.json",
                   help="measure nothing: print the summary of a saved run (and --plot it)")
    p.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 9
    if args.retries is None:
        args.retries = 2 if args.quick else 6
    if args.wait is None:
        args.wait = 5.0 if args.quick else 30.0
    if args.block_time is None:
        args.block_time = 0.05 if args.quick else 0.15
    bad = set(args.workloads.split(",")) - set(wl.WORKLOADS)
    if bad:
        p.error(f"unknown workloads {sorted(bad)}")
    bad = set(args.contenders.split(",")) - set(wl.CONTENDERS)
    if bad:
        p.error(f"unknown contenders {sorted(bad)}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    if args._worker is not None:
        out = worker(args, args._worker)
        with open(args._out, "w") as f:
            json.dump(out, f, default=str)
        return 0

    if args.load:
        with open(args.load) as f:
            result = json.load(f)
        for cell in result["cells"]:
            add_ratios(cell)      # derived: recomputed with this version's targets
        print(f"# {result['command']}  ({result['date']}, {result['elapsed_s']:.0f} s)")
        for line in summary_lines(result["cells"]):
            print(line)
        if args.plot:
            plot(result, args.plot)
            print(f"# plot written to {os.path.relpath(args.plot)}")
        return 0

    t_start = time.perf_counter()
    command = "python " + " ".join([os.path.relpath(__file__, os.getcwd())] + argv)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"# fastprop benchmark suite (benchmarks/run.py)  {now}")
    print(f"# command: {command}")
    print(f"# workloads {args.workloads}; threads {args.threads}; contenders "
          f"{args.contenders}; rounds {args.rounds}, warm-up {args.warmup} epoch(s), block "
          f"~{args.block_time} s (max {args.max_block} epochs); quick={args.quick}")
    print(f"# malloc: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}; loadavg "
          f"{_loadavg()}")
    passes = []
    for nt in [int(t) for t in args.threads.split(",") if t.strip()]:
        fd, tmp = tempfile.mkstemp(prefix="fastprop_run_", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_worker", str(nt),
               "--_out", tmp]
        rc = subprocess.run(cmd).returncode
        try:
            with open(tmp) as f:
                passes.append(json.load(f))
        except (OSError, ValueError):
            print(f"# pass with {nt} thread(s) failed (exit code {rc}): no results")
        finally:
            os.unlink(tmp)
    if not passes:
        return 1
    cells = [c for p in passes for c in p["cells"]]
    env0 = passes[0]["env"]
    m, v = env0["machine"], env0["versions"]
    for line in summary_lines(cells):
        print(line)
    elapsed = time.perf_counter() - t_start
    blas = sorted({f"{i['internal_api']} {i['version']} ({i.get('architecture')}, "
                   f"{i.get('threading_layer')}) [{i['prefix']}]"
                   for i in env0["threadpool_info"] if i["user_api"] == "blas"})
    extra = []
    for p in passes:
        e = p["env"]
        if "torch" in e:
            extra.append(f"torch {e['torch']['torch']} ({e['threads']} thr)")
        if "jax" in e:
            extra.append(f"jax {e['jax']['jax']} ({e['threads']} thr)")
    print()
    print(f"# machine: {m['cpu_model']}, {m['nproc']} CPUs, {m.get('memory_gib')} GiB, "
          f"{m['platform']}")
    print(f"# versions: python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, "
          f"sklearn {v['sklearn']}, fastprop {v['fastprop']} (git "
          f"{str(v['fastprop_git_commit'])[:10]}{', dirty' if v['fastprop_git_dirty'] else ''})"
          + "".join(f", {x}" for x in dict.fromkeys(extra)))
    for b in blas:
        print(f"# BLAS: {b}")
    print(f"# malloc: {env0['malloc']}")
    for p in passes:
        for name, why in p["env"]["unavailable"].items():
            print(f"# skipped at {p['env']['threads']} thread(s): {name} ({why}); its "
                  "ratios and targets are left out")
    print(f"# {len(cells)} cells in {elapsed:.0f} s; loadavg at end {_loadavg()}")

    result = {
        "benchmark": "run", "date": now, "command": command, "elapsed_s": elapsed,
        "machine_short": f"{m['cpu_model']}, {m['nproc']} CPUs; fastprop git "
                         f"{str(v['fastprop_git_commit'])[:10]}; {now[:10]}",
        "protocol": {
            "quick": args.quick, "workloads": args.workloads, "threads": args.threads,
            "contenders": args.contenders, "rounds": args.rounds,
            "warmup_epochs": args.warmup, "block_time_s": args.block_time,
            "max_block": args.max_block, "settle_s": args.settle,
            "max_other_pct": args.max_other, "retries": args.retries, "wait_s": args.wait,
            "hyperparameters": {"solver": "adam", "learning_rate_init": wl.LR,
                                "alpha": wl.ALPHA, "beta_1": wl.BETA_1,
                                "beta_2": wl.BETA_2, "epsilon": wl.EPSILON,
                                "shuffle": True, "random_state": wl.SEED,
                                "activation": "relu"},
            "contenders": {n: (getattr(wl, {"fastprop": "FastpropContender",
                                            "sklearn": "SklearnContender",
                                            "numpy": "NumpyContender",
                                            "torch": "TorchContender",
                                            "jax": "JaxContender",
                                            "floor": "FloorContender"}[n]).__doc__ or "")
                           .strip() for n in wl.CONTENDERS},
            "statistic": "median s/epoch per contender; ratios of medians in one cell",
            "columns": {"iqr_pct": "(q75 - q25) / median of the contender's timed epochs",
                        "slow_pct": "share of timed epochs slower than 1.5x the "
                                    "contender's fastest",
                        "cores": "process CPU time / wall time during the contender's "
                                 "timed epochs (spinning threads count)",
                        "other_pct": "share of the machine's CPU other processes used "
                                     "(/proc/stat minus /proc/self/stat)",
                        "epoch_loss": "mean training loss of the last epoch, as loss_",
                        "final_loss": "final weights' loss over the whole training set, "
                                      "float64, fastprop.reference, L2 term included"},
            "targets": {"below_jax": "every workload", "max_vs_jax": TARGET_JAX,
                        "max_vs_floor": TARGET_FLOOR, "loss_rtol_vs_sklearn": LOSS_RTOL},
        },
        "machine": m,
        "versions": {**v, **{k: pe[k][k] for pe in (p["env"] for p in passes)
                             for k in ("torch", "jax") if k in pe},
                     **({"jaxlib": next(p["env"]["jax"]["jaxlib"] for p in passes
                                        if "jax" in p["env"])}
                        if any("jax" in p["env"] for p in passes) else {})},
        "threadpool_info": env0["threadpool_info"],
        "malloc": env0["malloc"],
        "passes": [p["env"] for p in passes],
        "cells": cells,
    }
    path = args.output
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"# results written to {os.path.relpath(path)}")
    if args.plot:
        plot(result, args.plot)
        print(f"# plot written to {os.path.relpath(args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
