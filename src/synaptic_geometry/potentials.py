"""Potentials (mirror maps) for mirror descent.

A potential ``phi`` is a separable strictly convex function, ``phi(w) = sum_i f(w_i)``. Mirror
descent takes its step in the *dual space* given by the dual map ``grad phi``::

    grad phi(w_new) = grad phi(w) - lr * gradient

so every potential here offers ``value`` (phi summed), ``grad`` (the dual map, elementwise),
``inv_grad`` (its inverse), ``hess_diag`` (the elementwise second derivative) and ``bregman``
(the Bregman divergence, summed). Every method accepts numpy arrays (or array-likes) and torch
tensors and returns the same kind it was given.

Potentials and their names (``get_potential`` parses these; ``potential.name`` gives them back):

``"<p>-norm"`` with p > 1, e.g. ``"2-norm"``, ``"3-norm"``, ``"1.5-norm"`` (:class:`PNorm`)
    ``f(w) = |w|^p / p``; ``grad = sign(w) |w|^(p-1)``; ``inv_grad(y) = sign(y) |y|^(1/(p-1))``.
    The 2-norm gives plain gradient descent.
``"negative_entropy"`` (:class:`NegativeEntropy`)
    ``f(w) = |w| log|w|``; ``grad = sign(w) (log|w| + 1)``. Mirror descent with it is the signed
    exponentiated gradient, ``w_new = w * exp(-lr * sign(w) * gradient)``: weights never change
    sign.
``"hypentropy:<beta>"`` with beta > 0, e.g. ``"hypentropy:0.1"`` (:class:`Hypentropy`)
    ``f(w) = w arcsinh(w / beta) - sqrt(w^2 + beta^2)``; ``grad = arcsinh(w / beta)``;
    ``inv_grad(y) = beta sinh(y)``. Behaves like the 2-norm for ``|w| << beta`` and like
    negative entropy for ``|w| >> beta``, but weights can cross zero.

Decisions on the domain of negative entropy
-------------------------------------------
``|w| log|w|`` is convex on each orthant but not across zero, and its dual map is not injective
on the whole line (``w`` and a negative ``w'`` can share a dual coordinate). Hence:

* Exact zeros are *outside the domain* of the dual map: their dual coordinate is ``-inf`` and
  under exponentiated gradient a zero weight stays zero forever (a trap for biases and
  normalisation parameters initialised at zero). ``grad``, ``hess_diag``, ``check_domain`` and
  ``bregman`` (in its second argument) raise a ``ValueError`` saying so, instead of returning
  ``-inf``/``nan``. ``value`` is defined at zero (``0 log 0 = 0``).
* ``inv_grad(y, sign=...)`` needs the orthant: ``sign`` (an array of +-1 broadcastable to ``y``,
  usually ``sign(w)`` of the weights before the step) selects it. Without ``sign`` the positive
  orthant is used (classical exponentiated gradient). Other potentials ignore ``sign``.
* ``bregman(a, b)`` requires ``a`` and ``b`` in the same orthant (zeros allowed in ``a``).

Non-finite input (nan, inf) raises a ``ValueError`` in every method; so does an ``inv_grad`` whose
result overflows. Bregman divergences are summed from elementwise terms clipped at zero: each
term is non-negative in exact arithmetic, the clip only removes rounding error.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "Potential",
    "PNorm",
    "NegativeEntropy",
    "Hypentropy",
    "get_potential",
    "display_name",
    "require_finite",
    "KNOWN_FORMS",
    "TRAINED_POTENTIALS",
    "CANDIDATE_POTENTIALS",
]

# The book's named sets of potentials, defined here once and used everywhere:
# the three geometries the paper trains with, in the order of its figures' rows,
TRAINED_POTENTIALS = ("negative_entropy", "2-norm", "3-norm")
# and the candidates a weight change is tested against (the paper's analysis potentials).
CANDIDATE_POTENTIALS = ("negative_entropy", "1.5-norm", "2-norm", "2.5-norm", "3-norm")

KNOWN_FORMS = (
    "'<p>-norm' with p > 1 (e.g. '2-norm', '3-norm', '1.5-norm'), "
    "'negative_entropy', 'hypentropy:<beta>' with beta > 0 (e.g. 'hypentropy:0.1')"
)

Array = Any  # numpy.ndarray or torch.Tensor
_NAMED = 8  # offending elements named in a finiteness error


def _as_array(x: Array) -> Array:
    """Return a torch tensor unchanged; turn anything else into a floating numpy array."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}")
        return x
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"expected a real numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _xp(x: Array):
    """The array namespace of ``x``: the torch module for tensors, numpy otherwise."""
    return torch if isinstance(x, torch.Tensor) else np


def _all_finite(x: Array) -> bool:
    return bool(_xp(x).isfinite(x).all())


