"""Tests of fastprop's compiled backprop core against its NumPy specification
(``fastprop.reference``), finite differences, scikit-learn, and an independent NumPy
training loop; plus input validation and crash-safety of the raw kernels."""

import contextlib
import copy
import pickle
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import fastprop.core as core
from fastprop import reference
from fastprop.core import _kernels

from conftest import (
    ACTIVATIONS,
    DTYPES,
    EPOCH_TOL,
    FD32_TOL,
    FD_TOL,
    LOSSES,
    Problem,
    REORDER_TOL,
    TOL,
    assert_result_close,
    fd_gradient,
    flat_pack,
    flat_unpack,
    hidden_preactivations,
    make_network,
    make_problem,
    make_targets,
    make_weights,
    np_forward,
    np_loss,
    out_activation,
    tol,
)

MODULES = pytest.mark.parametrize("module", [reference, core], ids=["reference", "core"])
N_OUT = {"squared_error": 2, "poisson": 2, "log_loss": 3, "binary_log_loss": 2}
HIDDEN = {1: (5,), 3: (4, 5, 3)}


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode()) % (2**31)


def sizes_for(loss, depth, n_features=3, hidden=None):
    return (n_features, *(HIDDEN[depth] if hidden is None else hidden), N_OUT[loss])


def check_result_types(result, p):
    """Loss is a scalar of the input dtype; gradients are arrays of that dtype shaped
    like the layers."""
    value, coef_grads, intercept_grads = result
    assert isinstance(value, np.floating) and value.dtype == p.dtype, type(value)
    assert np.ndim(value) == 0
    assert len(coef_grads) == len(p.coefs) and len(intercept_grads) == len(p.intercepts)
    for g, W in zip(coef_grads, p.coefs):
        assert isinstance(g, np.ndarray) and g.dtype == p.dtype and g.shape == W.shape
    for g, b in zip(intercept_grads, p.intercepts):
        assert isinstance(g, np.ndarray) and g.dtype == p.dtype and g.shape == b.shape


def flat_grad(result):
    return flat_pack(result[1], result[2]).astype(np.float64)


# =======================================================================================
# core vs reference, the full grid
# =======================================================================================

@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_core_matches_reference(activation, loss, dtype, alpha, weighted, depth):
    p = make_problem(
        n_samples=13, sizes=sizes_for(loss, depth), activation=activation, loss=loss,
        dtype=dtype, alpha=alpha, weighted=weighted,
        seed=seed_of(activation, loss, alpha, weighted, depth),
    )
    got = p.call(core)
    ref = p.call(reference)
    check_result_types(got, p)
    check_result_types(ref, p)
    assert_result_close(got, ref, **tol(dtype))
    # The reported loss is the documented one (independent scipy formulas, float64).
    expected = np_loss(*p.args(), activation, loss, alpha, p.sample_weight)
    assert_allclose(float(got[0]), expected, rtol=tol(dtype)["rtol"])
    if dtype == np.float32:
        # and float32 results are float64 results to float32 accuracy
        ref64 = p.astype(np.float64).call(reference)
        assert_result_close(got, ref64, **TOL[np.float32])


def test_inputs_not_modified():
    p = make_problem(n_samples=9, sizes=(3, 4, 4, 2), activation="relu",
                     loss="binary_log_loss", alpha=0.3, weighted=True)
    before = copy.deepcopy(p)
    core.loss_and_gradients(*p.args(), **p.kwargs())
    core.forward(p.coefs, p.intercepts, p.X, activation=p.activation, loss=p.loss)
    assert_array_equal(flat_pack(p.coefs, p.intercepts), flat_pack(before.coefs, before.intercepts))
    assert_array_equal(p.X, before.X)
    assert_array_equal(p.Y, before.Y)
    assert_array_equal(p.sample_weight, before.sample_weight)


def test_results_are_fresh_arrays():
    """Two calls must not share gradient buffers (a second call must not overwrite the
    first call's results)."""
    p = make_problem(n_samples=7, sizes=(3, 4, 2), loss="squared_error")
    first = core.loss_and_gradients(*p.args(), **p.kwargs())
    saved = [g.copy() for g in first[1] + first[2]]
    p2 = make_problem(n_samples=7, sizes=(3, 4, 2), loss="squared_error", seed=99)
    core.loss_and_gradients(*p2.args(), **p2.kwargs())
    for g, s in zip(first[1] + first[2], saved):
        assert_array_equal(g, s)


