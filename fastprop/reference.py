"""The specification of fastprop's maths, in plain NumPy.

Every compiled kernel in ``fastprop.core`` has its twin here, with the same name and
signature, and the tests hold the two together. This module is written to be read, not
to be fast.

Notation for a network with L layers (``len(coefs) == L``)::

    A_0 = X                                   (n, n_features)
    Z_l = A_{l-1} @ W_l + b_l                  l = 1..L
    A_l = f(Z_l)          hidden layers, f = activation
    P   = g(Z_L)          output layer, g fixed by the loss (table below)

    loss = (1/s) * sum_i w_i * ell(y_i, z_i)  +  (alpha / (2 s)) * sum_l ||W_l||^2

with ``w_i`` the sample weights (all 1 when none are given) and ``s = sum_i w_i``.
Each loss is paired with its canonical output activation, so that the derivative of the
data term with respect to the output pre-activation is simply ``P - Y``:

    loss              g (output)   ell(y, z) for one sample, summed over outputs k
    squared_error     identity     1/2 (z_k - y_k)^2
    poisson           exp          y_k log y_k - y_k z_k - y_k + exp(z_k)   (half deviance)
    log_loss          softmax      -sum_k y_k log softmax(z)_k
    binary_log_loss   logistic     -y_k log s(z_k) - (1 - y_k) log(1 - s(z_k))
    huber             identity     1/2 r_k^2 if |r_k| <= delta else delta (|r_k| - delta/2)
    absolute_error    identity     |r_k|                    (r_k = z_k - y_k)

The first four are scikit-learn's MLP losses; ``huber`` (``delta`` is the keyword
``huber_delta``) and ``absolute_error`` are robust regression losses it does not have.
Their output is the identity but their link is not canonical: d ell / d z_k is
``r_k`` clipped to [-delta, delta] for huber and ``sign(r_k)`` for absolute_error, whose
derivative at ``r_k = 0`` is taken as 0 (the subgradient a minimiser rests at). At
``|r_k| = delta`` the huber derivative is ``r_k`` (= +-delta: both sides agree).

scikit-learn's losses come with one deliberate difference: for multi-output
squared error scikit-learn reports the mean over outputs but optimises the sum (its issue
8349); fastprop's loss is the sum over outputs, so its gradient is exactly the derivative
of the loss it reports. For a single output the two agree. The probability clipping
scikit-learn applies inside ``log_loss`` is replaced by computing the logarithms from the
logits directly (log-softmax, ``log(1 + e^z)``), which is exact where scikit-learn's
clipping is inactive and finite everywhere.
"""

import math

import numpy as np
from scipy.special import erfc

from ._validation import KEEPS_Z, LOSSES, check_forward_args, check_loss_args

__all__ = [
    "loss_and_gradients",
    "forward",
    "input_gradients",
    "sgd_update",
    "adam_update",
    "clip_grad_norm",
    "rmsprop_update",
    "adamw_update",
    "dropout_mask",
    "dropout_masks",
    "dropout_loss_and_gradients",
]


# -- activations: f(Z) and f'(Z) written in terms of A = f(Z) -------------------------
# (gelu and silu are not monotone: their f' is not a function of A, and is written in
# terms of Z, which the passes below keep for them)

def _activate(Z, name):
    if name == "identity":
        return Z
    if name == "relu":
        return np.maximum(Z, 0)
    if name == "tanh":
        return np.tanh(Z)
    if name == "logistic":
        # 1 / (1 + e^-z), evaluated without overflow for large |z|
        return np.exp(-np.logaddexp(0, -Z)).astype(Z.dtype, copy=False)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, 0.01 * Z)
    if name == "elu":
        # e^z - 1 on the negative side (expm1: no cancellation near 0)
        return np.where(Z > 0, Z, np.expm1(np.minimum(Z, 0)))
    if name == "softplus":
        # log(1 + e^z) = max(z, 0) + log1p(e^-|z|), finite for every finite z
        return np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))
    if name == "gelu":
        # the exact form 0.5 z (1 + erf(z / sqrt 2)), written with erfc(-z / sqrt 2) =
        # 1 + erf(z / sqrt 2), which does not cancel for negative z
        return 0.5 * Z * erfc(-Z * _SQRT1_2)
    if name == "silu":
        # z / (1 + e^-z) = z s(z)
        return Z * _activate(Z, "logistic")
    if name == "exp":
        return np.exp(Z)
    if name == "softmax":
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        return E / E.sum(axis=1, keepdims=True)
    raise ValueError(name)


