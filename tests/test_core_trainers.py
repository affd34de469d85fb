"""Training epochs and threads: ``Trainer.run_epoch`` against a NumPy loop over the
reference, for whole minibatches, minibatches split by rows and cut by units; the same
bits for every thread count; the BLAS hold and the team; the X check of the epoch's
gather; scratch reuse and concurrent calls; subnormals."""

import contextlib
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

import fastprop.core as core
from fastprop import reference
from fastprop.core import _kernels

from .helpers import (
    ACTIVATIONS,
    DTYPES,
    EPOCH_TOL,
    LOSSES,
    NumpyTrainer,
    REORDER_TOL,
    SOLVERS,
    assert_epoch_close,
    assert_result_close,
    blas_threads,
    csr_split_from,
    flat_grad,
    flat_pack,
    kernel_setting,
    make_network,
    make_problem,
    make_targets,
    seed_of,
    split_from,
    tol,
    trainer_problem,
    units_from,
)


# =======================================================================================
# Trainer.run_epoch vs a NumPy loop over the reference
# =======================================================================================


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("loss", LOSSES)
def test_trainer_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    p, params = trainer_problem(loss, dtype, weighted=weighted,
                                 seed=seed_of("tr", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("order", loss, solver))
    hyper = SOLVERS[solver]
    trainer = core.Trainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    expect = NumpyTrainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    for epoch in range(2):  # the optimizer state (and Adam's t) carries over epochs
        order = rng.permutation(30).astype(np.intp) if shuffled else None
        acc = trainer.run_epoch(p.X, p.Y, batch_size=7, alpha=0.3, sample_weight=p.sample_weight,
                                order=order)
        acc_e = expect.run_epoch(p.X, p.Y, batch_size=7, alpha=0.3,
                                 sample_weight=p.sample_weight, order=order)
        assert trainer.params.dtype == dtype
        assert_epoch_close(trainer.params, expect.params, dtype, f"params, epoch {epoch}")
        assert_epoch_close(trainer.state_1, expect.state_1, dtype, f"state_1, epoch {epoch}")
        if hyper["solver"] == "adam":
            assert_epoch_close(trainer.state_2, expect.state_2, dtype, f"state_2, epoch {epoch}")
            assert int(trainer.counter[0]) == expect.t == 5 * (epoch + 1)
        assert_allclose(acc, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
    assert not np.allclose(trainer.params, params)


@pytest.mark.parametrize("activation", ["identity", "logistic", "relu"])
def test_trainer_other_activations(activation):
    p, params = trainer_problem("log_loss", np.float64, activation=activation, n=25,
                                 weighted=True, seed=seed_of("tract", activation))
    for solver in ("adam", "sgd-nesterov"):
        trainer = core.Trainer(p.sizes, activation, "log_loss", params.copy(), **SOLVERS[solver])
        expect = NumpyTrainer(p.sizes, activation, "log_loss", params.copy(), **SOLVERS[solver])
        order = np.random.default_rng(1).permutation(25).astype(np.intp)
        for batch_size in (4, 10, 3, 25):  # buffers grown, then reused for smaller batches
            acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.1, order=order,
                                    sample_weight=p.sample_weight)
            acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.1, order=order,
                                     sample_weight=p.sample_weight)
            assert_epoch_close(trainer.params, expect.params, np.float64, f"{solver} {batch_size}")
            assert_allclose(acc, acc_e, rtol=1e-9)


@pytest.mark.parametrize("batch_size", [1, 30, 31, 1000])
def test_trainer_batch_size_edges(batch_size):
    p, params = trainer_problem("squared_error", np.float64, n=30, seed=2)
    trainer = core.Trainer(p.sizes, "tanh", "squared_error", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "squared_error", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.2)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.2)
    assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)
    assert int(trainer.counter[0]) == expect.t == -(-30 // min(batch_size, 30))


def test_trainer_skips_zero_weight_batches():
    p, params = trainer_problem("binary_log_loss", np.float64, n=30, weighted=True, seed=4)
    w = p.sample_weight.copy()
    w[7:14] = 0.0  # the second batch of 7 carries no weight
    trainer = core.Trainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "binary_log_loss", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=7, alpha=0.2, sample_weight=w)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=7, alpha=0.2, sample_weight=w)
    assert expect.t == 4 and int(trainer.counter[0]) == 4
    assert np.isfinite(trainer.params).all()
    assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)


def test_trainer_learning_rate_setter_and_pickle():
    p, params = trainer_problem("poisson", np.float64, n=30, seed=6)
    trainer = core.Trainer(p.sizes, "tanh", "poisson", params.copy(), **SOLVERS["sgd-nesterov"])
    expect = NumpyTrainer(p.sizes, "tanh", "poisson", params.copy(), **SOLVERS["sgd-nesterov"])
    trainer.run_epoch(p.X, p.Y, batch_size=7)
    expect.run_epoch(p.X, p.Y, batch_size=7)
    trainer.learning_rate = expect.lr = 0.01
    assert trainer.learning_rate == 0.01
    clone = pickle.loads(pickle.dumps(trainer))
    assert_array_equal(clone.state_1, trainer.state_1)
    # the owner of the parameter vector pickles it and re-attaches it
    clone.params = trainer.params.copy()
    for t in (trainer, clone):
        t.run_epoch(p.X, p.Y, batch_size=7)
    expect.run_epoch(p.X, p.Y, batch_size=7)
    assert_array_equal(clone.params, trainer.params)
    assert_epoch_close(trainer.params, expect.params, np.float64)


