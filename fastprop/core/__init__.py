"""fastprop's compiled backpropagation core.

The thin Python layer over ``fastprop.core._kernels``: it validates what a caller passes
(the same checks as ``fastprop.reference``), allocates every buffer once, and calls the
kernels, which then run without the GIL.

Public functions mirror ``fastprop.reference`` name for name:

- ``loss_and_gradients(coefs, intercepts, X, Y, *, activation, loss, alpha, sample_weight,
  huber_delta)``
- ``forward(coefs, intercepts, X, *, activation, loss)``
- ``input_gradients(coefs, intercepts, X, *, activation, loss)``
- ``sgd_update`` / ``adam_update`` / ``rmsprop_update`` / ``adamw_update`` on flat
  vectors
- ``dropout_mask(seed, batch, layer, n_rows, n_units, p, *, row0, unit0)``: the masks
  of training with dropout (``Trainer.run_epoch(dropout=..., dropout_seed=...)``)

and ``Trainer`` holds the buffers of one network's minibatch training and runs whole
epochs in compiled code (what the estimators are built on).
"""

import threading

import numpy as np
import scipy.sparse as sp

from .._validation import (
    KEEPS_Z,
    check_activation_loss,
    check_adam_hyper,
    check_adamw_hyper,
    check_epoch_args,
    check_forward_args,
    check_huber_delta,
    check_loss_args,
    check_rmsprop_hyper,
    check_sgd_hyper,
)
from . import _blas, _kernels
from ._blas import gemm_library
from ._team import blas_held, split_team

_blas.choose()  # which BLAS the products call, once, before any product

__all__ = [
    "loss_and_gradients",
    "forward",
    "input_gradients",
    "sgd_update",
    "adam_update",
    "rmsprop_update",
    "adamw_update",
    "Trainer",
    "dropout_mask",
    "LossGradient",
    "blas_held",
    "gemm_library",
    "pack",
    "unpack",
    "ACTIVATION_CODES",
    "LOSS_CODES",
    "NonFiniteRowsError",
]

from ..exceptions import NonFiniteRowsError  # noqa: E402 - re-exported, as before

# the codes the kernels take, defined once in csrc/fp_codes.h
ACTIVATION_CODES = _kernels.ACTIVATION_CODES
LOSS_CODES = _kernels.LOSS_CODES
SOLVER_CODES = _kernels.SOLVER_CODES

# Full-data passes (loss_and_gradients, forward) run in blocks of rows so that the
# activation workspace stays near this many entries, whatever n_samples is.
_BLOCK_ENTRIES = 1 << 20


def csr_parts(X):
    """(data, indices, indptr) of a sparse matrix as the kernels take them: CSR, C
    contiguous, indices and indptr as intp. CSC and other formats are converted (the
    sparse matrix is copied, never densified)."""
    X = X.tocsr() if X.format != "csr" else X
    if not X.has_canonical_format:
        # sum duplicates / sort indices on a copy; the caller's matrix is untouched
        X = X.copy()
        X.sum_duplicates()
    return (
        np.ascontiguousarray(X.data),
        np.ascontiguousarray(X.indices, dtype=np.intp),
        np.ascontiguousarray(X.indptr, dtype=np.intp),
    )


def _sizes_array(sizes):
    return np.asarray(sizes, dtype=np.intp)


