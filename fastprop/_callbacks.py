"""scikit-learn's callbacks (``sklearn.callback``, scikit-learn >= 1.9) for the estimators.

Where the installed scikit-learn has ``sklearn.callback``, the estimators take
callbacks as its own estimators do: ``est.set_callbacks(ProgressBar())``,
``ScoringMonitor``, or any object following the ``FitCallback`` protocol, directly or
propagated from a ``Pipeline`` or ``GridSearchCV`` carrying callbacks. The task tree of
a fit:

- ``fit`` with a stochastic solver ('sgd', 'adam', 'rmsprop', 'adamw'): the fit is the
  root task, and each epoch is one subtask (``task_name='epoch'``). An
  ``on_fit_task_end`` returning True stops the fit after that epoch: the model is then
  the one ``max_iter`` equal to that epoch would have given (with ``early_stopping``,
  the best epoch's weights so far, restored as at the end of any fit), without a
  ``ConvergenceWarning``.
- ``fit`` with ``solver='lbfgs'``: each L-BFGS iteration is one subtask
  (``task_name='lbfgs-iter'``), seen through SciPy's ``callback``; True stops the fit
  with the weights of that iteration. A subtask that starts (a function evaluation) but
  never completes, because ``max_fun`` ran out mid-iteration, ends without data.
- ``partial_fit``: one call is one task (a leaf), as ``StandardScaler.partial_fit``;
  its return value has nothing left to stop.

The hooks receive the call's ``X`` and ``y`` as passed to it, ``metadata`` with
``sample_weight`` when one is given, and, when they ask for ``fitted_estimator``, a
copy of the estimator with its own copy of the parameters: the model as if the fit
stopped at that point.

Without callbacks (none set, and not fitted by a meta-estimator that propagates its
task tree), or with a scikit-learn without ``sklearn.callback``, a fit makes no
callback call at all: ``fit_callbacks`` returns None after two dictionary look-ups, and
the epoch loop only tests that None.
"""

try:  # scikit-learn >= 1.9
    from sklearn.callback import CallbackSupportMixin as _SklearnCallbackSupportMixin
except ImportError:  # older scikit-learn: no callbacks, nothing changes
    _SklearnCallbackSupportMixin = None

from . import core

__all__ = [
    "CALLBACKS_SUPPORTED", "CallbackSupportMixin", "FitCallbacks", "LbfgsStop", "StopLbfgs",
    "fit_callbacks",
]

CALLBACKS_SUPPORTED = _SklearnCallbackSupportMixin is not None

if CALLBACKS_SUPPORTED:
    CallbackSupportMixin = _SklearnCallbackSupportMixin
else:

    class CallbackSupportMixin:
        """Stands in for ``sklearn.callback.CallbackSupportMixin`` where scikit-learn
        has none: adds nothing (no ``set_callbacks``)."""


def fit_callbacks(estimator, X, y, sample_weight, max_subtasks):
    """The callbacks' driver for one fit / partial_fit call, or None when no callback
    can see it: none set on the estimator and no meta-estimator's task tree to join.

    Creates the root task (``_init_callback_context``; the estimator's ``fit_context``
    tears it down after the call). ``max_subtasks``: the most iterations the call can
    make, 0 for a call that is a single task."""
    state = estimator.__dict__
    if "_skl_callbacks" not in state and "_parent_callback_ctx" not in state:
        return None
    if not CALLBACKS_SUPPORTED:
        return None
    return FitCallbacks(estimator, X, y, sample_weight, max_subtasks)


