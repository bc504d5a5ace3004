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

Three implementations, chosen at run time like SGD's (``fused`` and ``foreach``):

* the fused path (CPU): one pass over each parameter, in a small C++ kernel
  (``fused_step.cpp``): the weight, gradient and momentum buffer are read once, SGD's direction,
  the dual step and the map back are computed in registers, and the weight and buffer are written
  once (one team of threads per step splits each parameter and meets at a barrier after it). In
  float32 the kernel computes exp2 and log2 itself, inline (within a few ulp; negative entropy and
  the general p-norm need them), rather than calling Sleef once per vector as ATen's vector types
  do. The kernel is built by ``torch.utils.cpp_extension`` the first time it is needed (about
  15 s, once per machine and source version; cached in torch's extension directory, see
  ``TORCH_EXTENSIONS_DIR``), for the CPU's vector instruction set (AVX-512, AVX2 or plain C++).
  The 2-norm runs on it too: there mirror descent is SGD, and the kernel's pass is what
  ``torch.optim.SGD(fused=True)`` computes, plus the non-finite test below (running the 2-norm
  through torch's own fused SGD kernel on blocks checked just before measured slower, about 1.2x
  this kernel's time, and was removed);
* the multi-tensor path (``torch._foreach_*`` ops), which walks the parameters in cache-sized
  chunks (views, no copies) with one small scratch buffer, so the several elementwise passes of a
  mirror step stay in cache and no parameter-sized temporary is ever allocated;
* the single-tensor path (one parameter at a time, plain tensor ops).

The default (``fused=None`` and ``foreach=None``) is the fastest that applies: the fused path when
every parameter is on the CPU and the kernel could be built (``benchmarks/bench_optim.py``
measures it against torch's fused SGD), else the multi-tensor path when every tensor is plain and
on one device, else the single-tensor path. Setting ``foreach`` explicitly selects between the
last two. If the kernel cannot be built (no C++ compiler or ninja), a ``RuntimeWarning`` says so
once and the default falls back to the multi-tensor path, with the same results to float
tolerance; ``fused=True`` then raises ``RuntimeError``. Parameters the kernel cannot take (not
contiguous) are updated by the single-tensor path first.

Precision: the dual-space arithmetic runs in float64 for float64 parameters and in float32
otherwise. float16 and bfloat16 parameters (pure low-precision training) are computed in float32
and rounded once when written, and their momentum buffers are kept in float32 (torch's SGD keeps
them in the parameter's dtype). Automatic mixed precision (autocast) keeps parameters and
gradients in float32 and needs nothing special.

Safety: nan/inf is never written. A non-finite gradient, weight or momentum buffer raises
``FloatingPointError`` naming the parameter (param group, index in the group, shape), and so does a
step that overflows from finite inputs ("the step overflowed in ...", also when a float16/bfloat16
result is too large for its dtype). What was already written when it is raised depends on the
path:

* fused: parameters are updated one after the other, each in one pass in which an element is
  written only if its direction and new weight are finite (a non-finite gradient, weight or buffer
  makes them non-finite). The step stops after the first parameter with a non-finite element:
  the parameters before it were updated; in it, every finite element was updated and the others
  kept their weight and momentum buffer; the parameters after it were not touched. The test costs
  a few vector instructions per element and no extra memory traffic.
* multi-tensor: the check is made chunk by chunk, just before each chunk is written, while the
  chunk is in cache: one dot product of each gradient view with its weight view (non-finite
  whenever an element of either is; the exact elementwise test runs only when one fails, so large
  finite values are not reported), costing a small fraction of a step. The error stops the step at
  that chunk: nothing from that chunk on is written, but parameters before it (and earlier chunks
  of the same parameter) have already been updated; the message says so.
* single-tensor: each parameter is checked before it is written, so the offending parameter and
  those after it are untouched.

On these two paths overflow from finite inputs is checked where it can happen in practice:
negative entropy's factor ``exp(-lr sign(w) d)`` and hypentropy's ``sinh(lr d)`` before they are
applied (p-norms would need weights or gradients beyond about 1e19 in float32 to overflow, and are
not checked; the fused path checks every new weight).

A check of all gradients before the step would make a failed step leave everything untouched,
at the price of one more read of every gradient (about a third of an SGD step on CPU).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer
from torch.utils import cpp_extension

from synaptic_geometry.potentials import (
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    get_potential,
)

__all__ = ["MirrorDescent", "fused_available", "mirror_descent"]

_LOG2_E = 1.0 / math.log(2.0)
# Elements per chunk of the multi-tensor path: 512K float32 = 2 MiB per array, so a chunk's
# weights, gradients, momentum buffer and scratch (about 10 MiB) stay in cache between passes.
# Smaller chunks cost more Python overhead than they save (measured with bench_optim.py).
_CHUNK = 1 << 19
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# the settings of a param group that each step passes on to mirror_descent
_GROUP_SETTINGS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "potential", "foreach",
                   "fused")
_KERNEL_SOURCE = Path(__file__).with_name("fused_step.cpp")
# compiler flags per torch.backends.cpu.get_cpu_capability(); any other capability builds plain C++
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],  # F16C: c10::Half conversions use it (every AVX2 CPU has it)
    "DEFAULT": [],
}
# the potentials as numbered by the kernel's enum Kind
_TWO_NORM, _THREE_NORM, _ONE_POINT_FIVE_NORM, _P_NORM, _NEGATIVE_ENTROPY, _HYPENTROPY = range(6)


