"""MLPClassifier and MLPRegressor on fastprop's compiled core.

Drop-in replacements for scikit-learn's estimators of the same names: the same
parameters, defaults, attributes, errors and training semantics (read against
``sklearn/neural_network/_multilayer_perceptron.py``), with the training loop moved into
``fastprop.core``: one flat parameter vector (``coefs_`` / ``intercepts_`` are views of
it), one compiled call per epoch, minibatches gathered by index (X is never copied per
epoch), no allocation per minibatch.

One deliberate difference: for multi-output squared error the reported loss is the sum
over outputs of half the mean squared error, the quantity whose gradient is followed
(scikit-learn reports the mean over outputs while optimising the sum, its issue 8349).
For a single output the two are identical.
"""

import time
import warnings
from itertools import chain
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    is_classifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    type_of_target,
    unique_labels,
)
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import core
from ._validation import check_network
from ._version import __version__
from .exceptions import InconsistentVersionWarning

_STOCHASTIC_SOLVERS = ["sgd", "adam"]

# scikit-learn's loss name for a given output activation (what loss_and_gradients calls
# the loss, which fixes the output layer).
_CORE_LOSS = {
    "identity": "squared_error",
    "exp": "poisson",
    "softmax": "log_loss",
    "logistic": "binary_log_loss",
}


def _lbfgs_iprint_options(iprint):
    # scipy >= 1.15 dropped `iprint`; scikit-learn passes it only to older versions.
    try:
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:  # pragma: no cover - older scikit-learn
        return {"iprint": iprint}
    return _get_additional_lbfgs_options_dict("iprint", iprint)


class _CallSnapshot:
    """What one ``fit`` / ``partial_fit`` call may change, saved before it changes any
    of it, so that a call that fails (bad data found late, a float32 overflow, weights
    that became non-finite, an exception escaping the solver) leaves the model bitwise
    as it was, whatever it was: unfitted, fitted, or mid-way through ``partial_fit``s.

    Attribute bindings are saved as they are; what a call changes in place is copied:
    the flat parameter vector (``coefs_`` / ``intercepts_`` are its views), the kept
    optimizer's state, the lists training appends to, and the state of a
    ``RandomState`` passed as ``random_state``."""

    def __init__(self, est):
        self.est = est
        self.attrs = dict(est.__dict__)
        flat = self.attrs.get("_flat")
        self.flat = None if flat is None else flat.copy()
        opt = self.attrs.get("_optimizer")
        self.optimizer = None if opt is None else _EpochStart(opt, params=False)
        self.lists = {name: list(value) for name, value in self.attrs.items()
                      if name in ("loss_curve_", "validation_scores_")
                      and isinstance(value, list)}
        rs = est.random_state
        self.rng = rs if isinstance(rs, np.random.RandomState) else None
        self.rng_state = None if self.rng is None else self.rng.get_state()

    def restore(self):
        est = self.est
        est.__dict__.clear()
        est.__dict__.update(self.attrs)
        if self.flat is not None:
            np.copyto(self.attrs["_flat"], self.flat)
        if self.optimizer is not None:
            self.optimizer.restore()
        for name, items in self.lists.items():
            self.attrs[name][:] = items
        if self.rng is not None:
            self.rng.set_state(self.rng_state)


