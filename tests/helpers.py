"""What the tests share: problems and tolerances, an independent second opinion on
the maths, the NumPy training loop the compiled epochs are held to, and the plumbing
for threads and subprocesses.

The maths helpers (forward pass, packing, losses) are independent of ``fastprop``
itself (own formulas, from scipy), so that the tests can use them as a second opinion.
"""

import contextlib
import os
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import expit, log_softmax, ndtr, softmax, xlogy

import fastprop.core as core
from fastprop import reference
from fastprop.core import _kernels

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
LOSSES = ("squared_error", "poisson", "log_loss", "binary_log_loss")
DTYPES = (np.float64, np.float32)

# Tolerances, in one place. ``rtol`` is relative per entry; ``atol_factor`` is multiplied
# by the largest magnitude among the expected values of the quantity being compared
# (gradients of a whole network, a loss, an output matrix) to give ``atol``.
TOL = {
    # core vs reference at the same inputs
    np.float64: dict(rtol=1e-10, atol_factor=1e-12),
    np.float32: dict(rtol=1e-4, atol_factor=1e-5),
}
# reference / core (float64) vs 4th-order central finite differences
FD_STEP = 1e-3
FD_TOL = dict(rtol=1e-6, atol_factor=1e-8)
# core float32 vs float64 finite differences at the same (float32) point
FD32_TOL = dict(rtol=1e-3, atol_factor=1e-4)
# same computation, different blocking / threading / memory layout (float64)
REORDER_TOL = {np.float64: dict(rtol=1e-12, atol_factor=1e-14),
               np.float32: dict(rtol=1e-5, atol_factor=1e-6)}
# whole training epochs: core Trainer vs a NumPy loop over the reference
EPOCH_TOL = {np.float64: dict(rtol=1e-9, atol_factor=1e-11),
             np.float32: dict(rtol=2e-4, atol_factor=2e-5)}


def tol(dtype):
    return TOL[np.dtype(dtype).type]


# -- networks and data ------------------------------------------------------------------

def out_activation(loss):
    return {"squared_error": "identity", "poisson": "exp", "log_loss": "softmax",
            "binary_log_loss": "logistic"}[loss]


def make_network(sizes, dtype=np.float64, seed=0, scale=1.0):
    """Random layers (coefs, intercepts) for ``sizes = [n_in, *hidden, n_out]``."""
    rng = np.random.default_rng(seed)
    coefs, intercepts = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        coefs.append((scale * rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype))
        intercepts.append((0.5 * scale * rng.normal(size=n_out)).astype(dtype))
    return coefs, intercepts


def make_targets(rng, loss, n_samples, n_outputs, dtype=np.float64):
    """Valid targets for ``loss``: real, non-negative counts, one-hot rows, 0/1."""
    if loss == "squared_error":
        Y = rng.normal(size=(n_samples, n_outputs))
    elif loss == "poisson":
        Y = rng.poisson(1.5, size=(n_samples, n_outputs)).astype(float)
        Y.flat[0] = 0.0  # y = 0 exercises the 0 log 0 = 0 convention
        if Y.size > 1:
            Y.flat[1] = 3.0
    elif loss == "log_loss":
        assert n_outputs >= 2
        Y = np.zeros((n_samples, n_outputs))
        Y[np.arange(n_samples), rng.integers(0, n_outputs, n_samples)] = 1.0
    elif loss == "binary_log_loss":
        Y = rng.integers(0, 2, size=(n_samples, n_outputs)).astype(float)
    else:
        raise ValueError(loss)
    return np.ascontiguousarray(Y, dtype=dtype)


def make_weights(rng, n_samples, dtype=np.float64):
    w = rng.uniform(0.2, 3.0, size=n_samples)
    if n_samples >= 3:
        w[1] = 0.0  # a zero weight must remove the sample entirely
    return w.astype(dtype)