def test_trainer_is_deterministic():
    p, params = trainer_problem("log_loss", np.float64, n=4096, sizes=(10, 40, 3), seed=9)
    order = np.random.default_rng(0).permutation(4096).astype(np.intp)
    runs = []
    for _ in range(2):
        trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
        acc = trainer.run_epoch(p.X, p.Y, batch_size=2048, alpha=0.1, order=order)
        runs.append((acc, trainer.params))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], params)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_thread_count_does_not_change_results(dtype):
    from threadpoolctl import threadpool_limits

    # BLAS's threads and the OpenMP team both follow the limit
    p, params = trainer_problem("log_loss", dtype, n=4096, sizes=(10, 40, 3), seed=9,
                                 weighted=True)
    order = np.random.default_rng(0).permutation(4096).astype(np.intp)
    results = {}
    for n_threads in (1, 2):
        with threadpool_limits(limits=n_threads):
            if _kernels.HAS_OPENMP:
                assert _kernels.openmp_max_threads() == n_threads
            trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["sgd"])
            acc = trainer.run_epoch(p.X, p.Y, batch_size=2048, alpha=0.1, order=order,
                                    sample_weight=p.sample_weight)
            full = p.call(core)
            out = core.forward(p.coefs, p.intercepts, p.X, activation="tanh", loss="log_loss")
        results[n_threads] = (acc, trainer.params, full, out)
    r1, r2 = results[1], results[2]
    t = REORDER_TOL[dtype]
    assert_allclose(r1[0], r2[0], rtol=t["rtol"])
    assert_allclose(r1[1], r2[1], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], r2[2], **t)
    assert_allclose(r1[3], r2[3], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], p.call(reference), **tol(dtype))


# -- split minibatches: two halves, two gradient buffers, one team of up to two threads --


def test_split_rows_layout():
    big = _kernels.split_rows(10**6)
    assert big > 0 and big % 8 == 0
    assert _kernels.split_rows(1) == 0  # a one-row minibatch is never split by default
    with split_from(1):
        # about half, rounded up to 8 rows and capped at the minibatch
        assert [_kernels.split_rows(b) for b in (1, 2, 7, 8, 16, 17, 31, 200, 257)] == [
            1, 2, 7, 8, 8, 16, 16, 104, 136]
    with pytest.raises(ValueError):
        _kernels.split_rows(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "sgd-nesterov"])
@pytest.mark.parametrize("loss", LOSSES)
def test_split_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    """Split minibatches: 61 rows in batches of 20 -> halves 16 + 4, and the last batch
    of 1 row -> 1 + an empty half; and batches of 9 -> halves 8 + 1."""
    p, params = trainer_problem(loss, dtype, weighted=weighted, n=61,
                                 seed=seed_of("split", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("split-order", loss, solver))
    with split_from(2):
        _two_epochs_match_numpy_loop(
            p, params, loss, solver, dtype, rng, shuffled,
            lambda batch_size: _kernels.split_rows(batch_size) > 0)


def _two_epochs_match_numpy_loop(p, params, loss, solver, dtype, rng, shuffled, on_path):
    """Epochs of 20- and 9-row batches over p's 61 rows, the kernel against the NumPy
    loop, checking first that ``on_path(batch_size)`` (the driver under test runs)."""
    hyper = SOLVERS[solver]
    trainer = core.Trainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    expect = NumpyTrainer(p.sizes, p.activation, loss, params.copy(), **hyper)
    for epoch, batch_size in enumerate((20, 9)):
        order = rng.permutation(61).astype(np.intp) if shuffled else None
        assert on_path(batch_size)
        acc = trainer.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.3,
                                sample_weight=p.sample_weight, order=order)
        acc_e = expect.run_epoch(p.X, p.Y, batch_size=batch_size, alpha=0.3,
                                 sample_weight=p.sample_weight, order=order)
        assert_epoch_close(trainer.params, expect.params, dtype, f"params, epoch {epoch}")
        assert_epoch_close(trainer.state_1, expect.state_1, dtype, f"state_1, {epoch}")
        if hyper["solver"] == "adam":
            assert_epoch_close(trainer.state_2, expect.state_2, dtype, f"state_2, {epoch}")
            assert int(trainer.counter[0]) == expect.t
        assert_allclose(acc, acc_e, rtol=EPOCH_TOL[dtype]["rtol"])
    assert expect.t == (4 + 7 if hyper["solver"] == "adam" else 0)
    assert not np.allclose(trainer.params, params)


def test_split_epoch_skips_zero_weight_batches():
    p, params = trainer_problem("log_loss", np.float64, n=40, weighted=True, seed=14)
    with split_from(2):
        _zero_weight_batch_is_skipped(p, params)


