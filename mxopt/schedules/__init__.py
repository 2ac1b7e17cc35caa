"""Layer 2: learning-rate and momentum schedules, pure functions of the training progress.

``mxopt.LearningRate`` is :mod:`mxopt.schedules.learning_rate` (a namespace over the
family modules :mod:`~mxopt.schedules.mxnet`, :mod:`~mxopt.schedules.decay`,
:mod:`~mxopt.schedules.cycles` and :mod:`~mxopt.schedules.compose`) and
``mxopt.Momentum`` is :mod:`mxopt.schedules.momentum`. Shapes both offer live once, in
:mod:`~mxopt.schedules.shapes`; field helpers and counting in
:mod:`~mxopt.schedules.fields`; shared formulas in :mod:`~mxopt.schedules.formulas`.
"""