def test_unit_weights_equal_no_weights():
    p = make_problem(n_samples=11, sizes=(3, 5, 3), activation="logistic", loss="log_loss",
                     alpha=0.7)
    for module in (reference, core):
        a = p.call(module)
        b = p.call(module, sample_weight=np.ones(11))
        assert_result_close(a, b, rtol=1e-13, atol_factor=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
@MODULES
def test_integer_weights_equal_repeated_samples(module, loss):
    """Weight k on a sample == the sample repeated k times (incl. the L2 term's 1/s)."""
    p = make_problem(n_samples=8, sizes=(3, 4, N_OUT[loss]), activation="tanh", loss=loss,
                     alpha=0.8, seed=3)
    w = np.array([0, 1, 2, 3, 1, 0, 4, 1], dtype=np.float64)
    weighted = p.call(module, sample_weight=w)
    idx = np.repeat(np.arange(8), w.astype(int))
    repeated = module.loss_and_gradients(
        p.coefs, p.intercepts, p.X[idx], p.Y[idx], activation="tanh", loss=loss, alpha=0.8
    )
    assert_result_close(weighted, repeated, rtol=1e-12, atol_factor=1e-14)


# =======================================================================================
# gradients vs finite differences
# =======================================================================================

def _relu_sign_guard(p):
    base = [np.sign(Z) for Z in hidden_preactivations(p.coefs, p.intercepts, p.X, "relu")]

    def on_point(flat):
        c, i = flat_unpack(flat, p.sizes)
        for Z, s in zip(hidden_preactivations(c, i, p.X, "relu"), base):
            assert_array_equal(np.sign(Z), s, err_msg="finite differences crossed a relu kink")

    return on_point


def _loss_fn(module, p):
    def f(flat):
        c, i = flat_unpack(flat, p.sizes)
        return module.loss_and_gradients(c, i, p.X, p.Y, **p.kwargs())[0]
    return f


def assert_matches_fd(g, fd, rtol=FD_TOL["rtol"], atol_factor=FD_TOL["atol_factor"], what=""):
    scale = np.max(np.abs(fd))
    assert scale > 0
    assert_allclose(g, fd, rtol=rtol, atol=atol_factor * scale, err_msg=what)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences(activation, loss, alpha, weighted, depth):
    p = make_problem(
        n_samples=6, sizes=sizes_for(loss, depth, hidden=(3,) if depth == 1 else (3, 3, 2)),
        activation=activation, loss=loss, alpha=alpha, weighted=weighted,
        seed=seed_of("fd", activation, loss, alpha, weighted, depth),
        relu_margin=0.05 if activation == "relu" else None,
    )
    on_point = _relu_sign_guard(p) if activation == "relu" else None
    x0 = p.flat()
    fd_ref = fd_gradient(_loss_fn(reference, p), x0, on_point=on_point)
    g_ref = flat_grad(p.call(reference))
    g_core = flat_grad(p.call(core))
    assert_matches_fd(g_ref, fd_ref, what="reference gradient vs FD of reference loss")
    assert_matches_fd(g_core, fd_ref, what="core gradient vs FD of reference loss")
    # the core's own loss is consistent with the core's own gradient
    fd_core = fd_gradient(_loss_fn(core, p), x0)
    assert_matches_fd(g_core, fd_core, what="core gradient vs FD of core loss")


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_gradients_match_float64_finite_differences(activation, loss, depth):
    p32 = make_problem(
        n_samples=6, sizes=sizes_for(loss, depth, hidden=(3,) if depth == 1 else (3, 3, 2)),
        activation=activation, loss=loss, alpha=0.5, weighted=True, dtype=np.float32,
        seed=seed_of("fd32", activation, loss, depth),
        relu_margin=0.05 if activation == "relu" else None,
    )
    p64 = p32.astype(np.float64)  # exactly the float32 point
    on_point = _relu_sign_guard(p64) if activation == "relu" else None
    fd = fd_gradient(_loss_fn(reference, p64), p64.flat(), on_point=on_point)
    result = p32.call(core)
    assert flat_pack(result[1], result[2]).dtype == np.float32
    assert_matches_fd(flat_grad(result), fd, **FD32_TOL)
    assert_allclose(float(result[0]), float(p64.call(reference)[0]), rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_log_loss_soft_targets_match_finite_differences(weighted):
    """Target rows that do not sum to 1 (soft or partial labels): the gradient is the
    derivative of the reported loss, p * sum(y) - y at the output, not p - y."""
    p = make_problem(n_samples=6, sizes=(3, 4, 3), activation="tanh", loss="log_loss",
                     alpha=0.1, weighted=weighted, seed=seed_of("soft", weighted))
    rng = np.random.default_rng(7)
    p.Y = rng.uniform(0.0, 0.9, size=p.Y.shape)  # row sums anywhere in (0, 2.7)
    assert not np.allclose(p.Y.sum(axis=1), 1)
    fd = fd_gradient(_loss_fn(reference, p), p.flat())
    assert_matches_fd(flat_grad(p.call(reference)), fd, what="reference")
    assert_matches_fd(flat_grad(p.call(core)), fd, what="core")


def test_finite_difference_check_catches_a_wrong_gradient():
    """Sanity of the FD harness itself: a gradient off by a factor (1 + 1e-4) on one
    entry, or normalised by n instead of the weight sum, must fail it."""
    p = make_problem(n_samples=6, sizes=(3, 3, 2), loss="poisson", alpha=0.5, weighted=True)
    fd = fd_gradient(_loss_fn(reference, p), p.flat())
    g = flat_grad(p.call(reference))
    assert_matches_fd(g, fd)
    bad = g.copy()
    bad[np.argmax(np.abs(g))] *= 1 + 1e-4
    with pytest.raises(AssertionError):
        assert_matches_fd(bad, fd)
    with pytest.raises(AssertionError):
        assert_matches_fd(g * p.sample_weight.sum() / 6, fd)


# =======================================================================================
# odd shapes and memory layouts
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["squared_error", "binary_log_loss", "poisson", "log_loss"])
def test_single_sample_single_unit(loss, activation, dtype):
    n_out = 2 if loss == "log_loss" else 1
    p = make_problem(n_samples=1, sizes=(1, 1, n_out), activation=activation, loss=loss,
                     alpha=0.5, dtype=dtype, seed=seed_of("tiny", loss, activation),
                     relu_margin=0.05 if activation == "relu" else None)
    got = p.call(core)
    check_result_types(got, p)
    assert_result_close(got, p.call(reference), **tol(dtype))
    assert_allclose(float(got[0]), np_loss(*p.args(), activation, loss, 0.5), rtol=tol(dtype)["rtol"])
    if dtype == np.float64:
        fd = fd_gradient(_loss_fn(reference, p), p.flat())
        assert_matches_fd(flat_grad(got), fd)


@pytest.mark.parametrize("sizes", [(1, 1), (4, 1), (1, 3), (2, 1, 1, 1, 1), (1, 7, 1), (6, 2)])
@pytest.mark.parametrize("loss", ["squared_error", "binary_log_loss", "poisson"])
def test_degenerate_architectures(sizes, loss):
    """No hidden layer at all (a GLM), and chains of width-1 layers."""
    p = make_problem(n_samples=5, sizes=sizes, activation="tanh", loss=loss, alpha=0.2,
                     weighted=True, seed=seed_of(sizes, loss))
    got = p.call(core)
    check_result_types(got, p)
    assert_result_close(got, p.call(reference), **tol(np.float64))
    fd = fd_gradient(_loss_fn(reference, p), p.flat())
    assert_matches_fd(flat_grad(got), fd)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize(
    "layout",
    ["X[:, ::2]", "X[::2]", "X[::-1]", "fortran X", "fortran Y", "Y[:, ::2]", "weights[::2]",
     "fortran coefs", "transposed coefs", "strided intercepts"],
)
def test_memory_layouts(layout, dtype):
    """Any strides / order give the same result as C-contiguous copies of the same data."""
    rng = np.random.default_rng(seed_of(layout))
    n, sizes = 14, (4, 5, 3)
    loss, activation = "log_loss", "logistic"
    coefs, intercepts = make_network(sizes, dtype, seed=1)
    X_big = rng.normal(size=(2 * n, 8)).astype(dtype)
    X = np.ascontiguousarray(X_big[:n, :4])
    Y = make_targets(rng, loss, n, 3, dtype)
    w = make_weights(rng, n, dtype)
    kw = dict(activation=activation, loss=loss, alpha=0.3)
    args = dict(coefs=coefs, intercepts=intercepts, X=X, Y=Y, sample_weight=w)
    if layout == "X[:, ::2]":
        args["X"] = X_big[:n, ::2]
    elif layout == "X[::2]":
        args["X"] = X_big[::2, :4]
    elif layout == "X[::-1]":
        args["X"] = X_big[:n, :4][::-1]
    elif layout == "fortran X":
        args["X"] = np.asfortranarray(X)
    elif layout == "fortran Y":
        args["Y"] = np.asfortranarray(Y)
    elif layout == "Y[:, ::2]":
        Yw = np.zeros((n, 6), dtype)
        Yw[:, ::2] = Y
        args["Y"] = Yw[:, ::2]
    elif layout == "weights[::2]":
        ww = np.zeros(2 * n, dtype)
        ww[::2] = w
        args["sample_weight"] = ww[::2]
    elif layout == "fortran coefs":
        args["coefs"] = [np.asfortranarray(W) for W in coefs]
    elif layout == "transposed coefs":
        args["coefs"] = [np.ascontiguousarray(W.T).T for W in coefs]
    elif layout == "strided intercepts":
        bigs = []
        for b in intercepts:
            bb = np.zeros(2 * b.size, dtype)
            bb[::2] = b
            bigs.append(bb[::2])
        args["intercepts"] = bigs
    contiguous = dict(coefs=[np.ascontiguousarray(a) for a in args["coefs"]],
                      intercepts=[np.ascontiguousarray(a) for a in args["intercepts"]],
                      X=np.ascontiguousarray(args["X"], dtype=dtype),
                      Y=np.ascontiguousarray(args["Y"]),
                      sample_weight=np.ascontiguousarray(args["sample_weight"]))
    if layout == "X[::2]":
        assert not args["X"].flags.c_contiguous and not args["X"].flags.f_contiguous
    for module in (core, reference):
        got = module.loss_and_gradients(**args, **kw)
        exp = module.loss_and_gradients(**contiguous, **kw)
        assert_result_close(got, exp, **REORDER_TOL[dtype])
    assert_result_close(core.loss_and_gradients(**args, **kw),
                        reference.loss_and_gradients(**contiguous, **kw), **tol(dtype))
    out = core.forward(args["coefs"], args["intercepts"], args["X"], activation=activation, loss=loss)
    exp = reference.forward(contiguous["coefs"], contiguous["intercepts"], contiguous["X"],
                            activation=activation, loss=loss)
    assert_allclose(out, exp, rtol=tol(dtype)["rtol"], atol=tol(dtype)["atol_factor"])


def test_nested_lists_are_accepted_as_float64():
    p = make_problem(n_samples=6, sizes=(3, 4, 2), loss="poisson", weighted=True)
    for module in (core, reference):
        got = module.loss_and_gradients(
            [W.tolist() for W in p.coefs], [b.tolist() for b in p.intercepts], p.X.tolist(),
            p.Y.tolist(), activation="tanh", loss="poisson", sample_weight=p.sample_weight.tolist())
        assert_result_close(got, p.call(module), rtol=1e-15, atol_factor=0)


# =======================================================================================
# blocking over samples
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", LOSSES)
def test_blocks_equal_one_block(monkeypatch, loss, dtype):
    n, sizes = 203, sizes_for(loss, 3)
    p = make_problem(n_samples=n, sizes=sizes, activation="tanh", loss=loss, dtype=dtype,
                     alpha=0.5, weighted=True, seed=seed_of("blocks", loss))
    assert core.block_rows(sizes, n) == n  # the default: one block
    one_block = p.call(core)
    out_one = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
    monkeypatch.setattr(core, "_BLOCK_ENTRIES", 64)
    rows = core.block_rows(sizes, n)
    assert 1 <= rows < n and n % rows != 0, rows  # several blocks, the last one partial
    blocked = p.call(core)
    check_result_types(blocked, p)
    assert_result_close(blocked, one_block, **REORDER_TOL[dtype])
    assert_result_close(blocked, p.call(reference), **tol(dtype))
    out_blocked = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
    assert_allclose(out_blocked, out_one, rtol=REORDER_TOL[dtype]["rtol"],
                    atol=REORDER_TOL[dtype]["atol_factor"])
    # blocks of a few rows (block_rows never goes below 64 by itself)
    monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: 5)
    assert_result_close(p.call(core), one_block, **REORDER_TOL[dtype])
    out5 = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
    assert_allclose(out5, out_one, rtol=REORDER_TOL[dtype]["rtol"],
                    atol=REORDER_TOL[dtype]["atol_factor"])


def _kernel_loss_grad(p, rows, fill=np.nan, n_threads=1):
    sizes = np.asarray(p.sizes, dtype=np.intp)
    params = p.flat().astype(p.dtype)
    half = _kernels.split_rows(rows)  # blocks cut in halves need two half-workspaces
    work = (2 * half if half else rows) * int(sum(p.sizes[1:]))
    grads = np.full(params.size, fill, p.dtype)
    grads2 = np.full(params.size if half else 0, fill, p.dtype)
    acts = np.full(work, fill, p.dtype)
    deltas = np.full(work, fill, p.dtype)
    sw = np.empty(0, p.dtype) if p.sample_weight is None else p.sample_weight
    value = _kernels.loss_grad(
        sizes, core.ACTIVATION_CODES[p.activation], core.LOSS_CODES[p.loss], params,
        p.X, p.Y, sw, p.alpha, grads, acts, deltas, rows, grads2, n_threads)
    return value, grads


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 16, 17, 18, 40])
def test_kernel_block_sizes(rows, split):
    """The raw kernel with any block size (scratch prefilled with NaN, so nothing may be
    read before it is written) gives the same loss and gradient, blocks whole or cut in
    halves (an empty second half included: blocks of 1..7 rows), on one thread or two."""
    p = make_problem(n_samples=17, sizes=(3, 4, 3, 3), activation="relu", loss="log_loss",
                     alpha=0.5, weighted=True, seed=5)
    ref = p.call(reference)
    if split:
        with split_from(1):
            value, grads = _kernel_loss_grad(p, rows, n_threads=2)
            value1, grads1 = _kernel_loss_grad(p, rows, n_threads=1)
        assert value1 == value
        assert_array_equal(grads1, grads)
    else:
        value, grads = _kernel_loss_grad(p, rows)
    assert np.isfinite(grads).all()
    assert_allclose(value, float(ref[0]), rtol=1e-12)
    assert_allclose(grads, flat_grad(ref), rtol=1e-10, atol=1e-13)


# =======================================================================================
# loss values and gradients against scikit-learn
# =======================================================================================

