"""The compiled core's maths against its specification: ``fastprop.core`` against
``fastprop.reference``, finite differences and scikit-learn, for every activation and
loss, float32 and float64, odd shapes and layouts, blocks of rows; numerical stability;
forward; the optimizer updates; random architectures (hypothesis)."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import fastprop.core as core
from fastprop import reference

from .helpers import (
    ACTIVATIONS,
    DTYPES,
    FD32_TOL,
    FD_TOL,
    HIDDEN,
    LOSSES,
    MODULES,
    N_OUT,
    Problem,
    REORDER_TOL,
    TOL,
    assert_result_close,
    check_result_types,
    fd_gradient,
    flat_grad,
    flat_pack,
    flat_unpack,
    hidden_preactivations,
    kernel_loss_grad,
    make_network,
    make_problem,
    make_targets,
    make_weights,
    np_forward,
    np_loss,
    out_activation,
    seed_of,
    sizes_for,
    split_from,
    tol,
)


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
            value, grads = kernel_loss_grad(p, rows, n_threads=2)
            value1, grads1 = kernel_loss_grad(p, rows, n_threads=1)
        assert value1 == value
        assert_array_equal(grads1, grads)
    else:
        value, grads = kernel_loss_grad(p, rows)
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