@functools.lru_cache(maxsize=64)
def _parse(name: str) -> Potential:
    return get_potential(name)


@functools.lru_cache(maxsize=64)
def _fused_kind(pot: Potential) -> tuple[int, float]:
    """The kernel's number for ``pot`` and its parameter (p for p-norms, beta for hypentropy)."""
    if isinstance(pot, PNorm):
        special = {2.0: _TWO_NORM, 3.0: _THREE_NORM, 1.5: _ONE_POINT_FIVE_NORM}
        return special.get(float(pot.p), _P_NORM), float(pot.p)
    if isinstance(pot, NegativeEntropy):
        return _NEGATIVE_ENTROPY, 0.0
    return _HYPENTROPY, float(pot.beta)


def _state_dtype(p: Tensor) -> torch.dtype:
    """dtype of the momentum buffer and of the dual-space arithmetic for parameter ``p``."""
    return torch.float32 if p.dtype in _LOW_PRECISION else p.dtype


@functools.cache
def _fused_kernel():
    """The fused step (the ``step`` function of the kernel's Python module), built on first use.

    Returns None, after one ``RuntimeWarning``, if the kernel cannot be built or loaded. The
    module's name holds a digest of the source and flags, so worktrees or installs with different
    versions of the kernel share torch's extension directory without rebuilding each other's.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in _CAPABILITY_FLAGS:
        capability = "DEFAULT"
    flags = ["-O3", "-fopenmp", f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}",
             *_CAPABILITY_FLAGS[capability]]
    digest = hashlib.sha256("\0".join([_KERNEL_SOURCE.read_text(), *flags, torch.__version__]).encode()).hexdigest()
    saved_path = os.environ.get("PATH", "")
    # the pinned ninja lives beside this interpreter, which need not be on PATH (an unactivated venv)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + saved_path
    try:
        module = cpp_extension.load(
            name=f"synaptic_geometry_fused_step_{capability.lower()}_{digest[:12]}",
            sources=[str(_KERNEL_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
        )
        return module.step
    except Exception as error:  # any failure to build or load (no compiler, no ninja, ...) means: no fused path
        first_line = (str(error).strip().splitlines() or [""])[0]
        warnings.warn(
            f"MirrorDescent: the fused CPU kernel could not be built ({type(error).__name__}: {first_line}); "
            "falling back to the foreach path",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    finally:
        os.environ["PATH"] = saved_path


def fused_available() -> bool:
    """Whether the fused CPU path can be used (builds the kernel on the first call, about 15 s).

    Returns
    -------
    bool
        False if the kernel could not be built (a ``RuntimeWarning`` said why).
    """
    return _fused_kernel() is not None


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
        foreach: use the multi-tensor (``torch._foreach_*``) path (True) or the single-tensor path
            (False); ``None`` lets ``fused`` decide, then picks the multi-tensor path when all
            parameters are plain tensors on one device.
        fused: use the fused CPU kernel (True; raises ``RuntimeError`` if it cannot be built or
            a parameter is not on the CPU) or not (False); ``None`` uses it when ``foreach`` is
            None, every parameter is on the CPU and the kernel could be built. See the module
            docstring for what each path writes before a ``FloatingPointError``.

    Momentum buffers of float16 and bfloat16 parameters are float32, in ``state_dict()`` too.
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
        fused: bool | None = None,
    ):
        _check_hyperparameters(lr, momentum, dampening, weight_decay, nesterov)
        if fused and foreach:
            raise ValueError("fused=True and foreach=True cannot both be set; choose one path")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
            potential=get_potential(potential).name,
            foreach=foreach,
            fused=fused,
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
            group.setdefault("fused", None)
            group.setdefault("potential", "2-norm")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`torch.optim.Optimizer.load_state_dict`, with two differences.

        The path settings (``fused``, ``foreach``) stay this optimizer's: they describe the
        machine, not the training state, so a checkpoint continues on any path (and device).
        The base class casts every state tensor to its parameter's dtype; here the momentum
        buffers of float16/bfloat16 parameters are restored from ``state_dict`` in float32.
        """
        paths = [(group["fused"], group["foreach"]) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fused, foreach) in zip(self.param_groups, paths):
            group["fused"], group["foreach"] = fused, foreach
        params = [p for group in self.param_groups for p in group["params"]]
        for index, saved in state_dict["state"].items():
            p, buf = params[index], saved.get("momentum_buffer")
            if buf is not None and p.dtype in _LOW_PRECISION:
                self.state[p]["momentum_buffer"] = buf.to(device=p.device, dtype=_state_dtype(p), copy=True)

    def _init_group(self, group, params, grads, bufs, indices) -> None:
        with_buffers = group["momentum"] != 0
        state = self.state
        for index, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError("MirrorDescent does not support sparse gradients")
            params.append(p)
            grads.append(g)
            indices.append(index)
            if with_buffers:
                bufs.append(state[p].get("momentum_buffer"))

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
            created = [k for k, buf in enumerate(bufs) if buf is None]  # every path updates the others in place
            mirror_descent(
                params,
                grads,
                bufs,
                **{key: group[key] for key in _GROUP_SETTINGS},
                names=_Names(indices, group_index),
            )
            for k in created:
                self.state[params[k]]["momentum_buffer"] = bufs[k]
        return loss


