"""``mxopt.thinc``: the short, documented path of the Thinc/spaCy adapter, which lives in
:mod:`mxopt.integrations.thinc` (``from mxopt.thinc import Adam`` keeps working)."""

from mxopt.integrations.thinc import *  # noqa: F401,F403
from mxopt.integrations.thinc import __all__  # noqa: F401