def sklearn_backprop(p):
    """scikit-learn's own ``_backprop`` on an estimator holding p's weights."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if p.loss in ("squared_error", "poisson"):
        est = MLPRegressor(activation=p.activation, alpha=p.alpha, loss=p.loss)
    else:
        est = MLPClassifier(activation=p.activation, alpha=p.alpha)
    est.out_activation_ = out_activation(p.loss)
    est.coefs_ = [W.copy() for W in p.coefs]
    est.intercepts_ = [b.copy() for b in p.intercepts]
    est.n_layers_ = len(p.coefs) + 1
    est.n_outputs_ = p.Y.shape[1]
    L = len(p.coefs)
    activations = [p.X] + [None] * L
    loss, cg, ig = est._backprop(p.X, p.Y.copy(), p.sample_weight, activations, [None] * L,
                                 [None] * L, [None] * L)
    return float(loss), cg, ig


SKLEARN_CASES = [
    ("squared_error", 1), ("poisson", 1), ("binary_log_loss", 1), ("log_loss", 2),
    ("log_loss", 4), ("poisson", 3), ("binary_log_loss", 3), ("squared_error", 3),
]


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss, n_out", SKLEARN_CASES, ids=[f"{l}-{k}" for l, k in SKLEARN_CASES])
def test_matches_sklearn_backprop(loss, n_out, activation, alpha, weighted, depth):
    p = make_problem(n_samples=12, sizes=(4, *HIDDEN[depth], n_out), activation=activation,
                     loss=loss, alpha=alpha, weighted=weighted,
                     seed=seed_of("sk", loss, n_out, activation, alpha, weighted, depth))
    sk_loss, sk_cg, sk_ig = sklearn_backprop(p)
    s = p.X.shape[0] if p.sample_weight is None else p.sample_weight.sum()
    penalty = 0.5 * alpha * sum((W**2).sum() for W in p.coefs) / s
    if loss == "squared_error" and n_out > 1:
        # scikit-learn reports the mean over outputs (but optimises the sum); ours is
        # the sum, whose derivative both gradients are.
        sk_loss = (sk_loss - penalty) * n_out + penalty
    for module in (core, reference):
        got = p.call(module)
        assert_result_close(got, (sk_loss, sk_cg, sk_ig), rtol=1e-10, atol_factor=1e-12,
                            err_msg=module.__name__)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss, n_out", [("squared_error", 1), ("poisson", 1),
                                         ("binary_log_loss", 1), ("log_loss", 3)])
def test_loss_value_matches_sklearn_loss_functions(loss, n_out, activation, alpha):
    """loss == LOSS_FUNCTIONS[loss](y, network output) + alpha/2 ||W||^2 / n, with the
    output computed by an independent NumPy forward pass."""
    from sklearn.neural_network._base import LOSS_FUNCTIONS

    p = make_problem(n_samples=15, sizes=(3, 6, 4, n_out), activation=activation, loss=loss,
                     alpha=alpha, seed=seed_of("lf", loss, activation, alpha))
    P = np_forward(p.coefs, p.intercepts, p.X, activation, loss)
    expected = LOSS_FUNCTIONS[loss](p.Y, P) + 0.5 * alpha * sum(
        (W**2).sum() for W in p.coefs) / p.X.shape[0]
    for module in (core, reference):
        assert_allclose(float(p.call(module)[0]), expected, rtol=1e-10)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@MODULES
def test_multioutput_squared_error_is_sum_over_outputs(module, weighted):
    p = make_problem(n_samples=9, sizes=(3, 5, 4), activation="tanh", loss="squared_error",
                     alpha=0.6, weighted=weighted, seed=21)
    P = np_forward(p.coefs, p.intercepts, p.X, "tanh", "squared_error")
    w = np.ones(9) if p.sample_weight is None else p.sample_weight
    s = w.sum()
    expected = (0.5 * (w[:, None] * (P - p.Y) ** 2).sum()
                + 0.5 * 0.6 * sum((W**2).sum() for W in p.coefs)) / s
    value, cg, ig = p.call(module)
    assert_allclose(float(value), expected, rtol=1e-12)
    # (and so not scikit-learn's mean over the 4 outputs)
    mean_version = (0.5 * (w[:, None] * (P - p.Y) ** 2).sum() / 4
                    + 0.5 * 0.6 * sum((W**2).sum() for W in p.coefs)) / s
    assert not np.isclose(float(value), mean_version, rtol=1e-3)
    # output-layer gradients are the derivative of that sum: (P - Y)^T-weighted
    D = w[:, None] * (P - p.Y)
    A = np.tanh(p.X @ p.coefs[0] + p.intercepts[0])
    assert_allclose(cg[1], (A.T @ D + 0.6 * p.coefs[1]) / s, rtol=1e-10)
    assert_allclose(ig[1], D.sum(axis=0) / s, rtol=1e-10, atol=1e-14)


# =======================================================================================
# numerical stability
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["log_loss", "binary_log_loss"])
@pytest.mark.parametrize("magnitude", [1e3, 3e4])
def test_huge_logits_stay_finite(loss, dtype, magnitude):
    rng = np.random.default_rng(seed_of("huge", loss))
    n, n_out = 16, 3
    coefs, intercepts = make_network((2, 3, n_out), np.float64, seed=4)
    X = rng.normal(size=(n, 2))
    A = np.tanh(X @ coefs[0] + intercepts[0])
    # scale the output layer so the largest |logit| is `magnitude`
    Z = A @ coefs[1] + intercepts[1]
    factor = magnitude / np.abs(Z).max()
    coefs[1] = coefs[1] * factor
    intercepts[1] = intercepts[1] * factor
    Z = Z * factor
    if loss == "log_loss":
        Y = np.zeros((n, n_out))
        Y[np.arange(n), rng.integers(0, n_out, n)] = 1.0
        Y[0] = 0.0
        Y[0, Z[0].argmax()] = 1.0  # a perfectly confident correct sample
        Y[1] = 0.0
        Y[1, Z[1].argmin()] = 1.0  # a perfectly confident wrong one
    else:
        Y = (rng.uniform(size=(n, n_out)) < 0.5).astype(float)
        Y[0] = (Z[0] > 0)   # confident and right
        Y[1] = (Z[1] < 0)   # confident and wrong
    assert np.abs(Z).max() > 0.9 * magnitude
    p = Problem(coefs, intercepts, X, Y, "tanh", loss, 0.1, None, [2, 3, n_out]).astype(dtype)
    expected = np_loss(*p.astype(np.float64).args(), "tanh", loss, 0.1)
    assert expected > magnitude / n  # dominated by the confident wrong samples
    results = {}
    for module in (core, reference):
        value, cg, ig = results[module.__name__] = p.call(module)
        assert np.isfinite(value), module.__name__
        assert all(np.isfinite(g).all() for g in cg + ig), module.__name__
        assert_allclose(float(value), expected, rtol=1e-5 if dtype == np.float32 else 1e-9)
        # the output delta saturates at P - Y in {-1, 0, 1}: |intercept grad| <= 1
        assert np.abs(ig[-1]).max() <= 1 + 1e-6
    assert_result_close(results["fastprop.core"], results["fastprop.reference"],
                        rtol=1e-4 if dtype == np.float32 else 1e-9, atol_factor=1e-6)
    out = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss=loss)
    assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["log_loss", "binary_log_loss"])
def test_all_confident_and_right_gives_zero_loss(loss, dtype):
    """e^-1000 underflows: loss and gradient must be (close to) 0, not NaN."""
    X = np.array([[1.0], [-1.0], [2.0]])
    coefs = [np.array([[1000.0, -1000.0]])]
    intercepts = [np.zeros(2)]
    Z = X @ coefs[0]
    if loss == "log_loss":
        Y = np.zeros((3, 2))
        Y[np.arange(3), Z.argmax(axis=1)] = 1
    else:
        Y = (Z > 0).astype(float)
    args = ([W.astype(dtype) for W in coefs], [b.astype(dtype) for b in intercepts],
            X.astype(dtype), Y.astype(dtype))
    for module in (core, reference):
        value, cg, ig = module.loss_and_gradients(*args, activation="relu", loss=loss)
        assert np.isfinite(value) and 0 <= float(value) < 1e-30
        for g in cg + ig:
            assert np.isfinite(g).all() and np.abs(g).max() < 1e-30


# =======================================================================================
# forward
# =======================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward(activation, loss, dtype):
    p = make_problem(n_samples=21, sizes=(4, 6, 5, N_OUT[loss] + 1), activation=activation,
                     loss=loss, dtype=dtype, seed=seed_of("fwd", activation, loss))
    out = core.forward(p.coefs, p.intercepts, p.X, activation=activation, loss=loss)
    ref = reference.forward(p.coefs, p.intercepts, p.X, activation=activation, loss=loss)
    indep = np_forward(p.coefs, p.intercepts, p.X, activation, loss)
    assert out.dtype == dtype and out.shape == (21, N_OUT[loss] + 1)
    t = tol(dtype)
    scale = np.abs(indep).max()
    assert_allclose(out, ref, rtol=t["rtol"], atol=t["atol_factor"] * scale)
    assert_allclose(out, indep, rtol=t["rtol"], atol=t["atol_factor"] * scale)
    if loss == "log_loss":
        assert_allclose(out.sum(axis=1), 1.0, rtol=10 * np.finfo(dtype).eps)
        assert (out >= 0).all()
    elif loss == "binary_log_loss":
        assert ((out > 0) & (out < 1)).all()
    elif loss == "poisson":
        assert (out > 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_forward_zero_rows(dtype):
    coefs, intercepts = make_network((3, 4, 2), dtype)
    X = np.empty((0, 3), dtype)
    for module in (core, reference):
        out = module.forward(coefs, intercepts, X, activation="relu", loss="log_loss")
        assert out.shape == (0, 2) and out.dtype == dtype


def test_forward_consistent_with_loss():
    """The loss reported by loss_and_gradients is the loss of forward's output."""
    p = make_problem(n_samples=10, sizes=(3, 4, 3), activation="logistic", loss="log_loss",
                     seed=8)
    P = core.forward(p.coefs, p.intercepts, p.X, activation="logistic", loss="log_loss")
    expected = -(p.Y * np.log(P)).sum() / 10
    assert_allclose(float(p.call(core)[0]), expected, rtol=1e-12)


# =======================================================================================
# optimizer updates
# =======================================================================================