class _Names:
    """The labels of parameters in error messages, made only when one is needed (``names[k]``)."""

    def __init__(self, indices, group: int | None = None):
        self.indices, self.group = indices, group

    def __getitem__(self, k: int) -> str:
        where = "" if self.group is None else f" of param group {self.group}"
        return f"parameter {self.indices[k]}{where}"


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
    fused: bool | None = None,
    names: list[str] | None = None,
) -> None:
    """Functional mirror descent step (updates ``params`` and ``momentum_buffer_list`` in place).

    ``momentum_buffer_list`` has one entry per parameter when ``momentum != 0`` (``None`` entries
    are created on this step, as in SGD) and is ignored otherwise. ``foreach`` and ``fused``
    choose the path as in :class:`MirrorDescent`. ``names`` label parameters in error messages.
    """
    pot = _parse(potential) if isinstance(potential, str) else potential
    if not isinstance(pot, (PNorm, NegativeEntropy, Hypentropy)):
        raise TypeError(f"MirrorDescent supports PNorm, NegativeEntropy and Hypentropy, got {pot!r}")
    if len(params) != len(grads) or (momentum != 0 and len(momentum_buffer_list) != len(params)):
        raise ValueError("params, grads and momentum_buffer_list must have equal lengths")
    if names is None:
        names = _Names(range(len(params)))
    plain_types = (torch.Tensor, torch.nn.Parameter)
    plain = on_cpu = True
    for k, (p, g) in enumerate(zip(params, grads)):
        if not p.is_floating_point() or g.shape != p.shape or g.dtype != p.dtype or (
                not (p.is_cpu and g.is_cpu) and g.device != p.device):
            raise ValueError(
                f"{names[k]}: needs a real floating-point weight and a gradient of equal shape, dtype and "
                f"device; got weight {p.dtype} {tuple(p.shape)}, gradient {g.dtype} {tuple(g.shape)}"
            )
        plain = plain and type(p) in plain_types and type(g) in plain_types
        on_cpu = on_cpu and p.is_cpu
    if fused and foreach:
        raise ValueError("fused=True and foreach=True cannot both be set; choose one path")
    if fused is None:  # the fastest path that applies (see the module docstring)
        fused = foreach is None and plain and on_cpu and _fused_kernel() is not None
    if fused:
        if not (plain and on_cpu):
            raise RuntimeError("fused=True needs plain tensors on the CPU; use fused=None or fused=False here")
        if _fused_kernel() is None:
            raise RuntimeError("fused=True, but the fused CPU kernel could not be built (see the warning); "
                               "use fused=None or fused=False")
        step = _fused_mirror_descent
    else:
        if foreach is None:  # like torch: the multi-tensor path when every tensor is plain and on one device
            foreach = plain and len({p.device for p in params}) == 1
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
    for i, (param, grad) in enumerate(zip(params, grads)):
        _check_finite([grad], [param], [i], params, names)
        low = param.dtype in _LOW_PRECISION  # computed in float32, rounded once when written
        w, g = (param.float(), grad.float()) if low else (param, grad)
        buf = bufs[i] if momentum != 0 else None
        d, buf = _direction(g, w, buf, momentum=momentum, dampening=dampening, nesterov=nesterov,
                            weight_decay=weight_decay, maximize=maximize)
        if momentum != 0:
            bufs[i] = buf
        t = torch.empty_like(w) if _scratch_needed(potential) else None
        s = torch.empty_like(w) if _scratch_needed(potential) > 1 else None
        _dual_step(w, d, lr, potential, t, s, lambda v, what: _check_step([v], [i], params, names, what))
        if low:
            rounded = w.to(param.dtype)
            _check_step([rounded], [i], params, names, f"the new weight in {param.dtype}")
            param.copy_(rounded)


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


