"""Argument checks shared by ``fastprop.reference`` and ``fastprop.core``.

Both implementations validate through the same function so that they accept and reject
exactly the same calls with the same messages. The compiled core relies on these checks:
everything it reads or writes without the GIL has been sized and typed here first.
"""

import numbers

import numpy as np
import scipy.sparse as sp

ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "softplus",
               "gelu", "silu")
# the hidden activations whose derivative is not a function of A = f(Z): the forward pass
# keeps their pre-activation Z for the backward pass
KEEPS_Z = ("gelu", "silu")
# loss name -> output activation it fixes (as scikit-learn's MLP pairs them)
LOSSES = {
    "squared_error": "identity",
    "poisson": "exp",
    "log_loss": "softmax",
    "binary_log_loss": "logistic",
    "huber": "identity",
    "absolute_error": "identity",
}
FLOAT_DTYPES = (np.float32, np.float64)


def _as_float_array(a, name, ndim):
    if isinstance(a, (list, tuple)):
        try:
            a = np.asarray(a)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}.")
    if isinstance(a, np.matrix):
        # np.matrix redefines * and ravel; scikit-learn rejects it too
        raise TypeError(f"{name} is an np.matrix; convert it with np.asarray.")
    if a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {a.dtype}."
        )
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {a.shape}.")
    return a


def check_activation_loss(activation, loss):
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {ACTIVATIONS}, got {activation!r}."
        )
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}.")


def check_network(coefs, intercepts):
    """Check the layer lists; return (coefs, intercepts, layer_sizes, dtype)."""
    if not isinstance(coefs, (list, tuple)) or not isinstance(intercepts, (list, tuple)):
        raise TypeError("coefs and intercepts must be lists of arrays.")
    if len(coefs) == 0:
        raise ValueError("coefs must hold at least one layer.")
    if len(coefs) != len(intercepts):
        raise ValueError(
            f"coefs and intercepts must have the same length, got {len(coefs)} and "
            f"{len(intercepts)}."
        )
    coefs = [_as_float_array(W, f"coefs[{i}]", 2) for i, W in enumerate(coefs)]
    intercepts = [_as_float_array(b, f"intercepts[{i}]", 1) for i, b in enumerate(intercepts)]
    dtype = coefs[0].dtype
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        if W.dtype != dtype or b.dtype != dtype:
            raise TypeError(
                f"all arrays must share one dtype (float32 or float64); coefs[0] is "
                f"{dtype}, layer {i} has {W.dtype} and {b.dtype}."
            )
        if b.shape[0] != W.shape[1]:
            raise ValueError(
                f"intercepts[{i}] has shape {b.shape} but coefs[{i}] has "
                f"{W.shape[1]} output units."
            )
        if i > 0 and W.shape[0] != coefs[i - 1].shape[1]:
            raise ValueError(
                f"coefs[{i}] has shape {W.shape} but the previous layer has "
                f"{coefs[i - 1].shape[1]} units."
            )
        if W.shape[0] == 0 or W.shape[1] == 0:
            raise ValueError(f"coefs[{i}] has an empty dimension: {W.shape}.")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ValueError(f"coefs[{i}] or intercepts[{i}] contains NaN or infinity.")
    sizes = [coefs[0].shape[0]] + [W.shape[1] for W in coefs]
    return coefs, intercepts, sizes, dtype


def _check_sample_weight(sample_weight, dtype, n_samples):
    """A 1-D array of ``dtype`` with one finite, non-negative weight per sample."""
    sample_weight = _as_float_array(sample_weight, "sample_weight", 1)
    if sample_weight.dtype != dtype:
        raise TypeError(
            f"sample_weight must have dtype {dtype}, got {sample_weight.dtype}."
        )
    if sample_weight.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight has {sample_weight.shape[0]} entries, X has "
            f"{n_samples} samples."
        )
    if not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    return sample_weight