class _EpochStart:
    """A ``core.Trainer``'s state (optimizer state, step count, learning rate, which
    parameter vector it trains, and with ``params`` that vector's values) and
    optionally a ``RandomState``'s, saved before an epoch so that an epoch that does not
    complete (an interrupt) can be undone. Buffers are allocated once; ``save`` refills
    them."""

    def __init__(self, opt, rng=None, params=True):
        self.opt = opt
        self.rng = rng
        self.with_params = params
        self.params = None
        self.state_1 = np.empty_like(opt.state_1)
        self.state_2 = np.empty_like(opt.state_2)
        self.counter = np.empty_like(opt.counter)
        self.hyper = np.empty_like(opt.hyper)
        self.save()

    def save(self):
        opt = self.opt
        self.params_ref = opt.params
        if self.with_params and opt.params is not None:
            if self.params is None or self.params.shape != opt.params.shape:
                self.params = np.empty_like(opt.params)
            np.copyto(self.params, opt.params)
        np.copyto(self.state_1, opt.state_1)
        np.copyto(self.state_2, opt.state_2)
        np.copyto(self.counter, opt.counter)
        np.copyto(self.hyper, opt.hyper)
        self.rng_state = None if self.rng is None else self.rng.get_state()

    def restore(self):
        opt = self.opt
        opt.params = self.params_ref
        if self.with_params and self.params_ref is not None:
            np.copyto(self.params_ref, self.params)
        np.copyto(opt.state_1, self.state_1)
        np.copyto(opt.state_2, self.state_2)
        np.copyto(opt.counter, self.counter)
        np.copyto(opt.hyper, self.hyper)
        if self.rng is not None:
            self.rng.set_state(self.rng_state)


class _PartialFitInterrupted(Exception):
    """An interrupt (KeyboardInterrupt) arrived during partial_fit's epoch: ``_fit``
    puts the model back as it was before the call and warns, as fit does."""


def _check_castable(name, a, dtype):
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