def require_finite(x: Array, what: str, labels: Sequence[Any] | None = None,
                   error: type[ValueError] = ValueError) -> None:
    """Raise an error naming ``what`` and the count of nan/inf values if ``x`` has any.

    The one finiteness check of the package (numpy arrays and torch tensors alike).

    Parameters
    ----------
    x
        The values to check.
    what
        A plural noun phrase for the message, e.g. ``"initial weights"``.
    labels
        Optional names of the elements of a flat ``x`` (synapse ids, file lines): the message
        then names the first offending ones.
    error
        The exception class raised: ``ValueError`` or a subclass of it.
    """
    if _all_finite(x):
        return
    bad = ~_xp(x).isfinite(x)
    count = int(bad.sum())
    where = ""
    if labels is not None:
        named = [str(label) for label, is_bad in zip(labels, bad.tolist()) if is_bad]
        where = " at " + ", ".join(named[:_NAMED]) + (", ..." if count > _NAMED else "")
    raise error(f"{what} contain {count} non-finite value(s) (nan or inf){where}; all values must be finite")


def _parameter_above(value: float, lower: float, kind: str, symbol: str) -> float:
    """``value`` as a float, checked to be finite and above ``lower`` (a potential's parameter)."""
    value = float(value)
    if not math.isfinite(value) or value <= lower:
        raise ValueError(f"{kind} potential needs a finite {symbol} > {lower:g}, got {symbol} = {value}")
    return value


def _sum(x: Array) -> float | torch.Tensor:
    return x.sum() if isinstance(x, torch.Tensor) else float(np.sum(x))


