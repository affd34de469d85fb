"""The warnings and errors fastprop raises beyond scikit-learn's.

Everything else fastprop raises is scikit-learn's or Python's own: ``ValueError`` and
``TypeError`` for bad input, ``sklearn.utils._param_validation.InvalidParameterError``
(a ``ValueError``) for bad parameters, ``sklearn.exceptions.NotFittedError`` before
``fit``, and scikit-learn's warnings (``ConvergenceWarning``).
"""

__all__ = ["InconsistentVersionWarning", "NonFiniteRowsError"]


class InconsistentVersionWarning(UserWarning):
    """A model is being unpickled with a fastprop version other than the one that
    pickled it. As scikit-learn's warning of the same name: the model may load, but its
    behaviour is not guaranteed; refit it, or load it with the version that saved it.

    Attributes
    ----------
    estimator_name : str
    current_fastprop_version : str
    original_fastprop_version : str
    """

    def __init__(self, *, estimator_name, current_fastprop_version, original_fastprop_version):
        self.estimator_name = estimator_name
        self.current_fastprop_version = current_fastprop_version
        self.original_fastprop_version = original_fastprop_version

    def __str__(self):
        return (
            f"Trying to unpickle estimator {self.estimator_name} from fastprop version "
            f"{self.original_fastprop_version} when using version "
            f"{self.current_fastprop_version}. This might lead to breaking code or "
            "invalid results. Use at your own risk."
        )


class NonFiniteRowsError(ValueError):
    """An epoch that checked X's rows as it gathered them found NaN or infinity.

    Raised by ``fastprop.core.Trainer.run_epoch(..., check_finite=True)`` (and the
    compiled ``train_epoch`` under it). The epoch runs to its end before raising (the
    kernels are safe with non-finite values, only the numbers are meaningless), so the
    parameters and the optimizer state it changed are not usable: the caller restores
    the ones it saved. The estimators never let it escape: ``partial_fit`` restores the
    model and raises scikit-learn's own error about X instead. It is a ``ValueError``.
    """