_SQRT1_2 = math.sqrt(0.5)                  # 1 / sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the standard normal density at 0


def _derivative(A, Z, name):
    """f'(Z) expressed through A = f(Z), as backpropagation uses it; through Z itself
    for gelu and silu (``Z`` may be None for the others)."""
    if name == "identity":
        return np.ones_like(A)
    if name == "relu":
        return (A > 0).astype(A.dtype)
    if name == "tanh":
        return 1 - A**2
    if name == "logistic":
        return A * (1 - A)
    if name == "leaky_relu":
        return np.where(A > 0, 1, 0.01).astype(A.dtype)
    if name == "elu":
        # f' = e^z = f + 1 on the negative side
        return np.where(A > 0, 1, A + 1).astype(A.dtype)
    if name == "softplus":
        # f' = s(z) = 1 - e^-f
        return -np.expm1(-A)
    if name == "gelu":
        # Phi(z) + z phi(z), Phi and phi the standard normal cdf and density
        return 0.5 * erfc(-Z * _SQRT1_2) + Z * np.exp(-0.5 * Z * Z) * _INV_SQRT_2PI
    if name == "silu":
        # s(z) (1 + z (1 - s(z)))
        s = _activate(Z, "logistic")
        return s * (1 + Z * (1 - s))
    raise ValueError(name)


def _hidden_layers(coefs, intercepts, X, activation, masks=None):
    """The hidden layers' outputs A = [X, A_1, ..., A_{L-1}] and, for the activations
    whose derivative needs them (gelu, silu), their pre-activations
    Z = [None, Z_1, ..., Z_{L-1}] (None entries otherwise). With dropout ``masks`` (one
    multiplier array or None per hidden layer), layer l + 1 reads A_l * M_l; A_l is
    returned without its mask."""
    A, Z = [X], [None]
    inp = X
    for l in range(len(coefs) - 1):
        Z_l = inp @ coefs[l] + intercepts[l]
        A.append(_activate(Z_l, activation))
        Z.append(Z_l if activation in KEEPS_Z else None)
        inp = A[-1] if masks is None or masks[l] is None else A[-1] * masks[l]
    return A, Z


def _data_loss_per_sample(Z, Y, loss, huber_delta=1.0):
    """ell(y_i, z_i) for each sample i, summed over outputs; from the logits Z."""
    if loss == "squared_error":
        return 0.5 * ((Z - Y) ** 2).sum(axis=1)
    if loss == "huber":
        a = np.abs(Z - Y)
        per = 0.5 * a**2
        lin = a > huber_delta  # the linear piece only where it applies
        per[lin] = huber_delta * (a[lin] - 0.5 * huber_delta)
        return per.sum(axis=1)
    if loss == "absolute_error":
        return np.abs(Z - Y).sum(axis=1)
    if loss == "poisson":
        # y log y is 0 at y = 0 (xlogy convention)
        ylogy = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1)), 0)
        return (ylogy - Y * Z - Y + np.exp(Z)).sum(axis=1)
    if loss == "log_loss":
        # log softmax(z)_k = z_k - logsumexp(z)
        zmax = Z.max(axis=1, keepdims=True)
        lse = zmax + np.log(np.exp(Z - zmax).sum(axis=1, keepdims=True))
        return -(Y * (Z - lse)).sum(axis=1)
    if loss == "binary_log_loss":
        # -log s(z) = log(1 + e^-z);  -log(1 - s(z)) = log(1 + e^z)
        return (Y * np.logaddexp(0, -Z) + (1 - Y) * np.logaddexp(0, Z)).sum(axis=1)
    raise ValueError(loss)


