"""The flat parameter vector behind ``coefs_`` and ``intercepts_``.

The compiled core trains one flat vector per network, in scikit-learn's ``_pack`` order
(W_1..W_L, then b_1..b_L). An estimator's ``coefs_`` and ``intercepts_`` are views of it,
so training updates them in place with no copy, and the optimizer's state lines up with
it entry for entry. Users may assign other arrays to ``coefs_`` / ``intercepts_``, as in
scikit-learn: training then rebuilds the vector from them (``_flat_params``), and
prediction packs them into a temporary one (``_predict_params``), after checking that
they still describe the network. Pickles carry ``coefs_`` / ``intercepts_`` only; the
vector is rebuilt from them on loading.
"""

import warnings
from itertools import chain

import numpy as np

from . import core
from ._validation import check_network
from ._version import __version__
from .exceptions import InconsistentVersionWarning

__all__ = ["FlatParametersMixin"]


class FlatParametersMixin:
    """``self._flat`` (the vector), ``self._views`` (the views handed out as
    ``coefs_`` / ``intercepts_``), and what keeps the two in step."""

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
        # a copy: on Python >= 3.11 the inherited __getstate__ returns the live
        # __dict__, and popping from it would strip a pickled (or copied) model's vector
        state = dict(super().__getstate__())
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
