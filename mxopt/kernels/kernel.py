"""How an optimizer describes its fused elementwise update, once for each backend.

A :class:`Kernel` names the state arrays and the host-computed scalars of one
update rule and carries two twins of the same per-element math:

* ``cpu``: a plain Python function ``element(i, w, g, <state arrays>, <scalars>)``
  that updates element ``i`` in place. ``w`` is the flat weight, ``g`` the flat
  gradient (never written), then one flat array per name of ``Kernel.state``, then
  the scalars. **The signature is the one place the scalars are listed**:
  ``Kernel.scalars`` is read from it, the CUDA twin gets its parameters under the
  same names in the same order, and optimizers hand their scalars over by name
  (:meth:`Kernel.pack`). mxopt compiles the element with Numba on first use (see
  :mod:`mxopt.kernels.cpu`), so importing an optimizer never imports Numba.
* ``cuda``: the body of a CUDA C++ function template over ``T`` (``float`` or
  ``double``) with the parameters ``i``, ``w``, ``g``, one pointer per state
  array and one ``T`` per scalar, all under the same names (see
  :mod:`mxopt.kernels.cuda`).

Rules that keep the twins fast and bit-identical:

* no floating-point literals in the math (a ``0.5`` makes Numba compute a
  float32 kernel in float64, about ten times slower); constants such as
  ``1 - beta1`` are scalars formed on the host in float64 and rounded once;
* only IEEE-exact operations (``+ - * /``, ``sqrt``, comparisons), written in
  the same order in both twins; the GPU build turns off FMA contraction;
* read ``g[i]`` once, never write it.

Helpers shared by several elements are plain functions marked with
:func:`device`; their CUDA twins live in :data:`CUDA_PREAMBLE`.

A *reducing* kernel (``reduces=True``) also sums two values over the array, for
per-tensor norms (LAMB, LARS): its CPU element returns a pair ``(a, b)`` and its
CUDA body ends with ``return mx_pair{a, b};``. The sums are accumulated in
float64 over fixed blocks of :data:`REDUCE_BLOCK` elements and then over the
blocks in order, so the result does not depend on the number of threads.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping

import attrs
import numpy as np

from mxopt.core.checks import shown

__all__ = [
    "CUDA_PREAMBLE",
    "adam_moments_element",
    "KERNELS",
    "cautious_keeps",
    "Kernel",
    "clip_gradient_element",
    "device",
    "ema_element",
    "largest_magnitude_bits",
    "momentum_step_element",
    "normalize_gradient_element",
]

#: Every kernel defined so far, by name (names are unique: they key compiled code).
KERNELS: dict[str, Kernel] = {}


def kernel_named(name: str) -> Kernel:
    """The kernel defined under ``name`` (its module must have been imported)."""
    try:
        return KERNELS[name]
    except KeyError:
        raise LookupError(
            f"no kernel named {shown(name)}: import the module that defines it first"
        ) from None


def device(function: Callable) -> Callable:
    """Mark a helper that elements call; it is compiled (and inlined) with them."""
    function.__mxopt_device__ = True
    return function


@device
def largest_magnitude_bits(bits, mask):
    """``max(bits[i] & mask)`` over the integer bit patterns ``bits`` of floats, ``mask``
    clearing the sign bit: the pattern of the largest magnitude, where an infinity's
    pattern is above every finite one and a NaN's above it. So ``>=`` the pattern of
    infinity says whether any value is not finite: the all-or-nothing check's read pass.

    The loop reads the four quarters of ``bits`` at once: one core keeps more reads in
    flight from four streams than from one (16M float32: 6.8 ms from one stream, 3.7 ms
    from four, one thread of this project's 2-core VM; an integer max vectorises). The
    cast back to the patterns' type keeps 16-bit ones 16-bit (Numba widens ``&`` and
    ``max`` to 64 bits; 16M float16: 10.0 ms without it, 2.7 ms with it).
    """
    quarter = bits.size // 4
    largest = largest_magnitude_bits_of_four(
        bits[:quarter],  # slices from 0: no negative-index wrap-around to stop SIMD
        bits[quarter : 2 * quarter],
        bits[2 * quarter : 3 * quarter],
        bits[3 * quarter : 4 * quarter],
        quarter,
        mask,
        mask & 0,
    )
    rest = bits[4 * quarter :]
    for i in range(rest.size):
        largest = max(largest, rest[i] & mask)
    return largest


@device
def largest_magnitude_bits_of_four(a, b, c, d, n, mask, largest):
    """``largest`` raised to ``max(x[i] & mask)`` over the first ``n`` patterns of each of
    ``a``, ``b``, ``c``, ``d``, read together (four streams: see
    :func:`largest_magnitude_bits`; the list count reads four arrays so)."""
    for i in range(n):
        pair_a = max(a[i] & mask, b[i] & mask)
        pair_b = max(c[i] & mask, d[i] & mask)
        largest = max(largest, type(mask)(max(pair_a, pair_b)))
    return largest


def _check_identifier(instance, attribute, value):
    for name in value if isinstance(value, tuple) else (value,):
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"Kernel.{attribute.name}: {shown(name)} is not an identifier")


def _scalars_from_signature(kernel) -> tuple:
    """The element's parameters after ``i, w, g`` and the state arrays."""
    names = tuple(inspect.signature(kernel.cpu).parameters)
    head = ("i", "w", "g", *kernel.state)
    if names[: len(head)] != head:
        raise ValueError(
            f"Kernel {kernel.name}: the cpu element must start with the parameters "
            f"{', '.join(head)} (its state arrays in order), got {', '.join(names)}"
        )
    return names[len(head) :]


