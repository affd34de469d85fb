"""Two builds of fastprop side by side: is the default epoch of one as fast as the
other's? For a change that must leave the defaults no slower (a new option, off by
default), the build before it against the build after.

Usage::

    python benchmarks/bench_ab.py --base ../fastprop-before            # vs this checkout
    python benchmarks/bench_ab.py --base A --head B --workloads W1,W4 --threads 1,2
    python benchmarks/bench_ab.py --base . --base-env FASTPROP_BLAS=scipy   # one build,
                                                                            # two settings

Each build is a source tree with its extension built in place (``python setup.py
build_ext --inplace``; this checkout may be an editable install instead). Two builds
cannot share a process (the same module names), so each block of epochs runs in a fresh
process of its own, importing the build from its tree, and the blocks alternate,
base, head, head, base, ... round after round. A block builds the workload's estimator
(scikit-learn's defaults but for the workload's settings, ``benchmarks/_workloads.py``),
runs one untimed epoch (``partial_fit``) and then ``--epochs`` timed ones. The statistic
is the median over rounds of the per-round ratio head / base of the block medians:
pairing each head block with the base block beside it cancels the drift of a shared
machine, which moves both alike. ``--base-env`` / ``--head-env NAME=VALUE`` (repeatable)
set environment variables in one side's processes: the same build under two settings.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BLOCK = textwrap.dedent("""
    import gc, json, sys, time
    sys.path.insert(0, {bench!r})
    from threadpoolctl import threadpool_limits
    import _workloads as wl
    import fastprop
    assert fastprop.__file__.startswith({root!r}), fastprop.__file__
    with threadpool_limits(limits={threads}):
        data = wl.make_data({key!r})
        c = wl.make_contender("fastprop", {key!r}, data)
        c.epoch()
        times = []
        gc.disable()
        for _ in range({epochs}):
            t0 = time.perf_counter()
            c.epoch()
            times.append(time.perf_counter() - t0)
    print(json.dumps(times))
""")


def block(root, key, threads, epochs, extra_env=()):
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra_env)
    code = BLOCK.format(bench=HERE, root=os.path.realpath(root), threads=threads, key=key,
                        epochs=epochs)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", check=True,
                         capture_output=True, text=True)
    return statistics.median(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="source tree of the build before")
    p.add_argument("--head", default=ROOT, help="source tree of the build after "
                   "(default: this checkout)")
    p.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per block")
    p.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the base's processes (repeatable)")
    p.add_argument("--head-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the head's processes (repeatable)")
    p.add_argument("--output", default=None, metavar="FILE.json")
    args = p.parse_args(argv)
    envs = {}
    for which in ("base", "head"):
        pairs = getattr(args, f"{which}_env")
        if any("=" not in pair for pair in pairs):
            p.error(f"--{which}-env takes NAME=VALUE")
        envs[which] = dict(pair.split("=", 1) for pair in pairs)
    sys.path.insert(0, HERE)
    from _workloads import cpu_name

    print(f"# bench_ab: {cpu_name()}; base {args.base} {envs['base'] or ''}, "
          f"head {args.head} {envs['head'] or ''}; "
          f"{args.rounds} rounds x {args.epochs} epochs per block")
    print(f"{'wl':<3} {'thr':>3} {'base s':>9} {'head s':>9} {'head/base':>9} "
          f"{'per round':>30}")
    cells = []
    for nt in [int(t) for t in args.threads.split(",")]:
        for key in args.workloads.split(","):
            base, head = [], []
            for r in range(args.rounds):
                order = ("base", "head") if r % 2 == 0 else ("head", "base")
                for which in order:
                    root = args.base if which == "base" else args.head
                    (base if which == "base" else head).append(
                        block(root, key, nt, args.epochs, envs[which]))
            ratios = [h / b for h, b in zip(head, base)]
            cell = {"workload": key, "threads": nt, "base_s": base, "head_s": head,
                    "ratio_per_round": ratios, "ratio": statistics.median(ratios)}
            cells.append(cell)
            print(f"{key:<3} {nt:>3} {statistics.median(base):>9.4g} "
                  f"{statistics.median(head):>9.4g} {cell['ratio']:>9.3f} "
                  f"{' '.join(f'{x:.3f}' for x in ratios):>30}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"cpu": cpu_name(), "base": args.base, "head": args.head,
                       "base_env": envs["base"], "head_env": envs["head"],
                       "rounds": args.rounds, "epochs": args.epochs, "cells": cells},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
