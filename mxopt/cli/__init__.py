"""Layer 7: the ``mxopt`` command line (``demo``, ``bench``, ``warmup``, ``plot-schedule``),
built on the public API only."""
