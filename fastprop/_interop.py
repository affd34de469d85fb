"""Exchange with scikit-learn's MLPs: ``to_sklearn`` and ``from_sklearn``.

A fitted fastprop model and a fitted scikit-learn model of the same class hold the same
things under the same names: the layers (``coefs_``, ``intercepts_``), the label
encoding, the counters and curves, and, for the stochastic solvers, the optimizer's
state. Moving them across gives a model with the same predictions that trains on
(``partial_fit``) from where the other left off. A setting that the other side cannot
represent (an activation, loss or solver only fastprop has) raises a ValueError naming
it rather than giving a model that silently differs.
"""

import copy

import numpy as np
from sklearn import neural_network as skn

from . import core
from ._sklearn_compat import AdamOptimizer, SGDOptimizer

# what scikit-learn's MLPs can represent
SKLEARN_ACTIVATIONS = frozenset({"identity", "logistic", "tanh", "relu"})
SKLEARN_SOLVERS = frozenset({"lbfgs", "sgd", "adam"})
SKLEARN_REGRESSOR_LOSSES = frozenset({"squared_error", "poisson"})

# fitted attributes copied as they are (when present); the layers, the label encoding
# and the optimizer are handled apart
_PLAIN_ATTRIBUTES = (
    "n_features_in_", "feature_names_in_", "classes_", "n_outputs_", "n_layers_",
    "out_activation_", "n_iter_", "t_", "loss_", "best_loss_", "loss_curve_",
    "validation_scores_", "best_validation_score_", "_no_improvement_count",
)


def _sklearn_class(est):
    from ._mlp import MLPClassifier

    return skn.MLPClassifier if isinstance(est, MLPClassifier) else skn.MLPRegressor


def _check_representable(params, what):
    """A ValueError naming each setting in ``params`` that scikit-learn's MLPs (or, with
    ``what='fastprop'``, fastprop's) cannot represent."""
    if params.get("activation") not in SKLEARN_ACTIVATIONS:
        raise ValueError(
            f"activation={params.get('activation')!r} has no equivalent in {what}'s MLP "
            f"(it has {sorted(SKLEARN_ACTIVATIONS)})."
        )
    if params.get("solver") not in SKLEARN_SOLVERS:
        raise ValueError(
            f"solver={params.get('solver')!r} has no equivalent in {what}'s MLP (it has "
            f"{sorted(SKLEARN_SOLVERS)}), nor has its optimizer state."
        )
    if "loss" in params and params["loss"] not in SKLEARN_REGRESSOR_LOSSES | {"log_loss"}:
        raise ValueError(
            f"loss={params['loss']!r} has no equivalent in {what}'s MLPRegressor (it "
            f"has {sorted(SKLEARN_REGRESSOR_LOSSES)})."
        )


def _no_dropout(value):
    """Whether a ``dropout`` value is rates of 0 only (a float, tuple or array)."""
    try:
        return not np.any(np.asarray(value, dtype=np.float64) != 0)
    except (TypeError, ValueError):
        return False


def _differs(value, default):
    """``value != default``, where a comparison that is not one truth value (an array)
    counts as different."""
    try:
        return bool(value != default)
    except (TypeError, ValueError):
        return True