def _format_number(x: float) -> str:
    """Shortest text that parses back to the same float: 3.0 -> '3', 0.1 -> '0.1'."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


class Potential(ABC):
    """Abstract separable potential; see the module docstring for the methods' meaning."""

    name: str = ""
    keeps_sign: bool = False

    # -- elementwise maths, implemented by subclasses (inputs already validated) --
    @abstractmethod
    def _f(self, w: Array) -> Array:
        """Elementwise, on validated input."""

    @abstractmethod
    def _grad(self, w: Array) -> Array:
        """Elementwise, on validated input."""

    @abstractmethod
    def _inv_grad(self, y: Array, sign: Array | None) -> Array:
        """Elementwise, on validated input."""

    @abstractmethod
    def _hess(self, w: Array) -> Array:
        """Elementwise, on validated input."""

    def _bregman_terms(self, a: Array, b: Array) -> Array:
        """Elementwise D(a, b); the default is the definition."""
        return self._f(a) - self._f(b) - self._grad(b) * (a - b)

    # -- public API --
    def check_domain(self, w: Array, what: str = "weights") -> None:
        """Raise ValueError if ``w`` is outside the domain of the dual map."""
        require_finite(_as_array(w), what)

    def value(self, w: Array) -> float | torch.Tensor:
        """phi(w), summed over all elements (a float for numpy, a 0-d tensor for torch)."""
        w = _as_array(w)
        require_finite(w, "weights")
        return _sum(self._f(w))

    def grad(self, w: Array) -> Array:
        """The dual map grad phi(w), elementwise."""
        w = _as_array(w)
        self.check_domain(w)
        return self._grad(w)

    def inv_grad(self, y: Array, sign: Array | None = None) -> Array:
        """The inverse dual map; ``sign`` picks the orthant for sign-keeping potentials."""
        y = _as_array(y)
        require_finite(y, "dual coordinates")
        if sign is not None:
            sign = _as_array(sign) if not isinstance(y, torch.Tensor) else torch.as_tensor(sign)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            w = self._inv_grad(y, sign)
        if not _all_finite(w):
            raise ValueError(
                f"inv_grad of {self.name} overflowed: the dual coordinates are too large "
                f"(max |y| = {float(abs(y).max()):.4g}) for the weights' dtype"
            )
        return w

    def hess_diag(self, w: Array) -> Array:
        """The diagonal of the Hessian of phi at w (phi is separable, so that is all of it)."""
        w = _as_array(w)
        self.check_domain(w)
        return self._hess(w)

    def bregman(self, a: Array, b: Array) -> float | torch.Tensor:
        """D_phi(a, b) = phi(a) - phi(b) - <grad phi(b), a - b>, summed; always >= 0."""
        a, b = _as_array(a), _as_array(b)
        if type(a) is not type(b):
            raise TypeError("bregman needs a and b of the same kind (both numpy or both torch)")
        if a.shape != b.shape:
            raise ValueError(f"bregman needs a and b of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        require_finite(a, "first argument (a)")
        self.check_domain(b, "second argument (b)")
        return _sum(self._bregman_terms(a, b).clip(min=0))

    # -- identity --
    def __repr__(self) -> str:
        return f"get_potential({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Potential) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class PNorm(Potential):
    """``phi(w) = sum |w|^p / p`` for ``p > 1``; ``p = 2`` is gradient descent."""

    def __init__(self, p: float):
        self.p = _parameter_above(p, 1, "p-norm", "p")
        self.name = f"{_format_number(self.p)}-norm"

    def _f(self, w):
        return abs(w) ** self.p / self.p

    def _grad(self, w):
        if self.p == 2:
            return w * 1  # a copy, never the input itself
        return _xp(w).sign(w) * abs(w) ** (self.p - 1)

    def _inv_grad(self, y, sign):
        if self.p == 2:
            return y * 1
        return _xp(y).sign(y) * abs(y) ** (1.0 / (self.p - 1))

    def _hess(self, w):
        if self.p == 2:
            return _xp(w).ones_like(w)
        if isinstance(w, torch.Tensor):
            return (self.p - 1) * abs(w) ** (self.p - 2)
        with np.errstate(divide="ignore"):  # p < 2: the Hessian is +inf at zero
            return (self.p - 1) * abs(w) ** (self.p - 2)

    def _bregman_terms(self, a, b):
        if self.p == 2:
            return 0.5 * (a - b) ** 2
        return super()._bregman_terms(a, b)


class NegativeEntropy(Potential):
    """``phi(w) = sum |w| log|w|``; mirror descent is the signed exponentiated gradient."""

    name = "negative_entropy"
    keeps_sign = True

    def check_domain(self, w: Array, what: str = "weights") -> None:
        w = _as_array(w)
        require_finite(w, what)
        zeros = int((w == 0).sum())
        if zeros:
            raise ValueError(
                f"{what} contain {zeros} exact zero(s), outside the domain of negative_entropy: "
                "the dual coordinate of a zero is -inf and under exponentiated gradient a zero "
                "weight can never move; use non-zero weights (or another potential)"
            )

    def _f(self, w):
        xp = _xp(w)
        a = abs(w)
        return xp.where(a > 0, a * xp.log(xp.where(a > 0, a, 1)), 0 * a)

    def _grad(self, w):
        xp = _xp(w)
        return xp.sign(w) * (xp.log(abs(w)) + 1)

    def _inv_grad(self, y, sign):
        xp = _xp(y)
        if sign is None:
            return xp.exp(y - 1)
        s = xp.sign(sign)
        if bool((s == 0).any()):
            raise ValueError("sign for negative_entropy.inv_grad must be +1 or -1, got a zero")
        return s * xp.exp(s * y - 1)

    def _hess(self, w):
        return 1 / abs(w)

    def _bregman_terms(self, a, b):
        xp = _xp(a)
        if bool((a * b < 0).any()):
            raise ValueError(
                "negative_entropy Bregman divergence needs a and b in the same orthant "
                "(equal signs elementwise; zeros allowed in a): the potential is not convex across zero"
            )
        r = abs(a) / abs(b)
        # |b| (r log r - r + 1), with 0 log 0 = 0
        rlogr = xp.where(r > 0, r * xp.log(xp.where(r > 0, r, 1)), 0 * r)
        return abs(b) * (rlogr - r + 1)


class Hypentropy(Potential):
    """phi(w) = sum w arcsinh(w/beta) - sqrt(w^2 + beta^2) (Ghai, Hazan and Singer, 2020)."""

    def __init__(self, beta: float):
        self.beta = _parameter_above(beta, 0, "hypentropy", "beta")
        self.name = f"hypentropy:{_format_number(self.beta)}"

    def _f(self, w):
        xp = _xp(w)
        return w * xp.arcsinh(w / self.beta) - xp.sqrt(w * w + self.beta**2)

    def _grad(self, w):
        return _xp(w).arcsinh(w / self.beta)

    def _inv_grad(self, y, sign):
        return self.beta * _xp(y).sinh(y)

    def _hess(self, w):
        return 1 / _xp(w).sqrt(w * w + self.beta**2)

    def _bregman_terms(self, a, b):
        xp = _xp(a)
        beta2 = self.beta**2
        return (
            a * (xp.arcsinh(a / self.beta) - xp.arcsinh(b / self.beta))
            - xp.sqrt(a * a + beta2)
            + xp.sqrt(b * b + beta2)
        )


# the potentials with a parameter: the pattern of their names (the parameter as group "x") and class
_PARAMETRIC = ((re.compile(r"^(?P<x>[^\s:]+)-norm$"), PNorm), (re.compile(r"^hypentropy:(?P<x>\S+)$"), Hypentropy))


def get_potential(spec: str | Potential) -> Potential:
    """The potential named by ``spec`` (see the module docstring); a Potential passes through."""
    if isinstance(spec, Potential):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"potential must be a name or a Potential, got {type(spec).__name__}; known: {KNOWN_FORMS}")
    text = spec.strip()
    if text == "negative_entropy":
        return NegativeEntropy()
    for pattern, kind in _PARAMETRIC:
        match = pattern.match(text)
        if match:
            try:
                value = float(match["x"])
            except ValueError:
                raise ValueError(f"unknown potential {spec!r}: {match['x']!r} is not a number; known: {KNOWN_FORMS}") from None
            return kind(value)
    raise ValueError(f"unknown potential {spec!r}; known: {KNOWN_FORMS}")


def display_name(potential: str | Potential) -> str:
    """The words the book uses for a potential: ``"negative entropy"``, ``"3-norm"``,
    ``"hypentropy (β = 0.1)"``. Raises ``ValueError`` for an unknown name."""
    phi = get_potential(potential)
    if isinstance(phi, NegativeEntropy):
        return "negative entropy"
    if isinstance(phi, Hypentropy):
        return f"hypentropy (β = {phi.beta:g})"
    return f"{phi.p:g}-norm"