def check_huber_delta(huber_delta):
    """``huber_delta`` as a float: a real number > 0 (infinity allowed: huber is then
    squared_error), else ValueError."""
    if (
        isinstance(huber_delta, (bool, np.bool_))
        or not isinstance(huber_delta, (numbers.Real, np.floating, np.integer))
        or not float(huber_delta) > 0
    ):
        raise ValueError(f"huber_delta must be a real number > 0, got {huber_delta!r}.")
    return float(huber_delta)


def check_loss_args(coefs, intercepts, X, Y, activation, loss, alpha, sample_weight,
                    huber_delta=1.0):
    """Validate a ``loss_and_gradients`` call.

    Returns ``(coefs, intercepts, X, Y, sample_weight, sizes, dtype)`` with arrays as
    given (no copies); raises ``ValueError`` / ``TypeError`` with a message naming the
    offending argument.
    """
    check_activation_loss(activation, loss)
    check_huber_delta(huber_delta)
    coefs, intercepts, sizes, dtype = check_network(coefs, intercepts)
    X = _as_float_array(X, "X", 2)
    Y = _as_float_array(Y, "Y", 2)
    if X.dtype != dtype or Y.dtype != dtype:
        raise TypeError(
            f"X, Y and the layers must share one dtype; the layers are {dtype}, X is "
            f"{X.dtype}, Y is {Y.dtype}."
        )
    n_samples = X.shape[0]
    if n_samples == 0:
        raise ValueError("X has 0 samples; at least one is required.")
    if X.shape[1] != sizes[0]:
        raise ValueError(
            f"X has {X.shape[1]} features but coefs[0] expects {sizes[0]}."
        )
    if Y.shape != (n_samples, sizes[-1]):
        raise ValueError(
            f"Y must have shape {(n_samples, sizes[-1])} (n_samples, n_outputs), "
            f"got {Y.shape}."
        )
    if loss == "log_loss" and sizes[-1] < 2:
        raise ValueError(
            "loss='log_loss' (softmax output) needs at least 2 output columns; use "
            "'binary_log_loss' for a single logistic output."
        )
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity.")
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN or infinity.")
    if loss == "poisson" and (Y < 0).any():
        raise ValueError("loss='poisson' requires non-negative targets Y.")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not (
        np.isfinite(alpha) and alpha >= 0
    ):
        raise ValueError(f"alpha must be a finite real number >= 0, got {alpha!r}.")
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, dtype, n_samples)
        if not sample_weight.sum() > 0:
            raise ValueError("sample_weight must have a positive sum.")
    return coefs, intercepts, X, Y, sample_weight, sizes, dtype


def check_forward_args(coefs, intercepts, X, activation, loss):
    """Validate a ``forward`` call; return (coefs, intercepts, X, sizes, dtype)."""
    check_activation_loss(activation, loss)
    coefs, intercepts, sizes, dtype = check_network(coefs, intercepts)
    X = np.asarray(X)
    if X.dtype != dtype:
        raise TypeError(
            f"X must have the layers' dtype {dtype}, got {X.dtype}."
        )
    if X.ndim != 2 or X.shape[1] != sizes[0]:
        raise ValueError(
            f"X must be a 2-D {dtype} array with {sizes[0]} columns, got "
            f"{X.dtype} {X.shape}."
        )
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity.")
    return coefs, intercepts, X, sizes, dtype