def forward(coefs, intercepts, X, *, activation, loss):
    """The network's output P = g(Z_L) for input X (what ``predict`` is built on).

    ``loss`` names the output activation g as in ``loss_and_gradients``.
    """
    coefs, intercepts, X, sizes, dtype = check_forward_args(
        coefs, intercepts, X, activation, loss
    )
    A = X
    for layer, (W, b) in enumerate(zip(coefs, intercepts)):
        Z = A @ W + b
        last = layer == len(coefs) - 1
        A = _activate(Z, LOSSES[loss] if last else activation)
    return A


def _output_jacobian(P, loss, k):
    """d P[:, k] / d Z_L, row by row: (n, n_outputs). The output activations act per
    output except softmax, whose every output depends on every logit."""
    out = np.zeros_like(P)
    g = LOSSES[loss]
    if g == "identity":
        out[:, k] = 1
    elif g == "exp":
        out[:, k] = P[:, k]
    elif g == "logistic":
        out[:, k] = P[:, k] * (1 - P[:, k])
    else:  # softmax: dP_k / dZ_j = P_k (delta_kj - P_j)
        out[:] = -P[:, k:k + 1] * P
        out[:, k] += P[:, k]
    return out


def input_gradients(coefs, intercepts, X, *, activation, loss):
    """The derivatives of the network's outputs with respect to its inputs.

    Returns an array of shape (n_samples, n_outputs, n_features) whose entry [i, k, j]
    is d P[i, k] / d X[i, j], P = ``forward(...)`` (after the output activation). Each
    output is one backward pass, the chain rule from d P_k / d Z_L down to the input:

        delta_L = d P_k / d Z_L
        delta_{l-1} = (delta_l W_l^T) * f'(Z_{l-1})      l = L..2
        d P_k / d X = delta_1 W_1^T
    """
    coefs, intercepts, X, sizes, dtype = check_forward_args(
        coefs, intercepts, X, activation, loss
    )
    L = len(coefs)
    A, Z = _hidden_layers(coefs, intercepts, X, activation)
    P = _activate(A[-1] @ coefs[-1] + intercepts[-1], LOSSES[loss])
    out = np.empty((X.shape[0], P.shape[1], X.shape[1]), dtype=dtype)
    for k in range(P.shape[1]):
        delta = _output_jacobian(P, loss, k)
        for l in range(L - 1, 0, -1):
            delta = (delta @ coefs[l].T) * _derivative(A[l], Z[l], activation)
        out[:, k, :] = delta @ coefs[0].T
    return out


def _output_delta(Z, Y, loss, huber_delta):
    """d ell / d z for the losses whose link is not canonical (identity output)."""
    R = Z - Y
    if loss == "huber":
        # r inside [-delta, delta] (its ends included), delta sign(r) outside
        return np.where(np.abs(R) <= huber_delta, R, huber_delta * np.sign(R))
    return np.sign(R)  # absolute_error; sign(0) = 0


