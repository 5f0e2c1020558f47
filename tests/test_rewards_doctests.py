"""Every public scorer's ``Example:`` runs (doctest) and still holds."""

import doctest
import importlib

import pytest

MODULES = ["loongrl.rewards.extract", "loongrl.rewards.scorers", "loongrl.rewards.router", "loongrl.rewards.judge",
           "loongrl.eval.ruler", "loongrl.progress", "loongrl.readers", "loongrl.data.decontaminate"]


def _generated(name: str) -> bool:
    """mutmut's copies of each function (`make mutation` runs the suite on a mutated tree)."""
    return "__mutmut_" in name


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        if not _generated(test.name):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_public_scorers_have_examples():
    from loongrl.rewards import extract, scorers

    public = [(m, n) for m in (extract, scorers) for n in dir(m)
              if not n.startswith("_") and not _generated(n) and callable(getattr(m, n))
              and getattr(getattr(m, n), "__module__", "") == m.__name__ and not isinstance(getattr(m, n), type)]
    missing = [n for m, n in public if "Example:" not in (getattr(m, n).__doc__ or "")
               and n not in ("count_boxed", "math_pool", "new_math_pool", "math_verify_unbounded")]
    assert missing == []
