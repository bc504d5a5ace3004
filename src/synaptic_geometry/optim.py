"""Mirror descent as a ``torch.optim.Optimizer``: a sibling of ``torch/optim/sgd.py``.

``MirrorDescent`` takes SGD's arguments plus a ``potential`` (see
:mod:`synaptic_geometry.potentials`). Momentum is accumulated on gradients exactly as torch SGD
does; the step is then taken in the dual space::

    d = grad (+ weight_decay * w, negated if maximize), through SGD's momentum/nesterov
    grad phi(w_new) = grad phi(w) - lr * d

with closed forms per potential (all elementwise):

* ``"2-norm"``: ``w -= lr * d`` (plain SGD);
* ``"negative_entropy"``: ``w *= exp(-lr * sign(w) * d)`` (signed exponentiated gradient; signs
  never change and exact zeros stay zero);
* ``"<p>-norm"``: ``y = sign(w)|w|^(p-1) - lr * d``, ``w = sign(y)|y|^(1/(p-1))``;
* ``"hypentropy:<beta>"``: ``w = beta sinh(arcsinh(w/beta) - c)`` with ``c = lr * d``, computed
  as ``w cosh(c) - sqrt(w^2 + beta^2) sinh(c)`` (no arcsinh needed).

Two implementations, chosen at run time like SGD's: a single-tensor path (one parameter at a
time, plain tensor ops) and a multi-tensor path (``torch._foreach_*`` ops). The multi-tensor path
walks the parameters in cache-sized chunks (views, no copies) with one small scratch buffer, so
the several elementwise passes of a mirror step stay in cache and no parameter-sized temporary
is ever allocated.

Safety: nan/inf is never written. A non-finite gradient or weight raises ``FloatingPointError``
naming the parameter (param group, index in the group, shape). The check is made chunk by chunk,
just before each chunk is written, while the chunk is in cache: one dot product of each
gradient view with its weight view (non-finite whenever an element of either is; the exact
elementwise test runs only when one fails, so large finite values are not reported), costing a small fraction of a step (see
``benchmarks/bench_optim.py``). The error stops the step at that chunk: nothing from that chunk on
is written, but parameters before it (and earlier chunks of the same parameter) have already been
updated; the message says so. A check of all gradients before the step would make a failed step
leave everything untouched, at the price of one more read of every gradient (about a third of an
SGD step on CPU), which would break the speed target. Steps that overflow from finite inputs
are caught where they can happen in practice: negative entropy's factor ``exp(-lr sign(w) d)``
and hypentropy's ``sinh(lr d)`` are checked before they are applied (p-norms would need weights
or gradients beyond about 1e19 in float32 to overflow, and are not checked).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from synaptic_geometry.potentials import (
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    get_potential,
)

__all__ = ["MirrorDescent", "mirror_descent"]

_LOG2_E = 1.0 / math.log(2.0)
# Elements per chunk of the multi-tensor path: 512K float32 = 2 MiB per array, so a chunk's
# weights, gradients, momentum buffer and scratch (about 10 MiB) stay in cache between passes.
# Smaller chunks cost more Python overhead than they save (measured with bench_optim.py).
_CHUNK = 1 << 19


@functools.lru_cache(maxsize=64)
def _parse(name: str) -> Potential:
    return get_potential(name)


def _check_hyperparameters(lr: Any, momentum: Any, dampening: Any, weight_decay: Any, nesterov: Any) -> None:
    for key, value in (("lr", lr), ("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid {key}: {value!r}; expected a finite number >= 0")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")


class MirrorDescent(Optimizer):
    """Mirror descent with SGD's momentum; the potential may differ per parameter group.

    Args:
        params: parameters or parameter groups (dicts), as for ``torch.optim.SGD``.
        lr: learning rate (>= 0).
        momentum, dampening, nesterov, weight_decay, maximize: as in ``torch.optim.SGD``.
        potential: a potential name ("2-norm", "3-norm", "negative_entropy", "hypentropy:0.1",
            ...) or a :class:`~synaptic_geometry.potentials.Potential`; stored in the group as
            its canonical name, so ``state_dict()`` holds plain data.
        foreach: use the multi-tensor (``torch._foreach_*``) path; ``None`` picks it when all
            parameters are plain tensors on one device.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        maximize: bool = False,
        potential: str | Potential = "2-norm",
        foreach: bool | None = None,
    ):
        _check_hyperparameters(lr, momentum, dampening, weight_decay, nesterov)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
            potential=get_potential(potential).name,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "potential" in param_group:
            param_group["potential"] = get_potential(param_group["potential"]).name
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hyperparameters(group["lr"], group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("potential", "2-norm")

    def _init_group(self, group, params, grads, bufs, indices) -> None:
        for index, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("MirrorDescent does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            indices.append(index)
            if group["momentum"] != 0:
                bufs.append(self.state[p].get("momentum_buffer"))

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group_index, group in enumerate(self.param_groups):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor | None] = []
            indices: list[int] = []
            self._init_group(group, params, grads, bufs, indices)
            if not params:
                continue
            mirror_descent(
                params,
                grads,
                bufs,
                lr=group["lr"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                potential=group["potential"],
                foreach=group["foreach"],
                names=[f"parameter {i} of param group {group_index}" for i in indices],
            )
            if group["momentum"] != 0:
                for p, buf in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss


def mirror_descent(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    potential: str | Potential = "2-norm",
    foreach: bool | None = None,
    names: list[str] | None = None,
) -> None:
    """Functional mirror descent step (updates ``params`` and ``momentum_buffer_list`` in place).

    ``momentum_buffer_list`` has one entry per parameter when ``momentum != 0`` (``None`` entries
    are created on this step, as in SGD) and is ignored otherwise. ``names`` label parameters in
    error messages.
    """
    pot = _parse(potential) if isinstance(potential, str) else potential
    if not isinstance(pot, (PNorm, NegativeEntropy, Hypentropy)):
        raise TypeError(f"MirrorDescent supports PNorm, NegativeEntropy and Hypentropy, got {pot!r}")
    if len(params) != len(grads) or (momentum != 0 and len(momentum_buffer_list) != len(params)):
        raise ValueError("params, grads and momentum_buffer_list must have equal lengths")
    if names is None:
        names = [f"parameter {i}" for i in range(len(params))]
    for p, g, name in zip(params, grads, names):
        if not p.is_floating_point() or g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise ValueError(
                f"{name}: needs a real floating-point weight and a gradient of equal shape, dtype and "
                f"device; got weight {p.dtype} {tuple(p.shape)}, gradient {g.dtype} {tuple(g.shape)}"
            )
    if foreach is None:  # like torch: the multi-tensor path when every tensor is plain and on one device
        plain = (torch.Tensor, torch.nn.Parameter)
        foreach = len({p.device for p in params}) == 1 and all(
            type(p) in plain and type(g) in plain for p, g in zip(params, grads)
        )
    step = _multi_tensor_mirror_descent if foreach else _single_tensor_mirror_descent
    step(
        params,
        grads,
        momentum_buffer_list,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
        maximize=maximize,
        potential=pot,
        names=names,
    )


def _first_non_finite(tensors: list[Tensor]) -> int | None:
    """Index of the first tensor holding nan or inf, or None.

    Fast path: one sum per tensor and a single host sync per device (a sum is non-finite whenever
    an element is). Only if a sum fails are tensors tested element by element, so a finite sum
    that merely overflows is not reported.
    """
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for positions in by_device.values():
        if bool(torch.stack([tensors[i].sum() for i in positions]).isfinite().all()):
            continue
        for i in positions:
            if not bool(torch.isfinite(tensors[i]).all()):
                return i
    return None


def _check_finite(grads: list[Tensor], weights: list[Tensor], owners: list[int], params: list[Tensor], names: list[str]) -> None:
    """Raise FloatingPointError naming the parameter if a gradient or weight (view) is not finite.

    ``owners[k]`` is the index (into ``params`` and ``names``) of the parameter of view k. Fast
    path: one dot product per (gradient, weight) pair and one host sync. A product of a nan or an
    inf with anything is nan or inf, and so is any sum containing one, so the dot product is
    non-finite whenever an element of either tensor is. Only then are the elements tested one by
    one (a finite dot product that merely overflows is not reported).
    """
    if grads[0].dtype in (torch.float32, torch.float64):
        fast = [torch.dot(g.reshape(-1), w.reshape(-1)) for g, w in zip(grads, weights)]
    else:  # no fast dot product for this dtype: sums
        fast = [t.sum() for t in grads + weights]
    if bool(torch.stack(fast).isfinite().all()):
        return
    for k, (g, w) in enumerate(zip(grads, weights)):
        for what, t in (("gradient", g), ("weight", w)):
            if not bool(torch.isfinite(t).all()):
                i = owners[k]
                raise FloatingPointError(
                    f"non-finite {what} (nan or inf) in {names[i]} (shape {tuple(params[i].shape)}); the step "
                    "stopped before writing it (parameters earlier in this step may already have been updated)"
                )


def _check_step(values: list[Tensor], owners: list[int], params: list[Tensor], names: list[str], what: str) -> None:
    """Raise FloatingPointError if an intermediate of the step overflowed."""
    k = _first_non_finite(values)
    if k is not None:
        i = owners[k]
        raise FloatingPointError(
            f"the step overflowed in {names[i]} (shape {tuple(params[i].shape)}): {what} is not finite; "
            "lower the learning rate (the step stopped before writing it; parameters earlier in this step "
            "may already have been updated)"
        )


def _direction(grad: Tensor, param: Tensor, buf: Tensor | None, *, momentum, dampening, nesterov, weight_decay, maximize) -> tuple[Tensor, Tensor | None]:
    """SGD's update direction for one tensor; returns (direction, momentum buffer)."""
    d = -grad if maximize else grad
    if weight_decay != 0:
        d = d.add(param, alpha=weight_decay)
    if momentum != 0:
        if buf is None:
            buf = torch.clone(d).detach()
        else:
            buf.mul_(momentum).add_(d, alpha=1 - dampening)
        d = d.add(buf, alpha=momentum) if nesterov else buf
    return d, buf


def _single_tensor_mirror_descent(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize, potential, names):
    for i, (w, g) in enumerate(zip(params, grads)):
        _check_finite([g], [w], [i], params, names)
        buf = bufs[i] if momentum != 0 else None
        d, buf = _direction(g, w, buf, momentum=momentum, dampening=dampening, nesterov=nesterov,
                            weight_decay=weight_decay, maximize=maximize)
        if momentum != 0:
            bufs[i] = buf
        t = torch.empty_like(w) if _scratch_needed(potential) else None
        s = torch.empty_like(w) if _scratch_needed(potential) > 1 else None
        _dual_step(w, d, lr, potential, t, s, lambda v, what: _check_step([v], [i], params, names, what))


def _scratch_needed(pot: Potential) -> int:
    """Number of scratch tensors the dual step of ``pot`` needs."""
    if isinstance(pot, PNorm) and pot.p == 2:
        return 0
    return 2 if isinstance(pot, Hypentropy) else 1


def _signed_pow(x: Tensor, e: float, out: Tensor) -> None:
    """out = sign(x) |x|^e, with the fewest passes for e = 2 and e = 1/2 (3-norm and 1.5-norm).

    Other exponents use 2^(e log2|x|), about twice as fast as ``pow`` on CPU (0 maps to 0).
    """
    torch.abs(x, out=out)
    if e == 2:
        out.mul_(x)  # x |x|
    elif e == 0.5:  # x / sqrt|x|; rsqrt(0) = inf is clamped so that 0 maps to 0
        out.rsqrt_().clamp_max_(torch.finfo(out.dtype).max).mul_(x)
    else:
        out.log2_().mul_(e).exp2_().copysign_(x)


def _dual_step(w: Tensor, d: Tensor, lr: float, pot: Potential, t: Tensor | None, s: Tensor | None, check) -> None:
    """w <- inv_grad(grad(w) - lr * d) in place; t and s are scratch tensors shaped like w.

    ``check(value, what)`` raises if an intermediate that can overflow is not finite.
    """
    if isinstance(pot, PNorm):
        if pot.p == 2:
            w.add_(d, alpha=-lr)
            return
        _signed_pow(w, pot.p - 1, t)  # t = grad phi(w)
        t.add_(d, alpha=-lr)  # the step in the dual space
        _signed_pow(t, 1.0 / (pot.p - 1), w)
    elif isinstance(pot, NegativeEntropy):
        # w exp(-lr sign(w) d) = w 2^(-lr log2(e) sign(w) d); exp2 is much faster than exp on CPU
        torch.sign(w, out=t).mul_(d).mul_(-lr * _LOG2_E).exp2_()
        check(t, "exp(-lr sign(w) d)")
        w.mul_(t)
    else:  # hypentropy: w cosh(c) - sqrt(w^2 + beta^2) sinh(c), c = lr d
        torch.mul(d, lr, out=t)
        torch.sinh(t, out=s)
        check(s, "sinh(lr d)")
        t.cosh_().mul_(w)
        w.mul_(w).add_(pot.beta**2).sqrt_()
        torch.addcmul(t, w, s, value=-1, out=w)


def _multi_tensor_mirror_descent(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize, potential, names):
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    strided = []
    for i, p in enumerate(params):
        if p.is_contiguous():
            groups.setdefault((p.device, p.dtype), []).append(i)
        else:
            strided.append(i)
    if strided:  # chunking needs flat views: non-contiguous weights take the single-tensor path
        sub_bufs = [bufs[i] for i in strided] if momentum != 0 else []
        _single_tensor_mirror_descent(
            [params[i] for i in strided], [grads[i] for i in strided], sub_bufs, lr=lr, momentum=momentum,
            dampening=dampening, nesterov=nesterov, weight_decay=weight_decay, maximize=maximize,
            potential=potential, names=[names[i] for i in strided])
        if momentum != 0:
            for i, buf in zip(strided, sub_bufs):
                bufs[i] = buf
    need_d = maximize or weight_decay != 0 or nesterov
    n_pot = _scratch_needed(potential)
    for (device, dtype), members in groups.items():
        fresh = set()
        if momentum != 0:
            for i in members:
                if bufs[i] is None:  # created lazily, filled with the first direction below
                    bufs[i] = torch.empty_like(params[i])
                    fresh.add(i)
        scratch = torch.empty((n_pot + need_d, _CHUNK), dtype=dtype, device=device) if n_pot + need_d else None
        for owners, W, G, B, sizes in _chunk_batches(params, grads, bufs if momentum != 0 else None, members):
            _check_finite(G, W, owners, params, names)
            offsets = _offsets(sizes)
            T = [scratch[0, a:a + n] for a, n in zip(offsets, sizes)] if n_pot >= 1 else []
            S = [scratch[1, a:a + n] for a, n in zip(offsets, sizes)] if n_pot >= 2 else []
            D = G  # the direction, by SGD's rule
            if need_d:
                D = [scratch[n_pot, a:a + n] for a, n in zip(offsets, sizes)]
                torch._foreach_copy_(D, G)
                if maximize:
                    torch._foreach_neg_(D)
                if weight_decay != 0:
                    torch._foreach_add_(D, W, alpha=weight_decay)
            if momentum != 0:
                new = [k for k, i in enumerate(owners) if i in fresh]
                old = [k for k, i in enumerate(owners) if i not in fresh]
                if new:
                    torch._foreach_copy_([B[k] for k in new], [D[k] for k in new])
                if old and dampening == 0:  # buf = d + momentum * buf in one pass
                    for k in old:
                        torch.add(D[k], B[k], alpha=momentum, out=B[k])
                elif old:
                    B_old = [B[k] for k in old]
                    torch._foreach_mul_(B_old, momentum)
                    torch._foreach_add_(B_old, [D[k] for k in old], alpha=1 - dampening)
                if nesterov:
                    torch._foreach_add_(D, B, alpha=momentum)
                else:
                    D = B
            _foreach_dual_step(W, D, lr, potential, T, S, lambda V, what: _check_step(V, owners, params, names, what))


def _offsets(sizes: list[int]) -> list[int]:
    out, a = [], 0
    for n in sizes:
        out.append(a)
        a += n
    return out


def _chunk_batches(params, grads, bufs, members):
    """Yield (owners, W, G, B, sizes): flat views of at most _CHUNK elements in total.

    ``owners[k]`` is the index of the parameter the k-th view belongs to.
    """
    owners: list[int] = []
    W: list[Tensor] = []
    G: list[Tensor] = []
    B: list[Tensor] = []
    sizes: list[int] = []
    total = 0
    for i in members:
        w, g = params[i].view(-1), grads[i].contiguous().view(-1)
        b = bufs[i].view(-1) if bufs is not None else None
        n = w.numel()
        for a in range(0, n, _CHUNK):
            m = min(_CHUNK, n - a)
            if total + m > _CHUNK:
                yield owners, W, G, B, sizes
                owners, W, G, B, sizes, total = [], [], [], [], [], 0
            owners.append(i)
            W.append(w[a:a + m])
            G.append(g[a:a + m])
            if b is not None:
                B.append(b[a:a + m])
            sizes.append(m)
            total += m
    if W:
        yield owners, W, G, B, sizes


def _foreach_signed_pow(X: list[Tensor], e: float, out: list[Tensor]) -> None:
    """Multi-tensor :func:`_signed_pow`."""
    for x, o in zip(X, out):
        torch.abs(x, out=o)
    if e == 2:
        torch._foreach_mul_(out, X)
    elif e == 0.5:
        big = torch.finfo(out[0].dtype).max
        torch._foreach_rsqrt_(out)
        torch._foreach_clamp_max_(out, big)
        torch._foreach_mul_(out, X)
    else:
        torch._foreach_log2_(out)
        torch._foreach_mul_(out, e)
        for x, o in zip(X, out):
            o.exp2_().copysign_(x)


def _foreach_dual_step(W, D, lr: float, pot: Potential, T, S, check) -> None:
    """Multi-tensor :func:`_dual_step` (T and S are scratch views shaped like W)."""
    if isinstance(pot, PNorm):
        if pot.p == 2:
            torch._foreach_add_(W, D, alpha=-lr)
            return
        _foreach_signed_pow(W, pot.p - 1, T)  # T = grad phi(W)
        torch._foreach_add_(T, D, alpha=-lr)  # the step in the dual space
        _foreach_signed_pow(T, 1.0 / (pot.p - 1), W)
    elif isinstance(pot, NegativeEntropy):
        for t, w in zip(T, W):
            torch.sign(w, out=t)
        torch._foreach_mul_(T, D)
        torch._foreach_mul_(T, -lr * _LOG2_E)
        for t in T:
            t.exp2_()
        check(T, "exp(-lr sign(w) d)")
        torch._foreach_mul_(W, T)
    else:  # hypentropy
        for t, d in zip(T, D):
            torch.mul(d, lr, out=t)
        for s, t in zip(S, T):
            torch.sinh(t, out=s)
        check(S, "sinh(lr d)")
        torch._foreach_cosh_(T)
        torch._foreach_mul_(T, W)
        torch._foreach_mul_(W, W)
        torch._foreach_add_(W, pot.beta**2)
        torch._foreach_sqrt_(W)
        for t, w, s in zip(T, W, S):
            torch.addcmul(t, w, s, value=-1, out=w)
