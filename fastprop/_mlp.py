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

import functools
import time
import warnings
from itertools import chain
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, check_scoring, get_scorer_names, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from . import core, reference
from .core._team import training
from ._sklearn_compat import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    check_optimize_result,
    check_partial_fit_first_call,
    check_sample_weight,
    fit_context,
    lbfgs_iprint_options,
)
from ._callbacks import CallbackSupportMixin, LbfgsStop, fit_callbacks
from ._fast_path import PartialFitFastPathMixin
from ._params import FlatParametersMixin
from ._state import CallSnapshot, EpochStart, PartialFitInterrupted
from ._validation import check_castable

_STOCHASTIC_SOLVERS = ["sgd", "adam", "rmsprop", "adamw"]

# scikit-learn's loss name for a given output activation (what loss_and_gradients calls
# the loss, which fixes the output layer).
_CORE_LOSS = {
    "identity": "squared_error",
    "exp": "poisson",
    "softmax": "log_loss",
    "logistic": "binary_log_loss",
}




def _training(method):
    """A fit method during which the calling thread counts as training, parameter
    checks and the steps between epochs included: fits running side by side in threads
    share the threads a fit may use, and a team's extra threads come only from what none
    of them uses (``core._team.training``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with training():
            return method(self, *args, **kwargs)

    return wrapper

class MLPEstimator(
    FlatParametersMixin, PartialFitFastPathMixin, CallbackSupportMixin, BaseEstimator
):
    """Base class of fastprop's multilayer perceptrons: fit, partial_fit, predict.

    Use :class:`MLPClassifier` or :class:`MLPRegressor`; the parameters are those of
    scikit-learn's estimators of the same names.
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu", "leaky_relu",
                                   "elu", "softplus", "gelu", "silu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam", "rmsprop", "adamw"})],
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
        "scoring": [StrOptions(set(get_scorer_names()) | {"loss"}), callable, None],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "rho": [Interval(Real, 0, 1, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
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
        scoring=None,
        max_grad_norm=None,
        rho=0.9,
        dropout=0.0,
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
        self.scoring = scoring
        self.max_grad_norm = max_grad_norm
        self.rho = rho
        self.dropout = dropout

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

        # Glorot uniform, drawn in scikit-learn's order from the same random state; the
        # factor is 2 for 'logistic' only, 6 for every other activation (the new ones
        # too), as scikit-learn's rule gives
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
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
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

    def _fit(self, X, y, sample_weight=None, incremental=False):
        """scikit-learn's ``_fit``, in four steps: validate, initialise (or continue
        from the fitted model), run the solver, check the result.

        A call that fails leaves the model as it was (``CallSnapshot``). On a fitted
        model's ``partial_fit``, X's values may be left to the epoch, which checks them
        as it gathers the rows (``defer``; see ``fastprop._fast_path``): a call that
        fails before its epoch made that check makes it then, so the error is
        scikit-learn's whichever check fails."""
        hidden_layer_sizes = self._hidden_layer_sizes()
        self._dropout_rates(len(hidden_layer_sizes))
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        defer = (
            incremental and not first_pass and self.solver in _STOCHASTIC_SOLVERS
            and self.shuffle and not self.early_stopping
        )
        # scikit-learn's callbacks (None without any): the call is the root task, and
        # fit's iterations its subtasks
        callbacks = fit_callbacks(
            self, X, y, sample_weight, 0 if incremental else self.max_iter)
        snapshot = CallSnapshot(self)
        try:
            # 1. validate
            Xv, yv, sample_weight, x_pending = self._validate_fit_data(
                X, y, sample_weight, incremental, first_pass, defer)
            if callbacks is not None:
                callbacks.begin()
            layer_units = [Xv.shape[1]] + hidden_layer_sizes + [yv.shape[1]]
            self.n_outputs_ = yv.shape[1]
            self._random_state = check_random_state(self.random_state)
            # 2. initialise, or continue from the fitted model (in its dtype)
            if first_pass:
                self._initialize(yv, layer_units, Xv.dtype)
            else:
                Xv, sample_weight, x_pending = self._continue_fitted(
                    Xv, yv, sample_weight, layer_units, x_pending)
            check_castable("y", yv, Xv.dtype)
            Y = np.ascontiguousarray(yv, dtype=Xv.dtype)
            # 3. run the solver
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(Xv, Y, sample_weight, incremental, check_x=x_pending,
                                     callbacks=callbacks)
            else:
                self._fit_lbfgs(Xv, Y, sample_weight, layer_units, callbacks=callbacks)
            # 4. check the result
            if not all(np.isfinite(w).all() for w in chain(self.coefs_, self.intercepts_)):
                raise ValueError(
                    "Solver produced non-finite parameter weights. The input data may"
                    " contain large values and need to be preprocessed."
                )
            if callbacks is not None:
                callbacks.end()
            return self
        except PartialFitInterrupted:
            # partial_fit's one epoch did not complete: the call changes nothing
            snapshot.restore()
            warnings.warn("Training interrupted by user.")
            return self
        except BaseException as exc:
            snapshot.restore()
            if defer and isinstance(exc, ValueError):
                self._raise_if_x_nonfinite(X, y)
            raise

    def _dropout_rates(self, n_hidden):
        """``dropout`` as one rate per hidden layer (float64), or None when no layer
        drops; a value that does not fit the network raises InvalidParameterError, and
        dropout with L-BFGS a ValueError."""
        value = self.dropout
        rates = None
        values = value if np.ndim(value) > 0 else [value]
        if not any(isinstance(v, (str, bool, np.bool_)) for v in values):
            try:
                rates = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                rates = None
        if rates is not None and rates.ndim == 0:
            rates = np.full(n_hidden, float(rates))
        if (rates is None or rates.ndim != 1 or rates.shape[0] != n_hidden
                or not np.all((rates >= 0) & (rates < 1))):
            raise InvalidParameterError(
                f"The 'dropout' parameter of {type(self).__name__} must be a float in "
                f"the range [0.0, 1.0) or an array-like of {n_hidden} such floats, one "
                f"per hidden layer. Got {value!r} instead."
            )
        if not np.any(rates > 0):
            return None
        if self.solver == "lbfgs":
            raise ValueError(
                f"dropout is for the stochastic solvers {tuple(_STOCHASTIC_SOLVERS)}; "
                "solver='lbfgs' trains without it: set dropout=0.0."
            )
        return rates

    def _dropout_seed(self):
        """The next epoch's dropout seed: drawn from the random state, and mixed with
        the samples seen so far, so that partial_fit calls with an int random_state
        (a new RandomState each call) do not repeat their masks."""
        draw = int(self._random_state.randint(0, 2**63, dtype=np.int64))
        return (draw + self.t_ * 0x9E3779B97F4A7C15) % 2**64

    def _hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if np.any(np.array(sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        return sizes

    def _validate_fit_data(self, X, y, sample_weight, incremental, first_pass, defer):
        """X, y as 2-D targets, sample_weight, and whether X's values are left to the
        epoch (x_pending)."""
        X, y, x_pending = self._validate_input(
            X, y, incremental, reset=first_pass, defer_x_check=defer
        )
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X, dtype=X.dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        sample_weight = self._weighted_by_class(y, sample_weight, X.dtype, incremental)
        if not is_classifier(self) and self.loss == "poisson" and (y < 0).any():
            raise ValueError(
                "Some value(s) of y are negative which is not allowed for "
                "loss='poisson'."
            )
        return X, y, sample_weight, x_pending

    def _weighted_by_class(self, Y, sample_weight, dtype, incremental):
        """The sample weights training uses, for the targets Y (2-D, encoded): the
        classifier multiplies them by its class weights."""
        return sample_weight

    def _continue_fitted(self, X, y, sample_weight, layer_units, x_pending):
        """The data for a fitted model to train on: its network must be the one the data
        asks for, and the data is converted to the model's dtype. A model keeps the dtype
        it was created with (as scikit-learn's, whose in-place updates keep it), and so
        keeps its optimizer state: the new data is converted instead (a copy, once per
        call), after checking what the cast could turn into infinity."""
        flat = self._flat_params()
        if self._layer_units() != layer_units:
            raise ValueError(
                f"The fitted network has layers {self._layer_units()} but X, y and "
                f"hidden_layer_sizes ask for {layer_units}."
            )
        if flat.dtype != X.dtype:
            if x_pending:
                # checked before the cast, which could turn a large float64 into inf
                self._raise_if_x_nonfinite(X, y)
                x_pending = False
            check_castable("X", X, flat.dtype)
            check_castable("sample_weight", sample_weight, flat.dtype)
            X = X.astype(flat.dtype)
            if sample_weight is not None:
                sample_weight = sample_weight.astype(flat.dtype)
        return X, sample_weight, x_pending

    def _core_loss(self):
        """The loss the core trains with and its keywords: the one the output activation
        fixes, as scikit-learn pairs them (MLPRegressor's robust losses add theirs)."""
        return _CORE_LOSS[self.out_activation_], {}

    def _fit_lbfgs(self, X, Y, sample_weight, layer_units, callbacks=None):
        loss, loss_kw = self._core_loss()
        f = core.LossGradient(
            layer_units, X, Y, activation=self.activation, loss=loss, alpha=self.alpha,
            sample_weight=sample_weight, **loss_kw,
        )
        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        # each iteration a callbacks' task (f and callback unchanged without them)
        fun, callback = (f, None) if callbacks is None else callbacks.lbfgs(f)
        stop = LbfgsStop()
        # BLAS on one thread for the whole fit: SciPy's step between two passes calls
        # it too, and its multi-threaded dot products round by thread count
        with core.blas_held(), stop:
            opt_res = scipy.optimize.minimize(
                fun,
                self._flat_params().astype(np.float64),
                method="L-BFGS-B",
                jac=True,
                options={
                    "maxfun": self.max_fun,
                    "maxiter": self.max_iter,
                    "gtol": self.tol,
                    **lbfgs_iprint_options(iprint),
                },
                callback=callback,
            )
        if stop.x is not None:
            # a callback stopped the fit: that iteration's weights and loss
            self.n_iter_ = stop.n_iter
            with core.blas_held():
                self.loss_ = float(f(stop.x)[0])
            self._flat_params()[...] = stop.x
            return
        if callbacks is not None:
            callbacks.close()  # an iteration cut short by max_fun
        self.n_iter_ = check_optimize_result(opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        flat = self._flat_params()
        flat[...] = opt_res.x

    def _new_optimizer(self):
        loss, loss_kw = self._core_loss()
        return core.Trainer(
            self._layer_units(), self.activation, loss, self._flat, self.solver,
            learning_rate=self.learning_rate_init, momentum=self.momentum,
            nesterov=self.nesterovs_momentum, beta_1=self.beta_1, beta_2=self.beta_2,
            epsilon=self.epsilon, rho=self.rho, max_grad_norm=self.max_grad_norm,
            **loss_kw,
            # adamw: alpha is the decoupled weight decay, not an L2 term (_epoch_alpha)
            weight_decay=self.alpha if self.solver == "adamw" else 0.0,
        )

    def _epoch_alpha(self):
        """The L2 coefficient of the epochs' loss and gradient: alpha, but 0 for
        'adamw', which takes alpha as its decoupled weight decay instead."""
        return 0.0 if self.solver == "adamw" else self.alpha

    def _fit_stochastic(self, X, Y, sample_weight, incremental, check_x=False,
                        callbacks=None):
        """Minibatch training. ``check_x``: X's values are unchecked, and the first
        epoch checks them as it gathers the rows (it must visit them all); if they are
        not finite, the model is restored to what it was and ``NonFiniteRowsError``
        raised."""
        flat = self._flat_params()
        if (not incremental or not hasattr(self, "_optimizer")
                or self._optimizer.solver != self.solver):
            # (a solver changed between partial_fit calls starts with a fresh state)
            self._optimizer = self._new_optimizer()
        opt = self._optimizer
        if opt.params is not flat:
            if opt.state_1.shape != flat.shape or opt.state_1.dtype != flat.dtype:
                # the network changed under a kept optimizer: its state cannot carry over
                opt = self._optimizer = self._new_optimizer()
            opt.params = flat
        # a kept optimizer follows the estimator's current setting (set_params)
        opt.max_grad_norm = self.max_grad_norm
        # the loss as set now (partial_fit keeps the optimizer, not the loss's settings)
        opt.loss, loss_kw = self._core_loss()
        opt.huber_delta = loss_kw.get("huber_delta", 1.0)

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        dropout = self._dropout_rates(len(self.coefs_) - 1)
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
            y_val = Y_val = Y[val_idx]
            sample_weight_val = None if sample_weight is None else sample_weight[val_idx]
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            elif y_val.shape[1] == 1:
                y_val = y_val.ravel()
            sample_idx = train_idx.astype(np.intp)
        else:
            X_val = y_val = Y_val = sample_weight_val = None
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
        epoch_start = None if incremental else EpochStart(
            opt, rng=self._random_state if isinstance(
                self.random_state, np.random.RandomState) else None)

        if callbacks is not None:
            callbacks.best_weights = early_stopping
        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                if epoch_start is not None and it > 0:
                    epoch_start.save()
                if callbacks is not None:
                    callbacks.iteration_begin()
                if self.shuffle:
                    # sklearn.utils.shuffle(sample_idx, random_state=...), the same
                    # draws, without its per-call validation
                    perm = np.arange(sample_idx.shape[0])
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                # one seed per epoch, drawn only with dropout on (without it, the
                # random state is used as scikit-learn uses it)
                dropout_seed = 0 if dropout is None else self._dropout_seed()
                tic = time.perf_counter()
                try:
                    accumulated_loss = opt.run_epoch(
                        X_core, Y, batch_size=batch_size, alpha=self._epoch_alpha(),
                        sample_weight=sw_core, order=None if in_place else sample_idx,
                        check_input=False,  # validated once above, not per epoch
                        check_finite=check_x, dropout=dropout, dropout_seed=dropout_seed,
                    )
                except KeyboardInterrupt:
                    # An epoch that was still checking X finishes the check first: X
                    # with NaN or infinity fails the call with scikit-learn's error
                    # (and _fit puts the model back as it was before the call).
                    if check_x:
                        self._raise_if_x_nonfinite(X, Y)
                    if incremental:
                        raise PartialFitInterrupted() from None
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
                    early_stopping, X_val, y_val, sample_weight_val, Y_val
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
                        if callbacks is not None:
                            callbacks.iteration_end()
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                # a callback's True stops here, as max_iter would (without its warning)
                if callbacks is not None and callbacks.iteration_end():
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
            if callbacks is not None:
                callbacks.close()  # the interrupted epoch's task

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

    def _validation_loss(self, X, Y, sample_weight):
        """The data loss (no L2 term) of the model on (X, Y), Y encoded as in
        training: the weighted mean over samples of the training loss, computed from
        the output logits as training computes it."""
        flat, units = self._predict_params()
        Z = core.forward_flat(flat, units, X, activation=self.activation,
                              loss="squared_error")  # identity output: the logits
        loss, loss_kw = self._core_loss()
        per_sample = reference._data_loss_per_sample(Z, Y, loss, **loss_kw)
        w = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        return float(np.average(per_sample.astype(np.float64), weights=w))

    def _validation_score(self, X, y, sample_weight, Y):
        """The validation loss (appended to ``validation_loss_curve_``) and the score
        early stopping follows: scikit-learn's ``score`` for ``scoring=None``, the
        negative validation loss for 'loss', else the scorer's value."""
        loss = self._validation_loss(X, Y, sample_weight)
        if getattr(self, "validation_loss_curve_", None) is None:
            # a model fitted before without early stopping, or converted
            self.validation_loss_curve_ = []
        self.validation_loss_curve_.append(loss)
        scoring = getattr(self, "scoring", None)
        if scoring is None:
            return self._score(X, y, sample_weight=sample_weight)
        if scoring == "loss":
            return -loss
        scorer = check_scoring(self, scoring=scoring)
        if sample_weight is None:
            return float(scorer(self, X, y))
        return float(scorer(self, X, y, sample_weight=sample_weight))

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight,
                                     Y=None):
        if early_stopping:
            val_score = self._validation_score(X, y, sample_weight, Y)
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

    @_training
    @fit_context(prefer_skip_nested_validation=True)
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
    @_training
    @fit_context(prefer_skip_nested_validation=True)
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
    trains and predicts in float32. With scikit-learn >= 1.9, ``set_callbacks`` takes
    its callbacks (``sklearn.callback``), each epoch a task: see ``fastprop._callbacks``.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'elu', \
'softplus', 'gelu', 'silu'}, default='relu'
        The hidden layers' activation. The first four are scikit-learn's; fastprop adds
        ``'leaky_relu'`` (z for z > 0, else 0.01 z), ``'elu'`` (z for z > 0, else
        e^z - 1), ``'softplus'`` (log(1 + e^z)), ``'gelu'`` (the exact
        0.5 z (1 + erf(z / sqrt 2))) and ``'silu'`` (z / (1 + e^-z)). The initial
        weights are Glorot-uniform with scikit-learn's factor: 2 for ``'logistic'``, 6
        for every other activation, the new ones included. Models with the new
        activations cannot be converted with ``to_sklearn`` (ValueError).
    solver : {'lbfgs', 'sgd', 'adam', 'rmsprop', 'adamw'}, default='adam'
        'rmsprop' and 'adamw' are fastprop's (scikit-learn has neither), as PyTorch's
        ``RMSprop`` and ``AdamW``; both use ``learning_rate_init`` and ``epsilon``
        (epsilon outside the square root), 'adamw' also ``beta_1`` and ``beta_2``.
    alpha : float, default=0.0001
        L2 penalty. With solver='adamw' it is the decoupled weight decay lambda
        instead: each step the weights (not the intercepts) shrink by
        ``1 - learning_rate_init * alpha``, and the loss has no L2 term.
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
    scoring : str, callable, 'loss' or None, default=None
        What early stopping follows on the validation split (as in
        ``HistGradientBoostingClassifier``; not in scikit-learn's MLPs). None keeps
        scikit-learn's rule on ``score``; 'loss' stops on the validation loss (the
        rule applied to its negative, which ``validation_scores_`` then holds) and
        keeps the best epoch's weights; a scorer name or callable stops on that score.
        Unused without ``early_stopping``.
    max_grad_norm : float > 0 or None, default=None
        Clip the global L2 norm of each minibatch's gradient (all weights and
        intercepts, L2 term included) to at most this value before the optimizer
        step (not in scikit-learn's MLPs). Stochastic solvers only.
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes, ``{label: weight}``, as in ``LogisticRegression`` and
        ``SGDClassifier`` (not in scikit-learn's MLPClassifier). They multiply
        ``sample_weight``. 'balanced' weights each class by ``n_samples / (n_classes *
        count)``, which trains the same model as
        ``sample_weight=compute_sample_weight('balanced', y)``; with sample weights
        the counts are their sums per class. ``partial_fit`` takes
        a dict only (as ``SGDClassifier``), and multilabel y none.
    rho : float in [0, 1), default=0.9
        solver='rmsprop' only: the decay of the running mean of squared gradients,
        ``v = rho * v + (1 - rho) * g**2``, step ``lr * g / (sqrt(v) + epsilon)``.
    dropout : float or array-like of floats, default=0.0
        Inverted dropout on the hidden layers' outputs, in training only (not in
        scikit-learn): each unit is dropped with this probability (one rate for every
        hidden layer, or one per hidden layer, each in [0, 1)) and the kept ones are
        scaled by 1 / (1 - rate); predictions use no mask. The masks come from
        ``random_state``, and a fit is bitwise the same for any thread count;
        ``loss_curve_`` holds the training loss with the masks. Not with
        ``solver='lbfgs'``.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_,
    best_validation_score_, t_, coefs_, intercepts_, n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        As in scikit-learn. ``coefs_`` / ``intercepts_`` are views of one flat
        parameter vector; assigning new arrays to them works as it does in
        scikit-learn.
    validation_loss_curve_ : list of float or None
        With ``early_stopping``, the loss on the validation split after each epoch:
        the data loss, without the L2 term, on the scale of ``loss_curve_``. None
        otherwise.

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
        scoring=None,
        max_grad_norm=None,
        class_weight=None,
        rho=0.9,
        dropout=0.0,
    ):
        self.class_weight = class_weight
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
            scoring=scoring,
            max_grad_norm=max_grad_norm,
            rho=rho,
            dropout=dropout,
        )

    _parameter_constraints: dict = {
        **MLPEstimator._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def _weighted_by_class(self, Y, sample_weight, dtype, incremental):
        """``sample_weight`` times the weight of each sample's class
        (``class_weight``), with the meaning it has in ``LogisticRegression`` and
        ``SGDClassifier``: 'balanced' gives the weights of
        ``compute_sample_weight('balanced', y)``. None leaves ``sample_weight`` as
        given."""
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError(
                "class_weight is not supported for multilabel y: each sample has "
                "several labels. Pass per-sample weights as sample_weight instead."
            )
        if incremental and isinstance(self.class_weight, str):
            # SGDClassifier's rule: one call's labels do not tell the classes'
            # frequencies over the whole stream
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit. In order "
                "to use 'balanced' weights, use compute_class_weight('balanced', "
                "classes=classes, y=y). In place of y you can use a large enough "
                "sample of the full training set target to properly estimate the "
                "class frequency distributions. Pass the resulting weights as the "
                "class_weight parameter."
            )
        if Y.shape[1] == 1:
            index = Y[:, 0].astype(np.intp)
        else:
            index = np.argmax(Y, axis=1)
        # 'balanced' counts the classes by their sample weights, so that weights and
        # repeated samples stay equivalent (as scikit-learn's linear models count)
        weights = compute_class_weight(
            self.class_weight, classes=self.classes_, y=self.classes_[index],
            sample_weight=sample_weight,
        )
        per_sample = weights[index]
        if sample_weight is not None:
            per_sample = sample_weight * per_sample
        return np.ascontiguousarray(per_sample, dtype=dtype)

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
    @_training
    @fit_context(prefer_skip_nested_validation=True)
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
        if check_partial_fit_first_call(self, classes):
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
        # class weights do not apply to multilabel y (_weighted_by_class)
        tags.classifier_tags.multi_label = self.class_weight is None
        return tags


class MLPRegressor(RegressorMixin, MLPEstimator):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor`` on fastprop's
    compiled core.

    Same parameters, defaults, attributes and behaviour as
    :class:`sklearn.neural_network.MLPRegressor` (``loss`` 'squared_error' or
    'poisson'; single- and multi-output targets); see its documentation and
    :class:`MLPClassifier` for the parameter list (solvers 'rmsprop' and 'adamw' and
    their ``rho`` included). For several outputs the reported squared-error loss sums
    over outputs (see the module docstring).

    Parameters
    ----------
    rho : float in [0, 1), default=0.9
        solver='rmsprop' only: the decay of the running mean of squared gradients.

    Beyond scikit-learn's:

    loss : {'squared_error', 'poisson', 'huber', 'absolute_error'}, default='squared_error'
        'huber' and 'absolute_error' are robust to outliers in y. Per output, with the
        residual ``r = prediction - y``: huber is ``0.5 r**2`` for ``|r| <= huber_delta``
        and ``huber_delta (|r| - huber_delta / 2)`` beyond; absolute_error is ``|r|``
        (its gradient at ``r = 0`` is taken as 0). Like 'squared_error' they sum over
        outputs and average over samples (weighted by ``sample_weight``), so
        ``loss_curve_`` is on the same scale; the output is the identity, so
        ``predict`` is unchanged. Every solver trains with them. ``to_sklearn`` raises
        ``ValueError`` for them: scikit-learn's MLPRegressor has no such loss.
    huber_delta : float > 0, default=1.0
        Where ``loss='huber'`` turns from quadratic to linear, in the units of y
        (other losses ignore it). Named apart from Adam's ``epsilon``.

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
        "loss": [StrOptions({"squared_error", "poisson", "huber", "absolute_error"})],
        "huber_delta": [Interval(Real, 0, None, closed="neither")],
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
        scoring=None,
        max_grad_norm=None,
        rho=0.9,
        huber_delta=1.0,
        dropout=0.0,
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
            scoring=scoring,
            max_grad_norm=max_grad_norm,
            rho=rho,
            dropout=dropout,
        )
        self.huber_delta = huber_delta

    def _core_loss(self):
        if self.loss in ("huber", "absolute_error"):
            return self.loss, {"huber_delta": self.huber_delta}
        return super()._core_loss()

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
