"""The version of mxopt (read by the packaging metadata and written into checkpoints)."""

__version__ = "0.1.0"
