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

These are scikit-learn's MLP losses, with one deliberate difference: for multi-output
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

__all__ = ["loss_and_gradients", "forward", "input_gradients", "sgd_update", "adam_update"]


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


def _hidden_layers(coefs, intercepts, X, activation):
    """The hidden layers' outputs A = [X, A_1, ..., A_{L-1}] and, for the activations
    whose derivative needs them (gelu, silu), their pre-activations
    Z = [None, Z_1, ..., Z_{L-1}] (None entries otherwise)."""
    A, Z = [X], [None]
    for l in range(len(coefs) - 1):
        Z_l = A[-1] @ coefs[l] + intercepts[l]
        A.append(_activate(Z_l, activation))
        Z.append(Z_l if activation in KEEPS_Z else None)
    return A, Z


def _data_loss_per_sample(Z, Y, loss):
    """ell(y_i, z_i) for each sample i, summed over outputs; from the logits Z."""
    if loss == "squared_error":
        return 0.5 * ((Z - Y) ** 2).sum(axis=1)
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


def loss_and_gradients(
    coefs, intercepts, X, Y, *, activation, loss, alpha=0.0, sample_weight=None
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
    loss : {'squared_error', 'poisson', 'log_loss', 'binary_log_loss'}
        The loss; it fixes the output activation (see the module docstring).
    alpha : float
        L2 penalty; the loss gains ``alpha / (2 s) * sum ||W||^2``.
    sample_weight : array of shape (n_samples,) or None

    All arrays must be float32, or all float64; the results have that dtype.

    Returns
    -------
    loss : scalar of the input dtype
    coef_grads, intercept_grads : lists of arrays shaped like coefs, intercepts
    """
    coefs, intercepts, X, Y, sample_weight, sizes, dtype = check_loss_args(
        coefs, intercepts, X, Y, activation, loss, alpha, sample_weight
    )
    n_samples = X.shape[0]
    w = np.ones(n_samples, dtype=dtype) if sample_weight is None else sample_weight
    s = w.sum(dtype=np.float64)
    L = len(coefs)

    # Forward pass: keep every layer's output A_l for the backward pass (and Z_l, for
    # gelu and silu).
    A, Z = _hidden_layers(coefs, intercepts, X, activation)
    Z_out = A[-1] @ coefs[-1] + intercepts[-1]
    P = _activate(Z_out, LOSSES[loss])

    # Loss: weighted mean of the per-sample loss, plus the L2 penalty.
    data = (w * _data_loss_per_sample(Z_out, Y, loss)).sum(dtype=np.float64) / s
    penalty = 0.5 * alpha * sum(float((W.astype(np.float64) ** 2).sum()) for W in coefs) / s
    value = dtype.type(data + penalty)

    # Backward pass. delta_l = d loss_sum / d Z_l, where loss_sum is the unnormalised
    # weighted sum; the 1/s normalisation is applied to the gradients at the end.
    # Output layer: canonical link, so d ell / d z = P - Y. (For log_loss it is
    # P * sum_k y_k - Y, which is P - Y for the usual rows of Y summing to 1.)
    if loss == "log_loss":
        delta = (P * Y.sum(axis=1, keepdims=True) - Y) * w[:, None]
    else:
        delta = (P - Y) * w[:, None]
    coef_grads = [None] * L
    intercept_grads = [None] * L
    for l in range(L - 1, -1, -1):
        # Z_l = A_{l-1} W_l + b_l  =>  dL/dW_l = A_{l-1}^T delta_l,  dL/db_l = sum_i delta_l
        coef_grads[l] = ((A[l].T @ delta + alpha * coefs[l]) / s).astype(dtype, copy=False)
        intercept_grads[l] = (delta.sum(axis=0) / s).astype(dtype, copy=False)
        if l > 0:
            # chain rule through Z_l = A_{l-1} W_l + b_l and A_{l-1} = f(Z_{l-1})
            delta = (delta @ coefs[l].T) * _derivative(A[l], Z[l], activation)
    return value, coef_grads, intercept_grads


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