def _copy(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return list(value)
    return value


def to_sklearn(est):
    """An equivalent fitted ``sklearn.neural_network`` MLP (see ``MLPEstimator.to_sklearn``)."""
    cls = _sklearn_class(est)
    params = est.get_params(deep=False)
    _check_representable(params, "scikit-learn")
    if "dropout" in params and _no_dropout(params["dropout"]):
        params["dropout"] = 0.0  # rates of 0, in any form: the default
    accepted = cls().get_params(deep=False)
    defaults = type(est)().get_params(deep=False)
    for name in sorted(set(params) - set(accepted)):
        if name == "huber_delta" and params.get("loss") != "huber":
            continue  # read by loss='huber' only (which itself raises above)
        if params[name] is not defaults[name] and _differs(params[name], defaults[name]):
            raise ValueError(
                f"{name}={params[name]!r} has no equivalent in scikit-learn's "
                f"{cls.__name__}, which has no parameter {name!r}."
            )
    sk = cls(**{k: v for k, v in params.items() if k in accepted})
    coefs, intercepts, units, dtype = est._check_layers(est.coefs_, est.intercepts_)
    sk.coefs_ = [np.array(W) for W in coefs]
    sk.intercepts_ = [np.array(b) for b in intercepts]
    for name in _PLAIN_ATTRIBUTES:
        if hasattr(est, name):
            setattr(sk, name, _copy(getattr(est, name)))
    if hasattr(est, "_label_binarizer"):
        sk._label_binarizer = copy.deepcopy(est._label_binarizer)
    if hasattr(est, "_best_coefs"):
        sk._best_coefs = [c.copy() for c in est._best_coefs]
        sk._best_intercepts = [b.copy() for b in est._best_intercepts]
    opt = getattr(est, "_optimizer", None)
    if opt is not None and opt.state_1.shape[0] == core.n_params(units):
        sk._optimizer = _sklearn_optimizer(sk, opt, units)
    return sk


def _sklearn_optimizer(sk, opt, units):
    """scikit-learn's optimizer object holding a fastprop Trainer's state, laid out as
    scikit-learn's per-layer lists (coefs first, then intercepts)."""
    def layers(flat):
        coefs, intercepts = core.unpack(flat.copy(), units)
        return coefs + intercepts

    params = sk.coefs_ + sk.intercepts_
    if opt.solver == "adam":
        sk_opt = AdamOptimizer(params, sk.learning_rate_init, sk.beta_1, sk.beta_2,
                               sk.epsilon)
        sk_opt.t = int(opt.counter[0])
        sk_opt.ms = layers(opt.state_1)
        sk_opt.vs = layers(opt.state_2)
        if sk_opt.t:
            sk_opt.learning_rate = (sk.learning_rate_init * np.sqrt(1 - sk.beta_2 ** sk_opt.t)
                                    / (1 - sk.beta_1 ** sk_opt.t))
        return sk_opt
    sk_opt = SGDOptimizer(params, sk.learning_rate_init, sk.learning_rate, sk.momentum,
                          sk.nesterovs_momentum, sk.power_t)
    sk_opt.velocities = layers(opt.state_1)
    sk_opt.learning_rate = float(opt.learning_rate)
    return sk_opt


def from_sklearn(cls, sk):
    """A fastprop model equivalent to the fitted scikit-learn MLP ``sk`` (see
    ``MLPEstimator.from_sklearn``)."""
    from sklearn.utils.validation import check_is_fitted

    expected = _sklearn_class(cls.__new__(cls))
    if not isinstance(sk, expected):
        raise TypeError(
            f"{cls.__name__}.from_sklearn takes a fitted {expected.__module__}."
            f"{expected.__name__}, got {type(sk).__name__}."
        )
    check_is_fitted(sk)
    params = sk.get_params(deep=False)
    _check_representable(params, "fastprop")
    accepted = cls().get_params(deep=False)
    est = cls(**{k: v for k, v in params.items() if k in accepted})
    coefs = [np.asarray(W) for W in sk.coefs_]
    intercepts = [np.asarray(b) for b in sk.intercepts_]
    coefs, intercepts, units, dtype = est._check_layers(coefs, intercepts)
    for name in _PLAIN_ATTRIBUTES:
        if hasattr(sk, name):
            setattr(est, name, _copy(getattr(sk, name)))
    if hasattr(sk, "_label_binarizer"):
        est._label_binarizer = copy.deepcopy(sk._label_binarizer)
    est._set_flat(core.pack(coefs, intercepts), units)
    est._best_coefs = [c.copy() for c in getattr(sk, "_best_coefs", est.coefs_)]
    est._best_intercepts = [b.copy() for b in getattr(sk, "_best_intercepts",
                                                      est.intercepts_)]
    sk_opt = getattr(sk, "_optimizer", None)
    if sk_opt is not None and est.solver in ("adam", "sgd"):
        est._optimizer = _fastprop_optimizer(est, sk_opt, dtype)
    return est


def _fastprop_optimizer(est, sk_opt, dtype):
    """A fastprop Trainer carrying scikit-learn's optimizer state."""
    opt = est._new_optimizer()
    if isinstance(sk_opt, AdamOptimizer) and est.solver == "adam":
        core.pack(sk_opt.ms[:len(est.coefs_)], sk_opt.ms[len(est.coefs_):],
                  out=opt.state_1)
        core.pack(sk_opt.vs[:len(est.coefs_)], sk_opt.vs[len(est.coefs_):],
                  out=opt.state_2)
        opt.counter[0] = int(sk_opt.t)
    elif isinstance(sk_opt, SGDOptimizer) and est.solver == "sgd":
        n = len(est.coefs_)
        core.pack(sk_opt.velocities[:n], sk_opt.velocities[n:], out=opt.state_1)
        opt.learning_rate = float(sk_opt.learning_rate)
    else:
        raise ValueError(
            f"the scikit-learn model's optimizer ({type(sk_opt).__name__}) does not match "
            f"solver={est.solver!r}."
        )
    return opt
