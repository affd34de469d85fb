"""scikit-learn names that are not public API, in one place.

fastprop follows scikit-learn's estimator conventions closely, and a few of the tools
for that live in private modules, which any scikit-learn release may change without a
deprecation. Every such name that fastprop uses is imported here and nowhere else, so
that a change in scikit-learn is met in this one file.
"""

# the optimizers of scikit-learn's MLPs: what their fitted models hold as ``_optimizer``
# (to_sklearn / from_sklearn carry the optimizer state across)
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

__all__ = ["AdamOptimizer", "SGDOptimizer"]
