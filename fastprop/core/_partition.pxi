# How a pass cuts its minibatches (or L-BFGS's blocks): whole, by rows, or by units,
# and into how many parts, from the shapes alone (never from the team), so that the
# model is bitwise the same for every thread count. The constants are the cost model,
# calibrated in benchmarks/ (benchmarks/README.md, "Parts").

# Minibatches shorter than this run whole (one gradient, the update fused into the
# backward pass): splitting below it cost more on one thread than two threads gained.
cdef Py_ssize_t SPLIT_MIN_BATCH = 128


# A minibatch split by rows is cut into K parts, K fixed by the shapes (never by the
# team): as many as give every part at least ROWS_PART_MIN rows, n_params /
# ROWS_PART_PACK rows and ROWS_PART_WORK rows x (multiply-adds per row of each
# product), and at least two. Each part packs every weight matrix again for its rows
# (BLAS copies its operand into panels), which costs about 1/rows of the part's
# products, more when the weights no longer fit in cache, and has a gradient buffer of
# its own that the optimizer step adds up. Calibrated on one epoch of 12000 rows
# (benchmarks/README.md, "Parts"): 784-256-128-10 at batch 1024 took 1.07x one
# thread's time with 4 parts of 256 rows and 1.20x with 8 of 128, against 2 of 512;
# 100-128-64-1 at batch 256 took 0.91x with 4 parts of 64 rows against 2 of 128.
cdef Py_ssize_t ROWS_PART_MIN = 64


cdef double ROWS_PART_PACK = 512


cdef double ROWS_PART_WORK = 1 << 20


