"""Kernel safety: clear errors for bad calls (the same from core and reference), raw
kernels that reject bad arguments and overflowing sizes without crashing and never read
or write past exact-size buffers, and interrupts of long compiled passes."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastprop.core as core
from fastprop import reference
from fastprop.core import _kernels

from .helpers import (
    make_network,
    make_problem,
)


# =======================================================================================
# validation: clear errors, the same from core and reference
# =======================================================================================

def _base_call():
    p = make_problem(n_samples=6, sizes=(3, 4, 2), activation="tanh", loss="squared_error")
    return dict(coefs=p.coefs, intercepts=p.intercepts, X=p.X, Y=p.Y, activation="tanh",
                loss="squared_error", alpha=0.0, sample_weight=None)


def _set(**changes):
    def modify(kw):
        for k, v in changes.items():
            kw[k] = v(kw) if callable(v) else v
        return kw
    return modify


def _with(fn):
    """Modify a copy of one array argument in place."""
    def modify(kw):
        fn(kw)
        return kw
    return modify


def _nan_at(name, value):
    def fn(kw):
        kw[name] = kw[name].copy()
        kw[name].flat[3] = value
    return _with(fn)


BAD_CALLS = [
    ("layer shapes", ValueError, r"coefs\[1\] has shape \(5, 2\) but the previous layer has 4",
     _set(coefs=lambda kw: [kw["coefs"][0], np.zeros((5, 2))])),
    ("intercept shape", ValueError, r"intercepts\[0\] has shape \(3,\)",
     _set(intercepts=lambda kw: [np.zeros(3), kw["intercepts"][1]])),
    ("lengths differ", ValueError, "same length, got 2 and 1",
     _set(intercepts=lambda kw: kw["intercepts"][:1])),
    ("empty lists", ValueError, "at least one layer", _set(coefs=[], intercepts=[])),
    ("coefs not a list", TypeError, "lists of arrays",
     _set(coefs=lambda kw: kw["coefs"][0])),
    ("empty layer", ValueError, "empty dimension",
     _set(coefs=[np.zeros((3, 0)), np.zeros((0, 2))], intercepts=[np.zeros(0), np.zeros(2)])),
    ("mixed layer dtypes", TypeError, "share one dtype",
     _set(intercepts=lambda kw: [kw["intercepts"][0].astype(np.float32), kw["intercepts"][1]])),
    ("X dtype differs", TypeError, "X, Y and the layers must share one dtype",
     _set(X=lambda kw: kw["X"].astype(np.float32))),
    ("Y dtype differs", TypeError, "X, Y and the layers must share one dtype",
     _set(Y=lambda kw: kw["Y"].astype(np.float32))),
    ("int coefs", TypeError, "must have dtype float32 or float64",
     _set(coefs=lambda kw: [np.ones((3, 4), dtype=np.int64), kw["coefs"][1]])),
    ("int X", TypeError, "X must have dtype float32 or float64",
     _set(X=lambda kw: np.ones((6, 3), dtype=np.int64))),
    ("float16 X", TypeError, "X must have dtype float32 or float64",
     _set(X=lambda kw: kw["X"].astype(np.float16))),
    ("X wrong features", ValueError, "X has 2 features but coefs\\[0\\] expects 3",
     _set(X=lambda kw: kw["X"][:, :2])),
    ("X 1-D", ValueError, "X must be 2-D", _set(X=lambda kw: kw["X"][:, 0])),
    ("X ragged list", ValueError, "could not be converted",
     _set(X=[[1.0, 2.0, 3.0], [1.0]])),
    ("X not an array", TypeError, "X must be a NumPy array", _set(X="abc")),
    ("Y wrong columns", ValueError, r"Y must have shape \(6, 2\)", _set(Y=lambda kw: kw["Y"][:, :1])),
    ("Y wrong rows", ValueError, r"Y must have shape \(6, 2\)", _set(Y=lambda kw: kw["Y"][:5])),
    ("Y 1-D", ValueError, "Y must be 2-D", _set(Y=lambda kw: kw["Y"][:, 0])),
    ("0 samples", ValueError, "0 samples",
     _set(X=lambda kw: kw["X"][:0], Y=lambda kw: kw["Y"][:0])),
    ("NaN in X", ValueError, "X contains NaN", _nan_at("X", np.nan)),
    ("inf in X", ValueError, "X contains NaN or infinity", _nan_at("X", -np.inf)),
    ("NaN in Y", ValueError, "Y contains NaN", _nan_at("Y", np.nan)),
    ("inf in Y", ValueError, "Y contains NaN or infinity", _nan_at("Y", np.inf)),
    ("NaN in coefs", ValueError, r"coefs\[0\] or intercepts\[0\] contains NaN",
     _set(coefs=lambda kw: [np.full((3, 4), np.nan), kw["coefs"][1]])),
    ("inf in intercepts", ValueError, r"coefs\[1\] or intercepts\[1\] contains NaN",
     _set(intercepts=lambda kw: [kw["intercepts"][0], np.array([0.0, np.inf])])),
    ("NaN weight", ValueError, "sample_weight must be finite and non-negative",
     _set(sample_weight=np.array([1.0, np.nan, 1, 1, 1, 1]))),
    ("inf weight", ValueError, "sample_weight must be finite and non-negative",
     _set(sample_weight=np.array([1.0, np.inf, 1, 1, 1, 1]))),
    ("negative weight", ValueError, "sample_weight must be finite and non-negative",
     _set(sample_weight=np.array([1.0, -0.5, 1, 1, 1, 1]))),
    ("zero weights", ValueError, "positive sum", _set(sample_weight=np.zeros(6))),
    ("weights length", ValueError, "sample_weight has 5 entries, X has 6",
     _set(sample_weight=np.ones(5))),
    ("weights 2-D", ValueError, "sample_weight must be 1-D", _set(sample_weight=np.ones((6, 1)))),
    ("weights dtype", TypeError, "sample_weight must have dtype float64",
     _set(sample_weight=np.ones(6, np.float32))),
    ("int weights", TypeError, "sample_weight must have dtype float32 or float64",
     _set(sample_weight=np.ones(6, np.int64))),
    ("unknown activation", ValueError, "activation must be one of", _set(activation="swish")),
    ("unknown loss", ValueError, "loss must be one of", _set(loss="hinge")),
    ("loss None", ValueError, "loss must be one of", _set(loss=None)),
    ("negative alpha", ValueError, "alpha must be a finite real number >= 0", _set(alpha=-0.1)),
    ("NaN alpha", ValueError, "alpha must be", _set(alpha=float("nan"))),
    ("inf alpha", ValueError, "alpha must be", _set(alpha=float("inf"))),
    ("bool alpha", ValueError, "alpha must be", _set(alpha=True)),
    ("str alpha", ValueError, "alpha must be", _set(alpha="0.1")),
    ("poisson negative Y", ValueError, "requires non-negative targets",
     _set(loss="poisson", Y=lambda kw: np.where(np.arange(12).reshape(6, 2) == 5, -1.0, 1.0))),
    ("log_loss one column", ValueError, "needs at least 2 output columns",
     _set(loss="log_loss", coefs=lambda kw: [kw["coefs"][0], kw["coefs"][1][:, :1].copy()],
          intercepts=lambda kw: [kw["intercepts"][0], kw["intercepts"][1][:1].copy()],
          Y=lambda kw: np.ones((6, 1)))),
]


@pytest.mark.parametrize("name, exc, match, modify", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_raise_clear_errors(name, exc, match, modify):
    kw = modify(_base_call())
    raised = {}
    for module in (reference, core):
        args = dict(kw)
        with pytest.raises(exc, match=match) as info:
            module.loss_and_gradients(args.pop("coefs"), args.pop("intercepts"), args.pop("X"),
                                      args.pop("Y"), **args)
        raised[module.__name__] = (type(info.value), str(info.value))
    assert raised["fastprop.core"] == raised["fastprop.reference"]


FORWARD_BAD_CALLS = [
    ("X wrong features", ValueError, "X must be a 2-D float64 array with 3 columns",
     dict(X=np.zeros((4, 2)))),
    ("X dtype", TypeError, "X must have the layers' dtype float64", dict(X=np.zeros((4, 3), np.float32))),
    ("X 1-D", ValueError, "X must be a 2-D", dict(X=np.zeros(3))),
    ("unknown activation", ValueError, "activation must be one of", dict(activation="swish")),
    ("unknown loss", ValueError, "loss must be one of", dict(loss="quantile")),
    ("mixed layers", TypeError, "share one dtype",
     dict(intercepts=[np.zeros(4, np.float32), np.zeros(2)])),
    ("int layers", TypeError, "float32 or float64",
     dict(coefs=[np.zeros((3, 4), int), np.zeros((4, 2), int)])),
    ("layer shapes", ValueError, r"coefs\[1\] has shape",
     dict(coefs=[np.zeros((3, 4)), np.zeros((3, 2))])),
]


@pytest.mark.parametrize("name, exc, match, changes", FORWARD_BAD_CALLS,
                         ids=[c[0] for c in FORWARD_BAD_CALLS])
def test_forward_bad_calls(name, exc, match, changes):
    coefs, intercepts = make_network((3, 4, 2))
    kw = dict(coefs=coefs, intercepts=intercepts, X=np.zeros((4, 3)), activation="relu",
              loss="log_loss")
    kw.update(changes)
    raised = {}
    for module in (reference, core):
        with pytest.raises(exc, match=match) as info:
            module.forward(kw["coefs"], kw["intercepts"], kw["X"], activation=kw["activation"],
                           loss=kw["loss"])
        raised[module.__name__] = type(info.value)
    assert raised["fastprop.core"] is raised["fastprop.reference"]


# =======================================================================================
# raw kernels: wrong calls must raise, never read or write out of bounds
# =======================================================================================

KERNEL_SCRIPT = r'''
import sys
import numpy as np
from fastprop.core import _kernels as K

failures = []

def case(name, fn, expect=(ValueError,)):
    print("START", name, flush=True)
    try:
        fn()
    except expect as e:
        print("CAUGHT", name, type(e).__name__, str(e)[:100].replace("\n", " "), flush=True)
    except BaseException as e:
        print("WRONG-EXCEPTION", name, type(e).__name__, e, flush=True)
        failures.append(name)
    else:
        print("NO-EXCEPTION", name, flush=True)
        failures.append(name)

def valid(name, fn):
    print("START", name, flush=True)
    try:
        fn()
    except BaseException as e:
        print("VALID-CALL-FAILED", name, type(e).__name__, e, flush=True)
        failures.append(name)
    else:
        print("PASSED", name, flush=True)

rng = np.random.default_rng(0)
SIZES = np.array([3, 4, 2], dtype=np.intp)
N = 5
NP = 3 * 4 + 4 * 2 + 4 + 2
WORK = N * (4 + 2)
X = rng.normal(size=(N, 3))
Y = rng.normal(size=(N, 2))
PARAMS = rng.normal(size=NP)
EMPTY = np.empty(0)
EMPTY_I = np.empty(0, dtype=np.intp)

def _call(fn, names, defaults, kw):
    for k in kw:
        assert k in defaults, k
    d = dict(defaults)
    d.update(kw)
    return fn(*[d[k] for k in names])

LG_NAMES = ["sizes", "activation", "loss", "params", "X", "Y", "sample_weight", "alpha",
            "grads", "acts", "deltas", "rows", "grads2", "n_threads"]
def lg(**kw):
    d = dict(sizes=SIZES, activation=2, loss=0, params=PARAMS, X=X, Y=Y, sample_weight=EMPTY,
             alpha=0.1, grads=np.empty(NP), acts=np.empty(WORK), deltas=np.empty(WORK), rows=N,
             grads2=EMPTY, n_threads=1)
    return _call(K.loss_grad, LG_NAMES, d, kw)

FW_NAMES = ["sizes", "activation", "loss", "params", "X", "out", "acts", "rows"]
def fw(**kw):
    d = dict(sizes=SIZES, activation=2, loss=2, params=PARAMS, X=X, out=np.empty((N, 2)),
             acts=np.empty(WORK), rows=N)
    return _call(K.forward, FW_NAMES, d, kw)

TE_NAMES = ["sizes", "activation", "loss", "params", "grads", "X", "Y", "sample_weight", "order",
            "batch_size", "alpha", "acts", "deltas", "x_buf", "y_buf", "sw_buf", "solver",
            "state_1", "state_2", "hyper", "counter", "grads2", "n_threads"]
B = 2
BWORK = B * (4 + 2)
def te(**kw):
    d = dict(sizes=SIZES, activation=2, loss=0, params=PARAMS.copy(), grads=np.empty(NP), X=X,
             Y=Y, sample_weight=np.ones(N), order=np.arange(N)[::-1].copy(), batch_size=B,
             alpha=0.1, acts=np.empty(BWORK), deltas=np.empty(BWORK), x_buf=np.empty((B, 3)),
             y_buf=np.empty((B, 2)), sw_buf=np.empty(B), solver=1, state_1=np.zeros(NP),
             state_2=np.zeros(NP), hyper=np.array([0.01, 0.9, 1.0, 0.9, 0.999, 1e-8]),
             counter=np.zeros(1, dtype=np.intp), grads2=EMPTY, n_threads=1)
    return _call(K.train_epoch, TE_NAMES, d, kw)

def split(fn, min_batch=2):
    """Call fn with minibatches of >= min_batch rows split in halves (the path that
    needs two half-workspaces and grads2); B = 2 rows split into 1 + 1."""
    def call():
        old = K._set_split_min_batch(min_batch)
        old_csr = K._set_csr_split_min_work(0)  # sparse minibatches too, however small
        try:
            return fn()
        finally:
            K._set_split_min_batch(old)
            K._set_csr_split_min_work(old_csr)
    return call

# the split layout for B = 2: two halves of split_rows(2) = 2 rows each (rounded up to 8,
# then capped at the minibatch)
HALF = 2
SWORK = 2 * HALF * (4 + 2)

# -- valid calls first: the harness must not be catching everything -------------------
valid("loss_grad ok", lambda: lg())
valid("loss_grad rows > n", lambda: lg(rows=N + 3, acts=np.empty((N + 3) * 6), deltas=np.empty((N + 3) * 6)))
valid("loss_grad weights", lambda: lg(sample_weight=np.ones(N)))
# split blocks: rows N = 5 -> halves of split_rows(5) = 5 rows (the second one empty)
LSWORK = 2 * N * 6
for nt in (1, 2, 0, 99):
    valid(f"loss_grad split, {nt} threads",
          split(lambda nt=nt: lg(acts=np.empty(LSWORK), deltas=np.empty(LSWORK),
                                 grads2=np.empty(NP), n_threads=nt)))
valid("forward ok", lambda: fw())
valid("forward 0 rows", lambda: fw(X=np.empty((0, 3)), out=np.empty((0, 2))))
valid("train_epoch ok", lambda: te())
valid("train_epoch no order, no weights, tiny bufs",
      lambda: te(order=EMPTY_I, sample_weight=EMPTY, x_buf=np.empty((0, 3)),
                 y_buf=np.empty((0, 2)), sw_buf=EMPTY))
valid("train_epoch sgd, state_2 empty", lambda: te(solver=0, state_2=EMPTY))
valid("sgd_update empty", lambda: K.sgd_update(EMPTY.copy(), EMPTY.copy(), EMPTY.copy(),
                                                learning_rate=0.1, momentum=0.9, nesterov=True))
valid("adam_update empty", lambda: K.adam_update(EMPTY.copy(), EMPTY.copy(), EMPTY.copy(),
                                                 EMPTY.copy(), t=1, learning_rate=0.1,
                                                 beta_1=0.9, beta_2=0.999, epsilon=1e-8))
valid("train_epoch order a subset", lambda: te(order=np.array([4, 0, 2], dtype=np.intp)))
for nt in (1, 2, 0, 99):  # the team size is clamped to 1..parts
    valid(f"train_epoch split, {nt} threads",
          split(lambda nt=nt: te(acts=np.empty(SWORK), deltas=np.empty(SWORK),
                                 grads2=np.empty(NP), n_threads=nt)))
valid("train_epoch split, no order, no weights", split(lambda: te(
    acts=np.empty(SWORK), deltas=np.empty(SWORK), grads2=np.empty(NP), n_threads=2,
    order=EMPTY_I, sample_weight=EMPTY, x_buf=np.empty((0, 3)), y_buf=np.empty((0, 2)),
    sw_buf=EMPTY)))
valid("train_epoch order with repeats",
      lambda: te(order=np.array([1, 1, 4, 0, 0, 3, 2], dtype=np.intp)))

def units(fn):
    """Call fn with every whole minibatch cut by units (same buffers as a whole one)."""
    def call():
        old = K._set_units_min_work(1)
        try:
            return fn()
        finally:
            K._set_units_min_work(old)
    return call

for nt in (1, 2, 0, 99):
    valid(f"train_epoch units, {nt} threads", units(lambda nt=nt: te(n_threads=nt)))
valid("train_epoch units, no order, no weights, tiny bufs", units(lambda: te(
    n_threads=2, order=EMPTY_I, sample_weight=EMPTY, x_buf=np.empty((0, 3)),
    y_buf=np.empty((0, 2)), sw_buf=EMPTY)))
valid("train_epoch units, sgd", units(lambda: te(solver=0, state_2=EMPTY, n_threads=2)))

# -- loss_grad ---------------------------------------------------------------------------
case("lg params short", lambda: lg(params=PARAMS[:-1].copy()))
case("lg params empty", lambda: lg(params=EMPTY))
case("lg grads short", lambda: lg(grads=np.empty(NP - 1)))
case("lg grads empty", lambda: lg(grads=EMPTY))
case("lg acts short", lambda: lg(acts=np.empty(WORK - 1)))
case("lg deltas short", lambda: lg(deltas=np.empty(WORK - 1)))
case("lg rows beyond scratch", lambda: lg(rows=N + 1))
case("lg rows 0", lambda: lg(rows=0))
case("lg rows -1", lambda: lg(rows=-1))
case("lg X features", lambda: lg(X=np.zeros((N, 2))))
case("lg X more features", lambda: lg(X=np.zeros((N, 4))))
case("lg X 0 rows", lambda: lg(X=np.zeros((0, 3)), Y=np.zeros((0, 2))))
case("lg Y rows", lambda: lg(Y=np.zeros((N - 1, 2))))
case("lg Y more rows", lambda: lg(Y=np.zeros((N + 1, 2))))
case("lg Y cols", lambda: lg(Y=np.zeros((N, 1))))
case("lg Y more cols", lambda: lg(Y=np.zeros((N, 3))))
case("lg weights short", lambda: lg(sample_weight=np.ones(N - 1)))
case("lg weights long", lambda: lg(sample_weight=np.ones(N + 1)))
case("lg weights zero sum", lambda: lg(sample_weight=np.zeros(N)))
case("lg sizes 1 entry", lambda: lg(sizes=np.array([3], dtype=np.intp)))
case("lg sizes empty", lambda: lg(sizes=EMPTY_I))
case("lg sizes zero", lambda: lg(sizes=np.array([3, 0, 2], dtype=np.intp)))
case("lg sizes negative", lambda: lg(sizes=np.array([3, -4, 2], dtype=np.intp)))
case("lg sizes huge", lambda: lg(sizes=np.array([3, 2**40, 2], dtype=np.intp)))
case("lg sizes bigger than buffers", lambda: lg(sizes=np.array([3, 40, 2], dtype=np.intp)))
case("lg activation -1", lambda: lg(activation=-1))
case("lg activation 9", lambda: lg(activation=9))
case("lg loss -1", lambda: lg(loss=-1))
case("lg loss 6", lambda: lg(loss=6))  # one past the last code (absolute_error, 5)
case("lg mixed dtypes", lambda: lg(params=PARAMS.astype(np.float32)), (ValueError, TypeError))
case("lg X float32", lambda: lg(X=X.astype(np.float32)), (ValueError, TypeError))
case("lg X strided", lambda: lg(X=np.zeros((N, 6))[:, ::2]), (ValueError, TypeError))
case("lg sizes int32", lambda: lg(sizes=SIZES.astype(np.int32)), (ValueError, TypeError))
case("lg split acts short", split(lambda: lg(acts=np.empty(LSWORK - 1),
                                             deltas=np.empty(LSWORK), grads2=np.empty(NP))))
case("lg split deltas whole-block size", split(lambda: lg(acts=np.empty(LSWORK),
                                                          grads2=np.empty(NP))))
case("lg split grads2 short", split(lambda: lg(acts=np.empty(LSWORK), deltas=np.empty(LSWORK),
                                               grads2=np.empty(NP - 1))))
case("lg split grads2 empty", split(lambda: lg(acts=np.empty(LSWORK),
                                               deltas=np.empty(LSWORK))))

# -- forward -----------------------------------------------------------------------------
case("fw params short", lambda: fw(params=PARAMS[:-1].copy()))
case("fw acts short", lambda: fw(acts=np.empty(WORK - 1)))
case("fw rows beyond scratch", lambda: fw(rows=N + 1))
case("fw rows 0", lambda: fw(rows=0))
case("fw rows -2", lambda: fw(rows=-2))
case("fw out rows", lambda: fw(out=np.empty((N - 1, 2))))
case("fw out more rows", lambda: fw(out=np.empty((N + 1, 2))))
case("fw out cols", lambda: fw(out=np.empty((N, 1))))
case("fw out more cols", lambda: fw(out=np.empty((N, 3))))
case("fw X features", lambda: fw(X=np.zeros((N, 2))))
case("fw X more features", lambda: fw(X=np.zeros((N, 4))))
case("fw sizes 1 entry", lambda: fw(sizes=np.array([3], dtype=np.intp)))
case("fw sizes zero", lambda: fw(sizes=np.array([3, 0, 2], dtype=np.intp)))
case("fw activation 9", lambda: fw(activation=9))
case("fw loss -3", lambda: fw(loss=-3))
case("fw out float32", lambda: fw(out=np.empty((N, 2), np.float32)), (ValueError, TypeError))
case("fw out readonly", lambda: fw(out=np.broadcast_to(np.empty(2), (N, 2))), (ValueError, TypeError))

# -- train_epoch -------------------------------------------------------------------------
case("te order -1", lambda: te(order=np.array([0, 1, -1, 3, 4], dtype=np.intp)))
case("te order n", lambda: te(order=np.array([0, 1, 2, 3, N], dtype=np.intp)))
case("te order huge", lambda: te(order=np.array([0, 1, 2, 3, 2**40], dtype=np.intp)))
case("te order n (a subset)", lambda: te(order=np.array([2, N], dtype=np.intp)))
case("te order -1 (a subset)", lambda: te(order=np.array([-1], dtype=np.intp)))
case("te order int32", lambda: te(order=np.arange(N, dtype=np.int32)), (ValueError, TypeError))
case("te batch_size 0", lambda: te(batch_size=0))
case("te batch_size -3", lambda: te(batch_size=-3))
case("te batch beyond scratch", lambda: te(batch_size=B + 1))
case("te batch beyond scratch, no order",
     lambda: te(batch_size=B + 1, order=EMPTY_I, sample_weight=EMPTY))
case("te params short", lambda: te(params=PARAMS[:-1].copy()))
case("te grads short", lambda: te(grads=np.empty(NP - 1)))
case("te acts short", lambda: te(acts=np.empty(BWORK - 1)))
case("te deltas short", lambda: te(deltas=np.empty(BWORK - 1)))
case("te state_1 short", lambda: te(state_1=np.zeros(NP - 1)))
case("te state_2 short (adam)", lambda: te(state_2=np.zeros(NP - 1)))
case("te state_2 empty (adam)", lambda: te(state_2=EMPTY))
case("te hyper short", lambda: te(hyper=np.zeros(5)))
case("te counter empty", lambda: te(counter=EMPTY_I))
case("te solver 2", lambda: te(solver=2))
case("te solver -1", lambda: te(solver=-1))
case("te x_buf rows", lambda: te(x_buf=np.empty((B - 1, 3))))
case("te x_buf cols", lambda: te(x_buf=np.empty((B, 2))))
case("te y_buf rows", lambda: te(y_buf=np.empty((B - 1, 2))))
case("te y_buf cols", lambda: te(y_buf=np.empty((B, 1))))
case("te sw_buf short", lambda: te(sw_buf=np.empty(B - 1)))
case("te X features", lambda: te(X=np.zeros((N, 2))))
case("te X 0 rows", lambda: te(X=np.zeros((0, 3)), Y=np.zeros((0, 2)), order=EMPTY_I,
                                sample_weight=EMPTY))
case("te Y rows", lambda: te(Y=np.zeros((N - 1, 2))))
case("te Y cols", lambda: te(Y=np.zeros((N, 3))))
case("te weights short", lambda: te(sample_weight=np.ones(N - 1)))
case("te weights long", lambda: te(sample_weight=np.ones(N + 1)))
case("te sizes 1 entry", lambda: te(sizes=np.array([3], dtype=np.intp)))
case("te sizes negative", lambda: te(sizes=np.array([3, -1, 2], dtype=np.intp)))
case("te activation 9", lambda: te(activation=9))
case("te loss 7", lambda: te(loss=7))
case("te mixed dtypes", lambda: te(state_1=np.zeros(NP, np.float32)), (ValueError, TypeError))
case("te split acts short", split(lambda: te(acts=np.empty(SWORK - 1), deltas=np.empty(SWORK),
                                             grads2=np.empty(NP), n_threads=2)))
case("te split acts whole-batch size", split(lambda: te(grads2=np.empty(NP), n_threads=2)))
case("te split deltas short", split(lambda: te(acts=np.empty(SWORK), deltas=np.empty(SWORK - 1),
                                               grads2=np.empty(NP), n_threads=2)))
case("te split grads2 short", split(lambda: te(acts=np.empty(SWORK), deltas=np.empty(SWORK),
                                               grads2=np.empty(NP - 1), n_threads=2)))
case("te split grads2 empty", split(lambda: te(acts=np.empty(SWORK), deltas=np.empty(SWORK),
                                               n_threads=2)))
case("te split x_buf rows", split(lambda: te(acts=np.empty(SWORK), deltas=np.empty(SWORK),
                                             grads2=np.empty(NP), x_buf=np.empty((B - 1, 3)))))
case("te units acts short", units(lambda: te(acts=np.empty(BWORK - 1), n_threads=2)))
case("te units deltas short", units(lambda: te(deltas=np.empty(BWORK - 1), n_threads=2)))
case("te units x_buf rows", units(lambda: te(x_buf=np.empty((B - 1, 3)), n_threads=2)))
case("te units y_buf rows", units(lambda: te(y_buf=np.empty((B - 1, 2)), n_threads=2)))
case("te units sw_buf short", units(lambda: te(sw_buf=np.empty(B - 1), n_threads=2)))

# -- updates -----------------------------------------------------------------------------
case("sgd grads short", lambda: K.sgd_update(np.zeros(4), np.zeros(3), np.zeros(4),
                                             learning_rate=0.1, momentum=0.9, nesterov=True))
case("sgd velocity short", lambda: K.sgd_update(np.zeros(4), np.zeros(4), np.zeros(3),
                                                learning_rate=0.1, momentum=0.9, nesterov=True))
case("sgd grads long", lambda: K.sgd_update(np.zeros(4), np.zeros(5), np.zeros(4),
                                            learning_rate=0.1, momentum=0.9, nesterov=True))
for which in range(3):
    shapes = [4, 4, 4, 4]
    shapes[which + 1] = 3
    case(f"adam arg {which + 1} short",
         lambda s=shapes: K.adam_update(*[np.zeros(k) for k in s], t=1, learning_rate=0.1,
                                        beta_1=0.9, beta_2=0.999, epsilon=1e-8))
case("adam t 0", lambda: K.adam_update(*[np.zeros(4)] * 4, t=0, learning_rate=0.1,
                                       beta_1=0.9, beta_2=0.999, epsilon=1e-8))
case("adam t -1", lambda: K.adam_update(*[np.zeros(4)] * 4, t=-1, learning_rate=0.1,
                                        beta_1=0.9, beta_2=0.999, epsilon=1e-8))

# -- None where a buffer is required (Cython memoryviews accept None by default) ------
for nm in ("params", "grads", "acts", "deltas", "X", "Y"):
    case(f"lg {nm} None", lambda nm=nm: lg(**{nm: None}), (ValueError, TypeError))
for nm in ("params", "acts", "X", "out"):
    case(f"fw {nm} None", lambda nm=nm: fw(**{nm: None}), (ValueError, TypeError))
for nm in ("params", "grads", "X", "Y", "acts", "deltas", "x_buf", "y_buf", "sw_buf",
           "state_1", "state_2", "hyper", "counter", "grads2"):
    case(f"te {nm} None", lambda nm=nm: te(**{nm: None}), (ValueError, TypeError))
for which in range(3):
    case(f"sgd arg {which} None",
         lambda w=which: K.sgd_update(*[None if i == w else np.zeros(4) for i in range(3)],
                                      learning_rate=0.1, momentum=0.9, nesterov=True),
         (ValueError, TypeError))

# float32 data: dispatch picks float, so a None buffer reaches the length checks
X32, Y32, P32 = X.astype(np.float32), Y.astype(np.float32), PARAMS.astype(np.float32)
def lg32(**kw):
    d = dict(params=P32, X=X32, Y=Y32, sample_weight=np.empty(0, np.float32),
             grads=np.empty(NP, np.float32), acts=np.empty(WORK, np.float32),
             deltas=np.empty(WORK, np.float32))
    d.update(kw)
    return lg(**d)
for nm in ("params", "grads", "acts", "deltas", "X", "Y"):
    case(f"lg f32 {nm} None", lambda nm=nm: lg32(**{nm: None}), (ValueError, TypeError))
case("fw f32 params None", lambda: fw(params=None, X=X32, out=np.empty((N, 2), np.float32),
                                      acts=np.empty(WORK, np.float32)), (ValueError, TypeError))
case("sgd f32 params None", lambda: K.sgd_update(None, np.zeros(4, np.float32),
                                                 np.zeros(4, np.float32), learning_rate=0.1,
                                                 momentum=0.9, nesterov=True),
     (ValueError, TypeError))

# -- CSR kernels -------------------------------------------------------------------------
XS = X * (rng.uniform(size=X.shape) < 0.5)
XS[1] = 0.0
DATA = np.ascontiguousarray(XS[XS != 0])
INDICES = np.nonzero(XS)[1].astype(np.intp)
INDPTR = np.concatenate([[0], np.cumsum((XS != 0).sum(axis=1))]).astype(np.intp)
NNZ = DATA.size
assert NNZ > 3

def bad_indptr(kind):
    p = INDPTR.copy()
    if kind == "first":
        p[0] = 1
    elif kind == "decreasing":
        p[2], p[3] = p[3], p[2] - 1
    elif kind == "past end":
        p[-1] = NNZ + 1
    elif kind == "negative":
        p[1] = -1
    elif kind == "huge":
        p[-1] = 2**40
    return p

LGC_NAMES = ["sizes", "activation", "loss", "params", "data", "indices", "indptr", "Y",
             "sample_weight", "alpha", "grads", "acts", "deltas", "rows", "grads2", "n_threads"]
def lgc(**kw):
    d = dict(sizes=SIZES, activation=2, loss=0, params=PARAMS, data=DATA, indices=INDICES,
             indptr=INDPTR, Y=Y, sample_weight=EMPTY, alpha=0.1, grads=np.empty(NP),
             acts=np.empty(WORK), deltas=np.empty(WORK), rows=N, grads2=EMPTY, n_threads=1)
    return _call(K.loss_grad_csr, LGC_NAMES, d, kw)

FWC_NAMES = ["sizes", "activation", "loss", "params", "data", "indices", "indptr", "out",
             "acts", "rows"]
def fwc(**kw):
    d = dict(sizes=SIZES, activation=2, loss=2, params=PARAMS, data=DATA, indices=INDICES,
             indptr=INDPTR, out=np.empty((N, 2)), acts=np.empty(WORK), rows=N)
    return _call(K.forward_csr, FWC_NAMES, d, kw)

TEC_NAMES = ["sizes", "activation", "loss", "params", "grads", "data", "indices", "indptr",
             "Y", "sample_weight", "order", "batch_size", "alpha", "acts", "deltas", "y_buf",
             "sw_buf", "solver", "state_1", "state_2", "hyper", "counter", "grads2", "n_threads"]
def tec(**kw):
    d = dict(sizes=SIZES, activation=2, loss=0, params=PARAMS.copy(), grads=np.empty(NP),
             data=DATA, indices=INDICES, indptr=INDPTR, Y=Y, sample_weight=np.ones(N),
             order=np.arange(N)[::-1].copy(), batch_size=B, alpha=0.1, acts=np.empty(BWORK),
             deltas=np.empty(BWORK), y_buf=np.empty((B, 2)), sw_buf=np.empty(B), solver=1,
             state_1=np.zeros(NP), state_2=np.zeros(NP),
             hyper=np.array([0.01, 0.9, 1.0, 0.9, 0.999, 1e-8]),
             counter=np.zeros(1, dtype=np.intp), grads2=EMPTY, n_threads=1)
    return _call(K.train_epoch_csr, TEC_NAMES, d, kw)

valid("loss_grad_csr ok", lambda: lgc())
valid("forward_csr ok", lambda: fwc())
valid("forward_csr 0 rows", lambda: fwc(data=EMPTY, indices=EMPTY_I,
                                        indptr=np.zeros(1, np.intp), out=np.empty((0, 2))))
valid("loss_grad_csr all-zero X", lambda: lgc(data=EMPTY, indices=EMPTY_I,
                                              indptr=np.zeros(N + 1, np.intp)))
valid("train_epoch_csr ok", lambda: tec())
valid("train_epoch_csr split, 2 threads",
      split(lambda: tec(acts=np.empty(SWORK), deltas=np.empty(SWORK), grads2=np.empty(NP),
                        n_threads=2)))
case("tec split grads2 short", split(lambda: tec(acts=np.empty(SWORK), deltas=np.empty(SWORK),
                                                 grads2=np.empty(NP - 1), n_threads=2)))
valid("train_epoch_csr in place", lambda: tec(order=EMPTY_I, sample_weight=EMPTY,
                                              y_buf=np.empty((0, 2)), sw_buf=EMPTY))
for fn, tag in ((lgc, "lgc"), (fwc, "fwc"), (tec, "tec")):
    for kind in ("first", "decreasing", "past end", "negative", "huge"):
        case(f"{tag} indptr {kind}", lambda fn=fn, kind=kind: fn(indptr=bad_indptr(kind)))
    case(f"{tag} indptr empty", lambda fn=fn: fn(indptr=EMPTY_I))
    case(f"{tag} index -1", lambda fn=fn: fn(indices=np.where(np.arange(NNZ) == 2, -1, INDICES)))
    case(f"{tag} index n_features", lambda fn=fn: fn(indices=np.where(np.arange(NNZ) == 2, 3, INDICES)))
    case(f"{tag} index huge", lambda fn=fn: fn(indices=np.where(np.arange(NNZ) == 0, 2**40, INDICES)))
    case(f"{tag} indices short", lambda fn=fn: fn(indices=INDICES[:-1].copy()))
    case(f"{tag} data short", lambda fn=fn: fn(data=DATA[:-1].copy()))
    case(f"{tag} indptr int32", lambda fn=fn: fn(indptr=INDPTR.astype(np.int32)), (ValueError, TypeError))
    case(f"{tag} indptr None", lambda fn=fn: fn(indptr=None), (ValueError, TypeError))
    case(f"{tag} params short", lambda fn=fn: fn(params=PARAMS[:-1].copy()))
    case(f"{tag} acts short", lambda fn=fn: fn(acts=np.empty(3)))
    case(f"{tag} sizes 1 entry", lambda fn=fn: fn(sizes=np.array([3], dtype=np.intp)))
case("lgc rows 0", lambda: lgc(rows=0))
case("lgc Y rows", lambda: lgc(Y=np.zeros((N - 1, 2))))
case("lgc Y cols", lambda: lgc(Y=np.zeros((N, 3))))
case("lgc more rows than Y", lambda: lgc(indptr=np.append(INDPTR, INDPTR[-1])))
case("lgc 0 rows", lambda: lgc(indptr=np.zeros(1, np.intp), Y=np.zeros((0, 2))))
case("lgc weights short", lambda: lgc(sample_weight=np.ones(N - 1)))
case("lgc grads short", lambda: lgc(grads=np.empty(NP - 1)))
case("lgc deltas short", lambda: lgc(deltas=np.empty(WORK - 1)))
case("fwc out rows", lambda: fwc(out=np.empty((N - 1, 2))))
case("fwc out cols", lambda: fwc(out=np.empty((N, 3))))
case("fwc out None", lambda: fwc(out=None), (ValueError, TypeError))
case("fwc rows 0", lambda: fwc(rows=0))
case("tec order -1", lambda: tec(order=np.array([0, -1], dtype=np.intp)))
case("tec order n", lambda: tec(order=np.array([0, N], dtype=np.intp)))
case("tec y_buf rows", lambda: tec(y_buf=np.empty((B - 1, 2))))
case("tec y_buf cols", lambda: tec(y_buf=np.empty((B, 3))))
case("tec sw_buf short", lambda: tec(sw_buf=np.empty(B - 1)))
case("tec batch beyond scratch", lambda: tec(batch_size=B + 1))
case("tec batch_size 0", lambda: tec(batch_size=0))
case("tec Y rows", lambda: tec(Y=np.zeros((N + 1, 2))))
case("tec weights long", lambda: tec(sample_weight=np.ones(N + 1)))
case("tec state_2 short", lambda: tec(state_2=np.zeros(3)))
case("tec solver 5", lambda: tec(solver=5))
case("tec counter None", lambda: tec(counter=None), (ValueError, TypeError))

print("FAILURES", failures, flush=True)
print("OK" if not failures else "FAIL", flush=True)
'''


def test_raw_kernels_reject_bad_calls_without_crashing():
    proc = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    report = f"returncode {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1] == "OK", report
    started = [l.split(" ", 1)[1] for l in lines if l.startswith("START ")]
    finished = [l.split(" ")[1:] for l in lines if l.startswith(("CAUGHT ", "PASSED "))]
    assert len(started) > 200 and len(finished) == len(started), report


OVERFLOW_PRELUDE = """
import numpy as np
from fastprop.core import _kernels as K
rng = np.random.default_rng(0)
S = np.array([3, 4, 2], dtype=np.intp)
X, Y, P = rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), rng.normal(size=26)
E, EI = np.empty(0), np.empty(0, np.intp)
HYPER, COUNTER = np.array([0.01, 0.9, 1, 0.9, 0.999, 1e-8]), np.zeros(1, np.intp)
DATA, IND, PTR = X.ravel().copy(), np.tile(np.arange(3), 5), np.arange(0, 16, 3)
ROWS = 2**63 // 6 + 1   # rows * sum(sizes[1:]) = rows * 6 does not fit in Py_ssize_t
M = 2**31 - 1           # each size is in range; sum of the weight counts is not
BIG = np.array([1, M, M, M, M, 1], dtype=np.intp)
"""

OVERFLOW_CALLS = {
    "loss_grad rows": "K.loss_grad(S, 2, 0, P, X, Y, E, 0.0, np.empty(26), np.empty(30), "
                      "np.empty(30), ROWS, E, 1)",
    "forward rows": "K.forward(S, 2, 0, P, X, np.empty((5, 2)), np.empty(30), ROWS)",
    "train_epoch batch_size": "K.train_epoch(S, 2, 0, P.copy(), np.empty(26), X, Y, E, EI, ROWS, "
                              "0.0, np.empty(30), np.empty(30), np.empty((0, 3)), "
                              "np.empty((0, 2)), E, 0, np.zeros(26), E, HYPER, COUNTER, E, 1)",
    "loss_grad_csr rows": "K.loss_grad_csr(S, 2, 0, P, DATA, IND, PTR, Y, E, 0.0, np.empty(26), "
                          "np.empty(30), np.empty(30), ROWS, E, 1)",
    "forward_csr rows": "K.forward_csr(S, 2, 0, P, DATA, IND, PTR, np.empty((5, 2)), "
                        "np.empty(30), ROWS)",
    "train_epoch_csr batch_size": "K.train_epoch_csr(S, 2, 0, P.copy(), np.empty(26), DATA, IND, "
                                  "PTR, Y, E, EI, ROWS, 0.0, np.empty(30), np.empty(30), "
                                  "np.empty((0, 2)), E, 0, np.zeros(26), E, HYPER, COUNTER, E, 1)",
    "forward n_params": "K.forward(BIG, 0, 0, np.zeros(10), np.zeros((1, 1)), np.empty((1, 1)), "
                        "np.empty(10), 2**30 + 1)",
}


@pytest.mark.parametrize("call", list(OVERFLOW_CALLS))
def test_raw_kernels_reject_sizes_that_overflow(call):
    """Workspace / parameter counts computed from in-range sizes and rows can overflow
    Py_ssize_t; the checks must not be fooled into letting an out-of-bounds call run."""
    code = OVERFLOW_PRELUDE + textwrap.dedent(f"""
        try:
            {OVERFLOW_CALLS[call]}
        except (ValueError, OverflowError, MemoryError) as e:
            print("OK", type(e).__name__, e)
        else:
            print("NO-EXCEPTION")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("OK"), (
        f"returncode {proc.returncode} (-11 is a segfault)\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr[-2000:]}")