class FitCallbacks:
    """One call's task tree: the root task and one subtask per iteration.

    As scikit-learn's own estimators: iterations are subtasks only when the estimator
    has callbacks of its own (set, or propagated to it); fitted without, inside a
    meta-estimator, the call is just the leaf it joins in the meta-estimator's tree."""

    def __init__(self, estimator, X, y, sample_weight, max_subtasks):
        self.estimator = estimator
        self.root = estimator._init_callback_context(max_subtasks=max_subtasks)
        self.hook_args = dict(
            X=X, y=y,
            metadata=None if sample_weight is None else {"sample_weight": sample_weight},
        )
        self.iterations = max_subtasks != 0 and bool(
            getattr(estimator, "_skl_callbacks", None))
        self.task = None
        # fit's early stopping keeps the best epoch's weights: a model "as if the fit
        # stopped here" has those
        self.best_weights = False

    # -- the root task ------------------------------------------------------------------

    def begin(self):
        self.root.call_on_fit_task_begin(estimator=self.estimator, **self.hook_args)

    def end(self):
        self.root.call_on_fit_task_end(
            estimator=self.estimator, **self.hook_args, reconstruction_attributes={})

    # -- iterations -----------------------------------------------------------------------

    def iteration_begin(self, task_name="epoch"):
        if self.iterations:
            self.task = self.root.subcontext(task_name=task_name)
            self.task.call_on_fit_task_begin(
                estimator=self.estimator, **self.hook_args,
                reconstruction_attributes=self._model_now)

    def iteration_end(self, attributes=None):
        """Ends the iteration in progress; True when a callback asks to stop."""
        task, self.task = self.task, None
        if task is None:
            return False
        return task.call_on_fit_task_end(
            estimator=self.estimator, **self.hook_args,
            reconstruction_attributes=attributes or self._model_now)

    def close(self):
        """Ends an iteration that began and never completed, without data."""
        task, self.task = self.task, None
        if task is not None:
            task.call_on_fit_task_end(estimator=self.estimator)

    def _model_now(self, flat=None):
        """The attributes that make a copy of the estimator the model as it is now (its
        own parameter vector, so that training on does not change it)."""
        est = self.estimator
        if flat is None:
            if self.best_weights:
                flat = core.pack(est._best_coefs, est._best_intercepts)
            else:
                flat = est._flat.copy()
        coefs, intercepts = core.unpack(flat, est._layer_units())
        attributes = {
            "_flat": flat, "coefs_": coefs, "intercepts_": intercepts,
            "_views": (list(coefs), list(intercepts)),
        }
        for name in ("loss_curve_", "validation_scores_"):
            value = getattr(est, name, None)
            if isinstance(value, list):
                attributes[name] = list(value)
        return attributes

    # -- L-BFGS ---------------------------------------------------------------------------

    def lbfgs(self, fun):
        """(fun, callback) for ``scipy.optimize.minimize``: each iteration a subtask,
        begun at its first function evaluation and ended by SciPy's per-iteration
        ``callback``, which raises ``StopLbfgs`` when a callback asks to stop."""
        if not self.iterations:
            return fun, None
        tasks = _LbfgsTasks(self, fun)
        return tasks.fun, tasks


class StopLbfgs(Exception):
    """A callback stopped L-BFGS after iteration ``n_iter``, at weights ``x``."""

    def __init__(self, x, n_iter):
        super().__init__(n_iter)
        self.x = x
        self.n_iter = n_iter


class LbfgsStop:
    """Around ``scipy.optimize.minimize``: a ``StopLbfgs`` raised inside ends the block
    quietly, and ``x`` / ``n_iter`` say where L-BFGS stopped (``x`` None: no stop)."""

    x = None
    n_iter = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, StopLbfgs):
            self.x, self.n_iter = exc.x, exc.n_iter
            return True
        return False


class _LbfgsTasks:
    def __init__(self, callbacks, fun):
        self.callbacks = callbacks
        self.inner = fun
        self.n_iter = 0

    def fun(self, x):
        if self.callbacks.task is None:
            self.callbacks.iteration_begin("lbfgs-iter")
        return self.inner(x)

    def __call__(self, xk):
        self.n_iter += 1
        est = self.callbacks.estimator
        x = xk.copy()

        def model_now():
            attributes = self.callbacks._model_now(x.astype(est._flat.dtype))
            attributes["n_iter_"] = self.n_iter
            return attributes

        if self.callbacks.iteration_end(model_now):
            raise StopLbfgs(x, self.n_iter)