def _zero_weight_batch_is_skipped(p, params):
    """The second batch of 10 carries no weight: no step, no t (as in the NumPy loop)."""
    w = p.sample_weight.copy()
    w[10:20] = 0.0
    trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    expect = NumpyTrainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    acc = trainer.run_epoch(p.X, p.Y, batch_size=10, alpha=0.2, sample_weight=w)
    acc_e = expect.run_epoch(p.X, p.Y, batch_size=10, alpha=0.2, sample_weight=w)
    assert expect.t == 3 and int(trainer.counter[0]) == 3
    assert_epoch_close(trainer.params, expect.params, np.float64)
    assert_allclose(acc, acc_e, rtol=1e-9)


def _split_runs(dtype, sparse, n_threads_list, solver="adam"):
    """Two epochs of a split-minibatch problem (batch 256, the production threshold)
    under each thread limit; returns what each run produced."""
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(30, 64, 32, 3), seed=21, weighted=True)
    assert _kernels.split_rows(256) > 0
    X = p.X
    if sparse:
        Xs = sp.csr_matrix(p.X * (np.random.default_rng(3).uniform(size=p.X.shape) < 0.3))
        X = core.csr_parts(Xs)
    orders = [np.random.default_rng(e).permutation(1500)[:1400].astype(np.intp)
              for e in range(2)]
    out = {}
    for nt in n_threads_list:
        # the CSR minibatches are too little work to be split at the production threshold
        with threadpool_limits(limits=nt), csr_split_from(0):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            accs = [trainer.run_epoch(X, p.Y, batch_size=256, alpha=1e-3,
                                      sample_weight=p.sample_weight, order=o)
                    for o in orders]
        out[nt] = (accs, trainer.params, trainer.state_1, trainer.state_2, trainer.counter)
    return out, params


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_split_epoch_is_bitwise_the_same_for_any_thread_count(dtype, sparse, solver):
    """The halves and the optimizer's segments are fixed by the minibatch length, not by
    the team: one thread and two produce the same bits (dask workers run one thread,
    a laptop two)."""
    out, params = _split_runs(dtype, sparse, (1, 2), solver)
    for a, b in zip(out[1], out[2]):
        assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(out[1][1], params)


def test_sparse_minibatches_split_only_where_the_work_pays():
    """A sparse minibatch of a small network is too little work for two threads: it runs
    whole (the same bits as the whole-minibatch driver) unless the work threshold is
    lowered, when it splits (other bits: the halves' sums round differently)."""
    p, params = trainer_problem("log_loss", np.float64, activation="relu", n=1500,
                                 sizes=(30, 64, 32, 3), seed=21, weighted=True)
    rng = np.random.default_rng(3)
    X = core.csr_parts(sp.csr_matrix(p.X * (rng.uniform(size=p.X.shape) < 0.3)))
    order = np.random.default_rng(0).permutation(1500).astype(np.intp)

    def epoch():
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS["adam"])
        trainer.run_epoch(X, p.Y, batch_size=256, alpha=1e-3,
                          sample_weight=p.sample_weight, order=order)
        return trainer.params

    assert _kernels.split_rows(256) > 0
    production = epoch()
    with kernel_setting(_kernels._set_split_min_batch, 1 << 62):
        whole = epoch()
    with csr_split_from(0):
        split = epoch()
    assert_array_equal(production, whole)
    assert not np.array_equal(split, whole)
    assert_allclose(split, whole, rtol=1e-9, atol=1e-12)


def test_split_team_takes_two_threads_and_holds_blas_at_one():
    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    if not _kernels.HAS_OPENMP:
        pytest.skip("built without OpenMP: split epochs run on one thread")
    with threadpool_limits(limits=2):
        before = blas_threads()
        assert before and all(n == 2 for _, n in before)
        with split_team(4) as nt:
            assert nt == 2  # four parts, two threads allowed
            assert all(n == 1 for _, n in blas_threads())  # BLAS held at one thread
            # the cores are taken: an epoch on another thread runs on that thread alone
            other = []

            def second_pass():
                with split_team(4) as nt2:
                    other.append(nt2)

            worker = __import__("threading").Thread(target=second_pass)
            worker.start()
            worker.join()
            assert other == [1]
            assert all(n == 1 for _, n in blas_threads())
        assert blas_threads() == before
        with split_team(1) as nt:
            assert nt == 1  # a whole pass runs on its thread, with BLAS on one thread too
            assert all(n == 1 for _, n in blas_threads())
        assert blas_threads() == before
        with pytest.raises(RuntimeError):
            with split_team(2):
                raise RuntimeError("an epoch that fails still gives BLAS back")
        assert blas_threads() == before
    with threadpool_limits(limits=1):
        with split_team(2) as nt:
            assert nt == 1