@attrs.frozen(eq=False)
class Kernel:
    """One fused update rule: its state arrays, its scalars and its two twins.

    Args:
        name: unique name, used for compiled-kernel caches and CUDA symbols.
        state: names of the state arrays, in the order of the element's parameters.
        cpu: the element function for Numba, ``(i, w, g, *state, *scalars)``.
        cuda: the element body in CUDA C++.
        reduces: the element also returns two values to sum over the array.

    Attributes:
        scalars: the names of the scalars, read from the element's signature.
    """

    name: str = attrs.field(validator=_check_identifier)
    state: tuple[str, ...] = attrs.field(converter=tuple, validator=_check_identifier)
    cpu: Callable = attrs.field(repr=False)
    cuda: str = attrs.field(repr=False)
    reduces: bool = False
    scalars: tuple[str, ...] = attrs.field(init=False)

    _gather: Callable = attrs.field(init=False, repr=False)

    @scalars.default
    def _read_scalars(self):
        return _scalars_from_signature(self)

    @_gather.default
    def _make_gather(self):
        # the scalars in order from a mapping, in C (pack runs once per step)
        if not self.scalars:
            return lambda values: ()
        getter = operator.itemgetter(*self.scalars)
        if len(self.scalars) == 1:
            return lambda values: (getter(values),)
        return getter

    def __attrs_post_init__(self):
        clash = set(self.state) & (set(self.scalars) | {"i", "w", "g", "n"})
        if clash:
            raise ValueError(f"Kernel {self.name}: names used twice: {sorted(clash)}")
        if KERNELS.setdefault(self.name, self) is not self:
            raise ValueError(f"Kernel name {shown(self.name)} is already taken")

    def __reduce__(self):
        # Kernels are unique by name (compiled code is keyed by them): a copied or pickled
        # state refers to the same kernel, found again by its name.
        return (kernel_named, (self.name,))

    def rows(self, values: Mapping, segments: int) -> np.ndarray:
        """The scalars of ``segments`` segments as a float64 table, one row per segment, in
        the element's order; each value is a number (the same for all) or one per segment."""
        table = np.empty((segments, len(self.scalars)))
        for column, name in enumerate(self.scalars):
            table[:, column] = values[name]
        return table

    def pack(self, values: Mapping) -> tuple:
        """The scalars in the element's order, from a mapping of (at least) their names."""
        try:
            return self._gather(values)
        except KeyError as error:
            raise KeyError(
                f"kernel {self.name} needs the scalar {shown(error.args[0])}; got "
                f"{', '.join(map(repr, values))}"
            ) from None


@device
def clip_gradient_element(g, rescale, clip):
    """``clip(g * rescale, -clip, clip)``, clipping only when ``clip > 0``.

    NaN passes through (as in MXNet).
    """
    g = g * rescale
    if clip > 0:
        if g > clip:
            g = clip
        elif g < -clip:
            g = -clip
    return g


