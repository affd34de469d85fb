"""fastprop's compiled backpropagation kernels.

Three layers, as in scikit-learn's ``_loss`` module:

1. C point functions (``csrc/fp_math.h``): the stable sigmoid, log(1 + e^x), float maths
   for float data.
2. ``cdef ... nogil`` loops over contiguous buffers, fused over float / double: dense
   forward (GEMM, then bias + activation in one pass), output activation + loss + delta
   in one pass, backward (GEMMs, activation derivative fused into the delta together
   with the intercept gradient), and the optimizer updates over ONE flat parameter
   buffer.
3. ``def`` entry points that check every shape, dtype and index before the GIL is
   released. The Python layer (``fastprop.core``) validates user input and allocates;
   the checks here are the last line of defence that keeps a wrong call from reading
   or writing out of bounds.

Memory layout of a network with L layers and ``sizes = [n_features, h_1, ..., n_outputs]``
(scikit-learn's ``_pack`` order): the flat parameter vector holds W_1..W_L (each
row-major, (sizes[l], sizes[l+1])) followed by b_1..b_L. Gradients use the same layout.
The activation and delta workspaces hold, for a block of up to ``rows`` samples, the
layer outputs A_1..A_L (each (rows, sizes[l+1]), row-major) one after another. For gelu
and silu, whose derivative needs the pre-activation, the hidden layers' Z_1..Z_{L-1}
follow, each ``Net.z_shift`` entries after its A_l (``fastprop.core.work_len`` gives the
length).

Matrix products go to scipy's BLAS (cython_blas), or to a newer OpenBLAS the process has
loaded (NumPy's; ``_blas.py`` chooses at import). BLAS is column-major; a row-major
C = A @ B is the column-major C^T = B^T @ A^T, so operands are swapped (as
sklearn/utils/_cython_blas.pyx).

Layout. One extension module, in parts it includes, each found by its name:

- ``_kernels.pxd``: what the parts share: the C headers (``csrc/``), the codes (defined
  once in ``csrc/fp_codes.h``), the structs (``Net``, ``CSR``, ``Step``, ``Epoch``,
  ``SplitShared``);
- ``_layers.pxi``: the GEMM wrapper, the network's layout, bias + activation, CSR
  products, forward and backward;
- ``_losses.pxi``: output activation, loss and output delta;
- ``_optimizers.pxi``: SGD, Adam, RMSprop and AdamW steps over the flat vector;
- ``_checks.pxi``: the argument and buffer checks of every entry point;
- ``_partition.pxi``: how a pass is cut (whole, rows, units; how many parts);
- ``_full_pass.pxi``: full-data passes: L-BFGS's loss and gradient, predict, input
  gradients;
- ``_epoch.pxi``: the epoch driver (whole minibatches, row and unit splits);
- ``_threads.pxi``: the team from Cython; the team itself (pool, barrier, governor,
  budget) is C, in ``csrc/fp_team.h``.

One module rather than several: the parts call each other's ``cdef inline`` functions
in the innermost loops (a call across modules goes through a function pointer and
cannot be inlined), and the process has one pool, one budget and one OpenMP runtime
to share.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t, uintptr_t
from cpython.pyport cimport PY_SSIZE_T_MAX
from scipy.linalg.cython_blas cimport sgemm, dgemm

import numpy as np


# The parts, each found by its name; what they share is declared in _kernels.pxd.
include "_threads.pxi"
include "_layers.pxi"
include "_losses.pxi"
include "_optimizers.pxi"
include "_checks.pxi"
include "_partition.pxi"
include "_full_pass.pxi"
include "_epoch.pxi"


# The codes as fastprop.core passes them (csrc/fp_codes.h defines them once).
ACTIVATION_CODES = {"identity": ACT_IDENTITY, "logistic": ACT_LOGISTIC, "tanh": ACT_TANH,
                    "relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU, "elu": ACT_ELU,
                    "softplus": ACT_SOFTPLUS, "gelu": ACT_GELU, "silu": ACT_SILU}
LOSS_CODES = {"squared_error": LOSS_SQUARED, "poisson": LOSS_POISSON,
              "log_loss": LOSS_LOG, "binary_log_loss": LOSS_BINARY_LOG,
              "huber": LOSS_HUBER, "absolute_error": LOSS_ABSOLUTE}
SOLVER_CODES = {"sgd": SOLVER_SGD, "adam": SOLVER_ADAM, "rmsprop": SOLVER_RMSPROP,
                "adamw": SOLVER_ADAMW}