INTERRUPT_SCRIPT = r"""
import sys, time
import numpy as np
import fastprop.core as core
sizes = [2, 8, 1]
rng = np.random.default_rng(0)
params = 0.1 * rng.normal(size=core.n_params(sizes))
X, Y = rng.normal(size=(100, 2)), (rng.uniform(size=(100, 1)) < 0.5).astype(float)
def visits(n):  # an epoch visiting rows (with repeats) n times, one row per batch
    return np.arange(n, dtype=np.intp) % 100
# calibrate: one epoch long enough that finishing it would take >= 6 s, from the
# fastest of three short epochs (a busy moment only makes the real epoch longer)
BATCH = int(sys.argv[1])  # 1: whole minibatches; 256: split ones, on a team of threads
if sys.argv[2:] == ["units"]:  # whole minibatches cut by units, on a team of threads
    core._kernels._set_units_min_work(1)
per_row = np.inf
for _ in range(3):
    t = time.perf_counter()
    core.Trainer(sizes, "tanh", "binary_log_loss", params.copy(), "sgd").run_epoch(
        X, Y, batch_size=BATCH, order=visits(20000))
    per_row = min(per_row, (time.perf_counter() - t) / 20000)
order = visits(int(min(6.0 / per_row, 5e7)))
trainer = core.Trainer(sizes, "tanh", "binary_log_loss", params.copy(), "sgd")
print("READY", len(order) * per_row, flush=True)
t = time.perf_counter()
try:
    trainer.run_epoch(X, Y, batch_size=BATCH, order=order)
except KeyboardInterrupt:
    print("INTERRUPTED", time.perf_counter() - t, flush=True)
    # the trainer is still usable after the interrupted epoch
    trainer.run_epoch(X, Y, batch_size=10)
    print("USABLE", bool(np.isfinite(trainer.params).all()), flush=True)
else:
    print("FINISHED", time.perf_counter() - t, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("batch_size, path", [(1, "whole"), (256, "split"), (8, "units")],
                         ids=["whole", "split", "units"])
def test_epoch_is_interruptible(batch_size, path):
    """Ctrl-C during a long compiled epoch raises KeyboardInterrupt promptly (the driver
    checks for signals), and leaves the Trainer usable."""
    assert (_kernels.split_rows(batch_size) > 0) == (path == "split")
    lines, report = _interrupt_child(INTERRUPT_SCRIPT, str(batch_size), path,
                                     delay=lambda ready: 0.3)
    assert lines[0].startswith("INTERRUPTED"), report
    assert float(lines[0].split()[1]) < 2.0, report  # well before the epoch's end (~6 s)
    assert lines[1] == "USABLE True", report


def _interrupt_child(script, *args, delay):
    """Run ``script`` in a child Python, wait for its "READY ..." line, sleep
    ``delay(that line)`` seconds, send SIGINT; return the lines it printed after READY
    and a report for assertion messages (a child that fails is an assertion error)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    head = []
    try:
        while not (head and head[-1].startswith("READY")):
            head.append(proc.stdout.readline())
            assert head[-1], "".join(head)  # EOF before READY
        time.sleep(delay(head[-1]))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = f"returncode {proc.returncode}\noutput:\n{''.join(head)}{out}"
    assert proc.returncode == 0, report
    return out.split("\n"), report


