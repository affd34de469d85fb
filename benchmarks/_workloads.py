"""Workloads W1-W6 (benchmarks/README.md, "The workloads") and the contenders that train them, one epoch
per call. Used by ``benchmarks/run.py``; nothing here times anything.

Every contender has the same interface::

    c = make_contender(name, workload, data)   # builds the model: untimed
    c.epoch()                                   # one training epoch (the timed unit)
    c.epoch_loss()                              # mean training loss of the last epoch
    c.weights()                                 # (coefs, intercepts) as NumPy arrays

and trains the same network with the same hyperparameters: Adam, learning rate 1e-3,
beta 0.9/0.999, epsilon 1e-8, L2 penalty alpha = 1e-4 on the weights (not the biases)
as scikit-learn adds it (``alpha / 2 * sum ||W||^2 / batch_len`` to each batch loss),
shuffled minibatches of the workload's batch size, the last batch of an epoch shorter.

Contenders:

- ``fastprop``  ``fastprop.MLPClassifier`` / ``MLPRegressor``: ``partial_fit`` = one epoch
- ``sklearn``   ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``, likewise
- ``numpy``     the NumPy reference loop: ``fastprop.reference.loss_and_gradients`` per
                minibatch (rows gathered with fancy indexing) and
                ``fastprop.reference.adam_update`` on one packed flat parameter vector
- ``torch``     PyTorch eager: ``nn.Sequential`` of ``nn.Linear`` + ``nn.ReLU``,
                minibatches gathered with ``index_select`` from a ``torch.randperm``,
                ``torch.optim.Adam`` (its fastest CPU variant, see ``TorchContender``)
- ``jax``       JAX, one ``jax.jit`` of the whole epoch: ``lax.scan`` over the minibatches
                of a shuffled index array, hand-written Adam, buffers donated
- ``floor``     the GEMM floor: only the matrix products one epoch needs (per minibatch and
                layer: ``A @ W`` forward, ``A.T @ D`` and, below the first layer,
                ``D @ W.T`` backward) with ``np.matmul(..., out=...)`` into preallocated
                arrays, on contiguous row slices of X (no gathering): NumPy's OpenBLAS

``make_contender`` first warms NumPy's BLAS workspace on the calling thread, once per
dtype, as fastprop warms its own (``warm_numpy_blas``).
"""

import math
import platform
import time

import numpy as np

LR = 1e-3
ALPHA = 1e-4
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8
SEED = 0