def loss_and_gradients(
    coefs, intercepts, X, Y, *, activation, loss, alpha=0.0, sample_weight=None,
    huber_delta=1.0,
):
    """Loss of the network on (X, Y) and its gradient with respect to every parameter.

    Parameters
    ----------
    coefs, intercepts : lists of arrays of shape (n_in, n_out) and (n_out,)
        The layers, as scikit-learn's ``coefs_`` / ``intercepts_``.
    X : array of shape (n_samples, n_features)
    Y : array of shape (n_samples, n_outputs)
    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'elu', \
'softplus', 'gelu', 'silu'}
        Activation of the hidden layers: ``leaky_relu`` is z for z > 0, else 0.01 z;
        ``elu`` z for z > 0, else e^z - 1; ``softplus`` log(1 + e^z); ``gelu`` the
        exact 0.5 z (1 + erf(z / sqrt 2)); ``silu`` z / (1 + e^-z).
    loss : {'squared_error', 'poisson', 'log_loss', 'binary_log_loss', 'huber', \
            'absolute_error'}
        The loss; it fixes the output activation (see the module docstring).
    alpha : float
        L2 penalty; the loss gains ``alpha / (2 s) * sum ||W||^2``.
    sample_weight : array of shape (n_samples,) or None
    huber_delta : float > 0, default 1.0
        The residual at which ``loss='huber'`` turns from quadratic to linear; checked
        for every loss, used by huber only.

    All arrays must be float32, or all float64; the results have that dtype.

    Returns
    -------
    loss : scalar of the input dtype
    coef_grads, intercept_grads : lists of arrays shaped like coefs, intercepts
    """
    coefs, intercepts, X, Y, sample_weight, sizes, dtype = check_loss_args(
        coefs, intercepts, X, Y, activation, loss, alpha, sample_weight,
        huber_delta=huber_delta,
    )
    return _loss_and_gradients(coefs, intercepts, X, Y, None, activation, loss, alpha,
                               sample_weight, huber_delta, dtype)


def _loss_and_gradients(coefs, intercepts, X, Y, masks, activation, loss, alpha,
                        sample_weight, huber_delta, dtype):
    """``loss_and_gradients`` on checked arguments; ``masks``: None, or one dropout
    multiplier array (or None) per hidden layer (``dropout_loss_and_gradients``)."""
    with np.errstate(over="ignore"):
        # in the arrays' dtype, as the kernels read it (beyond float32's range: infinity)
        huber_delta = dtype.type(huber_delta)
    n_samples = X.shape[0]
    w = np.ones(n_samples, dtype=dtype) if sample_weight is None else sample_weight
    s = w.sum(dtype=np.float64)
    L = len(coefs)

    # Forward pass: keep every layer's output A_l for the backward pass (and Z_l, for
    # gelu and silu). With dropout, F_l = f(Z_l) is kept for f' and the next layer
    # reads A_l = F_l * M_l.
    F, Z = _hidden_layers(coefs, intercepts, X, activation, masks)
    A = [X] + [F[l] if masks is None or masks[l - 1] is None else F[l] * masks[l - 1]
               for l in range(1, L)]
    Z_out = A[-1] @ coefs[-1] + intercepts[-1]
    P = _activate(Z_out, LOSSES[loss])

    # Loss: weighted mean of the per-sample loss, plus the L2 penalty.
    data = (w * _data_loss_per_sample(Z_out, Y, loss, huber_delta)).sum(
        dtype=np.float64) / s
    penalty = 0.5 * alpha * sum(float((W.astype(np.float64) ** 2).sum()) for W in coefs) / s
    value = dtype.type(data + penalty)

    # Backward pass. delta_l = d loss_sum / d Z_l, where loss_sum is the unnormalised
    # weighted sum; the 1/s normalisation is applied to the gradients at the end.
    # Output layer: canonical link, so d ell / d z = P - Y. (For log_loss it is
    # P * sum_k y_k - Y, which is P - Y for the usual rows of Y summing to 1.)
    # huber and absolute_error: the identity output, d ell / d z from _output_delta.
    if loss == "log_loss":
        delta = (P * Y.sum(axis=1, keepdims=True) - Y) * w[:, None]
    elif loss in ("huber", "absolute_error"):
        delta = _output_delta(Z_out, Y, loss, huber_delta).astype(dtype) * w[:, None]
    else:
        delta = (P - Y) * w[:, None]
    coef_grads = [None] * L
    intercept_grads = [None] * L
    for l in range(L - 1, -1, -1):
        # Z_l = A_{l-1} W_l + b_l  =>  dL/dW_l = A_{l-1}^T delta_l,  dL/db_l = sum_i delta_l
        coef_grads[l] = ((A[l].T @ delta + alpha * coefs[l]) / s).astype(dtype, copy=False)
        intercept_grads[l] = (delta.sum(axis=0) / s).astype(dtype, copy=False)
        if l > 0:
            # chain rule through Z_l = A_{l-1} W_l + b_l and A_{l-1} = f(Z_{l-1}) (times
            # the mask M_{l-1}, a constant, with dropout)
            delta = (delta @ coefs[l].T) * _derivative(F[l], Z[l], activation)
            if masks is not None and masks[l - 1] is not None:
                delta = delta * masks[l - 1]
    return value, coef_grads, intercept_grads