@pytest.mark.parametrize("n", [1, 7, 1003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_update(momentum, nesterov, dtype, n):
    from sklearn.neural_network._stochastic_optimizers import SGDOptimizer

    rng = np.random.default_rng(seed_of("sgd", momentum, nesterov, n))
    params = rng.normal(size=n).astype(dtype)
    p_core, p_ref, p_sk = params.copy(), params.copy(), params.astype(np.float64)
    v_core, v_ref = np.zeros(n, dtype), np.zeros(n, dtype)
    sk = SGDOptimizer([p_sk], learning_rate_init=0.05, momentum=momentum, nesterov=nesterov)
    for step in range(4):
        g = rng.normal(size=n).astype(dtype)
        core.sgd_update(p_core, g, v_core, learning_rate=0.05, momentum=momentum,
                        nesterov=nesterov)
        reference.sgd_update(p_ref, g, v_ref, learning_rate=0.05, momentum=momentum,
                             nesterov=nesterov)
        sk.update_params([p_sk], [g.astype(np.float64)])
        assert p_core.dtype == dtype and v_core.dtype == dtype
        r = 1e-12 if dtype == np.float64 else 1e-5
        assert_allclose(p_core, p_ref, rtol=r, atol=r)
        assert_allclose(v_core, v_ref, rtol=r, atol=r)
        assert_allclose(p_core, p_sk, rtol=r, atol=r)
        assert_allclose(v_core, sk.velocities[0], rtol=r, atol=r)
    assert not np.allclose(p_core, params)


@pytest.mark.parametrize("n", [1, 7, 1003])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("t0", [1, 5])
def test_adam_update(t0, dtype, n):
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

    rng = np.random.default_rng(seed_of("adam", t0, n))
    params = rng.normal(size=n).astype(dtype)
    hyper = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-3)
    # Start from a nonzero state, as after t0 - 1 earlier steps.
    m0 = (0.1 * rng.normal(size=n)).astype(dtype) if t0 > 1 else np.zeros(n, dtype)
    v0 = (0.1 * rng.uniform(size=n)).astype(dtype) if t0 > 1 else np.zeros(n, dtype)
    p_core, m_core, v_core = params.copy(), m0.copy(), v0.copy()
    p_ref, m_ref, v_ref = params.copy(), m0.copy(), v0.copy()
    sk = AdamOptimizer([params.astype(np.float64)], learning_rate_init=0.01, beta_1=0.8,
                       beta_2=0.99, epsilon=1e-3)
    sk.t, sk.ms, sk.vs = t0 - 1, [m0.astype(np.float64)], [v0.astype(np.float64)]
    p_sk = params.astype(np.float64)
    for t in range(t0, t0 + 3):
        g = rng.normal(size=n).astype(dtype)
        core.adam_update(p_core, g, m_core, v_core, t=t, **hyper)
        reference.adam_update(p_ref, g, m_ref, v_ref, t=t, **hyper)
        sk.update_params([p_sk], [g.astype(np.float64)])
        assert sk.t == t
        r = 1e-12 if dtype == np.float64 else 1e-5
        for a, b in [(p_core, p_ref), (m_core, m_ref), (v_core, v_ref), (p_core, p_sk),
                     (m_core, sk.ms[0]), (v_core, sk.vs[0])]:
            assert a.dtype == dtype
            assert_allclose(a, b, rtol=r, atol=r)
    assert not np.allclose(p_core, params)


def test_update_errors():
    a = np.zeros(5)
    with pytest.raises(ValueError, match="same length"):
        core.sgd_update(a.copy(), np.zeros(4), np.zeros(5), learning_rate=0.1, momentum=0.9,
                        nesterov=True)
    with pytest.raises(ValueError, match="same length"):
        core.adam_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(6), t=1,
                         learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    with pytest.raises(ValueError, match="counts updates from 1"):
        core.adam_update(a.copy(), np.zeros(5), np.zeros(5), np.zeros(5), t=0,
                         learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    with pytest.raises(TypeError, match="1-D float64"):
        core.sgd_update(a.copy(), np.zeros(5, np.float32), np.zeros(5), learning_rate=0.1,
                        momentum=0.9, nesterov=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.sgd_update(np.zeros(5, int), np.zeros(5, int), np.zeros(5, int),
                        learning_rate=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="contiguous"):
        core.sgd_update(np.zeros(10)[::2], np.zeros(5), np.zeros(5), learning_rate=0.1,
                        momentum=0.9, nesterov=True)


# =======================================================================================
# Trainer.run_epoch vs a NumPy loop over the reference
# =======================================================================================

SOLVERS = {
    "adam": dict(solver="adam", learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
    "sgd": dict(solver="sgd", learning_rate=0.05, momentum=0.9, nesterov=False),
    "sgd-nesterov": dict(solver="sgd", learning_rate=0.05, momentum=0.9, nesterov=True),
    "sgd-plain": dict(solver="sgd", learning_rate=0.05, momentum=0.0, nesterov=False),
}


class NumpyTrainer:
    """What Trainer.run_epoch must do, written with fastprop.reference."""

    def __init__(self, sizes, activation, loss, params, solver, learning_rate, momentum=0.9,
                 nesterov=True, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.sizes, self.activation, self.loss, self.params = sizes, activation, loss, params
        self.solver, self.lr, self.momentum, self.nesterov = solver, learning_rate, momentum, nesterov
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.state_1 = np.zeros_like(params)
        self.state_2 = np.zeros_like(params)
        self.t = 0

    def run_epoch(self, X, Y, *, batch_size, alpha=0.0, sample_weight=None, order=None):
        idx = np.arange(X.shape[0]) if order is None else np.asarray(order)
        n = len(idx)
        batch_size = max(1, min(batch_size, n))
        acc = 0.0
        for start in range(0, n, batch_size):
            b = idx[start:start + batch_size]
            swb = None if sample_weight is None else sample_weight[b]
            if swb is not None and not swb.sum() > 0:
                continue  # documented: a batch of zero total weight is skipped
            coefs, intercepts = flat_unpack(self.params, self.sizes)
            value, cg, ig = reference.loss_and_gradients(
                coefs, intercepts, X[b], Y[b], activation=self.activation, loss=self.loss,
                alpha=alpha, sample_weight=swb)
            grads = flat_pack(cg, ig)
            acc += float(value) * len(b)
            if self.solver == "sgd":
                reference.sgd_update(self.params, grads, self.state_1, learning_rate=self.lr,
                                     momentum=self.momentum, nesterov=self.nesterov)
            else:
                self.t += 1
                reference.adam_update(self.params, grads, self.state_1, self.state_2,
                                      t=self.t, learning_rate=self.lr, beta_1=self.beta_1,
                                      beta_2=self.beta_2, epsilon=self.epsilon)
        return acc


def _trainer_problem(loss, dtype, activation="tanh", n=30, sizes=None, seed=0, weighted=False):
    sizes = list(sizes or (4, 6, 5, N_OUT[loss]))
    p = make_problem(n_samples=n, sizes=sizes, activation=activation, loss=loss, dtype=dtype,
                     weighted=weighted, seed=seed)
    return p, p.flat().astype(dtype)


def _assert_epoch_close(a, b, dtype, what=""):
    t = EPOCH_TOL[np.dtype(dtype).type]
    assert_allclose(a, b, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(b).max(), err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("loss", LOSSES)
def test_trainer_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    p, params = _trainer_problem(loss, dtype, weighted=weighted,
                                 seed=seed_of("tr", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("order", loss, solver))
    hyper = SOLVERS[solver]
    trainer = core.Trainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    expect = NumpyTrainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    for epoch in range(2):  # the optimizer state (and Adam's t) carries over epochs
        order = rng.permutation(30).astype(np.intp) if shuffled else None
        acc = trainer.run_epoch(p.X, p.Y, batch_size=7, alpha=0.3, sample_weight=p.sample_weight,
                                order=order)
        acc_e = expect.run_epoch(p.X, p.Y, batch_size=7, alpha=0.3,
                                 sample_weight=p.sample_weight, order=order)
        assert trainer.params.dtype == dtype
        _assert_epoch_close(trainer.params, expect.params, dtype, f"params, epoch {epoch}")
        _assert_epoch_close(trainer.state_1, expect.state_1, dtype, f"state_1, epoch {epoch}")
        if hyper["solver"] == "adam":
            _assert_epoch_close(trainer.state_2, expect.state_2, dtype, f"state_2, epoch {epoch}")
            assert int(trainer.counter[0]) == expect.t == 5 * (epoch + 1)
        assert_allclose(acc, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
    assert not np.allclose(trainer.params, params)


@pytest.mark.parametrize("activation", ["identity", "logistic", "relu"])
def test_trainer_other_activations(activation):
    p, params = _trainer_problem("log_loss", np.float64, activation=activation, n=25,
                                 weighted=True, seed=seed_of("tract", activation))
    for solver in ("adam", "sgd-nesterov"):
        trainer = core.Trainer(p.sizes, activation, "log_loss", params.copy(), **SOLVERS[solver])
        expect = NumpyTrainer(p.sizes, activation, "log_loss", params.copy(), **SOLVERS[solver])
        order = np.random.default_rng(1).permutation(25).astype(np.intp)
        for batch_size in (4, 10, 3, 25):  # buffers grown, then reused for smaller batches
            acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.1, order=order,
                                    sample_weight=p.sample_weight)
            acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.1, order=order,
                                     sample_weight=p.sample_weight)
            _assert_epoch_close(trainer.params, expect.params, np.float64, f"{solver} {batch_size}")
            assert_allclose(acc, acc_e, rtol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 30, 31, 1000])
def test_trainer_batch_size_edges(batch_size):
    p, params = _trainer_problem("squared_error", np.float64, n=30, seed=2)
    trainer = core.Trainer(p.sizes, "tanh", "squared_error", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "squared_error", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.2)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.2)
    _assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)
    assert int(trainer.counter[0]) == expect.t == -(-30 // min(batch_size, 30))


def test_trainer_skips_zero_weight_batches():
    p, params = _trainer_problem("binary_log_loss", np.float64, n=30, weighted=True, seed=4)
    w = p.sample_weight.copy()
    w[7:14] = 0.0  # the second batch of 7 carries no weight
    trainer = core.Trainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=7, alpha=0.2, sample_weight=w)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=7, alpha=0.2, sample_weight=w)
    assert expect.t == 4 and int(trainer.counter[0]) == 4
    assert np.isfinite(trainer.params).all()
    _assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)


def test_trainer_learning_rate_setter_and_pickle():
    p, params = _trainer_problem("poisson", np.float64, n=30, seed=6)
    trainer = core.Trainer(p.sizes, "tanh", "poisson", params.copy(), **SOLVERS["sgd-nesterov"])
    expect = NumpyTrainer(p.sizes, "tanh", "poisson", params.copy(), **SOLVERS["sgd-nesterov"])
    trainer.run_epoch(p.X, p.Y, batch_size=7)
    expect.run_epoch(p.X, p.Y, batch_size=7)
    trainer.learning_rate = expect.lr = 0.01
    assert trainer.learning_rate == 0.01
    clone = pickle.loads(pickle.dumps(trainer))
    assert_array_equal(clone.state_1, trainer.state_1)
    # the owner of the parameter vector pickles it and re-attaches it
    clone.params = trainer.params.copy()
    for t in (trainer, clone):
        t.run_epoch(p.X, p.Y, batch_size=7)
    expect.run_epoch(p.X, p.Y, batch_size=7)
    assert_array_equal(clone.params, trainer.params)
    _assert_epoch_close(trainer.params, expect.params, np.float64)


def test_trainer_is_deterministic():
    p, params = _trainer_problem("log_loss", np.float64, n=4096, sizes=(10, 40, 3), seed=9)
    order = np.random.default_rng(0).permutation(4096).astype(np.intp)
    runs = []
    for _ in range(2):
        trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
        acc = trainer.run_epoch(p.X, p.Y, batch_size=2048, alpha=0.1, order=order)
        runs.append((acc, trainer.params))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], params)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_thread_count_does_not_change_results(dtype):
    from threadpoolctl import threadpool_limits

    # BLAS's threads and the OpenMP team both follow the limit
    p, params = _trainer_problem("log_loss", dtype, n=4096, sizes=(10, 40, 3), seed=9,
                                 weighted=True)
    order = np.random.default_rng(0).permutation(4096).astype(np.intp)
    results = {}
    for n_threads in (1, 2):
        with threadpool_limits(limits=n_threads):
            if _kernels.HAS_OPENMP:
                assert _kernels.openmp_max_threads() == n_threads
            trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["sgd"])
            acc = trainer.run_epoch(p.X, p.Y, batch_size=2048, alpha=0.1, order=order,
                                    sample_weight=p.sample_weight)
            full = p.call(core)
            out = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss="log_loss")
        results[n_threads] = (acc, trainer.params, full, out)
    r1, r2 = results[1], results[2]
    t = REORDER_TOL[dtype]
    assert_allclose(r1[0], r2[0], rtol=t["rtol"])
    assert_allclose(r1[1], r2[1], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], r2[2], **t)
    assert_allclose(r1[3], r2[3], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], p.call(reference), **tol(dtype))