@dataclass
class Problem:
    coefs: list
    intercepts: list
    X: np.ndarray
    Y: np.ndarray
    activation: str
    loss: str
    alpha: float = 0.0
    sample_weight: np.ndarray = None
    sizes: list = field(default_factory=list)

    @property
    def dtype(self):
        return self.X.dtype

    def kwargs(self):
        return dict(activation=self.activation, loss=self.loss, alpha=self.alpha,
                    sample_weight=self.sample_weight)

    def args(self):
        return (self.coefs, self.intercepts, self.X, self.Y)

    def call(self, module, **overrides):
        kw = self.kwargs()
        kw.update(overrides)
        return module.loss_and_gradients(*self.args(), **kw)

    def astype(self, dtype):
        return Problem(
            [W.astype(dtype) for W in self.coefs], [b.astype(dtype) for b in self.intercepts],
            self.X.astype(dtype), self.Y.astype(dtype), self.activation, self.loss,
            self.alpha, None if self.sample_weight is None else self.sample_weight.astype(dtype),
            list(self.sizes),
        )

    def flat(self):
        return flat_pack(self.coefs, self.intercepts)


def make_problem(n_samples=10, sizes=(3, 4, 2), activation="tanh", loss="squared_error",
                 dtype=np.float64, seed=0, alpha=0.0, weighted=False, x_scale=1.0,
                 relu_margin=None, max_tries=500):
    """A random network and valid data.

    With ``relu_margin``, seeds are tried from ``seed`` on until every hidden
    pre-activation is at least that far from 0 (so finite differences do not cross a
    relu kink); the returned problem satisfies it, or this raises.
    """
    sizes = list(sizes)
    for attempt in range(max_tries):
        s = seed + 7919 * attempt
        rng = np.random.default_rng(s)
        coefs, intercepts = make_network(sizes, np.float64, seed=s + 1)
        X = x_scale * rng.normal(size=(n_samples, sizes[0]))
        if relu_margin is not None:
            Zs = hidden_preactivations(coefs, intercepts, X, activation)
            if Zs and min(np.abs(Z).min() for Z in Zs) < relu_margin:
                continue
        Y = make_targets(rng, loss, n_samples, sizes[-1])
        w = make_weights(rng, n_samples) if weighted else None
        p = Problem(coefs, intercepts, X, Y, activation, loss, alpha, w, sizes)
        return p.astype(dtype)
    raise RuntimeError("no seed gave a problem with the requested relu margin")


# -- an independent forward pass and loss ----------------------------------------------

def _act(Z, name):
    if name == "identity":
        return Z
    if name == "logistic":
        return expit(Z)
    if name == "tanh":
        return np.tanh(Z)
    if name == "relu":
        return np.maximum(Z, 0)
    if name == "exp":
        return np.exp(Z)
    if name == "softmax":
        return softmax(Z, axis=1)
    # fastprop's own activations, from their formulas (independent of the reference)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, 0.01 * Z)
    if name == "elu":
        return np.where(Z > 0, Z, np.expm1(np.minimum(Z, 0)))
    if name == "softplus":
        return np.logaddexp(0, Z)
    if name == "gelu":
        # 0.5 z (1 + erf(z / sqrt 2)) = z Phi(z), Phi (ndtr) accurate in both tails
        return Z * ndtr(Z)
    if name == "silu":
        return Z * expit(Z)
    raise ValueError(name)


def hidden_preactivations(coefs, intercepts, X, activation):
    Zs, A = [], X
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        Z = A @ W + b
        Zs.append(Z)
        A = _act(Z, activation)
    return Zs


def np_logits(coefs, intercepts, X, activation):
    """Output pre-activation Z_L, in float64."""
    A = np.asarray(X, dtype=np.float64)
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        A = _act(A @ W.astype(np.float64) + b.astype(np.float64), activation)
    return A @ coefs[-1].astype(np.float64) + intercepts[-1].astype(np.float64)


def np_forward(coefs, intercepts, X, activation, loss):
    return _act(np_logits(coefs, intercepts, X, activation), out_activation(loss))


