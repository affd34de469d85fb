"""Sparse X: a CSR first layer gives the results of the dense X it stores, in the
loss and gradients, the forward pass and training epochs."""


import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastprop.core as core
from fastprop import reference
from fastprop.core import _kernels

from .helpers import (
    DTYPES,
    EPOCH_TOL,
    LOSSES,
    N_OUT,
    NumpyTrainer,
    REORDER_TOL,
    SOLVERS,
    assert_epoch_close,
    flat_grad,
    make_problem,
    seed_of,
    tol,
)


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
        assert_epoch_close(sparse.params, dense.params, dtype, f"epoch {epoch}")
        assert_epoch_close(sparse.params, expect.params, dtype, f"epoch {epoch}")
        assert_allclose(acc_s, acc_d, rtol=EPOCH_TOL[dtype]["rtol"])
        assert_allclose(acc_s, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
