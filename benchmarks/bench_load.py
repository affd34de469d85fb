"""fastprop beside a busy core: each workload's epoch at the default thread count against
one thread, on a quiet machine and with another process spinning on one core.

A team meets at barriers several times per minibatch; beside a busy process a member
is descheduled for whole time slices, and a team that waits for it runs slower than one
thread. fastprop's team governor (csrc/fp_team.h) lets thread 0 go on alone then. This
times one ``partial_fit`` epoch of ``FastpropContender`` (the suite's estimator) three
ways, interleaved in one process: the default thread count ("team"), the same with the
governor off ("team, no governor": what the team did before), and
``threadpool_limits(1)`` ("one"). The target: team / one at most 1.2 under load, and no
worse than before when quiet.

    python benchmarks/bench_load.py [--workloads W1,...] [--rounds 7] [--quick]
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workloads import WORKLOADS, FastpropContender, make_data

from fastprop.core import _kernels

SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"
KINDS = ("team", "team, no governor", "one")


@contextlib.contextmanager
def spinning(on):
    """A process spinning on the last CPU this one may use, while the block runs."""
    if not on:
        yield
        return
    cpu = max(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", SPIN, str(cpu)])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def epoch(contender, kind):
    from threadpoolctl import threadpool_limits

    _kernels._set_team_governor(on=kind != "team, no governor")
    with threadpool_limits(limits=1 if kind == "one" else None):
        t = time.perf_counter()
        contender.epoch()
        return time.perf_counter() - t


def measure(key, data, rounds):
    contender = FastpropContender(key, data)
    epoch(contender, "team")  # the warm-up (initialisation)
    times = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in (KINDS if r % 2 == 0 else KINDS[::-1]):
            times[kind].append(epoch(contender, kind))
    _kernels._set_team_governor(on=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "median_s": med,
        "team/one": med["team"] / med["one"],
        "team/one worst pair": max(t / o for t, o in zip(times["team"], times["one"])),
        "no governor/one": med["team, no governor"] / med["one"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller data, 3 rounds")
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_load.json"))
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "rounds": rounds,
           "quick": args.quick, "results": {}}
    print(f"{cpu}, {out['cores']} cores; median epoch seconds of {rounds} interleaved rounds")
    print(f"{'':4} {'load':7} {'team':>8} {'no gov':>8} {'one':>8} {'team/one':>9} "
          f"{'worst':>6} {'no gov/one':>10}")
    for key in args.workloads.split(","):
        data = make_data(key, quick=args.quick)
        for loaded in (False, True):
            with spinning(loaded):
                r = measure(key, data, rounds)
            out["results"][f"{key} {'loaded' if loaded else 'quiet'}"] = r
            m = r["median_s"]
            print(f"{key:4} {'loaded' if loaded else 'quiet':7} {m['team']:8.4f} "
                  f"{m['team, no governor']:8.4f} {m['one']:8.4f} {r['team/one']:9.2f} "
                  f"{r['team/one worst pair']:6.2f} {r['no governor/one']:10.2f}", flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
