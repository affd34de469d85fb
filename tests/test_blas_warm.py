"""Each thread warms its BLAS workspace once per precision, before its first product
through fastprop (fastprop/core/_layers.pxi, BLAS_WARM_COLS), and the warm-up changes no
result: a fit whose products are its thread's first equals, bit for bit, a fit on a
thread already warm. (What the warm-up is worth is measured in benchmarks/, never
here.)"""

import threading
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from fastprop import MLPClassifier, MLPRegressor, core
from fastprop.core._kernels import blas_warmed


def _in_new_thread(fn):
    """fn() on a thread of its own (so with a fresh BLAS workspace state); re-raises."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_each_thread_warms_once_per_precision():
    sizes = [5, 4, 3]
    rng = np.random.default_rng(0)

    def products():
        seen = [blas_warmed()]
        for dtype in (np.float32, np.float64, np.float32):
            params = rng.standard_normal(core.n_params(sizes)).astype(dtype)
            X = rng.standard_normal((7, 5)).astype(dtype)
            core.forward_flat(params, sizes, X, activation="relu", loss="log_loss")
            seen.append(blas_warmed())
        return seen

    assert _in_new_thread(products) == [
        (False, False), (True, False), (True, True), (True, True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_cold_thread_fits_the_same_bits(dtype, solver, kind):
    X, y = make_classification(300, 12, n_classes=3, n_informative=6, random_state=0)
    X = X.astype(dtype)
    if kind == "regressor":
        y = (X[:, 0] - X[:, 1]).astype(dtype)
    Est = MLPClassifier if kind == "classifier" else MLPRegressor

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return Est(hidden_layer_sizes=(20, 8), solver=solver, batch_size=64, max_iter=8,
                       random_state=0).fit(X, y)

    cold = _in_new_thread(fit)
    warm = fit()  # this thread has run products in this precision now
    assert blas_warmed()[dtype == np.float64]
    for a, b in zip(cold.coefs_ + cold.intercepts_, warm.coefs_ + warm.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cold.loss_curve_ if solver == "adam" else cold.loss_,
                                  warm.loss_curve_ if solver == "adam" else warm.loss_)
