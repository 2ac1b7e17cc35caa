"""Thinc's own optimizer tests, run with Thinc's ``Adam`` and ``Optimizer`` replaced by
mxopt's adapter (``mxopt.thinc``): how far a Thinc user can swap it in.

    python benchmarks/thinc_own_tests.py            # prints pytest's summary
    python benchmarks/thinc_own_tests.py -- -x -q   # extra pytest arguments after --

A pytest plugin replaces, before Thinc's test modules import them, ``thinc.api.Adam``,
``thinc.api.Optimizer`` (and the same names in ``thinc.optimizers``) and the registry
entries ``Adam.v1``/``RAdam.v1`` with mxopt's (``mxopt.thinc.Adam`` and the Thinc-shaped
``mxopt.thinc.mxopt_optimizer``, which takes ``use_radam``). The test files are the
installed Thinc's: ``test_optimizers.py``, ``model/test_model.py``,
``layers/test_basic_tagger.py`` and the optimizer tests of ``test_config.py``.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import pytest

FILES = ["test_optimizers.py", "model/test_model.py", "layers/test_basic_tagger.py",
         "test_config.py"]  # fmt: skip


class SwapInMxopt:
    """The pytest plugin: mxopt's adapter wherever Thinc's tests take an optimizer."""

    built = 0  # adapters made during the run: proof that the tests used mxopt's

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(f"mxopt adapters built by Thinc's tests: {self.built}")

    def pytest_configure(self, config):
        import thinc.api
        import thinc.optimizers
        from thinc.api import registry

        from mxopt import thinc as adapter

        def optimizer(learn_rate, *, use_radam=False, **options):
            SwapInMxopt.built += 1
            return adapter.mxopt_optimizer(learn_rate=learn_rate, use_radam=use_radam,
                                           **options)  # fmt: skip

        @functools.wraps(adapter.Adam)  # its signature: Thinc's config checks it
        def adam(*args, **options):
            SwapInMxopt.built += 1
            return adapter.Adam(*args, **options)

        def radam(learn_rate=0.001, **options):
            return optimizer(learn_rate, use_radam=True, **options)

        for module in (thinc.api, thinc.optimizers):
            module.Adam = adam
            module.Optimizer = optimizer
        registry.optimizers.register("Adam.v1", func=adam)
        registry.optimizers.register("RAdam.v1", func=radam)


def main(argv=None) -> int:
    import thinc

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else ["-q"]
    root = pathlib.Path(thinc.__file__).parent / "tests"
    paths = [str(root / name) for name in FILES]
    return pytest.main([*paths, "-p", "no:cacheprovider", "-k", "optim or Adam or adam or "
                        "model or tagger", *extra], plugins=[SwapInMxopt()])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
