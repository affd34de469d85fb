"""What a training call may change, saved so that it can be put back.

``CallSnapshot`` is taken by every ``fit`` / ``partial_fit`` before it changes anything:
a call that fails restores it, so the model is bitwise what it was. ``EpochStart`` is
taken by ``fit`` before each epoch: an interrupted fit restores it, so the model is that
of the last completed epoch, optimizer state and random state included.
"""

import numpy as np

__all__ = ["CallSnapshot", "EpochStart", "PartialFitInterrupted"]


class CallSnapshot:
    """What one ``fit`` / ``partial_fit`` call may change, saved before it changes any
    of it, so that a call that fails (bad data found late, a float32 overflow, weights
    that became non-finite, an exception escaping the solver) leaves the model bitwise
    as it was, whatever it was: unfitted, fitted, or mid-way through ``partial_fit``s.

    Attribute bindings are saved as they are; what a call changes in place is copied:
    the flat parameter vector (``coefs_`` / ``intercepts_`` are its views), the kept
    optimizer's state, the lists training appends to, and the state of a
    ``RandomState`` passed as ``random_state``."""

    def __init__(self, est):
        self.est = est
        self.attrs = dict(est.__dict__)
        flat = self.attrs.get("_flat")
        self.flat = None if flat is None else flat.copy()
        opt = self.attrs.get("_optimizer")
        self.optimizer = None if opt is None else EpochStart(opt, params=False)
        self.lists = {name: list(value) for name, value in self.attrs.items()
                      if name in ("loss_curve_", "validation_scores_",
                                  "validation_loss_curve_")
                      and isinstance(value, list)}
        rs = est.random_state
        self.rng = rs if isinstance(rs, np.random.RandomState) else None
        self.rng_state = None if self.rng is None else self.rng.get_state()

    def restore(self):
        est = self.est
        est.__dict__.clear()
        est.__dict__.update(self.attrs)
        if self.flat is not None:
            np.copyto(self.attrs["_flat"], self.flat)
        if self.optimizer is not None:
            self.optimizer.restore()
        for name, items in self.lists.items():
            self.attrs[name][:] = items
        if self.rng is not None:
            self.rng.set_state(self.rng_state)


class EpochStart:
    """A ``core.Trainer``'s state (optimizer state, step count, learning rate, which
    parameter vector it trains, and with ``params`` that vector's values) and
    optionally a ``RandomState``'s, saved before an epoch so that an epoch that does not
    complete (an interrupt) can be undone. Buffers are allocated once; ``save`` refills
    them."""

    def __init__(self, opt, rng=None, params=True):
        self.opt = opt
        self.rng = rng
        self.with_params = params
        self.params = None
        self.state_1 = np.empty_like(opt.state_1)
        self.state_2 = np.empty_like(opt.state_2)
        self.counter = np.empty_like(opt.counter)
        self.hyper = np.empty_like(opt.hyper)
        self.save()

    def save(self):
        opt = self.opt
        self.params_ref = opt.params
        if self.with_params and opt.params is not None:
            if self.params is None or self.params.shape != opt.params.shape:
                self.params = np.empty_like(opt.params)
            np.copyto(self.params, opt.params)
        np.copyto(self.state_1, opt.state_1)
        np.copyto(self.state_2, opt.state_2)
        np.copyto(self.counter, opt.counter)
        np.copyto(self.hyper, opt.hyper)
        self.rng_state = None if self.rng is None else self.rng.get_state()

    def restore(self):
        opt = self.opt
        opt.params = self.params_ref
        if self.with_params and self.params_ref is not None:
            np.copyto(self.params_ref, self.params)
        np.copyto(opt.state_1, self.state_1)
        np.copyto(opt.state_2, self.state_2)
        np.copyto(opt.counter, self.counter)
        np.copyto(opt.hyper, self.hyper)
        if self.rng is not None:
            self.rng.set_state(self.rng_state)


class PartialFitInterrupted(Exception):
    """An interrupt (KeyboardInterrupt) arrived during partial_fit's epoch: ``_fit``
    puts the model back as it was before the call and warns, as fit does."""