LOSSGRAD_INTERRUPT_SCRIPT = r"""
import sys, time
import numpy as np
import fastprop.core as core
from fastprop.core import _kernels
sizes = [50, 256, 1]
rng = np.random.default_rng(0)
n = 300_000
X = rng.normal(size=(n, 50))
Y = (rng.uniform(size=(n, 1)) < 0.5).astype(float)
f = core.LossGradient(sizes, X, Y, activation="relu", loss="binary_log_loss", alpha=1e-4)
assert _kernels.split_rows(f.rows) > 0  # blocks cut in halves, on a team of threads
f.params[:] = 0.05 * rng.normal(size=f.params.size)
t = time.perf_counter()
f.compute()
print("READY", time.perf_counter() - t, flush=True)
t = time.perf_counter()
try:
    for _ in range(1000):  # far longer than the test waits
        f.compute()
except KeyboardInterrupt:
    print("INTERRUPTED", time.perf_counter() - t, flush=True)
    value = f.compute()  # still usable
    print("USABLE", bool(np.isfinite(value) and np.isfinite(f.grads).all()), flush=True)
else:
    print("FINISHED", time.perf_counter() - t, flush=True)
"""


@pytest.mark.slow
def test_split_loss_grad_is_interruptible():
    """Ctrl-C inside a full-data pass whose blocks run on a team of two threads: the
    caller's thread sees the signal between its blocks, the other thread stops at the
    flag, and KeyboardInterrupt arrives without waiting for the pass to end."""
    lines, report = _interrupt_child(
        LOSSGRAD_INTERRUPT_SCRIPT, delay=lambda ready: max(0.3, 1.5 * float(ready.split()[1])))
    assert lines[0].startswith("INTERRUPTED"), report
    assert lines[1] == "USABLE True", report


