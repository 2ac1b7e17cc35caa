"""A drop-in optimizer for Thinc and spaCy, backed by mxopt's fused kernels.

:class:`ThincOptimizer` implements Thinc's ``Optimizer`` interface with any
mxopt optimizer and an :class:`~mxopt.Updater` underneath::

    from mxopt.thinc import Adam, ThincOptimizer
    optimizer = Adam(0.001)                     # Thinc's Adam.v1, same arguments and results
    optimizer = ThincOptimizer(mxopt.AdamW(lr=1e-3), grad_clip=1.0, use_averages=True)
    model.finish_update(optimizer)              # optimizer(key, weights, gradient) per parameter
    optimizer.step_schedules()

From a Thinc or spaCy config (``pip install mxopt`` registers the names through
the ``thinc_optimizers`` entry points, so nothing needs importing)::

    [training.optimizer]
    @optimizers = "mxopt.Adam.v1"          # Thinc's Adam.v1 arguments
    learn_rate = 0.001
    L2 = 0.01
    grad_clip = 1.0
    use_averages = false

    [optimizer]
    @optimizers = "mxopt.Optimizer.v1"     # any mxopt optimizer
    grad_clip = 1.0

    [optimizer.optimizer]
    @optimizers = "mxopt.AdamW.v1"         # mxopt's own names and options
    lr = 0.001

    [optimizer.optimizer.lr_scheduler]
    @schedules = "mxopt.LearningRate.WarmupCosine.v1"
    peak_lr = 0.001
    warmup_steps = 250
    decay_steps = 20000

``mxopt.Optimizer.v1`` also takes ``thinc.api.Optimizer``'s arguments (``learn_rate``,
``L2``, ``beta1``, ``beta2``, ``eps``, ``grad_clip``, ``use_averages``, ``use_radam``,
``L2_is_weight_decay``): without an ``optimizer`` block it builds what Thinc builds
(RAdam for ``use_radam``, plain SGD for ``beta1 = beta2 = 0``, Thinc's Adam otherwise)
with Thinc's defaults; with one, they override its options. Thinc schedules (e.g.
``warmup_linear.v1``) work as ``learn_rate`` and as a nested ``lr_scheduler``. The
factories are annotated, so confection and spaCy report bad values as a
``ConfigValidationError``.

Once this module is imported (which resolving either entry point does) every
mxopt name -- optimizers and schedules, the names of :func:`mxopt.persist.registry.registered`
-- is also in Thinc's ``optimizers`` and ``schedules`` registries, building the
plain mxopt object, for use in blocks nested in ``mxopt.Optimizer.v1`` or
``mxopt.Adam.v1`` (e.g. ``learn_rate`` as an mxopt schedule).

**Counting.** Thinc has no epochs and calls ``optimizer.step_schedules()`` *after*
the updates of each batch; its schedules read ``step``, 0 during the first batch.
The adapter owns an :class:`~mxopt.OptimizationState` with ``batch_size=1`` (Thinc's
gradients are already means over the batch, so they are not divided again) that
starts at ``curr_epoch = curr_batch = curr_iter = 1``; ``step_schedules()`` calls
``begin_batch()``. So during Thinc step ``s`` the updates see ``curr_iter = s + 1``,
as mxopt's own loops do, and ``optimizer.step == curr_iter - 1``. Without
``steps_per_epoch`` the whole run is epoch 1 (use iteration-based schedules);
with it, ``curr_epoch = s // steps_per_epoch + 1``. Bias corrections use each
parameter's own update count, as Thinc's ``nr_update``.

**Thinc's rules, as the adapter applies them.** ``grad_clip`` clips each
parameter's gradient to an L2 norm of at most ``grad_clip`` (Thinc's
``clip_gradient``: scale by ``grad_clip / norm`` when ``norm >= grad_clip``); the
norm costs one read of the gradient and the scaling is a factor inside the fused
kernel, not a pass of its own;
``lr_scale`` multiplies the learning rate (and so a decoupled weight decay);
after the update the gradient is zeroed in place (Thinc's contract; Thinc's
``Model.finish_update`` relies on it); ``use_averages`` keeps an EMA of the
weights with Thinc's decay ``min(0.9999, (1 + t) / (10 + t))``.

Known differences from ``thinc.api.Adam`` (all second order or documented
choices; the test suite bounds the first two): the decoupled decay
(``L2_is_weight_decay``, the default) multiplies the weight by ``1 - lr * L2`` before
the Adam step instead of after it (a difference of ``lr * L2`` times the step);
Thinc starts each average at zero, mxopt at the weight's initial value (the
initial value's weight in the average falls below 1e-9 after 100 updates);
with ``L2_is_weight_decay=False`` Thinc adds ``L2 * W`` to the gradient before
the norm clip, mxopt after it; a NaN or infinite gradient raises
``FloatingPointError`` with nothing modified (``nonfinite="raise"``; Thinc would
write NaN into the weights; ``nonfinite="skip"`` skips such updates); a schedule
receives ``key=None`` (the values are computed once per step for all parameters);
``use_radam`` builds mxopt's (published, torch's) RAdam, while Thinc's counts each update
twice in its bias corrections (the two differ over the first updates).

**Scores.** spaCy 3.8 never sets ``optimizer.last_score``; a score-based schedule
(:class:`mxopt.LearningRate.Plateau`, Thinc's ``plateau``) then keeps its rate, and the
adapter warns once (:class:`NoScoreWarning`) when no score came in
:data:`SCORE_WARNING_STEPS` steps.

This is the short, documented path of the adapter, which lives in
:mod:`mxopt.integrations.thinc` (``from mxopt.thinc import Adam`` keeps working).
"""

from mxopt.integrations.thinc import *  # noqa: F401,F403
from mxopt.integrations.thinc import __all__  # noqa: F401