# -- split minibatches: two halves, two gradient buffers, one team of up to two threads --

@contextlib.contextmanager
def _kernel_setting(setter, value):
    """A benchmark hook of the kernels (a setter returning the old value) set for the
    block, restored after it."""
    old = setter(value)
    try:
        yield
    finally:
        setter(old)


def split_from(rows):
    """Split every minibatch of at least ``rows`` rows (the production threshold keeps
    small test problems whole)."""
    return _kernel_setting(_kernels._set_split_min_batch, rows)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                  if i["user_api"] == "blas")


def test_split_rows_layout():
    big = _kernels.split_rows(10**6)
    assert big > 0 and big % 8 == 0
    assert _kernels.split_rows(1) == 0  # a one-row minibatch is never split by default
    with split_from(1):
        # about half, rounded up to 8 rows and capped at the minibatch
        assert [_kernels.split_rows(b) for b in (1, 2, 7, 8, 16, 17, 31, 200, 257)] == [
            1, 2, 7, 8, 8, 16, 16, 104, 136]
    with pytest.raises(ValueError):
        _kernels.split_rows(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "sgd-nesterov"])
@pytest.mark.parametrize("loss", LOSSES)
def test_split_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    """Split minibatches: 61 rows in batches of 20 -> halves 16 + 4, and the last batch
    of 1 row -> 1 + an empty half; and batches of 9 -> halves 8 + 1."""
    p, params = _trainer_problem(loss, dtype, weighted=weighted, n=61,
                                 seed=seed_of("split", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("split-order", loss, solver))
    with split_from(2):
        _two_epochs_match_numpy_loop(
            p, params, loss, solver, dtype, rng, shuffled,
            lambda batch_size: _kernels.split_rows(batch_size) > 0)


def _two_epochs_match_numpy_loop(p, params, loss, solver, dtype, rng, shuffled, on_path):
    """Epochs of 20- and 9-row batches over p's 61 rows, the kernel against the NumPy
    loop, checking first that ``on_path(batch_size)`` (the driver under test runs)."""
    hyper = SOLVERS[solver]
    trainer = core.Trainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    expect = NumpyTrainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    for epoch, batch_size in enumerate((20, 9)):
        order = rng.permutation(61).astype(np.intp) if shuffled else None
        assert on_path(batch_size)
        acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.3,
                                sample_weight=p.sample_weight, order=order)
        acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.3,
                                 sample_weight=p.sample_weight, order=order)
        _assert_epoch_close(trainer.params, expect.params, dtype, f"params, epoch {epoch}")
        _assert_epoch_close(trainer.state_1, expect.state_1, dtype, f"state_1, {epoch}")
        if hyper["solver"] == "adam":
            _assert_epoch_close(trainer.state_2, expect.state_2, dtype, f"state_2, {epoch}")
            assert int(trainer.counter[0]) == expect.t
        assert_allclose(acc, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
    assert expect.t == (4 + 7 if hyper["solver"] == "adam" else 0)
    assert not np.allclose(trainer.params, params)


def test_split_epoch_skips_zero_weight_batches():
    p, params = _trainer_problem("log_loss", np.float64, n=40, weighted=True, seed=14)
    with split_from(2):
        _zero_weight_batch_is_skipped(p, params)


def _zero_weight_batch_is_skipped(p, params):
    """The second batch of 10 carries no weight: no step, no t (as in the NumPy loop)."""
    w = p.sample_weight.copy()
    w[10:20] = 0.0
    trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=10, alpha=0.2, sample_weight=w)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=10, alpha=0.2, sample_weight=w)
    assert expect.t == 3 and int(trainer.counter[0]) == 3
    _assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)


def _split_runs(dtype, sparse, n_threads_list, solver="adam"):
    """Two epochs of a split-minibatch problem (batch 256, the production threshold)
    under each thread limit; returns what each run produced."""
    from threadpoolctl import threadpool_limits

    p, params = _trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(30, 64, 32, 3), seed=21, weighted=True)
    assert _kernels.split_rows(256) > 0
    X = p.X
    if sparse:
        Xs = sp.csr_matrix(p.X * (np.random.default_rng(3).uniform(size=p.X.shape) < 0.3))
        X = core.csr_parts(Xs)
    orders = [np.random.default_rng(e).permutation(1500)[:1400].astype(np.intp)
              for e in range(2)]
    out = {}
    for nt in n_threads_list:
        with threadpool_limits(limits=nt):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            accs = [trainer.run_epoch(X, p.Y, batch_size=256, alpha=1e-3,
                                      sample_weight=p.sample_weight, order=o)
                    for o in orders]
        out[nt] = (accs, trainer.params, trainer.state_1, trainer.state_2, trainer.counter)
    return out, params


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_split_epoch_is_bitwise_the_same_for_any_thread_count(dtype, sparse, solver):
    """The halves and the optimizer's segments are fixed by the minibatch length, not by
    the team: one thread and two produce the same bits (dask workers run one thread,
    a laptop two)."""
    out, params = _split_runs(dtype, sparse, (1, 2), solver)
    for a, b in zip(out[1], out[2]):
        assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(out[1][1], params)


def test_split_team_takes_two_threads_and_holds_blas_at_one():
    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    if not _kernels.HAS_OPENMP:
        pytest.skip("built without OpenMP: split epochs run on one thread")
    with threadpool_limits(limits=2):
        before = _blas_threads()
        assert before and all(n == 2 for _, n in before)
        with split_team(256) as nt:
            assert nt == 2
            assert all(n == 1 for _, n in _blas_threads())  # BLAS held at one thread
            with split_team(256) as nt2:
                assert nt2 == 1  # the team is taken: a second epoch runs on its thread
            assert all(n == 1 for _, n in _blas_threads())
        assert _blas_threads() == before
        with split_team(8) as nt:
            assert nt == 1  # short minibatches run whole, with BLAS on one thread too
            assert all(n == 1 for _, n in _blas_threads())
        assert _blas_threads() == before
        with pytest.raises(RuntimeError):
            with split_team(256):
                raise RuntimeError("an epoch that fails still gives BLAS back")
        assert _blas_threads() == before
    with threadpool_limits(limits=1):
        with split_team(256) as nt:
            assert nt == 1


def test_passes_in_threads_share_the_blas_hold():
    """Whole and split passes in several threads run side by side, all with BLAS on one
    thread; it goes back to the user's setting when the last one ends, whichever thread
    that is."""
    import threading

    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    with threadpool_limits(limits=2):
        user = _blas_threads()
        inside = threading.Event()
        release = threading.Event()
        seen = []

        def whole():
            with split_team(8):
                inside.set()
                release.wait(10)
                seen.append(("whole", _blas_threads()))

        t = threading.Thread(target=whole)
        t.start()
        inside.wait(10)
        with split_team(256) as nt:
            seen.append(("split", _blas_threads(), nt))
        assert all(n == 1 for _, n in _blas_threads())  # the whole pass still runs
        release.set()
        t.join(10)
        assert _blas_threads() == user
    assert all(n == 1 for _, n in seen[0][1]) and all(n == 1 for _, n in seen[1][1])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_whole_minibatch_epoch_is_bitwise_the_same_for_any_thread_count(dtype):
    """Minibatches too short to split run on one thread with BLAS on one thread (or cut
    by units, next section), so the thread limit does not change their result either."""
    from threadpoolctl import threadpool_limits

    p, params = _trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(30, 40, 3), seed=23)
    assert _kernels.split_rows(32) == 0
    assert not _kernels.unit_split(np.array(p.sizes, dtype=np.intp), 32)
    out = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), "adam")
            acc = trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3)
        out[nt] = (acc, trainer.params)
    assert out[1][0] == out[2][0]
    assert_array_equal(out[1][1], out[2][1])


# -- whole minibatches cut by units: each layer's units in two parts, one per thread --

def units_from(work):
    """Cut whole minibatches by units from ``work`` = rows x n_params up (the production
    threshold keeps small test problems on one thread)."""
    return _kernel_setting(_kernels._set_units_min_work, work)


def test_unit_split_threshold():
    w2 = np.array([784, 256, 128, 10], dtype=np.intp)  # the benchmarks' W2 network
    assert _kernels.unit_split(w2, 32)
    assert _kernels.unit_split(w2, 5)  # 5 x 235k parameters: over a million
    assert not _kernels.unit_split(w2, 4)
    # the shortest split lengths on a big network: units instead of rows
    assert _kernels.unit_split(w2, 128) and _kernels.unit_split(w2, 191)
    assert not _kernels.unit_split(w2, 192)  # split by rows
    assert not _kernels.unit_split(w2, 1024)
    assert not _kernels.unit_split(np.array([50, 100, 1], dtype=np.intp), 128)  # rows
    with _kernel_setting(_kernels._set_units_over_rows_work, 1 << 62):
        assert not _kernels.unit_split(w2, 128)
    assert not _kernels.unit_split(np.array([64, 64, 10], dtype=np.intp), 32)  # too small
    with units_from(1):
        assert _kernels.unit_split(np.array([1, 1], dtype=np.intp), 1)
    with pytest.raises(ValueError):
        _kernels.unit_split(w2, 0)
    with pytest.raises(ValueError):
        _kernels.unit_split(np.array([3], dtype=np.intp), 8)


