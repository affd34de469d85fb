"""fastprop: multilayer-perceptron training for scikit-learn, with compiled kernels.

``MLPClassifier`` and ``MLPRegressor`` are drop-in replacements for scikit-learn's,
trained by the backpropagation core in ``fastprop.core`` (Cython over BLAS, without the
GIL); ``fastprop.reference`` is the same maths in plain NumPy.
"""

from ._config import show_config
from ._mlp import MLPClassifier, MLPEstimator, MLPRegressor
from ._version import __version__

__all__ = ["MLPClassifier", "MLPEstimator", "MLPRegressor", "show_config", "__version__"]