def test_passes_in_threads_share_the_blas_hold():
    """Whole and split passes in several threads run side by side, all with BLAS on one
    thread; it goes back to the user's setting when the last one ends, whichever thread
    that is."""
    import threading

    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    with threadpool_limits(limits=2):
        user = blas_threads()
        inside = threading.Event()
        release = threading.Event()
        seen = []

        def whole():
            with split_team(1):
                inside.set()
                release.wait(10)
                seen.append(("whole", blas_threads()))

        t = threading.Thread(target=whole)
        t.start()
        inside.wait(10)
        with split_team(2) as nt:
            seen.append(("split", blas_threads(), nt))
        assert all(n == 1 for _, n in blas_threads())  # the whole pass still runs
        release.set()
        t.join(10)
        assert blas_threads() == user
    assert all(n == 1 for _, n in seen[0][1]) and all(n == 1 for _, n in seen[1][1])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_whole_minibatch_epoch_is_bitwise_the_same_for_any_thread_count(dtype):
    """Minibatches too short to split run on one thread with BLAS on one thread (or cut
    by units, next section), so the thread limit does not change their result either."""
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(30, 40, 3), seed=23)
    assert _kernels.split_rows(32) == 0
    assert not _kernels.unit_split(np.array(p.sizes, dtype=np.intp), 32)
    out = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), "adam")
            acc = trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3)
        out[nt] = (acc, trainer.params)
    assert out[1][0] == out[2][0]
    assert_array_equal(out[1][1], out[2][1])


# -- whole minibatches cut by units: each layer's units in two parts, one per thread --


def test_unit_split_threshold():
    w2 = np.array([784, 256, 128, 10], dtype=np.intp)  # the benchmarks' W2 network
    assert _kernels.unit_split(w2, 32)
    assert _kernels.unit_split(w2, 18)  # 18 x 235k parameters: over 2^22
    assert not _kernels.unit_split(w2, 17)
    assert not _kernels.unit_split(np.array([100, 256, 3], dtype=np.intp), 64)  # 1.7M
    # the shortest split lengths on a big network: units instead of rows
    assert _kernels.unit_split(w2, 128) and _kernels.unit_split(w2, 191)
    assert not _kernels.unit_split(w2, 192)  # split by rows
    assert not _kernels.unit_split(w2, 1024)
    assert not _kernels.unit_split(np.array([50, 100, 1], dtype=np.intp), 128)  # rows
    with kernel_setting(_kernels._set_units_over_rows_work, 1 << 62):
        assert not _kernels.unit_split(w2, 128)
    assert not _kernels.unit_split(np.array([64, 64, 10], dtype=np.intp), 32)  # too small
    with units_from(1):
        assert _kernels.unit_split(np.array([1, 1], dtype=np.intp), 1)
    with pytest.raises(ValueError):
        _kernels.unit_split(w2, 0)
    with pytest.raises(ValueError):
        _kernels.unit_split(np.array([3], dtype=np.intp), 8)


# widths chosen to cut: 17, 20 and 40 -> 16 + 1, 16 + 4 and 32 + 8, 33 -> 32 + 1; 18 outputs -> 16 +
# 2 (the output layer cut too); a width of 16 or fewer is not cut (the second part empty)
UNIT_SIZES = {"squared_error": (20, 40, 33, 18), "poisson": (17, 20, 2),
              "log_loss": (20, 40, 33, 3), "binary_log_loss": (1, 40, 16, 2)}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "sgd-nesterov"])
@pytest.mark.parametrize("loss", LOSSES)
def test_unit_split_epoch_matches_numpy_loop(loss, solver, shuffled, weighted, dtype):
    """Whole minibatches cut by units (batches of 20 and 9 over 61 rows: a last batch of
    one row) against the NumPy loop."""
    # (poisson's exp output overflows the NumPy loop's SGD from relu's unbounded units)
    p, params = trainer_problem(loss, dtype, activation="tanh" if loss == "poisson" else "relu",
                                 weighted=weighted, n=61, sizes=UNIT_SIZES[loss],
                                 seed=seed_of("units", loss, solver, shuffled, weighted))
    rng = np.random.default_rng(seed_of("units-order", loss, solver))
    sizes = np.array(p.sizes, dtype=np.intp)
    with units_from(1):
        _two_epochs_match_numpy_loop(
            p, params, loss, solver, dtype, rng, shuffled,
            lambda batch_size: _kernels.unit_split(sizes, batch_size))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
def test_short_split_lengths_on_a_big_network_are_cut_by_units(solver, dtype):
    """Minibatches long enough to split by rows, on a network big enough (scaled down
    here through the hooks), are cut by units instead: the unit driver runs (it matches
    the NumPy loop), and one thread and two give the same bits."""
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", dtype, activation="relu", weighted=True, n=61,
                                 sizes=UNIT_SIZES["log_loss"], seed=seed_of("over", solver))
    sizes = np.array(p.sizes, dtype=np.intp)
    with split_from(2), kernel_setting(_kernels._set_units_over_rows_work, 1):
        assert _kernels.split_rows(20) > 0 and _kernels.unit_split(sizes, 20)
        _two_epochs_match_numpy_loop(
            p, params, "log_loss", solver, dtype, np.random.default_rng(5), True,
            lambda batch_size: _kernels.unit_split(sizes, batch_size))
        runs = []
        for nt in (1, 2):
            with threadpool_limits(limits=nt):
                trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                       **SOLVERS[solver])
                trainer.run_epoch(p.X, p.Y, batch_size=20, alpha=1e-3,
                                  order=np.random.default_rng(6).permutation(61))
            runs.append((trainer.params, trainer.state_1, trainer.state_2))
        for a, b in zip(*runs):
            assert_array_equal(a, b)
        # with the preference off, the same minibatches are split by rows: other bits
        with kernel_setting(_kernels._set_units_over_rows_work, 1 << 62):
            assert not _kernels.unit_split(sizes, 20)
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            trainer.run_epoch(p.X, p.Y, batch_size=20, alpha=1e-3,
                              order=np.random.default_rng(6).permutation(61))
        assert not np.array_equal(trainer.params, runs[0][0])
        assert_allclose(trainer.params, runs[0][0], rtol=1e-3 if dtype == np.float32 else 1e-9,
                        atol=1e-5)


