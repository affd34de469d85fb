"""pytest configuration: where the tests run, and the ``slow`` marker.

The shared helpers are in ``tests/helpers.py``; test modules import them as
``from .helpers import ...`` (the tests are a package, imported with
``--import-mode=importlib`` so that the repository root never shadows the installed
fastprop).
"""

import atexit
import os
import shutil
import sys
import tempfile

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", default=False,
        help="also run the tests marked slow (long hypothesis runs, the 400 MB memmap, "
             "the Dask cluster, timing-based tests); CI runs them",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long or timing-based test, run with --runslow (CI does)")
    _make_tests_importable()


def _make_tests_importable():
    """Make ``import tests.<module>`` work here and in every process the tests start
    (joblib's and Dask's workers unpickle functions defined in test modules) without
    putting the repository root on sys.path: a directory holding only a link named
    ``tests`` goes first on sys.path and on PYTHONPATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = tempfile.mkdtemp(prefix="fastprop-tests-path-")
    os.symlink(here, os.path.join(root, "tests"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(autouse=True, scope="session")
def _run_outside_the_source_tree(tmp_path_factory):
    """Run every test (and the subprocesses tests start, which inherit the working
    directory) from an empty directory: `python -c` puts the working directory first on
    sys.path, and from the repository root it would import the unbuilt source package
    instead of the installed one."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(cwd)