# -- dropout -----------------------------------------------------------------------------
#
# Inverted dropout on the hidden layers' outputs, in training only: A_l = f(Z_l) * M_l,
# where M_l holds 0 for a dropped unit (probability p_l) and 1 / (1 - p_l) for a kept
# one, so that the expected output is f(Z_l) and prediction (``forward``) uses no mask.
# A mask is a function of its coordinates: the epoch's seed, the minibatch's index b in
# the epoch, the hidden layer l (from 0), the row's index r in the minibatch and the
# unit's j (csrc/fp_dropout.h is the compiled twin):
#
#     k = mix(mix(mix(seed + G (b + 1)) + G (l + 1)) + G (r + 1))
#     u = (mix(k + G (j + 1)) >> 11) * 2^-53,   keep = u >= p
#
# in wrapping 64-bit unsigned arithmetic, G = 0x9E3779B97F4A7C15, mix the splitmix64
# finaliser.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _coordinate(i):
    """G (i + 1) for an index array i, in wrapping uint64 arithmetic."""
    return (np.asarray(i, dtype=np.uint64) + np.uint64(1)) * _GOLDEN


def dropout_mask(seed, batch, layer, n_rows, n_units, p, *, row0=0, unit0=0):
    """Which units a training minibatch keeps: a bool array (n_rows, n_units), True
    where unit ``unit0 + j`` of hidden layer ``layer`` (from 0) is kept in row
    ``row0 + i`` of minibatch ``batch`` (from 0) of the epoch drawn with ``seed``.

    Each entry is kept with probability 1 - p, independently of the others."""
    if not 0 <= p < 1:
        raise ValueError(f"p must be in [0, 1), got {p}.")
    with np.errstate(over="ignore"):
        seed = np.array([int(seed) % 2**64], dtype=np.uint64)
        key = _mix64(_mix64(seed + _coordinate(batch)) + _coordinate(layer))
        rows = _mix64(key + _coordinate(np.arange(row0, row0 + n_rows)))
        h = _mix64(rows[:, None] + _coordinate(np.arange(unit0, unit0 + n_units))[None, :])
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return u >= p


def dropout_masks(seed, batch, rates, n_rows, hidden_sizes, dtype=np.float64):
    """The multipliers M_l of every hidden layer for one minibatch of ``n_rows`` rows:
    0 where dropped, 1 / (1 - p_l) (in ``dtype``) where kept; None for a layer whose
    rate is 0 (it is left as it is)."""
    dtype = np.dtype(dtype)
    masks = []
    for l, (p, h) in enumerate(zip(rates, hidden_sizes)):
        if p == 0:
            masks.append(None)
            continue
        keep = dropout_mask(seed, batch, l, n_rows, h, p)
        masks.append(np.where(keep, dtype.type(1.0 / (1.0 - p)), dtype.type(0)))
    return masks