# widths chosen to cut: 17, 20 and 40 -> 16 + 1, 16 + 4 and 32 + 8, 33 -> 32 + 1; 18 outputs -> 16 +
# 2 (the output layer cut too); a width of 16 or fewer is not cut (the second part empty)
UNIT_SIZES = {"squared_error": (20, 40, 33, 18), "poisson": (17, 20, 2),
              "log_loss": (20, 40, 33, 3), "binary_log_loss": (1, 40, 16, 2)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "sgd-nesterov"])
@pytest.mark.parametrize("loss", LOSSES)
def test_unit_split_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    """Whole minibatches cut by units (batches of 20 and 9 over 61 rows: a last batch of
    one row) against the NumPy loop."""
    # (poisson's exp output overflows the NumPy loop's SGD from relu's unbounded units)
    p, params = _trainer_problem(loss, dtype, activation="tanh" if loss == "poisson" else "relu",
                                 weighted=weighted, n=61, sizes=UNIT_SIZES[loss],
                                 seed=seed_of("units", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("units-order", loss, solver))
    sizes = np.array(p.sizes, dtype=np.intp)
    with units_from(1):
        _two_epochs_match_numpy_loop(
            p, params, loss, solver, dtype, rng, shuffled,
            lambda batch_size: _kernels.unit_split(sizes, batch_size))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_short_split_lengths_on_a_big_network_are_cut_by_units(solver, dtype):
    """Minibatches long enough to split by rows, on a network big enough (scaled down
    here through the hooks), are cut by units instead: the unit driver runs (it matches
    the NumPy loop), and one thread and two give the same bits."""
    from threadpoolctl import threadpool_limits

    p, params = _trainer_problem("log_loss", dtype, activation="relu", weighted=True, n=61,
                                 sizes=UNIT_SIZES["log_loss"], seed=seed_of("over", solver))
    sizes = np.array(p.sizes, dtype=np.intp)
    with split_from(2), _kernel_setting(_kernels._set_units_over_rows_work, 1):
        assert _kernels.split_rows(20) > 0 and _kernels.unit_split(sizes, 20)
        _two_epochs_match_numpy_loop(
            p, params, "log_loss", solver, dtype, np.random.default_rng(5), True,
            lambda batch_size: _kernels.unit_split(sizes, batch_size))
        runs = []
        for nt in (1, 2):
            with threadpool_limits(limits=nt):
                trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                       **SOLVERS[solver])
                trainer.run_epoch(p.X, p.Y, batch_size=20, alpha=1e-3,
                                  order=np.random.default_rng(6).permutation(61))
            runs.append((trainer.params, trainer.state_1, trainer.state_2))
        for a, b in zip(*runs):
            assert_array_equal(a, b)
        # with the preference off, the same minibatches are split by rows: other bits
        with _kernel_setting(_kernels._set_units_over_rows_work, 1 << 62):
            assert not _kernels.unit_split(sizes, 20)
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            trainer.run_epoch(p.X, p.Y, batch_size=20, alpha=1e-3,
                              order=np.random.default_rng(6).permutation(61))
        assert not np.array_equal(trainer.params, runs[0][0])
        assert_allclose(trainer.params, runs[0][0], rtol=1e-3 if dtype == np.float32 else 1e-9,
                        atol=1e-5)


def test_unit_split_epoch_skips_zero_weight_batches():
    p, params = _trainer_problem("log_loss", np.float64, n=40, sizes=(20, 40, 3),
                                 weighted=True, seed=15)
    with units_from(1):
        _zero_weight_batch_is_skipped(p, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
def test_unit_split_epoch_is_bitwise_the_same_for_any_thread_count(dtype, solver, shuffled):
    """At the production threshold (batch 32 on a network of 78k parameters), one thread
    and two produce the same bits, and the epoch really ran cut by units."""
    from threadpoolctl import threadpool_limits

    p, params = _trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(300, 256, 3), seed=24, weighted=True)
    assert _kernels.unit_split(np.array(p.sizes, dtype=np.intp), 32)
    orders = [np.random.default_rng(e).permutation(1500)[:1400].astype(np.intp)
              if shuffled else None for e in range(2)]
    out = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            accs = [trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3,
                                      sample_weight=p.sample_weight, order=o)
                    for o in orders]
        out[nt] = (accs, trainer.params, trainer.state_1, trainer.state_2, trainer.counter)
    for a, b in zip(out[1], out[2]):
        assert_array_equal(np.asarray(a), np.asarray(b))
    if dtype == np.float32:
        return  # float32 relu trajectories drift apart over 88 steps from rounding alone
    # ... and they match the plain whole-minibatch driver's (which does not cut products)
    with units_from(1 << 62):
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS[solver])
        accs = [trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3,
                                  sample_weight=p.sample_weight, order=o) for o in orders]
    _assert_epoch_close(out[1][1], trainer.params, dtype)
    assert_allclose(out[1][0], accs, rtol=EPOCH_TOL[dtype]["rtol"])


def test_unit_split_team_goes_to_dense_epochs():
    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    if not _kernels.HAS_OPENMP:
        pytest.skip("built without OpenMP: epochs run on one thread")
    w2 = [784, 256, 128, 10]
    with threadpool_limits(limits=2):
        before = _blas_threads()
        with split_team(32, w2) as nt:
            assert nt == 2  # a dense epoch cut by units
            assert all(n == 1 for _, n in _blas_threads())
        with split_team(32) as nt:
            assert nt == 1  # a CSR epoch (no sizes) runs whole
        with split_team(32, [64, 64, 10]) as nt:
            assert nt == 1  # too small to cut
        assert _blas_threads() == before


def test_split_pass_on_any_thread_holds_blas():
    """threadpoolctl >= 3.8 lets only one thread change a pthreads OpenBLAS's threads (the
    main thread, once it has used threadpoolctl); a split pass started on another thread
    must still hold BLAS at one thread, and give the main thread its control back."""
    import threading

    from threadpoolctl import ThreadpoolController

    from fastprop.core._team import split_team

    ctl = ThreadpoolController().select(user_api="blas")
    limiter = ctl.limit(limits=2)  # the main thread takes control
    try:
        before = _blas_threads()
        seen = []

        def run():
            with split_team(256):
                seen.append(_blas_threads())
        t = threading.Thread(target=run)
        t.start()
        t.join()
        assert seen and all(n == 1 for _, n in seen[0])
        assert _blas_threads() == before
        lim1 = ctl.limit(limits=1)  # the main thread can still set limits
        assert all(n == 1 for _, n in _blas_threads())
        lim1.restore_original_limits()
    finally:
        limiter.restore_original_limits()


def test_split_epochs_in_threads_equal_sequential_ones():
    """Two trainers in two Python threads at once: one holds the team, the other runs on
    its own thread; both get the sequential results, and BLAS is given back."""
    import threading

    p, params = _trainer_problem("squared_error", np.float64, activation="relu", n=3000,
                                 sizes=(20, 48, 2), seed=5)
    def run(result, key):
        trainer = core.Trainer(p.sizes, "relu", "squared_error", params.copy(), "adam")
        for _ in range(3):
            trainer.run_epoch(p.X, p.Y, batch_size=512, alpha=1e-4)
        result[key] = trainer.params
    seq = {}
    run(seq, 0)
    before = _blas_threads()
    par = {}
    threads = [threading.Thread(target=run, args=(par, k)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _blas_threads() == before
    assert_array_equal(par[0], seq[0])
    assert_array_equal(par[1], seq[0])


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_split_loss_and_gradients_match_reference_for_any_thread_count(dtype, sparse):
    """Full-data passes cut every block in halves (blocks of >= 128 rows): the result
    matches the reference, and one thread and two give the same bits."""
    from threadpoolctl import threadpool_limits

    p = make_problem(n_samples=700, sizes=(12, 30, 20, 4), activation="relu",
                     loss="log_loss", dtype=dtype, alpha=0.3, weighted=True, seed=31)
    X = p.X
    if sparse:
        X = sp.csr_matrix(p.X * (np.random.default_rng(4).uniform(size=p.X.shape) < 0.4))
    f = core.LossGradient(p.sizes, X, p.Y, activation="relu", loss="log_loss", alpha=0.3,
                          sample_weight=p.sample_weight)
    assert f.rows == 700 and _kernels.split_rows(f.rows) > 0  # one block, cut in halves
    params = p.flat().astype(dtype)
    runs = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            runs[nt] = f(params)
    assert runs[1][0] == runs[2][0]
    assert_array_equal(runs[1][1], runs[2][1])
    coefs, intercepts = core.unpack(params, p.sizes)
    Xd = X.toarray() if sparse else X
    ref = reference.loss_and_gradients(coefs, intercepts, Xd, p.Y, activation="relu",
                                       loss="log_loss", alpha=0.3,
                                       sample_weight=p.sample_weight)
    t = tol(dtype)
    assert_allclose(runs[1][0], float(ref[0]), rtol=t["rtol"])
    assert_allclose(runs[1][1], flat_grad(ref).astype(np.float64), rtol=t["rtol"],
                    atol=t["atol_factor"] * np.abs(flat_grad(ref)).max())
    if not sparse:  # the public front door (dense input) takes the same path
        out = core.loss_and_gradients(coefs, intercepts, X, p.Y, activation="relu",
                                      loss="log_loss", alpha=0.3,
                                      sample_weight=p.sample_weight)
        assert out[0] == dtype(runs[1][0])


@pytest.mark.parametrize("block", [40, 90, 700])
def test_split_loss_grad_block_layouts_match_reference(block):
    p = make_problem(n_samples=700, sizes=(6, 9, 3), activation="tanh",
                     loss="squared_error", alpha=0.2, weighted=True, seed=32)
    params = p.flat()
    ref = p.call(reference)
    with split_from(2):
        for nt in (1, 2):
            f = core.LossGradient(p.sizes, p.X, p.Y, activation="tanh",
                                  loss="squared_error", alpha=0.2,
                                  sample_weight=p.sample_weight)
            # a block size of our choosing, with workspaces sized for it
            f.rows = block
            half = _kernels.split_rows(block)
            work = 2 * half * int(sum(p.sizes[1:]))
            f.acts, f.deltas = np.full(work, np.nan), np.full(work, np.nan)
            f.grads2 = np.full(f.params.size, np.nan)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=nt):
                value, grad = f(params)
            assert_allclose(value, float(ref[0]), rtol=1e-12)
            assert_allclose(grad, flat_grad(ref), rtol=1e-10, atol=1e-13)


def test_parallel_elementwise_pass_matches_serial(monkeypatch):
    """Blocks of 2^18 rows x 64 hidden units = 2^24 entries reach the kernels' OpenMP
    elementwise pass (PARALLEL_MIN_ENTRIES = 1 << 24 in _kernels.pyx); with 2 threads it
    must give the single-thread result."""
    from threadpoolctl import threadpool_limits

    n, sizes = 1 << 18, [6, 64, 2]
    monkeypatch.setattr(core, "_BLOCK_ENTRIES", 1 << 25)  # one block for loss_and_gradients
    assert core.block_rows(sizes, n) == n
    rng = np.random.default_rng(0)
    coefs, intercepts = make_network(sizes, np.float64, seed=1)
    X = rng.normal(size=(n, 6))
    Y = make_targets(rng, "binary_log_loss", n, 2)
    results = {}
    for n_threads in (1, 2):
        with threadpool_limits(limits=n_threads):
            trainer = core.Trainer(sizes, "logistic", "binary_log_loss",
                                   flat_pack(coefs, intercepts), **SOLVERS["sgd"])
            acc = trainer.run_epoch(X, Y, batch_size=n, alpha=0.1)
            full = core.loss_and_gradients(coefs, intercepts, X, Y, activation="logistic",
                                           loss="binary_log_loss", alpha=0.1)
            out = core.forward(coefs, intercepts, X, activation="logistic", loss="binary_log_loss")
        results[n_threads] = (acc, trainer.params, full, out)
    r1, r2 = results[1], results[2]
    t = REORDER_TOL[np.float64]
    assert_allclose(r1[0], r2[0], rtol=t["rtol"])
    assert_allclose(r1[1], r2[1], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], r2[2], **t)
    assert_allclose(r1[3], r2[3], rtol=t["rtol"], atol=t["atol_factor"])
    assert not np.array_equal(r1[1], flat_pack(coefs, intercepts))


