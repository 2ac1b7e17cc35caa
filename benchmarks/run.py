"""Run the benchmark suite: the same as ``python -m mxopt bench``.

    python benchmarks/run.py [--quick] [--regimes ...] [--repeats N] [--out FOLDER]

The suite lives in :mod:`mxopt.cli.bench` so that an installed mxopt can run it
without a checkout; this script is the entry point beside the other benchmarks.
"""

import sys

from mxopt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