OOB_SCRIPT = r'''
import numpy as np
from fastprop.core import _kernels as K
import fastprop.core as core

SENT = 12345.0
def carve(n, shape=None, dtype=np.float64):
    """An exact-size buffer inside a larger one whose margins hold a sentinel."""
    total = int(np.prod(shape)) if shape is not None else n
    big = np.full(total + 64, SENT, dtype)
    view = big[32:32 + total]
    if shape is not None:
        view = view.reshape(shape)
    return big, view

def check(big, name):
    assert (big[:32] == SENT).all() and (big[-32:] == SENT).all(), f"{name} written out of bounds"

rng = np.random.default_rng(0)
for dtype in (np.float64, np.float32):
    for sizes in ([3, 4, 2], [2, 1, 5, 3], [1, 1], [20, 33, 18]):
        for loss in range(4):
            n_out = sizes[-1]
            if loss == 2 and n_out < 2:
                continue
            L = len(sizes) - 1
            S = np.array(sizes, dtype=np.intp)
            NP = core.n_params(sizes)
            n = 11
            X = rng.normal(size=(n, sizes[0])).astype(dtype)
            Y = rng.uniform(size=(n, n_out)).astype(dtype)
            params = (0.5 * rng.normal(size=NP)).astype(dtype)
            for rows, split_min in ((1, 10**9), (4, 10**9), (n, 10**9), (1, 1), (4, 1),
                                    (9, 1), (n, 1)):
                K._set_split_min_batch(split_min)
                half = K.split_rows(rows)
                work = (2 * half if half else rows) * sum(sizes[1:])
                bg, grads = carve(NP, dtype=dtype)
                bg2, grads2 = carve(NP if half else 0, dtype=dtype)
                ba, acts = carve(work, dtype=dtype)
                bd, deltas = carve(work, dtype=dtype)
                K.loss_grad(S, 3, loss, params, X, Y, np.ones(n, dtype), 0.1, grads, acts,
                            deltas, rows, grads2, 2)
                for b, nm in ((bg, "grads"), (bg2, "grads2"), (ba, "acts"), (bd, "deltas")):
                    check(b, f"loss_grad {nm} {sizes} rows={rows} split={half}")
                K._set_split_min_batch(10**9)
                work = rows * sum(sizes[1:])
                bo, out = carve(None, (n, n_out), dtype)
                ba, acts = carve(work, dtype=dtype)
                K.forward(S, 1, loss, params, X, out, acts, rows)
                check(bo, "forward out")
                check(ba, "forward acts")
            for bs, split_min, units_min in (
                    (1, 10**9, 1 << 62), (4, 10**9, 1 << 62), (n, 10**9, 1 << 62),
                    (1, 10**9, 1), (4, 10**9, 1), (n, 10**9, 1),
                    (1, 1, 1 << 62), (4, 1, 1 << 62), (9, 1, 1 << 62), (n, 1, 1 << 62)):
                # split_min 1: every minibatch is split in halves (two threads); else
                # units_min 1: every (whole) minibatch is cut by units (two threads)
                K._set_split_min_batch(split_min)
                K._set_units_min_work(units_min)
                half = K.split_rows(bs)
                work = (2 * half if half else bs) * sum(sizes[1:])
                bufs = {}
                def c(name, n_=None, shape=None):
                    bufs[name] = carve(n_, shape, dtype)
                    return bufs[name][1]
                p = params.copy()
                K.train_epoch(S, 2, loss, p, c("grads", NP), X, Y, np.ones(n, dtype),
                              rng.permutation(n).astype(np.intp), bs, 0.1, c("acts", work),
                              c("deltas", work), c("x_buf", None, (bs, sizes[0])),
                              c("y_buf", None, (bs, n_out)), c("sw_buf", bs), 1,
                              np.zeros(NP, dtype), np.zeros(NP, dtype),
                              np.array([0.01, 0.9, 1, 0.9, 0.999, 1e-8]),
                              np.zeros(1, np.intp), c("grads2", NP if half else 0), 2)
                for nm, (b, _) in bufs.items():
                    check(b, f"train_epoch {nm} {sizes} bs={bs} split={half} "
                             f"units={K.unit_split(S, bs)}")
                assert np.isfinite(p).all()
                # the CSR twin, same exact-size buffers
                Xs = X * (rng.uniform(size=X.shape) < 0.5)
                data = np.ascontiguousarray(Xs[Xs != 0]).astype(dtype)
                indices = np.nonzero(Xs)[1].astype(np.intp)
                indptr = np.concatenate([[0], np.cumsum((Xs != 0).sum(axis=1))]).astype(np.intp)
                bufs = {}
                p = params.copy()
                K.train_epoch_csr(S, 2, loss, p, c("grads", NP), data, indices, indptr, Y,
                                  np.ones(n, dtype), rng.permutation(n).astype(np.intp), bs,
                                  0.1, c("acts", work), c("deltas", work),
                                  c("y_buf", None, (bs, n_out)), c("sw_buf", bs), 0,
                                  np.zeros(NP, dtype), np.zeros(0, dtype),
                                  np.array([0.01, 0.9, 1, 0.9, 0.999, 1e-8]),
                                  np.zeros(1, np.intp), c("grads2", NP if half else 0), 2)
                for nm, (b, _) in bufs.items():
                    check(b, f"train_epoch_csr {nm} {sizes} bs={bs} split={half}")
                K._set_split_min_batch(10**9)
                work = bs * sum(sizes[1:])
                bufs = {}
                K.loss_grad_csr(S, 0, loss, params, data, indices, indptr, Y, np.ones(n, dtype),
                                0.1, c("grads", NP), c("acts", work), c("deltas", work), bs,
                                c("grads2", 0), 2)
                K._set_split_min_batch(1)
                half = K.split_rows(bs)
                swork = 2 * half * sum(sizes[1:])
                K.loss_grad_csr(S, 0, loss, params, data, indices, indptr, Y, np.ones(n, dtype),
                                0.1, c("grads_s", NP), c("acts_s", swork), c("deltas_s", swork),
                                bs, c("grads2_s", NP), 2)
                K._set_split_min_batch(10**9)
                bufs["out"] = carve(None, (n, n_out), dtype)
                a2 = c("acts2", work)
                K.forward_csr(S, 0, loss, params, data, indices, indptr, bufs["out"][1], a2, bs)
                for nm, (b, _) in bufs.items():
                    check(b, f"csr {nm} {sizes} rows={bs}")
print("OK")
'''


def test_raw_kernels_stay_within_exact_size_buffers():
    """Exact-size buffers carved out of larger sentinel-filled ones: no byte outside
    them may change (an off-by-one in a workspace offset fails this)."""
    proc = subprocess.run([sys.executable, "-c", OOB_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (
        f"returncode {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