# -- check_finite: the epoch checks the rows it gathers for NaN and infinity -----------

# (batch size, path, unit-split threshold): whole minibatches on one thread, split
# minibatches, and whole minibatches cut by units
FINITE_PATHS = [(7, "whole", None), (40, "split", None), (7, "units", 1)]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("batch_size, path, units_min", FINITE_PATHS,
                         ids=[c[1] for c in FINITE_PATHS])
def test_epoch_check_finite_finds_every_bad_row(batch_size, path, units_min, dtype, n_threads):
    from threadpoolctl import threadpool_limits

    p, params = _trainer_problem("log_loss", dtype, activation="relu", n=61,
                                 sizes=(20, 40, 33, 3), seed=31)
    order = np.random.default_rng(4).permutation(61).astype(np.intp)
    units = units_from(units_min) if units_min else contextlib.nullcontext()

    def epoch(X, check):
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS["adam"])
        acc = trainer.run_epoch(X, p.Y, batch_size=batch_size, alpha=1e-3, order=order,
                                check_input=False, check_finite=check)
        return acc, trainer.params, trainer.state_1, trainer.state_2

    with threadpool_limits(limits=n_threads), split_from(32), units:
        assert (_kernels.split_rows(batch_size) > 0) == (path == "split")
        assert bool(_kernels.unit_split(np.asarray(p.sizes, dtype=np.intp), batch_size)) == (
            path == "units")
        # finite X: the checking gather changes nothing
        for a, b in zip(epoch(p.X, False), epoch(p.X, True)):
            assert_array_equal(np.asarray(a), np.asarray(b))
        # one bad value anywhere: the first and last rows visited, a row in each half of
        # a split minibatch, the first and the last feature; NaN and both infinities
        for pos, (row, col) in enumerate([(order[0], 0), (order[-1], 19), (order[5], 7),
                                          (order[35], 19), (order[44], 3)]):
            bad = p.X.copy()
            bad[row, col] = [np.nan, np.inf, -np.inf][pos % 3]
            with pytest.raises(core.NonFiniteRowsError, match="NaN or infinity"):
                epoch(bad, True)
            assert issubclass(core.NonFiniteRowsError, ValueError)
            epoch(bad, False)  # unchecked, the epoch runs through (meaningless values)
        # huge but finite values are finite
        huge = p.X.copy()
        huge[order[3]] = np.finfo(dtype).max
        epoch(huge, True)


def test_epoch_check_finite_needs_a_gathered_dense_x():
    p, params = _trainer_problem("log_loss", np.float64, n=20)
    trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    with pytest.raises(ValueError, match="check_finite needs"):
        trainer.run_epoch(p.X, p.Y, batch_size=5, check_finite=True)
    with pytest.raises(ValueError, match="check_finite needs"):
        trainer.run_epoch(core.csr_parts(sp.csr_matrix(p.X)), p.Y, batch_size=5,
                          order=np.arange(20, dtype=np.intp), check_finite=True)
    before = trainer.params.copy()
    with pytest.raises(ValueError, match="check_finite needs the rows gathered"):
        _kernels.train_epoch(
            np.asarray(p.sizes, dtype=np.intp), core.ACTIVATION_CODES["tanh"],
            core.LOSS_CODES["log_loss"], trainer.params, np.empty_like(before), p.X, p.Y,
            np.empty(0), np.empty(0, dtype=np.intp), 5, 0.0,
            np.empty(5 * sum(p.sizes[1:])), np.empty(5 * sum(p.sizes[1:])),
            np.empty((5, p.sizes[0])), np.empty((5, p.sizes[-1])), np.empty(5), 1,
            np.zeros_like(before), np.zeros_like(before), np.array([1e-3, 0, 0, .9, .999, 1e-8]),
            np.zeros(1, dtype=np.intp), np.empty(0), 1, check_finite=True)
    assert_array_equal(trainer.params, before)


def test_trainer_constructor_errors():
    sizes = [3, 4, 2]
    good = np.zeros(core.n_params(sizes))
    with pytest.raises(ValueError, match="solver must be"):
        core.Trainer(sizes, "tanh", "log_loss", good, "lbfgs")
    with pytest.raises(ValueError, match="activation must be one of"):
        core.Trainer(sizes, "softplus", "log_loss", good, "adam")
    with pytest.raises(ValueError, match="loss must be one of"):
        core.Trainer(sizes, "tanh", "hinge", good, "adam")
    with pytest.raises(ValueError, match="params must be 1-D of length 26"):
        core.Trainer(sizes, "tanh", "log_loss", np.zeros(25), "adam")
    with pytest.raises(TypeError, match="float32 or float64"):
        core.Trainer(sizes, "tanh", "log_loss", np.zeros(26, dtype=int), "adam")


def test_pack_order_matches_sklearn():
    from sklearn.neural_network._multilayer_perceptron import _pack

    coefs, intercepts = make_network((3, 4, 5, 2), seed=3)
    flat = core.pack(coefs, intercepts)
    assert_array_equal(flat, _pack(coefs, intercepts))
    assert core.n_params([3, 4, 5, 2]) == flat.size
    c, i = core.unpack(flat, [3, 4, 5, 2])
    for a, b in zip(c + i, coefs + intercepts):
        assert_array_equal(a, b)


def test_loss_gradient_object_reuse_has_no_stale_state(monkeypatch):
    """LossGradient (what L-BFGS calls) reuses its buffers: evaluating at another point
    in between must not change the result at the first one."""
    monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: 6)  # 3 blocks
    p = make_problem(n_samples=17, sizes=(3, 5, 4, 3), activation="relu", loss="log_loss",
                     alpha=0.3, weighted=True, seed=12)
    f = core.LossGradient(p.sizes, p.X, p.Y, activation="relu", loss="log_loss", alpha=0.3,
                          sample_weight=p.sample_weight)
    x1 = p.flat()
    x2 = x1 + np.random.default_rng(0).normal(size=x1.size)
    v1, g1 = f(x1)
    v2, g2 = f(x2)
    v1b, g1b = f(x1)
    assert v1 == v1b and np.array_equal(g1, g1b)
    assert not np.allclose(g1, g2)
    assert g1.dtype == np.float64 and isinstance(v1, float)
    ref = p.call(reference)
    assert_allclose(v1, float(ref[0]), rtol=1e-12)
    assert_allclose(g1, flat_grad(ref), rtol=1e-10, atol=1e-13)


def test_loss_and_gradients_reuses_scratch_but_never_the_returned_gradient():
    """Successive calls of one shape reuse the parameter vector and workspaces (the
    same buffers, checked by identity) but hand back fresh gradient arrays: an earlier
    call's results stay as they were; shapes that differ get buffers of their own."""
    p = make_problem(n_samples=300, sizes=(7, 20, 3), activation="relu", loss="log_loss",
                     seed=31)
    q = make_problem(n_samples=300, sizes=(7, 20, 3), activation="relu", loss="log_loss",
                     seed=32)
    first = p.call(core)
    kept = (first[0], [g.copy() for g in first[1]], [g.copy() for g in first[2]])
    scratch = core._scratch.buffers
    second = q.call(core)
    assert core._scratch.buffers[0] is scratch[0]  # reused
    assert all(a is b for a, b in zip(core._scratch.buffers, scratch))
    assert first[0] == kept[0]
    for a, b in zip(first[1] + first[2], kept[1] + kept[2]):
        assert_array_equal(a, b)  # the first call's gradient was not overwritten
    assert not np.shares_memory(first[1][0], second[1][0])
    for res, prob in ((first, p), (second, q)):
        ref = prob.call(reference)
        assert_allclose(res[0], ref[0], rtol=1e-12)
        assert_allclose(flat_grad(res), flat_grad(ref), rtol=1e-10, atol=1e-13)
    # another shape: new buffers, and its results still right
    r = make_problem(n_samples=40, sizes=(7, 9, 3), activation="tanh", loss="log_loss", seed=33)
    third = r.call(core)
    assert core._scratch.buffers[0] is not scratch[0]
    assert_allclose(flat_grad(third), flat_grad(r.call(reference)), rtol=1e-10, atol=1e-13)