def block_rows(sizes, n_samples):
    """Rows per block for a full-data pass over ``n_samples`` samples."""
    width = max(1, int(sum(sizes[1:])))
    return int(max(1, min(n_samples, max(64, _BLOCK_ENTRIES // width))))


def work_len(sizes, rows, activation):
    """Entries of an activation (or delta) workspace for blocks of ``rows`` rows:
    A_1..A_L, and for the activations that keep their pre-activation (gelu, silu) the
    hidden layers' Z_1..Z_{L-1} after them (Net.z_shift in the kernels)."""
    width = int(sum(sizes[1:]))
    if activation in KEEPS_Z:
        width += int(sum(sizes[1:-1]))
    return rows * width


def n_params(sizes):
    """Length of the flat parameter vector of a network with these layer sizes."""
    return int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + sum(sizes[1:]))


def pack(coefs, intercepts, out=None):
    """Flatten layers into one vector in scikit-learn's ``_pack`` order (W..., b...)."""
    arrays = list(coefs) + list(intercepts)
    total = sum(a.size for a in arrays)
    if out is None:
        out = np.empty(total, dtype=coefs[0].dtype)
    pos = 0
    for a in arrays:
        out[pos : pos + a.size] = a.ravel()
        pos += a.size
    return out


def unpack(flat, sizes):
    """Views of a flat vector as (coefs, intercepts) lists; no copies."""
    coefs, intercepts, pos = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        coefs.append(flat[pos : pos + n_in * n_out].reshape(n_in, n_out))
        pos += n_in * n_out
    for n_out in sizes[1:]:
        intercepts.append(flat[pos : pos + n_out])
        pos += n_out
    return coefs, intercepts


class LossGradient:
    """Loss and gradient of one network on fixed data, as a function of the flat
    parameter vector: what L-BFGS calls, with its workspaces allocated once.

    ``X``, ``Y`` (and ``sample_weight``) must already be C-contiguous arrays of one
    float dtype; ``fastprop.core.loss_and_gradients`` is the validating front door.
    """

    def __init__(self, sizes, X, Y, *, activation, loss, alpha=0.0, sample_weight=None,
                 scratch=None, huber_delta=1.0):
        self.sizes = _sizes_array(sizes)
        self.dtype = X.dtype
        self.n_samples = X.shape[0]
        if sp.issparse(X):
            self.X, self.X_csr = None, csr_parts(X)
        else:
            self.X, self.X_csr = np.ascontiguousarray(X), None
        self.Y = np.ascontiguousarray(Y, dtype=self.dtype)
        self.sample_weight = (
            np.empty(0, dtype=self.dtype)
            if sample_weight is None
            else np.ascontiguousarray(sample_weight, dtype=self.dtype)
        )
        self.activation = ACTIVATION_CODES[activation]
        self.loss = LOSS_CODES[loss]
        self.alpha = float(alpha)
        self.huber_delta = check_huber_delta(huber_delta)
        self.rows = block_rows(sizes, self.n_samples)
        # blocks of split_rows(rows) > 0 are cut in halves: two half-workspaces and a
        # second gradient buffer
        half = _kernels.split_rows(self.rows)
        work = (2 if half else 1) * work_len(sizes, half if half else self.rows, activation)
        n_p = n_params(sizes)
        self.grads = np.empty(n_p, dtype=self.dtype)
        # ``scratch``: (params, grads2, acts, deltas) of an earlier object to reuse when
        # they fit (see loss_and_gradients); they hold nothing between calls
        if scratch is not None and (
            scratch[0].dtype == self.dtype and scratch[0].shape[0] == n_p
            and scratch[1].shape[0] == (n_p if half else 0)
            and scratch[2].shape[0] == work
        ):
            self.params, self.grads2, self.acts, self.deltas = scratch
        else:
            self.params = np.empty(n_p, dtype=self.dtype)
            self.grads2 = np.empty(n_p if half else 0, dtype=self.dtype)
            self.acts = np.empty(work, dtype=self.dtype)
            self.deltas = np.empty(work, dtype=self.dtype)

    @property
    def scratch(self):
        """The buffers a later object may reuse (everything but the gradient)."""
        return self.params, self.grads2, self.acts, self.deltas

    def __call__(self, params):
        """Return (loss as float, gradient as a new float64 array) at ``params``."""
        self.params[...] = params
        value = self.compute()
        return value, self.grads.astype(np.float64)

    def compute(self):
        """Loss at ``self.params``; the gradient is left in ``self.grads``."""
        with split_team(2 if _kernels.split_rows(self.rows) else 1) as n_threads:
            if self.X_csr is not None:
                return _kernels.loss_grad_csr(
                    self.sizes, self.activation, self.loss, self.params, *self.X_csr,
                    self.Y, self.sample_weight, self.alpha, self.grads, self.acts,
                    self.deltas, self.rows, self.grads2, n_threads, self.huber_delta,
                )
            return _kernels.loss_grad(
                self.sizes, self.activation, self.loss, self.params, self.X, self.Y,
                self.sample_weight, self.alpha, self.grads, self.acts, self.deltas,
                self.rows, self.grads2, n_threads, self.huber_delta,
            )


def loss_and_gradients(
    coefs, intercepts, X, Y, *, activation, loss, alpha=0.0, sample_weight=None,
    huber_delta=1.0,
):
    """Compiled twin of :func:`fastprop.reference.loss_and_gradients`.

    Same arguments, same results to rounding; see the reference for the maths. X may
    be any layout (non-contiguous or Fortran-ordered input is copied to C order once).
    Returns ``(loss, coef_grads, intercept_grads)`` in the input dtype.
    """
    coefs, intercepts, X, Y, sample_weight, sizes, dtype = check_loss_args(
        coefs, intercepts, X, Y, activation, loss, alpha, sample_weight,
        huber_delta=huber_delta,
    )
    # The parameter vector and the workspaces are reused by the next call of the same
    # shape in this thread: fresh megabytes cost a page fault per 4 KiB on first touch,
    # about as long as the kernels themselves at W1's batch of 128 (the gradient, which
    # the caller keeps, is always new). They are taken out while in use, so a call made
    # meanwhile (from a signal handler) gets its own.
    scratch, _scratch.buffers = getattr(_scratch, "buffers", None), None
    f = LossGradient(
        sizes, X, Y, activation=activation, loss=loss, alpha=alpha,
        sample_weight=sample_weight, scratch=scratch, huber_delta=huber_delta,
    )
    pack(coefs, intercepts, out=f.params)
    value = f.compute()
    _scratch.buffers = f.scratch
    coef_grads, intercept_grads = unpack(f.grads, sizes)
    return dtype.type(value), coef_grads, intercept_grads


_scratch = threading.local()  # per thread: the last loss_and_gradients call's buffers


def forward(coefs, intercepts, X, *, activation, loss):
    """Compiled twin of :func:`fastprop.reference.forward`: the network's output."""
    coefs, intercepts, X, sizes, dtype = check_forward_args(
        coefs, intercepts, X, activation, loss
    )
    return forward_flat(pack(coefs, intercepts), sizes, X, activation=activation, loss=loss)


def forward_flat(params, sizes, X, *, activation, loss):
    """``forward`` on a flat parameter vector, for callers that validated already.

    X is a dense array or a scipy sparse matrix of ``params``'s dtype."""
    n = X.shape[0]
    out = np.empty((n, sizes[-1]), dtype=params.dtype)
    if n == 0:
        return out
    rows = block_rows(sizes, n)
    acts = np.empty(work_len(sizes, rows, activation), dtype=params.dtype)
    args = (_sizes_array(sizes), ACTIVATION_CODES[activation], LOSS_CODES[loss], params)
    if sp.issparse(X):
        _kernels.forward_csr(*args, *csr_parts(X), out, acts, rows)
    else:
        _kernels.forward(*args, np.ascontiguousarray(X), out, acts, rows)
    return out


def input_gradients(coefs, intercepts, X, *, activation, loss):
    """Compiled twin of :func:`fastprop.reference.input_gradients`: d P[i, k] / d X[i, j]
    as an array of shape (n_samples, n_outputs, n_features)."""
    coefs, intercepts, X, sizes, dtype = check_forward_args(
        coefs, intercepts, X, activation, loss
    )
    return input_gradients_flat(pack(coefs, intercepts), sizes, X, activation=activation,
                                loss=loss)


def input_gradients_flat(params, sizes, X, *, activation, loss):
    """``input_gradients`` on a flat parameter vector, for callers that validated
    already. X is a dense array or a scipy sparse matrix of ``params``'s dtype. One
    forward pass per block of rows and one backward pass per output, without the GIL."""
    n = X.shape[0]
    out = np.empty((n, sizes[-1], sizes[0]), dtype=params.dtype)
    if n == 0:
        return out
    rows = block_rows(sizes, n)
    work = work_len(sizes, rows, activation)
    acts = np.empty(work, dtype=params.dtype)
    deltas = np.empty(work, dtype=params.dtype)
    colsum = np.empty(max([1, *sizes[1:-1]]), dtype=params.dtype)
    args = (_sizes_array(sizes), ACTIVATION_CODES[activation], LOSS_CODES[loss], params)
    if sp.issparse(X):
        _kernels.input_grad_csr(*args, *csr_parts(X), out, acts, deltas, colsum, rows)
    else:
        _kernels.input_grad(*args, np.ascontiguousarray(X), out, acts, deltas, colsum,
                            rows)
    return out


def _flat_dtype(params):
    """The dtype of an optimizer step's flat vectors: ``params``'s, float32 or float64."""
    dtype = np.asarray(params).dtype
    if dtype.type not in (np.float32, np.float64):
        raise TypeError(f"params must be float32 or float64, got {dtype}.")
    return dtype


def _check_flat(dtype, **arrays):
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype != dtype:
            raise TypeError(f"{name} must be a 1-D {dtype} array.")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be contiguous.")


def sgd_update(params, grads, velocity, *, learning_rate, momentum, nesterov):
    """Compiled twin of :func:`fastprop.reference.sgd_update` (in place)."""
    dtype = _flat_dtype(params)
    _check_flat(dtype, params=params, grads=grads, velocity=velocity)
    learning_rate, momentum = check_sgd_hyper(learning_rate, momentum)
    _kernels.sgd_update(
        params, grads, velocity, learning_rate=learning_rate, momentum=momentum,
        nesterov=bool(nesterov),
    )


def adam_update(params, grads, m, v, *, t, learning_rate, beta_1, beta_2, epsilon):
    """Compiled twin of :func:`fastprop.reference.adam_update` (in place)."""
    dtype = _flat_dtype(params)
    _check_flat(dtype, params=params, grads=grads, m=m, v=v)
    t, learning_rate, beta_1, beta_2, epsilon = check_adam_hyper(
        t, learning_rate, beta_1, beta_2, epsilon
    )
    _kernels.adam_update(
        params, grads, m, v, t=t, learning_rate=learning_rate, beta_1=beta_1,
        beta_2=beta_2, epsilon=epsilon,
    )


def rmsprop_update(params, grads, v, *, learning_rate, rho, epsilon):
    """Compiled twin of :func:`fastprop.reference.rmsprop_update` (in place)."""
    dtype = _flat_dtype(params)
    _check_flat(dtype, params=params, grads=grads, v=v)
    learning_rate, rho, epsilon = check_rmsprop_hyper(learning_rate, rho, epsilon)
    _kernels.rmsprop_update(params, grads, v, learning_rate=learning_rate, rho=rho,
                            epsilon=epsilon)


def adamw_update(params, grads, m, v, *, t, learning_rate, beta_1, beta_2, epsilon,
                 weight_decay, n_coef):
    """Compiled twin of :func:`fastprop.reference.adamw_update` (in place)."""
    dtype = _flat_dtype(params)
    _check_flat(dtype, params=params, grads=grads, m=m, v=v)
    t, learning_rate, beta_1, beta_2, epsilon, weight_decay = check_adamw_hyper(
        t, learning_rate, beta_1, beta_2, epsilon, weight_decay
    )
    if isinstance(n_coef, (bool, np.bool_)) or not isinstance(n_coef, (int, np.integer)):
        raise TypeError(f"n_coef must be an integer, got {n_coef!r}.")
    if not 0 <= n_coef <= params.shape[0]:
        raise ValueError(f"n_coef must be in [0, {params.shape[0]}], got {n_coef}.")
    _kernels.adamw_update(
        params, grads, m, v, t=t, learning_rate=learning_rate, beta_1=beta_1,
        beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay, n_coef=int(n_coef),
    )


# the solvers whose state has a second array (state_2): Adam's and AdamW's second
# moment; SGD's velocity and RMSprop's mean square are state_1
_TWO_STATE = ("adam", "adamw")
def dropout_mask(seed, batch, layer, n_rows, n_units, p, *, row0=0, unit0=0):
    """The dropout mask a training epoch draws (``fastprop.reference.dropout_mask``):
    a bool array (n_rows, n_units), True where unit ``unit0 + j`` of hidden layer
    ``layer`` (from 0) is kept in row ``row0 + i`` of minibatch ``batch`` of the epoch
    whose seed is ``seed``."""
    return _kernels.dropout_mask(int(seed) % 2**64, batch, layer, n_rows, n_units,
                                 float(p), row0=row0, unit0=unit0)


def _dropout_rates(dropout, n_hidden):
    """``dropout`` as the kernels take it: a float64 array of one rate per hidden layer,
    or None when no layer drops."""
    if dropout is None:
        return None
    rates = np.array(dropout, dtype=np.float64).reshape(-1)
    if rates.shape[0] != n_hidden:
        raise ValueError(
            f"dropout must hold one rate per hidden layer ({n_hidden}), got {rates.shape[0]}."
        )
    if not np.all((rates >= 0) & (rates < 1)):
        raise ValueError(f"dropout rates must be in [0, 1), got {rates.tolist()}.")
    return rates if np.any(rates > 0) else None


class Trainer:
    """Minibatch training of one network: optimizer state plus scratch buffers.

    ``params`` is the caller's flat parameter vector (coefs_ / intercepts_ are views of
    it) and is updated in place. The optimizer state (velocity, or Adam's moments and
    step count) lives here and survives pickling; the scratch buffers do not (they are
    rebuilt on the next epoch).

    Parameters
    ----------
    sizes : sequence of int, ``[n_features, *hidden, n_outputs]``
    activation, loss : names, as in ``loss_and_gradients``
    params : float32 or float64 1-D array of length ``n_params(sizes)``
    solver : {'sgd', 'adam', 'rmsprop', 'adamw'}
    learning_rate : float (current rate; SGD schedules change it between epochs)
    momentum, nesterov : SGD's
    beta_1, beta_2, epsilon : Adam's and AdamW's (epsilon: RMSprop's too)
    rho : RMSprop's decay of the mean square
    weight_decay : AdamW's decoupled weight decay lambda (the weights, not the
        intercepts, shrink by ``1 - learning_rate * weight_decay`` each step); AdamW's
        epochs then run with ``alpha=0``
    max_grad_norm : float > 0 or None
        Clip each minibatch's gradient to this global L2 norm (None: no clipping).
    huber_delta : float > 0, loss='huber''s delta (kept, and pickled, for every loss)
    """

    def __init__(
        self, sizes, activation, loss, params, solver, *, learning_rate=0.001,
        momentum=0.9, nesterov=True, beta_1=0.9, beta_2=0.999, epsilon=1e-8, rho=0.9,
        weight_decay=0.0, max_grad_norm=None, huber_delta=1.0,
    ):
        check_activation_loss(activation, loss)
        self.huber_delta = check_huber_delta(huber_delta)
        if solver not in SOLVER_CODES:
            raise ValueError(
                f"solver must be one of {sorted(SOLVER_CODES)}, got {solver!r}."
            )
        self.sizes = [int(s) for s in sizes]
        if not isinstance(params, np.ndarray) or params.dtype.type not in (
            np.float32, np.float64
        ):
            raise TypeError("params must be a float32 or float64 array.")
        if params.ndim != 1 or params.shape[0] != n_params(self.sizes):
            raise ValueError(
                f"params must be 1-D of length {n_params(self.sizes)}, got {params.shape}."
            )
        self.params = params
        self.dtype = params.dtype
        self.activation = activation
        self.loss = loss
        self.solver = solver
        self.hyper = np.array(
            [learning_rate, momentum, float(bool(nesterov)), beta_1, beta_2, epsilon,
             rho, weight_decay],
            dtype=np.float64,
        )
        self.state_1 = np.zeros_like(params)
        self.state_2 = (np.zeros_like(params) if solver in _TWO_STATE
                        else np.empty(0, params.dtype))
        self.counter = np.zeros(1, dtype=np.intp)
        self.max_grad_norm = max_grad_norm
        self._batch = 0

    @property
    def learning_rate(self):
        return float(self.hyper[0])

    @learning_rate.setter
    def learning_rate(self, value):
        self.hyper[0] = value

    def _huber_delta(self):
        # a Trainer pickled before huber_delta existed has none: the default
        return getattr(self, "huber_delta", 1.0)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_grads", "_grads2", "_acts", "_deltas", "_x_buf", "_y_buf", "_sw_buf"):
            state.pop(name, None)
        state["_batch"] = 0
        # the owner of the parameters pickles them; it re-attaches them before training
        state["params"] = None
        return state

    def _ensure_buffers(self, batch_size, partition):
        # Minibatches split by rows into K parts (see _kernels.epoch_partition) need K
        # part workspaces and K - 1 more gradient buffers. Buffers only grow: capacity
        # is the max of all needs.
        sizes, dt = self.sizes, self.dtype
        kind, parts, rows = partition
        work = (parts * work_len(sizes, rows, self.activation) if kind == "rows"
                else work_len(sizes, batch_size, self.activation))
        n_g2 = (parts - 1) * n_params(sizes) if kind == "rows" else 0
        if self._batch and (batch_size <= self._batch and work <= self._acts.shape[0]
                            and n_g2 <= self._grads2.shape[0]):
            return
        if self._batch:
            batch_size = max(batch_size, self._batch)
            work = max(work, self._acts.shape[0])
            n_g2 = max(n_g2, self._grads2.shape[0])
        self._grads = np.empty(n_params(sizes), dtype=dt)
        self._grads2 = np.empty(n_g2, dtype=dt)
        self._acts = np.empty(work, dtype=dt)
        self._deltas = np.empty(work, dtype=dt)
        self._x_buf = np.empty((batch_size, sizes[0]), dtype=dt)
        self._y_buf = np.empty((batch_size, sizes[-1]), dtype=dt)
        self._sw_buf = np.empty(batch_size, dtype=dt)
        self._batch = batch_size

    def run_epoch(self, X, Y, *, batch_size, alpha=0.0, sample_weight=None, order=None,
                  check_input=True, check_finite=False, dropout=None, dropout_seed=0):
        """Train one epoch over (X, Y) in minibatches; return scikit-learn's
        accumulated loss (sum of batch loss x batch length).

        ``order`` (row indices: a permutation of ``range(n_samples)`` or a subset of
        it) visits those rows in that order, gathering each minibatch into a reused
        buffer; without it rows are taken in place, in order. X is an array of
        ``params``'s dtype, or the ``csr_parts`` tuple of a sparse X; Y is
        (n_samples, n_outputs).

        ``check_input=False`` skips the O(n) checks (finite values, types, index
        ranges) for callers that validated once per fit, as the estimators do; the
        compiled kernel still checks every shape and index it relies on.

        ``check_finite=True`` (dense X with ``order`` only) checks every row the epoch
        visits for NaN and infinity while gathering it, instead of a separate pass over
        X: an estimator that skipped its own check of X passes it when ``order`` visits
        every row. The epoch then runs to its end and raises ``NonFiniteRowsError`` (a
        ``ValueError``); the parameters and optimizer state are then meaningless, and
        the caller restores the ones it saved.

        ``dropout`` (one rate in [0, 1) per hidden layer, or None) trains with inverted
        dropout on the hidden layers' outputs, with the masks of
        ``fastprop.reference.dropout_mask`` for the epoch's ``dropout_seed`` (an integer
        in [0, 2**64)): the same for every partition and thread count.
        """
        if self.params is None:
            raise ValueError(
                "this Trainer was unpickled without its parameters: assign the flat "
                "parameter vector to .params before training"
            )
        if check_finite and (isinstance(X, tuple) or order is None):
            raise ValueError("check_finite needs a dense X and an order to gather by.")
        if check_input:
            X, Y, sample_weight, order, batch_size, alpha = check_epoch_args(
                self.sizes, self.dtype, self.loss, X, Y, batch_size, alpha,
                sample_weight, order,
            )
        if self.solver == "adamw" and alpha != 0:
            raise ValueError(
                "solver 'adamw' decays the weights by its weight_decay and has no L2 "
                f"term: run its epochs with alpha=0, got alpha={alpha!r}."
            )
        dropout = _dropout_rates(dropout, len(self.sizes) - 2)
        dropout_seed = int(dropout_seed)
        if not 0 <= dropout_seed < 2**64:
            raise ValueError(f"dropout_seed must be in [0, 2**64), got {dropout_seed}.")
        n = Y.shape[0] if order is None else len(order)
        if n == 0:
            return 0.0  # nothing to visit
        batch_size = int(min(batch_size, n))
        sizes = _sizes_array(self.sizes)
        if isinstance(X, tuple):  # (data, indices, indptr) of a CSR X
            partition = _kernels.epoch_partition(sizes, batch_size, X[0].shape[0],
                                                 X[2].shape[0] - 1)
        else:
            partition = _kernels.epoch_partition(sizes, batch_size)
        self._ensure_buffers(batch_size, partition)
        sw = np.empty(0, dtype=self.dtype) if sample_weight is None else sample_weight
        order = np.empty(0, dtype=np.intp) if order is None else order
        head = (sizes, ACTIVATION_CODES[self.activation],
                LOSS_CODES[self.loss], self.params, self._grads)
        tail = (SOLVER_CODES[self.solver], self.state_1,
                self.state_2 if self.solver in _TWO_STATE else self.state_1, self.hyper,
                self.counter, self._grads2)
        # pickles of older versions have no max_grad_norm
        max_norm = getattr(self, "max_grad_norm", None)
        max_norm = 0.0 if max_norm is None else float(max_norm)
        with split_team(partition[1]) as n_threads:
            if isinstance(X, tuple):
                return _kernels.train_epoch_csr(
                    *head, *X, Y, sw, order, batch_size, float(alpha), self._acts,
                    self._deltas, self._y_buf, self._sw_buf, *tail, n_threads,
                    max_grad_norm=max_norm, huber_delta=self._huber_delta(),
                    dropout=dropout, dropout_seed=dropout_seed)
            return _kernels.train_epoch(
                *head, X, Y, sw, order, batch_size, float(alpha), self._acts,
                self._deltas, self._x_buf, self._y_buf, self._sw_buf, *tail, n_threads,
                check_finite=check_finite, max_grad_norm=max_norm,
                huber_delta=self._huber_delta(), dropout=dropout, dropout_seed=dropout_seed)