def cpu_name():
    """The CPU's model name (/proc/cpuinfo), or what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


WORKLOADS = {
    "W1": dict(name="mnist-like", data="mnist", hidden=(256, 128), task="multiclass",
               batch=128, dtype="float32"),
    "W2": dict(name="small-batch", data="mnist", hidden=(256, 128), task="multiclass",
               batch=32, dtype="float32"),
    "W3": dict(name="large-batch", data="mnist", hidden=(256, 128), task="multiclass",
               batch=1024, dtype="float32"),
    "W4": dict(name="tabular", data="tabular", hidden=(100,), task="binary",
               batch=200, dtype="float64"),
    "W5": dict(name="tiny", data="digits", hidden=(64,), task="multiclass",
               batch=32, dtype="float64"),
    "W6": dict(name="regression", data="regression", hidden=(128, 64), task="regression",
               batch=256, dtype="float32"),
}

# Full sizes (benchmarks/README.md) and the --quick ones.
N_SAMPLES = {"mnist": 60000, "tabular": 20000, "digits": None, "regression": 50000}
N_SAMPLES_QUICK = {"mnist": 6000, "tabular": 20000, "digits": None, "regression": 10000}

DATA_TEXT = {
    "mnist": "make_classification({n}, 784, n_informative=64, n_redundant=64, n_classes=10, "
             "n_clusters_per_class=1, random_state=0)",
    "tabular": "make_classification({n}, 50, n_informative=10, n_redundant=10, "
               "random_state=0)",
    "digits": "load_digits(), X / 16 ({n} samples)",
    "regression": "make_regression({n}, 100, n_informative=50, noise=0.1, random_state=0), "
                  "y standardised",
}

# The loss (fastprop.reference's name) that the output layer of each task pairs with.
CORE_LOSS = {"multiclass": "log_loss", "binary": "binary_log_loss",
             "regression": "squared_error"}

CONTENDERS = ("fastprop", "sklearn", "numpy", "torch", "jax", "floor")
COMPETITORS = ("sklearn", "numpy", "torch", "jax")


class Data:
    """One workload's arrays: X (n, d) C-contiguous in the workload's dtype; y as the
    estimators take it (class labels, or the float target); Y as the loss functions take
    it (one-hot, or the 0/1 or float column, in the dtype)."""

    def __init__(self, X, y, Y, classes, text):
        self.X, self.y, self.Y, self.classes, self.text = X, y, Y, classes, text

    @property
    def n(self):
        return self.X.shape[0]


_RAW = {}


def _raw(kind, n):
    key = (kind, n)
    if key not in _RAW:
        from sklearn.datasets import load_digits, make_classification, make_regression

        if kind == "mnist":
            X, y = make_classification(n, 784, n_informative=64, n_redundant=64,
                                       n_classes=10, n_clusters_per_class=1, random_state=0)
        elif kind == "tabular":
            X, y = make_classification(n, 50, n_informative=10, n_redundant=10,
                                       random_state=0)
        elif kind == "digits":
            X, y = load_digits(return_X_y=True)
            X = X / 16.0
        elif kind == "regression":
            X, y = make_regression(n, 100, n_informative=50, noise=0.1, random_state=0)
            y = (y - y.mean()) / y.std()
        else:
            raise ValueError(kind)
        _RAW[key] = (X, y)
    return _RAW[key]


def make_data(key, quick=False):
    w = WORKLOADS[key]
    kind = w["data"]
    n = (N_SAMPLES_QUICK if quick else N_SAMPLES)[kind]
    X, y = _raw(kind, n)
    dt = np.dtype(w["dtype"])
    X = np.ascontiguousarray(X, dtype=dt)
    if w["task"] == "regression":
        y = np.asarray(y, dtype=dt)
        Y = y.reshape(-1, 1).copy()
        classes = None
    else:
        classes = np.unique(y)
        if w["task"] == "binary":
            Y = (y == classes[1]).astype(dt).reshape(-1, 1)
        else:
            Y = np.zeros((len(y), len(classes)), dtype=dt)
            Y[np.arange(len(y)), np.searchsorted(classes, y)] = 1
    return Data(X, y, Y, classes, DATA_TEXT[kind].format(n=X.shape[0]))


def layer_sizes(key, data):
    return [data.X.shape[1], *WORKLOADS[key]["hidden"], data.Y.shape[1]]


def init_params(sizes, dtype, seed=SEED):
    """scikit-learn's initialisation (Glorot uniform, factor 6 for relu) for the
    contenders that are not scikit-learn estimators."""
    rng = np.random.default_rng(seed)
    coefs, intercepts = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = math.sqrt(6.0 / (n_in + n_out))
        coefs.append(rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype))
        intercepts.append(rng.uniform(-bound, bound, n_out).astype(dtype))
    return coefs, intercepts


def full_loss(key, data, coefs, intercepts):
    """Training loss over the whole data set (reference formula, L2 term included, in
    float64): the same yardstick for every contender's final weights."""
    from fastprop import reference

    c = [np.asarray(w, dtype=np.float64) for w in coefs]
    b = [np.asarray(w, dtype=np.float64) for w in intercepts]
    # in row blocks: the reference materialises whole-layer activations
    n = data.n
    step = 8192
    total = 0.0
    for s in range(0, n, step):
        Xb = np.asarray(data.X[s:s + step], dtype=np.float64)
        Yb = np.asarray(data.Y[s:s + step], dtype=np.float64)
        loss, _, _ = reference.loss_and_gradients(
            c, b, Xb, Yb, activation="relu", loss=CORE_LOSS[WORKLOADS[key]["task"]],
            alpha=0.0)
        total += float(loss) * Xb.shape[0]
    penalty = 0.5 * ALPHA * sum(float((w ** 2).sum()) for w in c) / n
    return total / n + penalty