def test_concurrent_calls_from_threads():
    """The kernels release the GIL: concurrent calls on different data must give the same
    results as serial ones (no shared scratch)."""
    from concurrent.futures import ThreadPoolExecutor

    problems = [make_problem(n_samples=300, sizes=(6, 30, 20, 3), activation=act, loss="log_loss",
                             alpha=0.1, weighted=True, seed=i)
                for i, act in enumerate(ACTIVATIONS * 2)]

    def work(p):
        res = p.call(core)
        trainer = core.Trainer(p.sizes, p.activation, p.loss, p.flat(), **SOLVERS["adam"])
        acc = trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=0.1, sample_weight=p.sample_weight)
        return res, acc, trainer.params.copy()

    serial = [work(p) for p in problems]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            concurrent = list(ex.map(work, problems))
            for (r1, a1, p1), (r2, a2, p2) in zip(serial, concurrent):
                assert_result_close(r2, r1, **REORDER_TOL[np.float64])
                assert_allclose(a2, a1, rtol=1e-12)
                assert_allclose(p2, p1, rtol=1e-10, atol=1e-13)


# =======================================================================================
# sparse (CSR) first layer: same results as the dense X it stores
# =======================================================================================

def _sparse_problem(loss, dtype, sizes, n=23, weighted=True, seed=0, fmt="csr"):
    import scipy.sparse as sp

    p = make_problem(n_samples=n, sizes=sizes, activation="tanh", loss=loss, dtype=dtype,
                     alpha=0.4, weighted=weighted, seed=seed)
    rng = np.random.default_rng(seed)
    X = p.X * (rng.uniform(size=p.X.shape) < 0.4)
    X[2] = 0.0  # an empty row
    p.X = np.ascontiguousarray(X, dtype=dtype)
    Xs = sp.csr_matrix(p.X) if fmt == "csr" else sp.csc_matrix(p.X)
    assert Xs.dtype == dtype and Xs.nnz < p.X.size
    return p, Xs


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("sizes", [(5, 3), (5, 4, 3), (5, 4, 3, 3)], ids=["glm", "1h", "2h"])
@pytest.mark.parametrize("loss", LOSSES)
def test_sparse_loss_gradient_equals_dense(monkeypatch, loss, sizes, dtype):
    sizes = (*sizes[:-1], N_OUT[loss])
    p, Xs = _sparse_problem(loss, dtype, sizes, seed=seed_of("csr", loss, sizes))
    params = p.flat().astype(dtype)
    ref = p.call(reference)
    for block in (None, 4):
        if block is not None:
            monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: block)
        kw = dict(activation="tanh", loss=loss, alpha=0.4, sample_weight=p.sample_weight)
        dense = core.LossGradient(p.sizes, p.X, p.Y, **kw)
        sparse = core.LossGradient(p.sizes, Xs, p.Y, **kw)
        v_d, g_d = dense(params)
        v_s, g_s = sparse(params)
        t = REORDER_TOL[dtype]
        assert_allclose(v_s, v_d, rtol=t["rtol"])
        assert_allclose(g_s, g_d, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(g_d).max())
        assert_allclose(v_s, float(ref[0]), rtol=tol(dtype)["rtol"])
        assert_allclose(g_s, flat_grad(ref), rtol=tol(dtype)["rtol"],
                        atol=tol(dtype)["atol_factor"] * np.abs(g_d).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "non-canonical"])
def test_sparse_forward_equals_dense(monkeypatch, fmt, dtype):
    import scipy.sparse as sp

    p, Xs = _sparse_problem("log_loss", dtype, (5, 4, 3), n=30, fmt="csc" if fmt == "csc" else "csr")
    if fmt == "non-canonical":
        # the same matrix with unsorted, duplicated entries
        coo = Xs.tocoo()
        half = (coo.data / 2).astype(dtype)
        rev = np.arange(coo.nnz)[::-1]
        Xs = sp.csr_matrix((np.concatenate([half, half[rev]]),
                            (np.concatenate([coo.row, coo.row[rev]]),
                             np.concatenate([coo.col, coo.col[rev]]))), shape=Xs.shape)
        Xs.has_canonical_format = False
        assert_allclose(Xs.toarray(), p.X, rtol=1e-6)
    params = p.flat().astype(dtype)
    for block in (None, 7):
        if block is not None:
            monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: block)
        out_s = core.forward_flat(params, p.sizes, Xs, activation="tanh", loss="log_loss")
        out_d = core.forward_flat(params, p.sizes, p.X, activation="tanh", loss="log_loss")
        t = REORDER_TOL[dtype]
        assert out_s.dtype == dtype and out_s.shape == (30, 3)
        assert_allclose(out_s, out_d, rtol=t["rtol"] * 10, atol=t["atol_factor"] * 10)
    # and the raw kernel on the non-canonical structure itself
    if fmt == "non-canonical":
        out = np.empty((30, 3), dtype)
        acts = np.empty(30 * 7, dtype)
        _kernels.forward_csr(np.asarray(p.sizes, np.intp), 2, 2, params, Xs.data,
                             Xs.indices.astype(np.intp), Xs.indptr.astype(np.intp), out, acts, 30)
        assert_allclose(out, out_d, rtol=REORDER_TOL[dtype]["rtol"] * 10,
                        atol=REORDER_TOL[dtype]["atol_factor"] * 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("order_kind", ["in-order", "permutation", "subset"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_sparse_trainer_equals_dense(solver, order_kind, dtype):
    p, Xs = _sparse_problem("binary_log_loss", dtype, (5, 6, 2), n=30,
                            seed=seed_of("csrtr", solver, order_kind))
    params = p.flat().astype(dtype)
    rng = np.random.default_rng(0)
    order = {"in-order": None, "permutation": rng.permutation(30),
             "subset": rng.permutation(30)[:17]}[order_kind]
    order = None if order is None else order.astype(np.intp)
    dense = core.Trainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS[solver])
    sparse = core.Trainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS[solver])
    expect = NumpyTrainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS[solver])
    parts = core.csr_parts(Xs)
    for epoch in range(2):
        kw = dict(batch_size=7, alpha=0.2, sample_weight=p.sample_weight, order=order)
        acc_d = dense.run_epoch(p.X, p.Y, **kw)
        acc_s = sparse.run_epoch(parts, p.Y, **kw)
        acc_e = expect.run_epoch(p.X, p.Y, **kw)
        _assert_epoch_close(sparse.params, dense.params, dtype, f"epoch {epoch}")
        _assert_epoch_close(sparse.params, expect.params, dtype, f"epoch {epoch}")
        assert_allclose(acc_s, acc_d, rtol=EPOCH_TOL[dtype]["rtol"])
        assert_allclose(acc_s, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])


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
    ("unknown activation", ValueError, "activation must be one of", _set(activation="softplus")),
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
    ("unknown activation", ValueError, "activation must be one of", dict(activation="elu")),
    ("unknown loss", ValueError, "loss must be one of", dict(loss="huber")),
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
        try:
            return fn()
        finally:
            K._set_split_min_batch(old)
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
for nt in (1, 2, 0, 99):  # the team size is clamped to 1..2
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
case("lg activation 4", lambda: lg(activation=4))
case("lg loss -1", lambda: lg(loss=-1))
case("lg loss 4", lambda: lg(loss=4))
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
case("te activation 4", lambda: te(activation=4))
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


# =======================================================================================
# random architectures (hypothesis)
# =======================================================================================

@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n_samples=st.integers(1, 20),
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    activation=st.sampled_from(ACTIVATIONS),
    loss=st.sampled_from(LOSSES),
    dtype=st.sampled_from(DTYPES),
    alpha=st.sampled_from([0.0, 1e-3, 2.0]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_architectures_match_reference(n_samples, sizes, activation, loss, dtype, alpha,
                                              weighted, seed):
    if loss == "log_loss":
        sizes[-1] = max(2, sizes[-1])
    p = make_problem(n_samples=n_samples, sizes=sizes, activation=activation, loss=loss,
                     dtype=dtype, alpha=alpha, weighted=weighted, seed=seed)
    if weighted and not p.sample_weight.sum() > 0:
        return
    got = p.call(core)
    check_result_types(got, p)
    assert_result_close(got, p.call(reference), **tol(dtype))


def _subnormals_survive():
    """True while this thread's FPU keeps subnormal results (no flush-to-zero)."""
    tiny = np.array([np.finfo(np.float64).tiny], dtype=np.float64)
    return bool((tiny / 4)[0] != 0) and bool((tiny.astype(np.float32) * 0 + np.float32(1e-40))[0] != 0)


def test_epoch_flushes_subnormals_and_restores_the_fpu():
    """Weights that only the L2 term acts on (a constant-zero feature) decay
    geometrically; the epoch driver flushes subnormals to zero so they reach exactly 0
    instead of crawling through the slow subnormal range, and restores the caller's
    floating-point state afterwards."""
    assert _subnormals_survive()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    X[:, 1] = 0.0  # no data gradient for the weights of feature 1
    Y = (rng.uniform(size=(40, 1)) < 0.5).astype(float)
    sizes = [3, 4, 1]
    params = np.zeros(core.n_params(sizes))
    coefs, _ = core.unpack(params, sizes)
    coefs[0][...] = 1e-305
    coefs[1][...] = 0.5
    trainer = core.Trainer(sizes, "tanh", "binary_log_loss", params, "sgd",
                           learning_rate=0.5, momentum=0.0)
    for _ in range(40):  # x (1 - lr * alpha / n) = x 0.75 per epoch: 1e-305 -> ~1e-310
        trainer.run_epoch(X, Y, batch_size=40, alpha=20.0)
        assert _subnormals_survive()
    tiny = np.finfo(np.float64).tiny
    w = coefs[0][1]
    # flushed: the weights (and their updates) never enter the subnormal range
    assert np.all((w == 0.0) | (np.abs(w) >= tiny)), w
    assert np.all(np.abs(w) < 1e-305)  # they did decay
    assert np.isfinite(params).all()
    # the same decay in plain NumPy does go subnormal: the case above is exercised
    x = np.full(4, 1e-305)
    for _ in range(40):
        x = x - 0.5 * (20.0 * x / 40)
    assert np.all((x != 0) & (np.abs(x) < tiny))
