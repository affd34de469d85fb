"""fastprop's tests (a package: shared helpers are in ``tests/helpers.py``)."""