def test_unit_split_epoch_skips_zero_weight_batches():
    p, params = trainer_problem("log_loss", np.float64, n=40, sizes=(20, 40, 3),
                                 weighted=True, seed=15)
    with units_from(1):
        _zero_weight_batch_is_skipped(p, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("solver", ["adam", "sgd-nesterov"])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "order"])
def test_unit_split_epoch_is_bitwise_the_same_for_any_thread_count(dtype, solver, shuffled):
    """At the production threshold (batch 32 on a network of 156k parameters), one
    thread and two produce the same bits, and the epoch really ran cut by units."""
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", dtype, activation="relu", n=1500,
                                 sizes=(300, 512, 3), seed=24, weighted=True)
    assert _kernels.unit_split(np.array(p.sizes, dtype=np.intp), 32)
    orders = [np.random.default_rng(e).permutation(1500)[:1400].astype(np.intp)
              if shuffled else None for e in range(2)]
    out = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(),
                                   **SOLVERS[solver])
            accs = [trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3,
                                      sample_weight=p.sample_weight, order=o)
                    for o in orders]
        out[nt] = (accs, trainer.params, trainer.state_1, trainer.state_2, trainer.counter)
    for a, b in zip(out[1], out[2]):
        assert_array_equal(np.asarray(a), np.asarray(b))
    if dtype == np.float32:
        return  # float32 relu trajectories drift apart over 88 steps from rounding alone
    # ... and they match the plain whole-minibatch driver's (which does not cut products)
    with units_from(1 << 62):
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS[solver])
        accs = [trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=1e-3,
                                  sample_weight=p.sample_weight, order=o) for o in orders]
    assert_epoch_close(out[1][1], trainer.params, dtype)
    assert_allclose(out[1][0], accs, rtol=EPOCH_TOL[dtype]["rtol"])


def test_unit_split_team_goes_to_dense_epochs():
    from threadpoolctl import threadpool_limits

    from fastprop.core._team import split_team

    if not _kernels.HAS_OPENMP:
        pytest.skip("built without OpenMP: epochs run on one thread")
    w2 = np.array([784, 256, 128, 10], dtype=np.intp)
    with threadpool_limits(limits=2):
        before = blas_threads()
        kind, parts, _ = _kernels.epoch_partition(w2, 32)
        assert kind == "units" and parts >= 2
        with split_team(parts) as nt:
            assert nt == 2  # a dense epoch cut by units
            assert all(n == 1 for _, n in blas_threads())
        assert _kernels.epoch_partition(w2, 32, 32 * 50, 32)[:2] == ("whole", 1)  # CSR
        assert _kernels.epoch_partition(np.array([64, 64, 10], dtype=np.intp), 32)[:2] == (
            "whole", 1)  # too small to cut
        with split_team(1) as nt:
            assert nt == 1
        assert blas_threads() == before


def test_split_pass_on_any_thread_holds_blas():
    """threadpoolctl >= 3.8 lets only one thread change a pthreads OpenBLAS's threads (the
    main thread, once it has used threadpoolctl); a split pass started on another thread
    must still hold BLAS at one thread, and give the main thread its control back."""
    import threading

    from threadpoolctl import ThreadpoolController

    from fastprop.core._team import split_team

    ctl = ThreadpoolController().select(user_api="blas")
    limiter = ctl.limit(limits=2)  # the main thread takes control
    try:
        before = blas_threads()
        seen = []

        def run():
            with split_team(2):
                seen.append(blas_threads())
        t = threading.Thread(target=run)
        t.start()
        t.join()
        assert seen and all(n == 1 for _, n in seen[0])
        assert blas_threads() == before
        lim1 = ctl.limit(limits=1)  # the main thread can still set limits
        assert all(n == 1 for _, n in blas_threads())
        lim1.restore_original_limits()
    finally:
        limiter.restore_original_limits()


