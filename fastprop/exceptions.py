"""Warnings and errors fastprop raises beyond scikit-learn's."""


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
