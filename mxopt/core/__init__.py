"""The bottom layer: the training progress every other layer reads, the abstract schedule,
and the option fields with their validation. Imports nothing else from mxopt."""
