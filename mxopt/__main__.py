"""``python -m mxopt``: the command line (see :mod:`mxopt.cli`)."""

from mxopt.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