@device
def normalize_gradient_element(g, w, rescale, clip, wd):
    """One element of :func:`mxopt.normalized_gradient`: ``clip(g * rescale) + wd * w``.

    Weight decay is added only when ``wd > 0``, after the clip.
    """
    g = clip_gradient_element(g, rescale, clip)
    if wd > 0:
        g = g + wd * w
    return g


@device
def adam_moments_element(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2):
    """Adam's moment updates of one element: returns ``(m', v')`` with

    ``m' = beta1 * m + (1 - beta1) * g`` and ``v' = beta2 * v + (1 - beta2) * g * g``.

    The CUDA twin updates ``m`` and ``v`` in place (references).
    """
    return beta1 * m + one_minus_beta1 * g, beta2 * v + one_minus_beta2 * g * g


@device
def ema_element(m, g, beta, one_minus_beta):
    """``beta * m + (1 - beta) * g``: one step of an exponential moving average (Lion's
    interpolation, AdEMAMix's slow average)."""
    return beta * m + one_minus_beta * g


@device
def momentum_step_element(v, g, mu, lr):
    """``mu * v - lr * g``: a heavy-ball velocity with the learning rate folded in (SGD's
    velocity, and its Nesterov step)."""
    return mu * v - lr * g


@device
def cautious_keeps(u, g):
    """Whether a cautious update keeps an element (Liang et al. 2024, arXiv:2411.16085):
    the update direction ``u`` and the gradient ``g`` have the same sign, ``u * g > 0``.

    Compared sign by sign, so the product can neither overflow nor underflow; a zero
    or a NaN keeps nothing. Bitwise, not short-circuit: a branch on the signs of random
    data mispredicts half the time and made the counting loop ten times slower.
    """
    return ((u > 0) & (g > 0)) | ((u < 0) & (g < 0))


#: Elements per block of a reduction (fixed, so sums do not depend on thread counts).
REDUCE_BLOCK = 4096

#: CUDA twins of the :func:`device` helpers, placed before every element.
CUDA_PREAMBLE = r"""
struct mx_pair {
    double a;
    double b;
};

template <typename T>
__device__ __forceinline__ T clip_gradient_element(T g, const T rescale, const T clip) {
    g = g * rescale;
    if (clip > T(0)) {
        if (g > clip) g = clip;
        else if (g < -clip) g = -clip;
    }
    return g;
}

template <typename T>
__device__ __forceinline__ T normalize_gradient_element(T g, const T w, const T rescale,
                                                        const T clip, const T wd) {
    g = clip_gradient_element(g, rescale, clip);
    if (wd > T(0)) g = g + wd * w;
    return g;
}

template <typename T>
__device__ __forceinline__ void adam_moments_element(T& m, T& v, const T g, const T beta1,
                                                     const T one_minus_beta1, const T beta2,
                                                     const T one_minus_beta2) {
    m = beta1 * m + one_minus_beta1 * g;
    v = beta2 * v + one_minus_beta2 * g * g;
}

template <typename T>
__device__ __forceinline__ T ema_element(const T m, const T g, const T beta,
                                         const T one_minus_beta) {
    return beta * m + one_minus_beta * g;
}

template <typename T>
__device__ __forceinline__ T momentum_step_element(const T v, const T g, const T mu, const T lr) {
    return mu * v - lr * g;
}

template <typename T>
__device__ __forceinline__ bool cautious_keeps(const T u, const T g) {
    return ((u > T(0)) & (g > T(0))) | ((u < T(0)) & (g < T(0)));
}
"""

#: The dtypes every kernel supports, with their CUDA type names.
DTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def reduction_blocks(offsets: np.ndarray) -> np.ndarray:
    """``(segment, start, stop)`` of every reduction block of every segment, in order."""
    sizes = np.diff(offsets)
    counts = (sizes + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    segment = np.repeat(np.arange(sizes.size, dtype=np.int64), counts)
    first_block = np.cumsum(counts) - counts
    within = np.arange(segment.size, dtype=np.int64) - np.repeat(first_block, counts)
    start = offsets[:-1][segment] + within * REDUCE_BLOCK
    stop = np.minimum(start + REDUCE_BLOCK, offsets[1:][segment])
    return np.ascontiguousarray(np.stack([segment, start, stop], axis=1), dtype=np.int64)