def test_split_epochs_in_threads_equal_sequential_ones():
    """Two trainers in two Python threads at once: one holds the team, the other runs on
    its own thread; both get the sequential results, and BLAS is given back."""
    import threading

    p, params = trainer_problem("squared_error", np.float64, activation="relu", n=3000,
                                 sizes=(20, 48, 2), seed=5)
    def run(result, key):
        trainer = core.Trainer(p.sizes, "relu", "squared_error", params.copy(), "adam")
        for _ in range(3):
            trainer.run_epoch(p.X, p.Y, batch_size=512, alpha=1e-4)
        result[key] = trainer.params
    seq = {}
    run(seq, 0)
    before = blas_threads()
    par = {}
    threads = [threading.Thread(target=run, args=(par, k)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert blas_threads() == before
    assert_array_equal(par[0], seq[0])
    assert_array_equal(par[1], seq[0])


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_split_loss_and_gradients_match_reference_for_any_thread_count(dtype, sparse):
    """Full-data passes cut every block in halves (blocks of >= 128 rows): the result
    matches the reference, and one thread and two give the same bits."""
    from threadpoolctl import threadpool_limits

    p = make_problem(n_samples=700, sizes=(12, 30, 20, 4), activation="relu",
                     loss="log_loss", dtype=dtype, alpha=0.3, weighted=True, seed=31)
    X = p.X
    if sparse:
        X = sp.csr_matrix(p.X * (np.random.default_rng(4).uniform(size=p.X.shape) < 0.4))
    f = core.LossGradient(p.sizes, X, p.Y, activation="relu", loss="log_loss", alpha=0.3,
                          sample_weight=p.sample_weight)
    assert f.rows == 700 and _kernels.split_rows(f.rows) > 0  # one block, cut in halves
    params = p.flat().astype(dtype)
    runs = {}
    for nt in (1, 2):
        with threadpool_limits(limits=nt):
            runs[nt] = f(params)
    assert runs[1][0] == runs[2][0]
    assert_array_equal(runs[1][1], runs[2][1])
    coefs, intercepts = core.unpack(params, p.sizes)
    Xd = X.toarray() if sparse else X
    ref = reference.loss_and_gradients(coefs, intercepts, Xd, p.Y, activation="relu",
                                       loss="log_loss", alpha=0.3,
                                       sample_weight=p.sample_weight)
    t = tol(dtype)
    assert_allclose(runs[1][0], float(ref[0]), rtol=t["rtol"])
    assert_allclose(runs[1][1], flat_grad(ref).astype(np.float64), rtol=t["rtol"],
                    atol=t["atol_factor"] * np.abs(flat_grad(ref)).max())
    if not sparse:  # the public front door (dense input) takes the same path
        out = core.loss_and_gradients(coefs, intercepts, X, p.Y, activation="relu",
                                      loss="log_loss", alpha=0.3,
                                      sample_weight=p.sample_weight)
        assert out[0] == dtype(runs[1][0])


@pytest.mark.parametrize("block", [40, 90, 700])
def test_split_loss_grad_block_layouts_match_reference(block):
    p = make_problem(n_samples=700, sizes=(6, 9, 3), activation="tanh",
                     loss="squared_error", alpha=0.2, weighted=True, seed=32)
    params = p.flat()
    ref = p.call(reference)
    with split_from(2):
        for nt in (1, 2):
            f = core.LossGradient(p.sizes, p.X, p.Y, activation="tanh",
                                  loss="squared_error", alpha=0.2,
                                  sample_weight=p.sample_weight)
            # a block size of our choosing, with workspaces sized for it
            f.rows = block
            half = _kernels.split_rows(block)
            work = 2 * half * int(sum(p.sizes[1:]))
            f.acts, f.deltas = np.full(work, np.nan), np.full(work, np.nan)
            f.grads2 = np.full(f.params.size, np.nan)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=nt):
                value, grad = f(params)
            assert_allclose(value, float(ref[0]), rtol=1e-12)
            assert_allclose(grad, flat_grad(ref), rtol=1e-10, atol=1e-13)


def test_parallel_elementwise_pass_matches_serial(monkeypatch):
    """Blocks of 2^18 rows x 64 hidden units = 2^24 entries reach the kernels' OpenMP
    elementwise pass (PARALLEL_MIN_ENTRIES = 1 << 24 in _kernels.pyx); with 2 threads it
    must give the single-thread result."""
    from threadpoolctl import threadpool_limits

    n, sizes = 1 << 18, [6, 64, 2]
    monkeypatch.setattr(core, "_BLOCK_ENTRIES", 1 << 25)  # one block for loss_and_gradients
    assert core.block_rows(sizes, n) == n
    rng = np.random.default_rng(0)
    coefs, intercepts = make_network(sizes, np.float64, seed=1)
    X = rng.normal(size=(n, 6))
    Y = make_targets(rng, "binary_log_loss", n, 2)
    results = {}
    for n_threads in (1, 2):
        with threadpool_limits(limits=n_threads):
            trainer = core.Trainer(sizes, "logistic", "binary_log_loss",
                                   flat_pack(coefs, intercepts), **SOLVERS["sgd"])
            acc = trainer.run_epoch(X, Y, batch_size=n, alpha=0.1)
            full = core.loss_and_gradients(coefs, intercepts, X, Y, activation="logistic",
                                           loss="binary_log_loss", alpha=0.1)
            out = core.forward(coefs, intercepts, X, activation="logistic", loss="binary_log_loss")
        results[n_threads] = (acc, trainer.params, full, out)
    r1, r2 = results[1], results[2]
    t = REORDER_TOL[np.float64]
    assert_allclose(r1[0], r2[0], rtol=t["rtol"])
    assert_allclose(r1[1], r2[1], rtol=t["rtol"], atol=t["atol_factor"])
    assert_result_close(r1[2], r2[2], **t)
    assert_allclose(r1[3], r2[3], rtol=t["rtol"], atol=t["atol_factor"])
    assert not np.array_equal(r1[1], flat_pack(coefs, intercepts))


# -- check_finite: the epoch checks the rows it gathers for NaN and infinity -----------

# (batch size, path, unit-split threshold): whole minibatches on one thread, split
# minibatches, and whole minibatches cut by units
FINITE_PATHS = [(7, "whole", None), (40, "split", None), (7, "units", 1)]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("batch_size, path, units_min", FINITE_PATHS,
                         ids=[c[1] for c in FINITE_PATHS])
def test_epoch_check_finite_finds_every_bad_row(batch_size, path, units_min, dtype, n_threads):
    from threadpoolctl import threadpool_limits

    p, params = trainer_problem("log_loss", dtype, activation="relu", n=61,
                                 sizes=(20, 40, 33, 3), seed=31)
    order = np.random.default_rng(4).permutation(61).astype(np.intp)
    units = units_from(units_min) if units_min else contextlib.nullcontext()

    def epoch(X, check):
        trainer = core.Trainer(p.sizes, "relu", "log_loss", params.copy(), **SOLVERS["adam"])
        acc = trainer.run_epoch(X, p.Y, batch_size=batch_size, alpha=1e-3, order=order,
                                check_input=False, check_finite=check)
        return acc, trainer.params, trainer.state_1, trainer.state_2

    with threadpool_limits(limits=n_threads), split_from(32), units:
        assert (_kernels.split_rows(batch_size) > 0) == (path == "split")
        assert bool(_kernels.unit_split(np.asarray(p.sizes, dtype=np.intp), batch_size)) == (
            path == "units")
        # finite X: the checking gather changes nothing
        for a, b in zip(epoch(p.X, False), epoch(p.X, True)):
            assert_array_equal(np.asarray(a), np.asarray(b))
        # one bad value anywhere: the first and last rows visited, a row in each half of
        # a split minibatch, the first and the last feature; NaN and both infinities
        for pos, (row, col) in enumerate([(order[0], 0), (order[-1], 19), (order[5], 7),
                                          (order[35], 19), (order[44], 3)]):
            bad = p.X.copy()
            bad[row, col] = [np.nan, np.inf, -np.inf][pos % 3]
            with pytest.raises(core.NonFiniteRowsError, match="NaN or infinity"):
                epoch(bad, True)
            assert issubclass(core.NonFiniteRowsError, ValueError)
            epoch(bad, False)  # unchecked, the epoch runs through (meaningless values)
        # huge but finite values are finite
        huge = p.X.copy()
        huge[order[3]] = np.finfo(dtype).max
        epoch(huge, True)


def test_epoch_check_finite_needs_a_gathered_dense_x():
    p, params = trainer_problem("log_loss", np.float64, n=20)
    trainer = core.Trainer(p.sizes, "tanh", "log_loss", params.copy(), **SOLVERS["adam"])
    with pytest.raises(ValueError, match="check_finite needs"):
        trainer.run_epoch(p.X, p.Y, batch_size=5, check_finite=True)
    with pytest.raises(ValueError, match="check_finite needs"):
        trainer.run_epoch(core.csr_parts(sp.csr_matrix(p.X)), p.Y, batch_size=5,
                          order=np.arange(20, dtype=np.intp), check_finite=True)
    before = trainer.params.copy()
    with pytest.raises(ValueError, match="check_finite needs the rows gathered"):
        _kernels.train_epoch(
            np.asarray(p.sizes, dtype=np.intp), core.ACTIVATION_CODES["tanh"],
            core.LOSS_CODES["log_loss"], trainer.params, np.empty_like(before), p.X, p.Y,
            np.empty(0), np.empty(0, dtype=np.intp), 5, 0.0,
            np.empty(5 * sum(p.sizes[1:])), np.empty(5 * sum(p.sizes[1:])),
            np.empty((5, p.sizes[0])), np.empty((5, p.sizes[-1])), np.empty(5), 1,
            np.zeros_like(before), np.zeros_like(before), np.array([1e-3, 0, 0, .9, .999, 1e-8]),
            np.zeros(1, dtype=np.intp), np.empty(0), 1, check_finite=True)
    assert_array_equal(trainer.params, before)


def test_trainer_constructor_errors():
    sizes = [3, 4, 2]
    good = np.zeros(core.n_params(sizes))
    with pytest.raises(ValueError, match="solver must be"):
        core.Trainer(sizes, "tanh", "log_loss", good, "lbfgs")
    with pytest.raises(ValueError, match="activation must be one of"):
        core.Trainer(sizes, "swish", "log_loss", good, "adam")
    with pytest.raises(ValueError, match="loss must be one of"):
        core.Trainer(sizes, "tanh", "hinge", good, "adam")
    with pytest.raises(ValueError, match="params must be 1-D of length 26"):
        core.Trainer(sizes, "tanh", "log_loss", np.zeros(25), "adam")
    with pytest.raises(TypeError, match="float32 or float64"):
        core.Trainer(sizes, "tanh", "log_loss", np.zeros(26, dtype=int), "adam")


def test_pack_order_matches_sklearn():
    from sklearn.neural_network._multilayer_perceptron import _pack

    coefs, intercepts = make_network((3, 4, 5, 2), seed=3)
    flat = core.pack(coefs, intercepts)
    assert_array_equal(flat, _pack(coefs, intercepts))
    assert core.n_params([3, 4, 5, 2]) == flat.size
    c, i = core.unpack(flat, [3, 4, 5, 2])
    for a, b in zip(c + i, coefs + intercepts):
        assert_array_equal(a, b)


def test_loss_gradient_object_reuse_has_no_stale_state(monkeypatch):
    """LossGradient (what L-BFGS calls) reuses its buffers: evaluating at another point
    in between must not change the result at the first one."""
    monkeypatch.setattr(core, "block_rows", lambda sizes, n_samples: 6)  # 3 blocks
    p = make_problem(n_samples=17, sizes=(3, 5, 4, 3), activation="relu", loss="log_loss",
                     alpha=0.3, weighted=True, seed=12)
    f = core.LossGradient(p.sizes, p.X, p.Y, activation="relu", loss="log_loss", alpha=0.3,
                          sample_weight=p.sample_weight)
    x1 = p.flat()
    x2 = x1 + np.random.default_rng(0).normal(size=x1.size)
    v1, g1 = f(x1)
    v2, g2 = f(x2)
    v1b, g1b = f(x1)
    assert v1 == v1b and np.array_equal(g1, g1b)
    assert not np.allclose(g1, g2)
    assert g1.dtype == np.float64 and isinstance(v1, float)
    ref = p.call(reference)
    assert_allclose(v1, float(ref[0]), rtol=1e-12)
    assert_allclose(g1, flat_grad(ref), rtol=1e-10, atol=1e-13)


def test_loss_and_gradients_reuses_scratch_but_never_the_returned_gradient():
    """Successive calls of one shape reuse the parameter vector and workspaces (the
    same buffers, checked by identity) but hand back fresh gradient arrays: an earlier
    call's results stay as they were; shapes that differ get buffers of their own."""
    p = make_problem(n_samples=300, sizes=(7, 20, 3), activation="relu", loss="log_loss",
                     seed=31)
    q = make_problem(n_samples=300, sizes=(7, 20, 3), activation="relu", loss="log_loss",
                     seed=32)
    first = p.call(core)
    kept = (first[0], [g.copy() for g in first[1]], [g.copy() for g in first[2]])
    scratch = core._scratch.buffers
    second = q.call(core)
    assert core._scratch.buffers[0] is scratch[0]  # reused
    assert all(a is b for a, b in zip(core._scratch.buffers, scratch))
    assert first[0] == kept[0]
    for a, b in zip(first[1] + first[2], kept[1] + kept[2]):
        assert_array_equal(a, b)  # the first call's gradient was not overwritten
    assert not np.shares_memory(first[1][0], second[1][0])
    for res, prob in ((first, p), (second, q)):
        ref = prob.call(reference)
        assert_allclose(res[0], ref[0], rtol=1e-12)
        assert_allclose(flat_grad(res), flat_grad(ref), rtol=1e-10, atol=1e-13)
    # another shape: new buffers, and its results still right
    r = make_problem(n_samples=40, sizes=(7, 9, 3), activation="tanh", loss="log_loss", seed=33)
    third = r.call(core)
    assert core._scratch.buffers[0] is not scratch[0]
    assert_allclose(flat_grad(third), flat_grad(r.call(reference)), rtol=1e-10, atol=1e-13)


def test_concurrent_calls_from_threads():
    """The kernels release the GIL: concurrent calls on different data must give the same
    results as serial ones (no shared scratch)."""
    from concurrent.futures import ThreadPoolExecutor

    problems = [make_problem(n_samples=300, sizes=(6, 30, 20, 3), activation=act, loss="log_loss",
                             alpha=0.1, weighted=True, seed=i)
                for i, act in enumerate(ACTIVATIONS * 2)]

    def work(p):
        res = p.call(core)
        trainer = core.Trainer(p.sizes, p.activation, p.loss, p.flat(), **SOLVERS["adam"])
        acc = trainer.run_epoch(p.X, p.Y, batch_size=32, alpha=0.1, sample_weight=p.sample_weight)
        return res, acc, trainer.params.copy()

    serial = [work(p) for p in problems]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            concurrent = list(ex.map(work, problems))
            for (r1, a1, p1), (r2, a2, p2) in zip(serial, concurrent):
                assert_result_close(r2, r1, **REORDER_TOL[np.float64])
                assert_allclose(a2, a1, rtol=1e-12)
                assert_allclose(p2, p1, rtol=1e-10, atol=1e-13)