def np_loss(coefs, intercepts, X, Y, activation, loss, alpha=0.0, sample_weight=None):
    """The documented loss, written independently (scipy special functions), float64."""
    Z = np_logits(coefs, intercepts, X, activation)
    Y = np.asarray(Y, dtype=np.float64)
    if loss == "squared_error":
        per = 0.5 * ((Z - Y) ** 2).sum(axis=1)
    elif loss == "poisson":
        per = (xlogy(Y, Y) - Y * Z - Y + np.exp(Z)).sum(axis=1)
    elif loss == "log_loss":
        per = -(Y * log_softmax(Z, axis=1)).sum(axis=1)
    elif loss == "binary_log_loss":
        per = (Y * np.logaddexp(0, -Z) + (1 - Y) * np.logaddexp(0, Z)).sum(axis=1)
    else:
        raise ValueError(loss)
    w = np.ones(len(per)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    s = w.sum()
    penalty = 0.5 * alpha * sum(float((W.astype(np.float64) ** 2).sum()) for W in coefs)
    return float((w * per).sum() / s + penalty / s)


# -- packing (scikit-learn's _pack order), written independently ------------------------

def flat_pack(coefs, intercepts):
    return np.concatenate([np.ravel(a) for a in list(coefs) + list(intercepts)])


def flat_unpack(flat, sizes):
    coefs, intercepts, pos = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        coefs.append(flat[pos:pos + n_in * n_out].reshape(n_in, n_out))
        pos += n_in * n_out
    for n_out in sizes[1:]:
        intercepts.append(flat[pos:pos + n_out])
        pos += n_out
    assert pos == flat.size
    return coefs, intercepts


# -- comparisons ------------------------------------------------------------------------

def grad_scale(coef_grads, intercept_grads):
    return max(float(np.max(np.abs(g))) for g in list(coef_grads) + list(intercept_grads))


def assert_result_close(got, expected, rtol, atol_factor, err_msg=""):
    """Compare two ``(loss, coef_grads, intercept_grads)`` results entry by entry."""
    loss_g, cg_g, ig_g = got
    loss_e, cg_e, ig_e = expected
    np.testing.assert_allclose(
        float(loss_g), float(loss_e), rtol=rtol, atol=atol_factor * abs(float(loss_e)),
        err_msg=f"loss {err_msg}",
    )
    assert len(cg_g) == len(cg_e) and len(ig_g) == len(ig_e)
    atol = atol_factor * grad_scale(cg_e, ig_e)
    for l, (a, b) in enumerate(zip(cg_g, cg_e)):
        assert a.shape == b.shape, (l, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"coef_grads[{l}] {err_msg}")
    for l, (a, b) in enumerate(zip(ig_g, ig_e)):
        assert a.shape == b.shape, (l, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                   err_msg=f"intercept_grads[{l}] {err_msg}")


def fd_gradient(f, x, h=FD_STEP, on_point=None):
    """4th-order central differences of scalar ``f`` at flat ``x`` (float64).

    ``on_point(x_perturbed)`` is called at every evaluation point if given (used to
    assert that no relu pre-activation changes sign).
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.empty_like(x)
    for i in range(x.size):
        vals = []
        for k in (2, 1, -1, -2):
            xp = x.copy()
            xp[i] += k * h
            if on_point is not None:
                on_point(xp)
            vals.append(float(f(xp)))
        g[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


# -- shared by the core tests ---------------------------------------------------------

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


def kernel_loss_grad(p, rows, fill=np.nan, n_threads=1):
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


SOLVERS = {
    "adam": dict(solver="adam", learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
    "sgd": dict(solver="sgd", learning_rate=0.05, momentum=0.9, nesterov=False),
    "sgd-nesterov": dict(solver="sgd", learning_rate=0.05, momentum=0.9, nesterov=True),
    "sgd-plain": dict(solver="sgd", learning_rate=0.05, momentum=0.0, nesterov=False),
}


class NumpyTrainer:
    """What Trainer.run_epoch must do, written with fastprop.reference."""

    def __init__(self, sizes, activation, loss, params, solver, learning_rate, momentum=0.9,
                 nesterov=True, beta_1=0.9, beta_2=0.999, epsilon=1e-8, rho=0.9,
                 weight_decay=0.0):
        self.sizes, self.activation, self.loss, self.params = sizes, activation, loss, params
        self.solver, self.lr, self.momentum, self.nesterov = solver, learning_rate, momentum, nesterov
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.rho, self.weight_decay = rho, weight_decay
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
            elif self.solver == "rmsprop":
                reference.rmsprop_update(self.params, grads, self.state_1,
                                         learning_rate=self.lr, rho=self.rho,
                                         epsilon=self.epsilon)
            elif self.solver == "adamw":
                self.t += 1
                reference.adamw_update(
                    self.params, grads, self.state_1, self.state_2, t=self.t,
                    learning_rate=self.lr, beta_1=self.beta_1, beta_2=self.beta_2,
                    epsilon=self.epsilon, weight_decay=self.weight_decay,
                    n_coef=int(sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))))
            else:
                self.t += 1
                reference.adam_update(self.params, grads, self.state_1, self.state_2,
                                      t=self.t, learning_rate=self.lr, beta_1=self.beta_1,
                                      beta_2=self.beta_2, epsilon=self.epsilon)
        return acc


def trainer_problem(loss, dtype, activation="tanh", n=30, sizes=None, seed=0, weighted=False):
    sizes = list(sizes or (4, 6, 5, N_OUT[loss]))
    p = make_problem(n_samples=n, sizes=sizes, activation=activation, loss=loss, dtype=dtype,
                     weighted=weighted, seed=seed)
    return p, p.flat().astype(dtype)


def assert_epoch_close(a, b, dtype, what=""):
    t = EPOCH_TOL[np.dtype(dtype).type]
    assert_allclose(a, b, rtol=t["rtol"], atol=t["atol_factor"] * np.abs(b).max(), err_msg=what)


@contextlib.contextmanager


def kernel_setting(setter, value):
    """A benchmark hook of the kernels (a setter returning the old value) set for the
    block, restored after it."""
    old = setter(value)
    try:
        yield
    finally:
        setter(old)


@contextlib.contextmanager
def split_from(rows):
    """Split every minibatch of at least ``rows`` rows, sparse ones too (the production
    thresholds keep small test problems whole)."""
    with kernel_setting(_kernels._set_split_min_batch, rows), csr_split_from(0):
        yield


def csr_split_from(work):
    """Split sparse minibatches by rows from ``work`` up (see the kernel's
    CSR_SPLIT_MIN_WORK; the production threshold keeps small sparse problems whole)."""
    return kernel_setting(_kernels._set_csr_split_min_work, work)


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                  if i["user_api"] == "blas")


def units_from(work):
    """Cut whole minibatches by units from ``work`` = rows x n_params up (the production
    threshold keeps small test problems on one thread)."""
    return kernel_setting(_kernels._set_units_min_work, work)



# -- threads and subprocesses -------------------------------------------------------------

def run_in_threads(n, fn):
    """Run fn(i) in n threads released together by a barrier; return their results,
    re-raise the first failure."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def target(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def import_in_subprocess(module):
    """Python source that imports ``tests.<module>`` as ``t`` in a fresh interpreter
    without putting the repository root on sys.path (there, ``import fastprop`` would
    find the unbuilt source tree instead of the installed package)."""
    init = os.path.join(TESTS_DIR, "__init__.py")
    return (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('tests', {init!r}, "
        f"submodule_search_locations=[{TESTS_DIR!r}]); "
        "pkg = importlib.util.module_from_spec(spec); sys.modules['tests'] = pkg; "
        "spec.loader.exec_module(pkg); "
        f"import tests.{module} as t; "
    )