# -- contenders ------------------------------------------------------------------------

class _Estimator:
    """fastprop's or scikit-learn's MLP, ``partial_fit`` = one epoch. The first call
    (initialisation included) is the contender's first warm-up epoch."""

    module = None

    def __init__(self, key, data, **options):
        w = WORKLOADS[key]
        mod = self._module()
        cls = mod.MLPRegressor if w["task"] == "regression" else mod.MLPClassifier
        self.est = cls(**{**dict(
            hidden_layer_sizes=w["hidden"], activation="relu", solver="adam",
            alpha=ALPHA, batch_size=w["batch"], learning_rate_init=LR, beta_1=BETA_1,
            beta_2=BETA_2, epsilon=EPSILON, shuffle=True, random_state=SEED), **options})
        if options:
            self.est._validate_params()  # an option this version lacks: skipped
        self.data = data
        self.first = True

    def epoch(self):
        d = self.data
        if self.first and d.classes is not None:
            self.est.partial_fit(d.X, d.y, classes=d.classes)
        else:
            self.est.partial_fit(d.X, d.y)
        self.first = False

    def epoch_loss(self):
        return float(self.est.loss_)

    def weights(self):
        return list(self.est.coefs_), list(self.est.intercepts_)


class FastpropContender(_Estimator):
    @staticmethod
    def _module():
        import fastprop
        return fastprop


class SklearnContender(_Estimator):
    @staticmethod
    def _module():
        import sklearn.neural_network
        return sklearn.neural_network


class NumpyContender:
    """The NumPy reference training loop: per minibatch, rows gathered by fancy indexing,
    ``reference.loss_and_gradients`` (validation included, as a caller gets it), the
    gradients copied into one flat vector, ``reference.adam_update`` in place on the flat
    parameter vector that the layers are views of."""

    def __init__(self, key, data):
        from fastprop import reference

        self.ref = reference
        self.key, self.data = key, data
        self.batch = WORKLOADS[key]["batch"]
        self.loss_name = CORE_LOSS[WORKLOADS[key]["task"]]
        sizes = layer_sizes(key, data)
        dt = data.X.dtype
        coefs, intercepts = init_params(sizes, dt)
        total = sum(a.size for a in coefs + intercepts)
        self.params = np.empty(total, dtype=dt)
        self.grads = np.empty(total, dtype=dt)
        self.m = np.zeros(total, dtype=dt)
        self.v = np.zeros(total, dtype=dt)
        self.coefs, self.intercepts, self.gviews = [], [], []
        pos = 0
        for a in coefs + intercepts:
            view = self.params[pos:pos + a.size].reshape(a.shape)
            view[...] = a
            self.gviews.append(self.grads[pos:pos + a.size].reshape(a.shape))
            (self.coefs if a.ndim == 2 else self.intercepts).append(view)
            pos += a.size
        self.t = 0
        self.rng = np.random.default_rng(SEED)
        self.loss = float("nan")

    def epoch(self):
        X, Y, b = self.data.X, self.data.Y, self.batch
        n = X.shape[0]
        perm = self.rng.permutation(n)
        acc = 0.0
        for s in range(0, n, b):
            idx = perm[s:s + b]
            loss, gc, gi = self.ref.loss_and_gradients(
                self.coefs, self.intercepts, X[idx], Y[idx], activation="relu",
                loss=self.loss_name, alpha=ALPHA)
            for dst, src in zip(self.gviews, gc + gi):
                dst[...] = src
            self.t += 1
            self.ref.adam_update(self.params, self.grads, self.m, self.v, t=self.t,
                                 learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2,
                                 epsilon=EPSILON)
            acc += float(loss) * idx.shape[0]
        self.loss = acc / n

    def epoch_loss(self):
        return self.loss

    def weights(self):
        return [c.copy() for c in self.coefs], [b.copy() for b in self.intercepts]


