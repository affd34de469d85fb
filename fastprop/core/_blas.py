"""Which BLAS library fastprop's matrix products call.

Every product goes through one wrapper (``_blas_gemm`` in ``_layers.pxi``), which calls
scipy's ``cython_blas``, the way scikit-learn's Cython reaches BLAS. A process that
imports fastprop has a second BLAS loaded as well: NumPy's. The NumPy and SciPy wheels
each bundle an OpenBLAS, and not always the same release. With NumPy 2.4 and SciPy 1.17,
NumPy's is 0.3.31 and SciPy's 0.3.30, whose x86-64 packing routines are scalar code:
fastprop's W1 products ran 6-7 % slower through SciPy's (benchmarks/README.md, "Which
BLAS").

So at import, when the process has loaded two or more OpenBLAS libraries and one is a
newer release than all the others, fastprop routes its products to that one. It calls
the library's Fortran ``sgemm_``/``dgemm_``, with 64-bit integers when the library was
built with them (NumPy's is). Otherwise (one OpenBLAS or none, whatever SciPy's BLAS is:
MKL, Accelerate, BLIS; equal releases; symbols not found) the products stay on SciPy's
``cython_blas``.

``FASTPROP_BLAS=scipy`` in the environment keeps them on SciPy's whatever is loaded
(read once, at import). The library decides how products round, so the same
``random_state`` gives bitwise the same model with the same library; ``gemm_library()``
says which one a process uses.
"""

import ctypes
import os
import warnings

from . import _kernels

_SYMBOL_PREFIXES = ("scipy_", "")
_SYMBOL_SUFFIXES = ("", "64_", "_64")

_chosen = None  # what gemm_library() reports


def _version(text):
    """'0.3.31.188.0' -> (0, 3, 31, 188, 0); the leading numeric fields only."""
    out = []
    for field in str(text).split("."):
        if not field.isdigit():
            break
        out.append(int(field))
    return tuple(out)


def _address(dll, name):
    try:
        return ctypes.cast(getattr(dll, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


def _openblas_gemms(filepath):
    """(sgemm_ address, dgemm_ address, ilp64) of the OpenBLAS at ``filepath``, or None
    when its symbols or its integer width cannot be told for sure."""
    try:
        dll = ctypes.CDLL(filepath)
    except OSError:
        return None
    for prefix in _SYMBOL_PREFIXES:
        for suffix in _SYMBOL_SUFFIXES:
            config = _address(dll, f"{prefix}openblas_get_config{suffix}")
            s = _address(dll, f"{prefix}sgemm_{suffix}")
            d = _address(dll, f"{prefix}dgemm_{suffix}")
            if config and s and d:
                get_config = ctypes.CFUNCTYPE(ctypes.c_char_p)(config)
                text = (get_config() or b"").decode("ascii", "replace")
                # OpenBLAS names its integer width in its build configuration, and its
                # 64-bit-integer builds suffix their symbols with 64: both must agree,
                # as a call with the wrong width would read the wrong sizes
                ilp64 = "USE64BITINT" in text
                return (s, d, ilp64) if ilp64 == ("64" in suffix) else None
    return None


def _loaded_openblas():
    """The OpenBLAS libraries loaded in the process (as threadpoolctl sees them) whose
    ``sgemm_``/``dgemm_`` fastprop can call: [(version tuple, filepath, (sgemm_ address,
    dgemm_ address, ilp64))], oldest release first. Importing fastprop loads NumPy's and
    SciPy's BLAS."""
    try:
        from threadpoolctl import ThreadpoolController

        ctl = ThreadpoolController().select(internal_api="openblas")
        found = [(_version(lc.version), lc.filepath) for lc in ctl.lib_controllers
                 if lc.filepath]
    except Exception:  # threadpoolctl missing, or unable to inspect this process
        return []
    libs = [(version, filepath, _openblas_gemms(filepath)) for version, filepath in found]
    return sorted((lib for lib in libs if lib[2] is not None), key=lambda lib: lib[0])


def choose(setting=None):
    """Route the products (see the module's docstring); return ``gemm_library()``.
    ``setting`` is ``FASTPROP_BLAS``'s value: "auto" (the default) or "scipy". Runs
    once, at import: the route must not change while a product runs."""
    global _chosen
    if setting is None:
        setting = os.environ.get("FASTPROP_BLAS", "auto")
    setting = setting.strip().lower() or "auto"
    if setting not in ("auto", "scipy"):
        warnings.warn(f"FASTPROP_BLAS={setting!r} is not one of 'auto', 'scipy'; "
                      "using 'auto'", RuntimeWarning, stacklevel=2)
        setting = "auto"
    libs = _loaded_openblas()
    # SciPy's is one of them (NumPy's the other, in the wheels): route only to a release
    # newer than every other one loaded. With one OpenBLAS, SciPy's BLAS may well be
    # another library (MKL, say): stay with it.
    if setting == "auto" and len(libs) >= 2 and libs[-1][0] > libs[-2][0]:
        version, filepath, (s, d, ilp64) = libs[-1]
        _kernels._route_gemm(s, d, ilp64)
        _chosen = {"via": "direct", "filepath": filepath,
                   "version": ".".join(map(str, version)), "ilp64": ilp64,
                   "setting": setting}
    else:
        _kernels._route_gemm(0, 0, False)
        _chosen = {"via": "scipy.linalg.cython_blas", "filepath": None, "version": None,
                   "ilp64": False, "setting": setting}
    return gemm_library()


def gemm_library():
    """Which BLAS the products call: a dict with ``via`` ("scipy.linalg.cython_blas", or
    "direct" for an OpenBLAS's own ``sgemm_``/``dgemm_``), ``filepath`` and ``version`` of
    that OpenBLAS (None via cython_blas), ``ilp64`` (64-bit
    integers) and ``setting`` (``FASTPROP_BLAS``: "auto" or "scipy")."""
    return dict(_chosen) if _chosen is not None else None
