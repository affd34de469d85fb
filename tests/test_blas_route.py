"""Which BLAS the products call (fastprop/core/_blas.py): the newest of two or more
OpenBLAS libraries loaded, otherwise scipy's cython_blas; ``FASTPROP_BLAS=scipy`` keeps
them on scipy's. Both routes give the reference's products to rounding, and each gives
the same model bit for bit at every thread count. The route is chosen once, at import, so
each one runs in a subprocess. (What the route is worth is measured in benchmarks/.)"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastprop import core
from fastprop.core import _blas, _kernels


def _run(code, blas=None, threads=None):
    """Run ``code`` in a fresh interpreter with FASTPROP_BLAS=blas (unset: None) and
    OMP_NUM_THREADS=threads; return (the JSON its last stdout line holds, stderr)."""
    env = dict(os.environ)
    for name, value in (("FASTPROP_BLAS", blas), ("OMP_NUM_THREADS", threads)):
        env.pop(name, None)
        if value is not None:
            env[name] = str(value)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _openblas_loaded():
    from threadpoolctl import ThreadpoolController

    ctl = ThreadpoolController().select(internal_api="openblas")
    return sorted((_blas._version(lc.version), lc.filepath) for lc in ctl.lib_controllers)


def test_the_route_is_the_newest_of_two_openblas_or_scipys():
    info = core.gemm_library()
    assert info["setting"] in ("auto", "scipy")
    libs = _openblas_loaded()
    newest_alone = len(libs) >= 2 and libs[-1][0] > libs[-2][0]
    if info["setting"] == "auto" and newest_alone:
        assert info["via"] == "direct"
        assert os.path.samefile(info["filepath"], libs[-1][1])
        assert _blas._version(info["version"]) == libs[-1][0]
        if "numpy.libs" in info["filepath"] and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            assert info["ilp64"]  # NumPy 2's wheels bundle a 64-bit-integer OpenBLAS
    else:
        assert info == {"via": "scipy.linalg.cython_blas", "filepath": None,
                        "version": None, "ilp64": False, "setting": info["setting"]}


def test_fastprop_blas_scipy_keeps_cython_blas():
    info, _ = _run("import json; from fastprop import core; "
                   "print(json.dumps(core.gemm_library()))", blas="scipy")
    assert info == {"via": "scipy.linalg.cython_blas", "filepath": None, "version": None,
                    "ilp64": False, "setting": "scipy"}


def test_an_unknown_setting_warns_and_routes_as_auto():
    code = """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from fastprop import core
    print(json.dumps([core.gemm_library(), [str(w.message) for w in caught
                                             if issubclass(w.category, RuntimeWarning)]]))
    """
    (info, messages), _ = _run(code, blas="fastest")
    auto, _ = _run("import json; from fastprop import core; "
                   "print(json.dumps(core.gemm_library()))", blas="auto")
    assert any("FASTPROP_BLAS='fastest'" in m for m in messages), messages
    assert info == auto


def test_a_route_takes_both_precisions():
    with pytest.raises(ValueError, match="together"):
        _kernels._route_gemm(1, 0, False)
    with pytest.raises(ValueError, match="together"):
        _kernels._route_gemm(0, 1, True)


# Every product shape a layer makes (one sample, one feature, one output, odd widths,
# Fortran-ordered and non-contiguous X), in both precisions, against the NumPy reference.
REFERENCE = """
import json
import numpy as np
from fastprop import core, reference
rng = np.random.default_rng(0)
worst = {}
for dtype, tol in ((np.float32, 2e-4), (np.float64, 1e-10)):
    for n, sizes in ((1, [1, 3, 1]), (37, [5, 17, 3]), (130, [33, 64, 129, 2]),
                     (64, [300, 1, 4])):
        coefs = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
        inters = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
        X = rng.standard_normal((n, 2 * sizes[0])).astype(dtype)
        Y = rng.standard_normal((n, sizes[-1])).astype(dtype)
        for name, Xv in (("strided", X[:, ::2]), ("fortran", np.asfortranarray(X[:, ::2]))):
            kw = dict(activation="tanh", loss="squared_error", alpha=1e-3)
            got = core.loss_and_gradients(coefs, inters, Xv, Y, **kw)
            want = reference.loss_and_gradients(
                [c.astype(np.float64) for c in coefs], [b.astype(np.float64) for b in inters],
                Xv.astype(np.float64), Y.astype(np.float64), **kw)
            err = abs(got[0] - want[0]) / max(abs(want[0]), 1.0)
            for g, w in zip(got[1] + got[2], want[1] + want[2]):
                assert g.dtype == dtype
                err = max(err, float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1.0)))
            assert err < tol, (np.dtype(dtype).name, n, sizes, name, err)
            key = np.dtype(dtype).name
            worst[key] = max(worst.get(key, 0.0), err)
print(json.dumps(worst))
"""


@pytest.mark.parametrize("blas", ["auto", "scipy"])
def test_each_route_gives_the_references_products(blas):
    worst, _ = _run(REFERENCE, blas=blas)
    assert set(worst) == {"float32", "float64"}


# A fit of each kind of pass (whole, rows, units, L-BFGS), in both precisions: its
# weights' hash and its weights.
FITS = """
import hashlib, json, warnings
import numpy as np
from fastprop import MLPClassifier, core
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
X = rng.randn(600, 40)
y = rng.randint(0, 3, len(X))
out = {"blas": core.gemm_library()["via"]}
for dtype in (np.float32, np.float64):
    for name, hidden, batch, solver in (("whole", (16,), 32, "adam"),
                                        ("rows", (256,), 256, "adam"),
                                        ("units", (512, 512), 100, "adam"),
                                        ("lbfgs", (32,), 200, "lbfgs")):
        m = MLPClassifier(hidden, batch_size=batch, solver=solver, max_iter=3,
                          random_state=0).fit(X.astype(dtype), y)
        h = hashlib.sha256()
        for a in m.coefs_ + m.intercepts_:
            h.update(np.ascontiguousarray(a).tobytes())
        out[f"{name} {np.dtype(dtype).name}"] = [
            h.hexdigest(), [a.astype(np.float64).ravel().tolist() for a in m.coefs_]]
print(json.dumps(out))
"""


def test_each_route_is_thread_count_independent_and_the_routes_agree():
    runs = {(blas, threads): _run(FITS, blas=blas, threads=threads)[0]
            for blas in ("auto", "scipy") for threads in (1, 3)}
    for blas in ("auto", "scipy"):
        one, three = runs[(blas, 1)], runs[(blas, 3)]
        assert one.keys() == three.keys()
        for key in one:
            if key != "blas":
                assert one[key][0] == three[key][0], (blas, key)  # bit for bit
    assert runs[("scipy", 1)]["blas"] == "scipy.linalg.cython_blas"
    auto, scipy = runs[("auto", 1)], runs[("scipy", 1)]
    for key in auto:
        if key == "blas":
            continue
        rtol = 1e-3 if "float32" in key else 1e-8  # three epochs from products that
        for a, b in zip(auto[key][1], scipy[key][1]):  # differ in rounding only
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=key)
