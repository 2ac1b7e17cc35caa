"""Layer 5: the step engine and what a training loop holds: the updater, per-weight state,
packed buffers, parameter groups, loss scaling and checkpoints."""
