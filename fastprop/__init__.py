"""fastprop: multilayer-perceptron training for scikit-learn, with compiled kernels."""

from ._version import __version__

__all__ = ["__version__"]