cdef inline Py_ssize_t _part_rows(Py_ssize_t nb, int parts) noexcept nogil:
    """Rows of each part of a minibatch of nb rows cut into ``parts`` (the last one gets
    the rest, maybe none): nb / parts rounded up to a multiple of 8. Two parts are the
    two halves of ``split_rows``."""
    cdef Py_ssize_t h = ((nb + parts - 1) // parts + 7) // 8 * 8
    return h if h < nb else nb


cdef inline Py_ssize_t _split_rows(Py_ssize_t nb) noexcept nogil:
    """Rows of a block's first half: about half, rounded up to a multiple of 8."""
    return _part_rows(nb, 2)


cdef inline int _row_parts(double row_work, Py_ssize_t n_params,
                           Py_ssize_t batch_size) noexcept nogil:
    """Parts of a minibatch of batch_size rows split by rows, each row ``row_work``
    multiply-adds of each product (n_params when dense; see ROWS_PART_MIN)."""
    cdef double k = <double> (batch_size // ROWS_PART_MIN)
    cdef double by_pack = batch_size * ROWS_PART_PACK / n_params
    if by_pack < k:
        k = by_pack
    cdef double by_work = batch_size * row_work / ROWS_PART_WORK
    if by_work < k:
        k = by_work
    if k > FP_TEAM_MAX:
        k = FP_TEAM_MAX
    return 2 if k < 2 else <int> k


def split_rows(Py_ssize_t batch_size):
    """Rows of the larger half of a block of ``batch_size`` rows that L-BFGS's pass
    cuts in halves, or 0 when blocks of that length run whole (sizes its workspaces:
    two halves). Epochs cut their minibatches as ``epoch_partition`` says."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return _split_rows(batch_size) if batch_size >= SPLIT_MIN_BATCH else 0


# Sparse minibatches are split by rows only when rows x (stored values per row x the first
# hidden width + the other layers' weights) reaches this: a minibatch of sparse rows on
# a small network is too little work for two threads (benchmarks/README.md, "Where the
# team pays": CSR row splits of 32-128 units at batch 128-256 took 1.05-1.58x one
# thread).
cdef double CSR_SPLIT_MIN_WORK = 1 << 20


cdef double _csr_row_work(Net* net, Py_ssize_t nnz, Py_ssize_t n_rows) noexcept nogil:
    """A sparse row's work: stored values per row x the first hidden width + the other
    layers' weights."""
    cdef Py_ssize_t l
    cdef double per_row = <double> nnz / n_rows * net.sizes[1] if n_rows > 0 else 0.0
    for l in range(1, net.n_layers):
        per_row += <double> net.sizes[l] * net.sizes[l + 1]
    return per_row


def csr_split(const Py_ssize_t[::1] sizes not None, Py_ssize_t nnz, Py_ssize_t n_rows,
              Py_ssize_t batch_size):
    """Whether sparse minibatches of ``batch_size`` rows of X (``nnz`` stored values in
    ``n_rows`` rows) on a network of layer ``sizes`` are split by rows: split lengths
    with work enough for two threads (``epoch_partition``)."""
    return epoch_partition(sizes, batch_size, nnz, n_rows)[0] == "rows"


# Whole minibatches are cut by units when rows x n_params reaches this, and every unit
# part has at least this much (_unit_parts): below it the barriers cost more than the
# threads gain. Calibrated on bench_sweep.py (benchmarks/README.md, "Where the team
# pays"): units cells of 1-3.2 million took 0.57-1.11x one thread's time (and the
# 100-256-3 fit at batch 64, 1.7 million, 1.08x), every cell from 4.2 million on
# 0.49-0.97x.
cdef Py_ssize_t UNITS_MIN_WORK = 1 << 22


# Dense minibatches of SPLIT_MIN_BATCH rows up to (not including) UNITS_OVER_ROWS_BATCH
# are cut by units rather than rows when rows x n_params reaches UNITS_OVER_ROWS_WORK.
# There each half of a row split packs all of a big layer's weights again for few rows,
# and steps both halves' gradient buffers (the A/B behind the numbers is in
# benchmarks/README.md, "Splits").
cdef Py_ssize_t UNITS_OVER_ROWS_BATCH = 192


cdef Py_ssize_t UNITS_OVER_ROWS_WORK = 1 << 24


# Layers cut by units are cut into K parts, K fixed by the shapes: the widest layer's
# units / UNIT_PART_MIN, and rows x n_params / UNITS_MIN_WORK, at least two. Every
# part packs the layer's input again (about 1/width of its products): on 12000 rows
# of 784-256-128-10 at batch 128, 4 parts took 1.07x one thread's time (1.11x two
# threads') against 2 (benchmarks/README.md, "Parts").
cdef Py_ssize_t UNIT_PART_MIN = 128


cdef inline Py_ssize_t _unit_width(Py_ssize_t c, int parts) noexcept nogil:
    """Units in each part of a layer of c units cut into ``parts``: c / parts rounded up
    to a multiple of 16 (whole SIMD vectors and BLAS panels); the last part gets the
    rest, maybe none. A layer of 16 units or fewer is not cut."""
    cdef Py_ssize_t w = ((c + parts - 1) // parts + 15) // 16 * 16
    return w if w < c else c


cdef inline void _unit_part(Py_ssize_t c, int h, int parts, Py_ssize_t* lo,
                            Py_ssize_t* hi) noexcept nogil:
    """Part h of a layer of c units cut into ``parts``: [lo, hi), maybe empty."""
    cdef Py_ssize_t w = _unit_width(c, parts)
    lo[0] = h * w if h * w < c else c
    hi[0] = lo[0] + w if lo[0] + w < c else c


cdef inline bint _units_split(Net* net, Py_ssize_t batch_size) noexcept nogil:
    """Whether dense minibatches of batch_size rows are cut by units: whole-minibatch
    lengths on a network big enough for two threads, and the shortest split lengths on
    a big network (see UNITS_OVER_ROWS_BATCH)."""
    if batch_size < SPLIT_MIN_BATCH:
        return batch_size >= (UNITS_MIN_WORK + net.n_params - 1) // net.n_params
    return (batch_size < UNITS_OVER_ROWS_BATCH
            and batch_size >= (UNITS_OVER_ROWS_WORK + net.n_params - 1) // net.n_params)


cdef inline int _unit_parts(Net* net, Py_ssize_t batch_size) noexcept nogil:
    """Parts of every layer of a minibatch cut by units (see UNIT_PART_MIN)."""
    cdef Py_ssize_t l, widest = 0
    for l in range(1, net.n_layers + 1):
        if net.sizes[l] > widest:
            widest = net.sizes[l]
    cdef double k = <double> (widest // UNIT_PART_MIN)
    cdef double by_work = <double> batch_size * net.n_params / UNITS_MIN_WORK
    if by_work < k:
        k = by_work
    if k > FP_TEAM_MAX:
        k = FP_TEAM_MAX
    return 2 if k < 2 else <int> k


cdef int _epoch_parts(Net* net, Py_ssize_t batch_size, Py_ssize_t nnz, Py_ssize_t n_rows,
                      int* kind) noexcept nogil:
    """How minibatches of batch_size rows are cut (``kind``) and into how many parts;
    ``nnz < 0`` for a dense X, else the stored values of a sparse X of n_rows rows."""
    if nnz < 0 and _units_split(net, batch_size):
        kind[0] = PASS_UNITS
        return _unit_parts(net, batch_size)
    if batch_size >= SPLIT_MIN_BATCH:
        if nnz < 0:
            kind[0] = PASS_ROWS
            return _row_parts(<double> net.n_params, net.n_params, batch_size)
        if batch_size * _csr_row_work(net, nnz, n_rows) >= CSR_SPLIT_MIN_WORK:
            kind[0] = PASS_ROWS
            return _row_parts(_csr_row_work(net, nnz, n_rows), net.n_params, batch_size)
    kind[0] = PASS_WHOLE
    return 1


cdef int _epoch_net(Net* net, const Py_ssize_t[::1] sizes, int activation, int loss,
                    Py_ssize_t batch_size, Py_ssize_t nnz, Py_ssize_t n_rows,
                    int* kind, double huber_delta=1.0) except 0:
    """Fill ``net`` for an epoch of minibatches of batch_size rows (see _epoch_parts;
    the caller frees net.sizes); return the parts. The workspaces of a row split hold
    ``parts`` blocks of ``_part_rows(batch_size, parts)`` rows."""
    cdef int parts
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    net[0] = _net_new(sizes, activation, loss, batch_size, huber_delta)
    parts = _epoch_parts(net, batch_size, nnz, n_rows, kind)
    if kind[0] == PASS_ROWS:
        _net_set_rows(net, _part_rows(batch_size, parts))
    return parts


def epoch_partition(const Py_ssize_t[::1] sizes not None, Py_ssize_t batch_size,
                    Py_ssize_t nnz=-1, Py_ssize_t n_rows=0):
    """How ``train_epoch`` (``nnz=-1``) or ``train_epoch_csr`` (X with ``nnz`` stored
    values in ``n_rows`` rows) cuts minibatches of ``batch_size`` rows on a network of
    layer ``sizes``: ``(kind, parts, rows)``.

    - ``("whole", 1, batch_size)``: one gradient per minibatch, the step fused in.
    - ``("rows", K, r)``: K parts of r rows (the last one gets the rest), each with its
      own workspace and gradient buffer: ``acts`` and ``deltas`` hold K x r x
      sum(sizes[1:]) (K x ``core.work_len(sizes, r, activation)``: more for gelu and
      silu), ``grads2`` (K - 1) x n_params.
    - ``("units", K, batch_size)``: every layer's units in K parts; whole workspaces.

    The partition depends on the shapes only. A team of up to K threads runs the parts
    (a thread that owns several runs them in turn), so the model is bitwise the same
    for every thread count."""
    cdef Net net
    cdef int kind = PASS_WHOLE
    cdef int parts = _epoch_net(&net, sizes, ACT_RELU, LOSS_SQUARED, batch_size, nnz,
                                n_rows, &kind)
    try:
        return (("whole", "rows", "units")[kind], parts, _rows_for(&net))
    finally:
        free(net.sizes)


def unit_split(const Py_ssize_t[::1] sizes not None, Py_ssize_t batch_size):
    """Whether dense minibatches of ``batch_size`` rows on a network of layer ``sizes``
    are cut by units (``epoch_partition``; the workspaces are the usual)."""
    return epoch_partition(sizes, batch_size)[0] == "units"


def _set_csr_split_min_work(double work):
    """Set the smallest work of a sparse minibatch split by rows (for benchmarks and
    tests; see CSR_SPLIT_MIN_WORK); returns the old one."""
    global CSR_SPLIT_MIN_WORK
    old = CSR_SPLIT_MIN_WORK
    CSR_SPLIT_MIN_WORK = work
    return old


def _set_split_min_batch(Py_ssize_t rows):
    """Set the shortest minibatch that is split (for benchmarks); returns the old one."""
    global SPLIT_MIN_BATCH
    old = SPLIT_MIN_BATCH
    SPLIT_MIN_BATCH = max(rows, 1)
    return old


def _set_row_parts(min_rows=None, work=None, pack=None):
    """Set the fewest rows, the least work and the packing bound of a row part (for
    benchmarks and tests; see ROWS_PART_MIN); returns the old (min_rows, work, pack)."""
    global ROWS_PART_MIN, ROWS_PART_WORK, ROWS_PART_PACK
    old = (ROWS_PART_MIN, ROWS_PART_WORK, ROWS_PART_PACK)
    if min_rows is not None:
        ROWS_PART_MIN = max(<Py_ssize_t> min_rows, 1)
    if pack is not None:
        ROWS_PART_PACK = max(<double> pack, 1e-9)
    if work is not None:
        ROWS_PART_WORK = max(<double> work, 1.0)
    return old


def _set_unit_part_min(Py_ssize_t units):
    """Set the fewest units of a part of a layer cut by units (for benchmarks and
    tests; see UNIT_PART_MIN); returns the old one."""
    global UNIT_PART_MIN
    old = UNIT_PART_MIN
    UNIT_PART_MIN = max(units, 1)
    return old


def _set_units_min_work(Py_ssize_t work):
    """Set the smallest rows x n_params cut by units (for benchmarks and tests); returns
    the old one."""
    global UNITS_MIN_WORK
    old = UNITS_MIN_WORK
    UNITS_MIN_WORK = max(work, 1)
    return old


def _set_units_over_rows_work(Py_ssize_t work):
    """Set the smallest rows x n_params whose short split lengths are cut by units
    instead (for benchmarks and tests; a huge value keeps them split by rows); returns
    the old one."""
    global UNITS_OVER_ROWS_WORK
    old = UNITS_OVER_ROWS_WORK
    UNITS_OVER_ROWS_WORK = max(work, 1)
    return old