class MLPEstimator(BaseEstimator):
    """Base class of fastprop's multilayer perceptrons: fit, partial_fit, predict.

    Use :class:`MLPClassifier` or :class:`MLPRegressor`; the parameters are those of
    scikit-learn's estimators of the same names.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        loss,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
    ):
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    # -- the flat parameter vector ----------------------------------------------------

    def _layer_units(self):
        return [self.coefs_[0].shape[0]] + [W.shape[1] for W in self.coefs_]

    def _views_intact(self):
        """True while coefs_ / intercepts_ are still the views of ``self._flat``."""
        views = getattr(self, "_views", None)
        coefs, intercepts = self.coefs_, self.intercepts_
        return (
            views is not None
            and isinstance(coefs, list)
            and isinstance(intercepts, list)
            and len(coefs) == len(views[0])
            and len(intercepts) == len(views[1])
            and all(a is b for a, b in zip(coefs, views[0]))
            and all(a is b for a, b in zip(intercepts, views[1]))
        )

    def _flat_params(self):
        """The flat parameter vector behind coefs_ / intercepts_, for training.

        coefs_ and intercepts_ are views of ``self._flat``. If a user assigned other
        arrays to them, the vector is rebuilt from those (after checking they still
        describe this network) and coefs_ / intercepts_ become its views again.
        """
        if self._views_intact():
            return self._flat
        coefs, intercepts, units, dtype = self._check_layers(self.coefs_, self.intercepts_)
        flat = core.pack(coefs, intercepts)
        self._set_flat(flat, units)
        return flat

    def _predict_params(self):
        """(flat parameter vector, layer units) for prediction. Prediction changes no
        state: arrays a user assigned to coefs_ / intercepts_ stay theirs (later
        in-place edits to them count, as in scikit-learn); they are checked and packed
        into a temporary vector."""
        if self._views_intact():
            return self._flat, self._layer_units()
        coefs, intercepts, units, dtype = self._check_layers(self.coefs_, self.intercepts_)
        return core.pack(coefs, intercepts), units

    def _check_layers(self, coefs, intercepts):
        n_layers = getattr(self, "n_layers_", None)
        try:
            coefs = [np.asarray(W) for W in coefs]
            intercepts = [np.asarray(b) for b in intercepts]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"coefs_ / intercepts_ are not arrays: {exc}") from None
        if n_layers is not None and (
            len(coefs) != n_layers - 1 or len(intercepts) != n_layers - 1
        ):
            raise ValueError(
                f"coefs_ and intercepts_ must hold n_layers_ - 1 = {n_layers - 1} "
                f"arrays each, got {len(coefs)} and {len(intercepts)}."
            )
        # the same checks the core applies (shapes chain, one float dtype, finite)
        def real(a):
            # object arrays of numbers work (as in scikit-learn); complex or
            # non-numeric entries do not
            if a.dtype.kind == "O":
                try:
                    return a.astype(np.float64)
                except (TypeError, ValueError):
                    pass
            if a.dtype.kind not in "fiub":
                raise ValueError(
                    f"coefs_ and intercepts_ must hold real numbers, got dtype {a.dtype}."
                )
            return a

        coefs = [real(W) for W in coefs]
        intercepts = [real(b) for b in intercepts]
        dtypes = {a.dtype for a in chain(coefs, intercepts)}
        if len(dtypes) > 1 or not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}:
            # coerce a consistent model assigned with other float / int arrays
            target = np.float32 if dtypes == {np.dtype(np.float32)} else np.float64
            coefs = [W.astype(target) for W in coefs]
            intercepts = [b.astype(target) for b in intercepts]
        try:
            coefs, intercepts, units, dtype = check_network(coefs, intercepts)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        n_in = getattr(self, "n_features_in_", units[0])
        if units[0] != n_in:
            raise ValueError(
                f"coefs_[0] has {units[0]} rows but the model has {n_in} features."
            )
        if hasattr(self, "n_outputs_") and units[-1] != self.n_outputs_:
            raise ValueError(
                f"coefs_[-1] has {units[-1]} columns but the model has "
                f"{self.n_outputs_} outputs."
            )
        return coefs, intercepts, units, dtype

    def _set_flat(self, flat, units):
        coefs, intercepts = core.unpack(flat, units)
        self._flat = flat
        self.coefs_ = coefs
        self.intercepts_ = intercepts
        self._views = (list(coefs), list(intercepts))

    def __getstate__(self):
        state = super().__getstate__()
        # coefs_ / intercepts_ carry the parameters; the flat vector is rebuilt from
        # them on loading, so do not pickle it (nor the view bookkeeping) twice.
        for name in ("_flat", "_views"):
            state.pop(name, None)
        state["_fastprop_version"] = __version__
        return state

    def __setstate__(self, state):
        if isinstance(state, dict):
            original = state.pop("_fastprop_version", "pre-0.1")
            if original != __version__:
                warnings.warn(
                    InconsistentVersionWarning(
                        estimator_name=type(self).__name__,
                        current_fastprop_version=__version__,
                        original_fastprop_version=original,
                    )
                )
        super().__setstate__(state)
        if "coefs_" in state and "intercepts_" in state:
            try:
                self._flat_params()
            except ValueError:
                # an inconsistent (tampered) model: left as loaded, and predict / fit
                # raise the error when it is used
                pass

    # -- fitting ----------------------------------------------------------------------

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"

        # Glorot uniform, drawn in scikit-learn's order from the same random state
        coefs, intercepts = [], []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            factor = 2.0 if self.activation == "logistic" else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(self._random_state.uniform(-bound, bound, fan_out))
        flat = np.empty(core.n_params(layer_units), dtype=dtype)
        core.pack(coefs, intercepts, out=flat)
        self._set_flat(flat, layer_units)

        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    # regressors ask scikit-learn for numeric targets
    _y_numeric = False

    def _validate_data_xy(self, X, y, reset, defer_x_check=False):
        """scikit-learn's ``validate_data`` on (X, y), with 2-D single-column targets
        made 1-D (with its warning). A fitted model's common call, partial_fit on a
        float array, takes ``_checked_fast`` instead: the same result without
        scikit-learn's generic machinery, which costs more than a small epoch.

        Returns (X, y, x_pending): x_pending is True when ``defer_x_check`` let the
        fast path leave X's values unchecked (the epoch checks them; see ``_fit``)."""
        checked = None if reset else self._checked_fast(X, y, defer_x_check)
        pending = checked is not None and defer_x_check
        if checked is None:
            checked = validate_data(
                self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                y_numeric=self._y_numeric, dtype=(np.float64, np.float32), reset=reset,
            )
        X, y = checked
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y, pending

    def _checked_fast(self, X, y, defer_x_check=False):
        """(X, y) unchanged when they are what ``validate_data(reset=False)`` would
        return as is: a contiguous float32/float64 ndarray X of the fitted width, with
        no feature names on either side, finite values (its sum is finite: one pass,
        scikit-learn's own fast test; skipped with ``defer_x_check``), and a plain
        ndarray y of matching length with finite floats or integer, bool or string
        labels. None for anything else, which takes scikit-learn's path, with its
        exact conversions, errors and warnings."""
        if (
            type(X) is not np.ndarray
            or type(y) is not np.ndarray
            or X.ndim != 2
            or X.dtype.type not in (np.float32, np.float64)
            or not (X.flags.c_contiguous or X.flags.f_contiguous)
            or X.shape[0] < 1
            or X.shape[1] != getattr(self, "n_features_in_", -1)
            or hasattr(self, "feature_names_in_")
            or y.ndim not in (1, 2)
            or y.shape[0] != X.shape[0]
            or (y.ndim == 2 and y.shape[1] < 1)
        ):
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            if y.dtype.kind == "f":
                if not np.isfinite(y.sum()):
                    return None
            elif self._y_numeric or y.dtype.kind not in "iubU":
                return None
            if not defer_x_check and not np.isfinite(X.sum()):
                return None
        return X, y

    def _raise_if_x_nonfinite(self, X, y):
        """The check ``defer_x_check`` skipped, where the epoch cannot make it (the call
        failed before its epoch, or X is cast first): scikit-learn's own error when X
        has NaN or infinity, nothing when its values are finite."""
        if type(X) is np.ndarray and X.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(X.sum()):
                    return
            validate_data(
                self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                y_numeric=self._y_numeric, dtype=(np.float64, np.float32), reset=False,
            )

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError(
                "hidden_layer_sizes must be > 0, got %s." % hidden_layer_sizes
            )
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        # partial_fit's shuffled epoch gathers every row of X: it checks their values as
        # it copies them (NaN, infinity), instead of a separate pass over X before it.
        # A call that fails before its epoch has done that check runs it then, so the
        # error is scikit-learn's whichever check fails.
        defer = (
            incremental and not first_pass and self.solver in _STOCHASTIC_SOLVERS
            and self.shuffle and not self.early_stopping
        )
        # a call that fails leaves the model as it was (see _CallSnapshot)
        snapshot = _CallSnapshot(self)
        try:
            return self._fit_validated(X, y, sample_weight, incremental, first_pass,
                                       hidden_layer_sizes, defer)
        except _PartialFitInterrupted:
            # partial_fit's one epoch did not complete: the call changes nothing
            snapshot.restore()
            warnings.warn("Training interrupted by user.")
            return self
        except BaseException as exc:
            snapshot.restore()
            if defer and isinstance(exc, ValueError):
                self._raise_if_x_nonfinite(X, y)
            raise

    def _fit_validated(self, X, y, sample_weight, incremental, first_pass,
                       hidden_layer_sizes, defer_x_check):
        X, y, x_pending = self._validate_input(
            X, y, incremental, reset=first_pass, defer_x_check=defer_x_check
        )
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        if not is_classifier(self) and self.loss == "poisson" and (y < 0).any():
            raise ValueError(
                "Some value(s) of y are negative which is not allowed for "
                "loss='poisson'."
            )
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)

        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        else:
            flat = self._flat_params()
            if self._layer_units() != layer_units:
                raise ValueError(
                    f"The fitted network has layers {self._layer_units()} but X, y and "
                    f"hidden_layer_sizes ask for {layer_units}."
                )
            if flat.dtype != X.dtype:
                # A model keeps the dtype it was created with (as scikit-learn's, whose
                # in-place updates keep it), and so keeps its optimizer state: the new
                # data is converted instead (a copy, once per call).
                if x_pending:
                    # checked before the cast, which could turn a large float64 into inf
                    self._raise_if_x_nonfinite(X, y)
                    x_pending = False
                _check_castable("X", X, flat.dtype)
                _check_castable("sample_weight", sample_weight, flat.dtype)
                X = X.astype(flat.dtype)
                if sample_weight is not None:
                    sample_weight = sample_weight.astype(flat.dtype)
        _check_castable("y", y, X.dtype)
        Y = np.ascontiguousarray(y, dtype=X.dtype)

        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(X, Y, sample_weight, incremental, check_x=x_pending)
        elif self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, sample_weight, layer_units)

        weights = chain(self.coefs_, self.intercepts_)
        if not all(np.isfinite(w).all() for w in weights):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _fit_lbfgs(self, X, Y, sample_weight, layer_units):
        f = core.LossGradient(
            layer_units, X, Y, activation=self.activation,
            loss=_CORE_LOSS[self.out_activation_], alpha=self.alpha,
            sample_weight=sample_weight,
        )
        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        # BLAS on one thread for the whole fit: SciPy's step between two passes calls
        # it too, and its multi-threaded dot products round by thread count
        with core.blas_held():
            opt_res = scipy.optimize.minimize(
                f,
                self._flat_params().astype(np.float64),
                method="L-BFGS-B",
                jac=True,
                options={
                    "maxfun": self.max_fun,
                    "maxiter": self.max_iter,
                    "gtol": self.tol,
                    **_lbfgs_iprint_options(iprint),
                },
            )
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        flat = self._flat_params()
        flat[...] = opt_res.x

    def _new_optimizer(self):
        return core.Trainer(
            self._layer_units(), self.activation, _CORE_LOSS[self.out_activation_],
            self._flat, self.solver,
            learning_rate=self.learning_rate_init, momentum=self.momentum,
            nesterov=self.nesterovs_momentum, beta_1=self.beta_1, beta_2=self.beta_2,
            epsilon=self.epsilon,
        )

    def _fit_stochastic(self, X, Y, sample_weight, incremental, check_x=False):
        """Minibatch training. ``check_x``: X's values are unchecked, and the first
        epoch checks them as it gathers the rows (it must visit them all); if they are
        not finite, the model is restored to what it was and ``NonFiniteRowsError``
        raised."""
        flat = self._flat_params()
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._new_optimizer()
        opt = self._optimizer
        if opt.params is not flat:
            if opt.state_1.shape != flat.shape or opt.state_1.dtype != flat.dtype:
                # the network changed under a kept optimizer: its state cannot carry over
                opt = self._optimizer = self._new_optimizer()
            opt.params = flat

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        n_all = X.shape[0]
        if early_stopping:
            # Split row indices, not rows: the training part is visited by index, so X
            # is not copied; only the (small) validation part is materialised.
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            # the binarized labels as bool, as scikit-learn stratifies (its error then
            # names the class True, not 1.0)
            stratify = Y.astype(bool) if should_stratify else None
            train_idx, val_idx = train_test_split(
                np.arange(n_all),
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            if val_idx.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            X_val = X[val_idx]
            y_val = Y[val_idx]
            sample_weight_val = None if sample_weight is None else sample_weight[val_idx]
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            elif y_val.shape[1] == 1:
                y_val = y_val.ravel()
            sample_idx = train_idx.astype(np.intp)
        else:
            X_val = y_val = sample_weight_val = None
            sample_idx = np.arange(n_all, dtype=np.intp)
        n_samples = sample_idx.shape[0]
        in_place = not early_stopping and not self.shuffle

        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped"
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        X_core = core.csr_parts(X) if sp.issparse(X) else X
        if not sp.issparse(X) and not X.flags.c_contiguous:
            X_core = np.ascontiguousarray(X)
        sw_core = None
        if sample_weight is not None:
            sw_core = np.ascontiguousarray(sample_weight, dtype=flat.dtype)
        # check_x: the first epoch must visit every row, gathered (it checks them)
        check_x = check_x and not in_place and n_samples == n_all
        # fit's model at the start of the epoch in progress, for an interrupt to go back
        # to (partial_fit's is the call's snapshot, which _fit restores). The random
        # state is part of it when it is the user's RandomState: an int seed makes a
        # new one each call.
        epoch_start = None if incremental else _EpochStart(
            opt, rng=self._random_state if isinstance(
                self.random_state, np.random.RandomState) else None)

        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                if epoch_start is not None and it > 0:
                    epoch_start.save()
                if self.shuffle:
                    # sklearn.utils.shuffle(sample_idx, random_state=...), the same
                    # draws, without its per-call validation
                    perm = np.arange(sample_idx.shape[0])
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                tic = time.perf_counter()
                try:
                    accumulated_loss = opt.run_epoch(
                        X_core, Y, batch_size=batch_size, alpha=self.alpha,
                        sample_weight=sw_core, order=None if in_place else sample_idx,
                        check_input=False,  # validated once above, not per epoch
                        check_finite=check_x,
                    )
                except KeyboardInterrupt:
                    # An epoch that was still checking X finishes the check first: X
                    # with NaN or infinity fails the call with scikit-learn's error
                    # (and _fit puts the model back as it was before the call).
                    if check_x:
                        self._raise_if_x_nonfinite(X, Y)
                    if incremental:
                        raise _PartialFitInterrupted() from None
                    # fit keeps the model of the last completed epoch: its weights,
                    # optimizer state and random state
                    epoch_start.restore()
                    raise
                # NonFiniteRowsError (X had NaN or infinity) goes up to _fit, which puts
                # the model back as it was and raises scikit-learn's error
                check_x = False
                elapsed = time.perf_counter() - tic
                self.n_iter_ += 1
                self.loss_ = accumulated_loss / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(
                        "Iteration %d, loss = %.8f, time = %.3fs, %.0f samples/s"
                        % (self.n_iter_, self.loss_, elapsed,
                           n_samples / max(elapsed, 1e-9))
                    )
                self._update_no_improvement_count(
                    early_stopping, X_val, y_val, sample_weight_val
                )
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    opt.learning_rate = float(self.learning_rate_init) / (
                        self.t_ + 1
                    ) ** self.power_t
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = (
                            "Validation score did not improve more than "
                            "tol=%f for %d consecutive epochs."
                            % (self.tol, self.n_iter_no_change)
                        )
                    else:
                        msg = (
                            "Training loss did not improve more than tol=%f"
                            " for %d consecutive epochs."
                            % (self.tol, self.n_iter_no_change)
                        )
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) "
                        "reached and the optimization hasn't converged yet."
                        % self.max_iter,
                        ConvergenceWarning,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

        if early_stopping:
            # restore the best weights (into the flat vector: coefs_ stay its views)
            core.pack(self._best_coefs, self._best_intercepts, out=flat)

    def _trigger_stopping(self, msg):
        """scikit-learn's optimizer rule: adaptive SGD divides the rate by 5 until it
        falls to 1e-6; everything else stops."""
        opt = self._optimizer
        if not (self.solver == "sgd" and self.learning_rate == "adaptive"):
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if opt.learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        opt.learning_rate = opt.learning_rate / 5.0
        if self.verbose:
            print(msg + " Setting learning rate to %f" % opt.learning_rate)
        return False

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight):
        if early_stopping:
            val_score = self._score(X, y, sample_weight=sample_weight)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data. float32 data trains in float32, anything else in float64.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in
            regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            Returns a trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                " optimizers. %s is not stochastic." % self.solver
            )
        return True

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    # -- prediction -------------------------------------------------------------------

    def predict(self, X):
        """Predict using the multi-layer perceptron.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted classes (:class:`MLPClassifier`) or values
            (:class:`MLPRegressor`).
        """
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        return self._prediction_from_output(
            self._forward_pass_fast(X, check_input=check_input))

    def _prediction_from_output(self, y_pred):
        """The prediction for the network's output ``y_pred`` (n_samples, n_outputs),
        after the output activation: the hook each estimator implements."""
        raise NotImplementedError

    def input_gradients(self, X):
        """Gradients of the model's outputs with respect to its inputs.

        For :class:`MLPRegressor`, the derivatives of ``predict`` (after the output
        activation, e.g. ``exp`` for ``loss='poisson'``); for :class:`MLPClassifier`,
        those of ``predict_proba``'s columns (two for a binary model, ``1 - p`` and
        ``p``). Computed by the compiled backward pass, one forward pass and one
        backward pass per output, without the GIL, in the model's dtype.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        gradients : ndarray of shape (n_samples, n_outputs, n_features)
            ``gradients[i, k, j]`` is the derivative of output ``k`` at sample ``i``
            with respect to feature ``j``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        flat, units = self._predict_params()
        kw = dict(activation=self.activation, loss=_CORE_LOSS[self.out_activation_])
        with np.errstate(over="ignore"):
            Xc = X if X.dtype == flat.dtype else X.astype(flat.dtype)
        grads = core.input_gradients_flat(flat, units, Xc, **kw)
        if flat.dtype == np.float32 and not np.isfinite(grads).all():
            # float32 overflowed: as predict, compute in float64
            grads = core.input_gradients_flat(flat.astype(np.float64), units,
                                              X.astype(np.float64), **kw)
        return self._input_gradients_from_output(grads)

    def _input_gradients_from_output(self, grads):
        """The gradients of the predicted quantities, from those of the network's
        outputs (n_samples, n_outputs, n_features): the hook each estimator may change."""
        return grads

    # -- exchange with scikit-learn ---------------------------------------------------

    def to_sklearn(self):
        """An equivalent fitted scikit-learn model.

        Returns a fitted :class:`sklearn.neural_network.MLPClassifier` or
        :class:`~sklearn.neural_network.MLPRegressor` with the same parameters, layers,
        labels, counters and optimizer state, so that it predicts as this model does
        and its ``partial_fit`` trains on from here: for deploying where only
        scikit-learn is installed.

        Raises
        ------
        ValueError
            If the model uses a setting scikit-learn's MLP cannot represent.
        """
        check_is_fitted(self)
        from ._interop import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, sk_model):
        """A fastprop model equivalent to a fitted scikit-learn MLP.

        Takes a fitted :class:`sklearn.neural_network.MLPClassifier` (for
        ``MLPClassifier.from_sklearn``) or ``MLPRegressor`` (for
        ``MLPRegressor.from_sklearn``), with its parameters, layers, labels, counters
        and optimizer state: the result predicts as ``sk_model`` does, and
        ``partial_fit`` or a ``warm_start`` fit trains on from there.

        Raises
        ------
        TypeError
            If ``sk_model`` is not scikit-learn's estimator of this kind.
        sklearn.exceptions.NotFittedError
            If ``sk_model`` is not fitted.
        """
        from ._interop import from_sklearn

        return from_sklearn(cls, sk_model)

    def _forward_pass_fast(self, X, check_input=True):
        """The network's output for X (after the output activation).

        A float32 model computes in float32. Where that overflows (float64 X beyond
        float32's range, or products past it), its output would be infinite or NaN:
        the output is then computed in float64, as scikit-learn computes float64 X,
        and returned in float32 where it fits, else in float64."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        flat, units = self._predict_params()
        kw = dict(activation=self.activation, loss=_CORE_LOSS[self.out_activation_])
        with np.errstate(over="ignore"):
            Xc = X if X.dtype == flat.dtype else X.astype(flat.dtype)
        out = core.forward_flat(flat, units, Xc, **kw)
        if flat.dtype == np.float32 and not np.isfinite(out).all():
            out64 = core.forward_flat(flat.astype(np.float64), units,
                                      X.astype(np.float64), **kw)
            with np.errstate(over="ignore"):
                out = out64.astype(np.float32)
            if np.isfinite(out64).all() and not np.isfinite(out).all():
                out = out64
        return out

    def _score_with_function(self, X, y, sample_weight, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, MLPEstimator):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier`` on
    fastprop's compiled core.

    Same parameters, defaults, attributes and behaviour as
    :class:`sklearn.neural_network.MLPClassifier` (binary, multiclass and multilabel
    targets; solvers 'adam', 'sgd' and 'lbfgs'); see its documentation. float32 input
    trains and predicts in float32.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
    alpha : float, default=0.0001
    batch_size : int or 'auto', default='auto'
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
    tol : float, default=1e-4
    verbose : bool, default=False
        Print one line per epoch: iteration, loss, wall time and samples per second.
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    beta_1 : float, default=0.9
    beta_2 : float, default=0.999
    epsilon : float, default=1e-8
    n_iter_no_change : int, default=10
    max_fun : int, default=15000

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, t_, coefs_, intercepts_, n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn. ``coefs_`` / ``intercepts_`` are views of one flat
        parameter vector; assigning new arrays to them works as it does in
        scikit-learn.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastprop import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(random_state=0, max_iter=50).fit(X / 16, y)
    >>> clf.score(X / 16, y) > 0.95
    True
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss="log_loss",
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
        )

    def _validate_input(self, X, y, incremental, reset, defer_x_check=False):
        X, y, x_pending = self._validate_data_xy(X, y, reset, defer_x_check)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            if incremental and not self.warm_start:
                # partial_fit's per-call label work, on the common case without
                # scikit-learn's generic machinery (it costs more than a small epoch)
                Y = self._encode_known_labels(y)
                if Y is not None:
                    return X, Y, x_pending
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        # bool first (no float64 temporary), then the data's dtype in _fit
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y, x_pending

    def _encode_known_labels(self, y):
        """One-hot (or single-column, for binary) bool targets for 1-D integer or
        string labels of the fitted classes_; None where scikit-learn's general path
        must decide (other label types, multilabel, or labels outside classes_, for
        its exact error)."""
        classes = self.classes_
        lb = self._label_binarizer
        if (
            y.ndim != 1
            or y.dtype != classes.dtype
            or y.dtype.kind not in "iubU"
            or lb.y_type_ not in ("binary", "multiclass")
            or lb.sparse_output
            or lb.neg_label != 0
            or lb.pos_label != 1
        ):
            return None
        idx = np.searchsorted(classes, y)
        np.minimum(idx, len(classes) - 1, out=idx)
        if not np.array_equal(classes[idx], y):
            return None
        if lb.y_type_ == "binary":
            if len(classes) == 1:
                return None
            return (idx == 1).reshape(-1, 1)
        Y = np.zeros((y.shape[0], len(classes)), dtype=bool)
        Y[np.arange(y.shape[0]), idx] = True
        return Y

    def _prediction_from_output(self, y_pred):
        """The classes (labels, or label indicators for multilabel y) for the network's
        output: the most probable class, or each label whose probability is above 0.5."""
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _input_gradients_from_output(self, grads):
        # predict_proba gives a single-output model two columns, 1 - p and p
        if self.n_outputs_ == 1:
            return np.concatenate([-grads, grads], axis=1)
        return grads

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(
            X, y, sample_weight=sample_weight, score_function=accuracy_score
        )

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit; required on the first call.

        Returns
        -------
        self : object
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Log of probability estimates, ``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates, columns ordered as ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, MLPEstimator):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor`` on fastprop's
    compiled core.

    Same parameters, defaults, attributes and behaviour as
    :class:`sklearn.neural_network.MLPRegressor` (``loss`` 'squared_error' or
    'poisson'; single- and multi-output targets); see its documentation and
    :class:`MLPClassifier` for the parameter list. For several outputs the reported
    squared-error loss sums over outputs (see the module docstring).

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from fastprop import MLPRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> reg = MLPRegressor(solver="lbfgs", random_state=0, max_iter=200).fit(X, y)
    >>> reg.score(X, y) > 0.5
    True
    """

    _parameter_constraints: dict = {
        **MLPEstimator._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    _y_numeric = True

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss=loss,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
        )

    def _prediction_from_output(self, y_pred):
        """The network's output (after the output activation), 1-D for one output."""
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(
            X, y, sample_weight=sample_weight, score_function=r2_score
        )

    def _validate_input(self, X, y, incremental, reset, defer_x_check=False):
        return self._validate_data_xy(X, y, reset, defer_x_check)