def _single_tensor_subset(indices: list[int], params, grads, bufs, *, momentum, names, **hyper) -> None:
    """Run the single-tensor path on ``params[i] for i in indices`` (buffers written back into ``bufs``)."""
    if not indices:
        return
    sub_bufs = [bufs[i] for i in indices] if momentum != 0 else []
    _single_tensor_mirror_descent([params[i] for i in indices], [grads[i] for i in indices], sub_bufs,
                                  momentum=momentum, names=[names[i] for i in indices], **hyper)
    if momentum != 0:
        for i, buf in zip(indices, sub_bufs):
            bufs[i] = buf


def _multi_tensor_mirror_descent(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize, potential, names):
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    others = []
    for i, p in enumerate(params):
        if p.is_contiguous() and p.dtype not in _LOW_PRECISION:
            groups.setdefault((p.device, p.dtype), []).append(i)
        else:
            others.append(i)
    # chunking needs flat views, and float16/bfloat16 are computed in float32: the single-tensor path
    _single_tensor_subset(others, params, grads, bufs, lr=lr, momentum=momentum, dampening=dampening,
                          nesterov=nesterov, weight_decay=weight_decay, maximize=maximize,
                          potential=potential, names=names)
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


def _fused_mirror_descent(params, grads, bufs, *, lr, momentum, dampening, nesterov, weight_decay, maximize, potential, names):
    has_buffer = momentum != 0
    # the kernel takes contiguous CPU tensors, and momentum buffers in the state dtype
    if has_buffer:
        takes = [p.is_contiguous() and g.is_contiguous() and (
                 b is None or (b.is_cpu and b.is_contiguous() and b.dtype == _state_dtype(p)))
                 for p, g, b in zip(params, grads, bufs)]
    else:
        takes = [p.is_contiguous() and g.is_contiguous() for p, g in zip(params, grads)]
    if all(takes):  # the common case: the lists as they are
        fused = range(len(params))
        weights, gradients, buffers = params, grads, bufs if has_buffer else []
    else:
        others = [i for i, ok in enumerate(takes) if not ok]
        _single_tensor_subset(others, params, grads, bufs, lr=lr, momentum=momentum, dampening=dampening,
                              nesterov=nesterov, weight_decay=weight_decay, maximize=maximize,
                              potential=potential, names=names)
        fused = [i for i, ok in enumerate(takes) if ok]
        weights, gradients = [params[i] for i in fused], [grads[i] for i in fused]
        buffers = [bufs[i] for i in fused] if has_buffer else []
    fresh = [int(b is None) for b in buffers]
    if any(fresh):
        for k, i in enumerate(fused):
            if fresh[k]:  # zeros: an element that is not written keeps a zero buffer
                bufs[i] = buffers[k] = torch.zeros_like(params[i], dtype=_state_dtype(params[i]))
    kind, parameter = _fused_kind(potential)
    # the kernel bumps the version counters of the tensors it writes, as in-place ops do
    stopped = _fused_kernel()(weights, gradients, buffers, fresh, kind, lr, momentum, dampening,
                              weight_decay, nesterov, maximize, parameter)
    if stopped >= 0:
        i = fused[stopped]
        buf = bufs[i] if has_buffer and not fresh[stopped] else None
        raise _fused_error(params[i], grads[i], buf, names[i])


def _fused_error(w: Tensor, g: Tensor, buf: Tensor | None, name: str) -> FloatingPointError:
    """The error for a parameter at which the fused step stopped (its bad elements were not written)."""
    written = ("its finite elements and the parameters before it were updated; its other elements and the "
               "parameters after it were not")
    for what, t in (("gradient", g), ("weight", w), ("momentum buffer", buf)):
        if t is not None and not bool(torch.isfinite(t).all()):
            return FloatingPointError(f"non-finite {what} (nan or inf) in {name} (shape {tuple(w.shape)}); the step "
                                      f"stopped at this parameter ({written})")
    return FloatingPointError(f"the step overflowed in {name} (shape {tuple(w.shape)}): the new weight in {w.dtype} "
                              f"is not finite; lower the learning rate (the step stopped at this parameter: {written})")
