"""Every module of odise_pl imports, and the examples in its docstrings (``>>>``) run and are true.

Examples that need large models, downloads or data files are written as prose ``Example::`` blocks
without ``>>>`` (not run).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import odise_pl

MODULES = sorted(m.name for m in pkgutil.walk_packages(odise_pl.__path__, prefix="odise_pl."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_and_its_examples_hold(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in finder.find(module, name, module=module):
        runner.run(test, out=failures.append)
    assert not failures, "".join(failures)