class TorchContender:
    """PyTorch eager. The L2 penalty is Adam's ``weight_decay`` on the weight matrices
    only (a parameter group; biases undecayed), set to ``alpha / batch``: the gradient
    scikit-learn's penalty term adds (``alpha * W / batch_len``; the last, shorter batch
    gets ``alpha / batch`` instead of ``alpha / batch_len``). This avoids building the
    penalty into the autograd graph; the reported epoch loss is the data loss plus the
    penalty evaluated once per epoch. ``torch.optim.Adam(..., fused=True)``: the fastest
    of the default (for-loop), ``foreach`` and ``fused`` variants on CPU here."""

    def __init__(self, key, data, fused=True):
        import torch

        self.torch = torch
        w = WORKLOADS[key]
        self.batch = w["batch"]
        self.task = w["task"]
        dt = {"float32": torch.float32, "float64": torch.float64}[w["dtype"]]
        sizes = layer_sizes(key, data)
        coefs, intercepts = init_params(sizes, data.X.dtype)
        layers, self.linears = [], []
        for i, (W, b) in enumerate(zip(coefs, intercepts)):
            lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=dt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            self.linears.append(lin)
            if i < len(coefs) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.X = torch.from_numpy(data.X)
        if self.task == "multiclass":
            self.Y = torch.from_numpy(np.searchsorted(data.classes, data.y).astype(np.int64))
            self.crit = torch.nn.CrossEntropyLoss()
        elif self.task == "binary":
            self.Y = torch.from_numpy(data.Y)
            self.crit = torch.nn.BCEWithLogitsLoss()
        else:
            self.Y = torch.from_numpy(data.Y)
            mse = torch.nn.MSELoss()
            self.crit = lambda out, y: 0.5 * mse(out, y)
        groups = [{"params": [l.weight for l in self.linears],
                   "weight_decay": ALPHA / self.batch},
                  {"params": [l.bias for l in self.linears], "weight_decay": 0.0}]
        kw = {"fused": True} if fused else {}
        self.opt = torch.optim.Adam(groups, lr=LR, betas=(BETA_1, BETA_2), eps=EPSILON, **kw)
        self.gen = torch.Generator().manual_seed(SEED)
        self.n = data.n
        self.loss = float("nan")

    def epoch(self):
        torch = self.torch
        n, b = self.n, self.batch
        perm = torch.randperm(n, generator=self.gen)
        acc = torch.zeros((), dtype=torch.float64)
        model, crit, opt, X, Y = self.model, self.crit, self.opt, self.X, self.Y
        for s in range(0, n, b):
            idx = perm[s:s + b]
            out = model(X.index_select(0, idx))
            loss = crit(out, Y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc += loss.detach() * idx.shape[0]
        with torch.no_grad():
            pen = sum(float((l.weight.double() ** 2).sum()) for l in self.linears)
        self.loss = float(acc) / n + 0.5 * ALPHA * pen / b

    def epoch_loss(self):
        return self.loss

    def weights(self):
        return ([l.weight.detach().numpy().T.copy() for l in self.linears],
                [l.bias.detach().numpy().copy() for l in self.linears])


class JaxContender:
    """JAX: one ``jax.jit`` per epoch. The epoch function takes the training state and a
    shuffled index array (``numpy.random.Generator.permutation``, made on the host and
    passed in), ``lax.scan``s the Adam step over the full minibatches (rows gathered
    inside the step with ``X[idx]``) and runs the shorter last batch as one more step;
    the state's buffers are donated. float64 workloads need ``jax_enable_x64``, which
    run.py sets before anything is traced."""

    def __init__(self, key, data):
        import jax
        import jax.numpy as jnp
        from jax import lax

        self.jax = jax
        w = WORKLOADS[key]
        b = w["batch"]
        task = w["task"]
        dt = jnp.dtype(w["dtype"])
        sizes = layer_sizes(key, data)
        coefs, intercepts = init_params(sizes, data.X.dtype)
        params = tuple((jnp.asarray(W), jnp.asarray(c)) for W, c in zip(coefs, intercepts))
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params),
                      jnp.zeros((), dt))
        self.X = jax.device_put(data.X)
        self.Y = jax.device_put(data.Y)
        n = data.n
        n_full, rem = divmod(n, b)
        self.n = n
        self.rng = np.random.default_rng(SEED)

        def loss_fn(params, xb, yb):
            a = xb
            for W, c in params[:-1]:
                a = jax.nn.relu(a @ W + c)
            W, c = params[-1]
            z = a @ W + c
            if task == "multiclass":
                per = -(yb * jax.nn.log_softmax(z, axis=1)).sum(axis=1)
            elif task == "binary":
                per = (yb * jax.nn.softplus(-z) + (1 - yb) * jax.nn.softplus(z)).sum(axis=1)
            else:
                per = 0.5 * ((z - yb) ** 2).sum(axis=1)
            pen = sum((W * W).sum() for W, _ in params)
            return per.mean() + (0.5 * ALPHA / xb.shape[0]) * pen

        grad_fn = jax.value_and_grad(loss_fn)

        def step(state, idx, X, Y):
            params, m, v, t = state
            loss, g = grad_fn(params, X[idx], Y[idx])
            t = t + 1
            lr_t = LR * jnp.sqrt(1 - BETA_2 ** t) / (1 - BETA_1 ** t)
            m = jax.tree_util.tree_map(lambda m, g: BETA_1 * m + (1 - BETA_1) * g, m, g)
            v = jax.tree_util.tree_map(lambda v, g: BETA_2 * v + (1 - BETA_2) * g * g, v, g)
            params = jax.tree_util.tree_map(
                lambda p, m, v: p - lr_t * m / (jnp.sqrt(v) + EPSILON), params, m, v)
            return (params, m, v, t), loss

        def epoch_fn(state, X, Y, perm):
            full = perm[:n_full * b].reshape(n_full, b)
            state, losses = lax.scan(lambda s, idx: step(s, idx, X, Y), state, full)
            acc = losses.astype(jnp.float64 if dt == jnp.float64 else jnp.float32).sum() * b
            if rem:
                state, last = step(state, perm[n_full * b:], X, Y)
                acc = acc + last * rem
            return state, acc

        self.epoch_fn = jax.jit(epoch_fn, donate_argnums=(0,))
        self.loss = float("nan")

    def epoch(self):
        perm = self.rng.permutation(self.n).astype(np.int32)
        self.state, acc = self.epoch_fn(self.state, self.X, self.Y, perm)
        self.acc = acc
        self.jax.block_until_ready(self.state)

    def epoch_loss(self):
        return float(self.acc) / self.n

    def weights(self):
        params = self.state[0]
        return ([np.asarray(W) for W, _ in params], [np.asarray(c) for _, c in params])