def _real(x, name, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar within [low, high] (ends open when asked), as float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.floating)):
        raise TypeError(f"{name} must be a real number, got {x!r}.")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}.")
    if low is not None and (x < low or (low_open and x == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {x!r}.")
    if high is not None and (x > high or (high_open and x == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {x!r}.")
    return x


def check_sgd_hyper(learning_rate, momentum):
    return _real(learning_rate, "learning_rate", 0), _real(momentum, "momentum", 0, 1)


def check_adam_hyper(t, learning_rate, beta_1, beta_2, epsilon):
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (numbers.Integral, np.integer)):
        raise TypeError(f"t must be an integer (the update count, from 1), got {t!r}.")
    if t < 1:
        raise ValueError(f"t counts updates from 1, got {t}.")
    return (
        int(t),
        _real(learning_rate, "learning_rate", 0),
        _real(beta_1, "beta_1", 0, 1, high_open=True),
        _real(beta_2, "beta_2", 0, 1, high_open=True),
        _real(epsilon, "epsilon", 0, low_open=True),
    )


def check_rmsprop_hyper(learning_rate, rho, epsilon):
    return (
        _real(learning_rate, "learning_rate", 0),
        _real(rho, "rho", 0, 1, high_open=True),
        _real(epsilon, "epsilon", 0, low_open=True),
    )


def check_adamw_hyper(t, learning_rate, beta_1, beta_2, epsilon, weight_decay):
    return (*check_adam_hyper(t, learning_rate, beta_1, beta_2, epsilon),
            _real(weight_decay, "weight_decay", 0))


def check_epoch_args(sizes, dtype, loss, X, Y, batch_size, alpha, sample_weight, order):
    """Validate ``Trainer.run_epoch`` input; returns (X, Y, sample_weight, order,
    batch_size, alpha) ready for the kernel (C-contiguous, the Trainer's dtype)."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(
        batch_size, (numbers.Integral, np.integer)
    ):
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    alpha = _real(alpha, "alpha", 0)
    if sp.issparse(X):
        raise TypeError("pass a sparse X as fastprop.core.csr_parts(X).")
    if isinstance(X, tuple):
        if len(X) != 3:
            raise ValueError("a sparse X is the (data, indices, indptr) of csr_parts.")
        data = _as_float_array(X[0], "X data", 1)
        if data.dtype != dtype:
            raise TypeError(f"X data must have dtype {dtype}, got {data.dtype}.")
        if not np.isfinite(data).all():
            raise ValueError("X contains NaN or infinity.")
        X = (np.ascontiguousarray(data),
             np.ascontiguousarray(X[1], dtype=np.intp),
             np.ascontiguousarray(X[2], dtype=np.intp))
        n_samples = X[2].shape[0] - 1
    else:
        X = _as_float_array(X, "X", 2)
        if X.dtype != dtype:
            raise TypeError(f"X must have dtype {dtype}, got {X.dtype}.")
        if X.shape[1] != sizes[0]:
            raise ValueError(f"X has {X.shape[1]} features, the network {sizes[0]}.")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity.")
        X = np.ascontiguousarray(X)
        n_samples = X.shape[0]
    Y = _as_float_array(Y, "Y", 2)
    if Y.dtype != dtype:
        raise TypeError(f"Y must have dtype {dtype}, got {Y.dtype}.")
    if Y.shape != (n_samples, sizes[-1]):
        raise ValueError(
            f"Y must have shape {(n_samples, sizes[-1])}, got {Y.shape}."
        )
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN or infinity.")
    if loss == "poisson" and (Y < 0).any():
        raise ValueError("loss='poisson' requires non-negative targets Y.")
    Y = np.ascontiguousarray(Y)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(sample_weight, dtype, n_samples)
        sample_weight = np.ascontiguousarray(sample_weight)
    if order is not None:
        order = np.asarray(order)
        if order.ndim != 1 or order.dtype.kind not in "iu":
            raise TypeError("order must be a 1-D array of integer row indices.")
        if order.size and (order.min() < 0 or order.max() >= n_samples):
            raise ValueError(f"order holds row indices outside [0, {n_samples}).")
        order = np.ascontiguousarray(order, dtype=np.intp)
    return X, Y, sample_weight, order, int(batch_size), alpha


def check_castable(name, a, dtype):
    """Raise a ValueError naming the overflow when casting the finite array ``a`` (or
    a sparse matrix's values) to float32 would turn some of its values into infinity."""
    if np.dtype(dtype) != np.float32 or a is None:
        return
    values = a.data if sp.issparse(a) else a
    if values.dtype.kind != "f" or values.dtype.itemsize <= 4 or values.size == 0:
        return
    limit = np.finfo(np.float32).max
    if values.max() > limit or values.min() < -limit:
        raise ValueError(
            f"{name} has values beyond float32's range (|value| > {limit:.7g}), which "
            f"this float32 model would turn into infinity. Scale {name}, or train a "
            "float64 model (fit it on float64 data)."
        )