def dropout_loss_and_gradients(
    coefs, intercepts, X, Y, masks, *, activation, loss, alpha=0.0, sample_weight=None,
    huber_delta=1.0,
):
    """``loss_and_gradients`` of a training minibatch with dropout: hidden layer l's
    outputs are f(Z_l) * masks[l] (each an array (n_samples, units) of multipliers, as
    ``dropout_masks`` returns, or None for no dropout on that layer). The masks are
    constants, so the chain rule gains their factor:

        delta_{l-1} = (delta_l W_l^T) * M_{l-1} * f'(Z_{l-1})
    """
    coefs, intercepts, X, Y, sample_weight, sizes, dtype = check_loss_args(
        coefs, intercepts, X, Y, activation, loss, alpha, sample_weight,
        huber_delta=huber_delta,
    )
    L = len(coefs)
    if len(masks) != L - 1:
        raise ValueError(f"masks must hold one entry per hidden layer ({L - 1}).")
    n_samples = X.shape[0]
    masks = [None if M is None else np.asarray(M, dtype=dtype) for M in masks]
    for M, h in zip(masks, sizes[1:-1]):
        if M is not None and M.shape != (n_samples, h):
            raise ValueError(f"a mask must have shape {(n_samples, h)}, got {M.shape}.")
    return _loss_and_gradients(coefs, intercepts, X, Y, masks, activation, loss, alpha,
                               sample_weight, huber_delta, dtype)


# -- optimizer updates over one flat parameter vector ----------------------------------

def sgd_update(params, grads, velocity, *, learning_rate, momentum, nesterov):
    """One SGD step in place, as scikit-learn's SGDOptimizer.

    v <- momentum * v - lr * g;  params += (momentum * v - lr * g) if nesterov else v
    """
    velocity *= momentum
    velocity -= learning_rate * grads
    if nesterov:
        params += momentum * velocity - learning_rate * grads
    else:
        params += velocity


def adam_update(params, grads, m, v, *, t, learning_rate, beta_1, beta_2, epsilon):
    """One Adam step in place, as scikit-learn's AdamOptimizer (``t`` counts from 1).

    The bias correction is folded into the step size; epsilon stays outside it:
    params -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)
    """
    m *= beta_1
    m += (1 - beta_1) * grads
    v *= beta_2
    v += (1 - beta_2) * grads**2
    step = learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    params -= step * m / (np.sqrt(v) + epsilon)


def clip_grad_norm(grads, *, max_norm):
    """Scale the flat gradient ``grads`` in place so that its global L2 norm is at most
    ``max_norm`` (``max_grad_norm``: the minibatch's gradient over every weight and
    intercept, L2 term included, before the optimizer step). Returns the norm before
    clipping.

    g <- g * min(1, max_norm / ||g||)
    """
    norm = float(np.sqrt(np.sum(grads.astype(np.float64) ** 2)))
    if norm > max_norm:
        grads *= grads.dtype.type(max_norm / norm)
    return norm


def rmsprop_update(params, grads, v, *, learning_rate, rho, epsilon):
    """One RMSprop step in place, as PyTorch's RMSprop (no momentum, not centered).

    ``grads`` is the normalised gradient, L2 term included (as for Adam); ``v`` starts
    at 0 and epsilon sits outside the root:
    v <- rho * v + (1 - rho) * g^2;  params -= lr * g / (sqrt(v) + epsilon)
    """
    v *= rho
    v += (1 - rho) * grads**2
    params -= learning_rate * grads / (np.sqrt(v) + epsilon)


def adamw_update(params, grads, m, v, *, t, learning_rate, beta_1, beta_2, epsilon,
                 weight_decay, n_coef):
    """One AdamW step in place, as PyTorch's AdamW (``t`` counts from 1).

    ``grads`` is the normalised gradient of the data loss alone: no L2 term. The first
    ``n_coef`` entries of the flat vector are the weights, which decay; the intercepts
    after them do not:
    m <- beta_1 m + (1 - beta_1) g;  v <- beta_2 v + (1 - beta_2) g^2
    params[:n_coef] *= 1 - lr * weight_decay
    params -= lr * m_hat / (sqrt(v_hat) + epsilon),
    m_hat = m / (1 - beta_1^t),  v_hat = v / (1 - beta_2^t)
    """
    m *= beta_1
    m += (1 - beta_1) * grads
    v *= beta_2
    v += (1 - beta_2) * grads**2
    params[:n_coef] *= 1 - learning_rate * weight_decay
    m_hat = m / (1 - beta_1**t)
    v_hat = v / (1 - beta_2**t)
    params -= learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