class FloorContender:
    """The GEMM floor: per minibatch of the epoch (same count and lengths as the others),
    forward ``Z_l = A_{l-1} @ W_l`` for every layer, backward ``G_l = A_{l-1}.T @ D_l``
    for every layer and ``D_{l-1} = D_l @ W_l.T`` for every layer but the first, each
    ``np.matmul(..., out=...)`` into arrays allocated once; A_0 is a contiguous row slice
    of X. Nothing else: no bias, activation, loss, gather or optimizer."""

    def __init__(self, key, data):
        sizes = layer_sizes(key, data)
        b = WORKLOADS[key]["batch"]
        dt = data.X.dtype
        rng = np.random.default_rng(1)
        self.X = data.X
        self.b = b
        self.W = [(rng.standard_normal((i, o)) * 0.05).astype(dt)
                  for i, o in zip(sizes[:-1], sizes[1:])]
        self.Z = [np.empty((b, o), dtype=dt) for o in sizes[1:]]        # forward outputs
        self.D = [(rng.standard_normal((b, o)) * 0.01).astype(dt) for o in sizes[1:]]
        self.G = [np.empty_like(W) for W in self.W]
        self.Dp = [np.empty((b, i), dtype=dt) for i in sizes[1:-1]]      # D_l @ W_l.T, l>0
        # activations fed to the next layer: the forward outputs themselves
        self.flops = 0
        n = data.n
        for s in range(0, n, b):
            bb = min(b, n - s)
            for l, W in enumerate(self.W):
                k, m = W.shape
                self.flops += 2 * bb * k * m * (3 if l > 0 else 2)

    def epoch(self):
        X, b = self.X, self.b
        W, Z, D, G, Dp = self.W, self.Z, self.D, self.G, self.Dp
        mm = np.matmul
        L = len(W)
        n = X.shape[0]
        for s in range(0, n, b):
            bb = min(b, n - s)
            A = X[s:s + bb]
            acts = [A]
            for l in range(L):
                out = Z[l][:bb]
                mm(acts[l], W[l], out=out)
                acts.append(out)
            for l in range(L - 1, -1, -1):
                d = D[l][:bb]
                mm(acts[l].T, d, out=G[l])
                if l > 0:
                    mm(d, W[l].T, out=Dp[l - 1][:bb])

    def epoch_loss(self):
        return None

    def weights(self):
        return None


# fastprop with one of its own options on (run.py --features): what each costs on top
# of the default epoch, as "fastprop+<name>" beside "fastprop" in the same cell
FEATURES = {
    "dropout": {"dropout": 0.2},
    "leaky_relu": {"activation": "leaky_relu"},
    "elu": {"activation": "elu"},
    "gelu": {"activation": "gelu"},
    "softplus": {"activation": "softplus"},
    "silu": {"activation": "silu"},
    "clip": {"max_grad_norm": 1.0},
}


_WARM = set()


def warm_numpy_blas(dtype):
    """A product on zeros, 256 x 256 times 256 x 1024 in ``dtype``, through NumPy's
    BLAS on the calling thread, once per thread and dtype: fastprop's own warm-up
    (benchmarks/README.md, "The BLAS workspace"). A cold workspace ran some products at a
    third of their speed, so without it the floor, scikit-learn and the NumPy reference
    would be timed slower than they can run, depending on which products their process
    happened to run first."""
    import threading

    from threadpoolctl import threadpool_limits

    key = (threading.get_ident(), np.dtype(dtype).str)
    if key not in _WARM:
        a, b = np.zeros((256, 256), dtype), np.zeros((256, 1024), dtype)
        with threadpool_limits(1, user_api="blas"):
            np.matmul(a, b)   # the calling thread's workspace: products run unthreaded
        np.matmul(a, b)       # and those of BLAS's own threads, at the pass's limit
        _WARM.add(key)


def make_contender(name, key, data):
    warm_numpy_blas(data.X.dtype)
    if name.startswith("fastprop+"):
        return FastpropContender(key, data, **FEATURES[name[len("fastprop+"):]])
    cls = {"fastprop": FastpropContender, "sklearn": SklearnContender,
           "numpy": NumpyContender, "torch": TorchContender, "jax": JaxContender,
           "floor": FloorContender}[name]
    return cls(key, data)


def n_batches(n, b):
    return -(-n // b)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
