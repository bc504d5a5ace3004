"""Tests for synaptic_geometry.optim.MirrorDescent.

The fused CPU kernel is built once per machine (cached by torch.utils.cpp_extension) and shared by
every test; if it cannot be built, the tests that need it fail with the build's warning.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from synaptic_geometry import MirrorDescent, get_potential, mirror_descent, optim

POTENTIALS = ["2-norm", "3-norm", "1.5-norm", "2.5-norm", "negative_entropy", "hypentropy:0.1"]
SHAPES = [(3, 4), (300,), (5,), (2, 3, 3, 3), (1,)]
PATHS = ["fused", "foreach", "single"]
SGD_SETTINGS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.8, dampening=0.3),
    dict(weight_decay=0.05),
    dict(maximize=True),
    dict(momentum=0.5, dampening=0.2, weight_decay=0.1, maximize=True),
    dict(momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True),
]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 64 elements, so tensors span several chunks and chunks mix tensors."""
    monkeypatch.setattr(optim, "_CHUNK", 64)


def path(name):
    """MirrorDescent's keyword arguments selecting one implementation."""
    return {"fused": dict(fused=True, foreach=None), "foreach": dict(fused=False, foreach=True), "single": dict(fused=False, foreach=False)}[name]


def make_weights(seed, dtype=torch.float64, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        magnitude = torch.exp(torch.randn(shape, generator=gen, dtype=dtype) - 1)
        sign = torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1
        out.append((magnitude * sign).requires_grad_())
    return out


def set_grads(params, gen, scale=0.1):
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale


def run(opt_factory, seed=0, steps=30, dtype=torch.float64, scale=0.1):
    params = make_weights(seed, dtype)
    opt = opt_factory(params)
    gen = torch.Generator().manual_seed(seed + 100)
    for _ in range(steps):
        set_grads(params, gen, scale)
        opt.step()
    return [p.detach().clone() for p in params], opt


# ---------------------------------------------------------------- 2-norm is SGD


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("kwargs", SGD_SETTINGS, ids=lambda k: ",".join(k) or "plain")
def test_2_norm_matches_sgd(kwargs, name):
    ours, _ = run(lambda p: MirrorDescent(p, lr=0.05, potential="2-norm", **path(name), **kwargs), dtype=torch.float32, steps=50)
    ref, _ = run(lambda p: torch.optim.SGD(p, lr=0.05, foreach=True, **kwargs), dtype=torch.float32, steps=50)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if name == "single":  # the single-tensor path performs SGD's operations one for one
        assert all(torch.equal(a, b) for a, b in zip(ours, ref))


# ---------------------------------------------------------------- the two paths agree


@pytest.mark.parametrize("potential", POTENTIALS)
@pytest.mark.parametrize("kwargs", SGD_SETTINGS[:4] + SGD_SETTINGS[-2:], ids=lambda k: ",".join(k) or "plain")
def test_the_three_paths_agree(potential, kwargs):
    """float64: the paths differ only in rounding (the fused kernel uses other formulas for
    |w|^e and for cosh/sinh, hence its looser tolerance)."""
    a, opt_a = run(lambda p: MirrorDescent(p, lr=0.02, potential=potential, **path("foreach"), **kwargs))
    b, opt_b = run(lambda p: MirrorDescent(p, lr=0.02, potential=potential, **path("single"), **kwargs))
    c, opt_c = run(lambda p: MirrorDescent(p, lr=0.02, potential=potential, **path("fused"), **kwargs))
    for x, y, z in zip(a, b, c):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(z, y, rtol=1e-10, atol=1e-12)
    if kwargs.get("momentum"):
        for pa, pb, pc in zip(*(o.param_groups[0]["params"] for o in (opt_a, opt_b, opt_c))):
            buf_b = opt_b.state[pb]["momentum_buffer"]
            torch.testing.assert_close(opt_a.state[pa]["momentum_buffer"], buf_b, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(opt_c.state[pc]["momentum_buffer"], buf_b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("potential", POTENTIALS)
def test_fused_and_foreach_agree_in_float32_on_large_tensors(monkeypatch, potential):
    """Tensors larger than the kernel's parallel grain (split over threads, vector loop plus tail)."""
    monkeypatch.setattr(optim, "_CHUNK", 1 << 19)
    shapes = [(70001,), (3, 5), (256, 129)]
    results = []
    for name in ("fused", "foreach"):
        params = make_weights(11, torch.float32, shapes)
        opt = MirrorDescent(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3, potential=potential, **path(name))
        gen = torch.Generator().manual_seed(12)
        for _ in range(5):
            set_grads(params, gen)
            opt.step()
        results.append([p.detach() for p in params])
    for x, y in zip(*results):  # atol: near a zero crossing the p-norm maps amplify float32 rounding
        torch.testing.assert_close(x, y, rtol=2e-5, atol=1e-5)


# ---------------------------------------------------------------- the step is the mirror step


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("potential", POTENTIALS)
def test_step_is_dual_space_step(potential, name):
    """One step equals inv_grad(grad(w) - lr * g), computed by the potentials module."""
    params = make_weights(1)
    before = [p.detach().clone() for p in params]
    set_grads(params, torch.Generator().manual_seed(2), scale=1.0)
    MirrorDescent(params, lr=0.03, potential=potential, **path(name)).step()
    pot = get_potential(potential)
    for w0, p in zip(before, params):
        expected = pot.inv_grad(pot.grad(w0) - 0.03 * p.grad, sign=torch.sign(w0))
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("potential", POTENTIALS)
def test_zero_weights(potential, name):
    """Zeros with zero gradient stay zero (no 0 * inf = nan); with a gradient they move, except
    under negative entropy, where a zero can never move."""
    w = torch.tensor([0.0, 0.0, -0.0, 1.0], requires_grad=True)
    w.grad = torch.tensor([0.0, 1.0, -2.0, 0.0])
    MirrorDescent([w], lr=0.1, potential=potential, **path(name)).step()
    assert torch.isfinite(w).all() and w[0] == 0 and w[3] == 1
    pot = get_potential(potential)
    if potential == "negative_entropy":
        assert w[1] == 0 and w[2] == 0
    else:
        torch.testing.assert_close(w[1:3].detach(), pot.inv_grad(torch.tensor([-0.1, 0.2])))


@pytest.mark.parametrize("name", PATHS)
def test_3_norm_closed_form(name):
    w0 = np.array([0.5, -1.5, 2.0, -0.01, 0.0, 0.2])
    g = np.array([1.0, 2.0, -3.0, 4.0, -5.0, 40.0])
    lr = 0.1
    y = w0 * np.abs(w0) - lr * g  # grad of |w|^3 / 3 is sign(w) w^2
    expected = np.sign(y) * np.sqrt(np.abs(y))
    w = torch.tensor(w0, requires_grad=True)
    w.grad = torch.tensor(g)
    MirrorDescent([w], lr=lr, potential="3-norm", **path(name)).step()
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-15)
    assert w[5] < 0 < w0[5]  # unlike negative entropy, p-norms let weights cross zero


@pytest.mark.parametrize("name", PATHS)
def test_negative_entropy_is_exponentiated_gradient(name):
    w0 = np.array([0.5, -1.5, 2.0, -0.01, 0.0])
    g = np.array([1.0, 2.0, -3.0, 4.0, -5.0])
    w = torch.tensor(w0, requires_grad=True)
    w.grad = torch.tensor(g)
    MirrorDescent([w], lr=0.1, potential="negative_entropy", **path(name)).step()
    np.testing.assert_allclose(w.detach().numpy(), w0 * np.exp(-0.1 * np.sign(w0) * g), rtol=1e-13)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.1)], ids=["plain", "momentum"])
def test_negative_entropy_never_changes_signs(name, kwargs):
    params = make_weights(3, dtype=torch.float32)
    with torch.no_grad():
        params[1][:7] = 0.0
    signs = [torch.sign(p.detach()).clone() for p in params]
    opt = MirrorDescent(params, lr=0.1, potential="negative_entropy", **path(name), **kwargs)
    gen = torch.Generator().manual_seed(4)
    for _ in range(100):
        set_grads(params, gen, scale=1.0)
        opt.step()
        for p, s in zip(params, signs):
            assert torch.equal(torch.sign(p.detach()), s)
    assert torch.equal(params[1][:7].detach(), torch.zeros(7))  # zeros stay zero
    assert not torch.equal(params[1][7:].detach(), make_weights(3, dtype=torch.float32)[1][7:].detach())


def test_per_group_potentials():
    a, b = make_weights(5, shapes=[(4,), (4,)])
    a0, b0 = a.detach().clone(), b.detach().clone()
    opt = MirrorDescent([{"params": [a], "potential": "negative_entropy"}, {"params": [b], "lr": 0.2}], lr=0.1, potential="3.0-norm")
    assert [g["potential"] for g in opt.param_groups] == ["negative_entropy", "3-norm"]
    a.grad, b.grad = torch.ones(4, dtype=a.dtype), torch.ones(4, dtype=b.dtype)
    opt.step()
    torch.testing.assert_close(a.detach(), a0 * torch.exp(-0.1 * torch.sign(a0)))
    y = b0 * b0.abs() - 0.2
    torch.testing.assert_close(b.detach(), torch.sign(y) * y.abs().sqrt())


@pytest.mark.parametrize(
    "kwargs, available, expected",
    [
        (dict(), True, "fused"),
        (dict(), False, "multi_tensor"),  # the kernel could not be built: the foreach path
        (dict(fused=True), True, "fused"),
        (dict(fused=False), True, "multi_tensor"),
        (dict(foreach=True), True, "multi_tensor"),
        (dict(foreach=False), True, "single_tensor"),
    ],
)
def test_path_choice(monkeypatch, kwargs, available, expected):
    calls = []
    for name in ("fused", "multi_tensor", "single_tensor"):
        original = getattr(optim, f"_{name}_mirror_descent")
        monkeypatch.setattr(optim, f"_{name}_mirror_descent", lambda *a, _n=name, _f=original, **k: (calls.append(_n), _f(*a, **k)))
    if not available:
        monkeypatch.setattr(optim, "_fused_kernel", lambda: None)
    model = torch.nn.Linear(3, 2)
    model(torch.ones(4, 3)).sum().backward()
    MirrorDescent(model.parameters(), lr=0.1, **kwargs).step()
    assert calls == [expected]


def test_failed_build_warns_and_gives_no_kernel(monkeypatch):
    """Simulated unavailability: the build raises, as it does without a C++ compiler or ninja."""
    def no_compiler(**kwargs):
        raise OSError("no C++ compiler found\n(details)")

    monkeypatch.setattr(optim.cpp_extension, "load", no_compiler)
    match = r"fused CPU kernel could not be built \(OSError: no C\+\+ compiler found\); falling back to the foreach path"
    with pytest.warns(RuntimeWarning, match=match):
        assert optim._fused_kernel.__wrapped__() is None


@pytest.mark.parametrize("potential", POTENTIALS)
def test_fallback_gives_the_fused_results(monkeypatch, potential):
    kwargs = dict(lr=0.02, momentum=0.9, weight_decay=1e-3, potential=potential)
    fused, _ = run(lambda p: MirrorDescent(p, **kwargs), dtype=torch.float32, steps=20)
    monkeypatch.setattr(optim, "_fused_kernel", lambda: None)
    fallback, _ = run(lambda p: MirrorDescent(p, **kwargs), dtype=torch.float32, steps=20)
    for a, b in zip(fused, fallback):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="fused=True, but the fused CPU kernel could not be built"):
        run(lambda p: MirrorDescent(p, fused=True), steps=1)


def test_potential_object_is_stored_by_name():
    opt = MirrorDescent(make_weights(0), potential=get_potential("hypentropy:0.5"))
    assert opt.param_groups[0]["potential"] == "hypentropy:0.5"
    assert opt.defaults["potential"] == "hypentropy:0.5"


# ---------------------------------------------------------------- state


@pytest.mark.parametrize(
    "saved_with, loaded_into",
    [("fused", "fused"), ("foreach", "foreach"), ("single", "single"), ("fused", "foreach"), ("foreach", "fused"), ("single", "fused")],
)
def test_state_dict_round_trip_resumes_bit_identically(tmp_path, saved_with, loaded_into):
    """Save after 4 steps on one path, load into an optimizer on another, continue for 6 steps:
    bit for bit what switching paths in place gives. float16 parameters keep float32 buffers."""
    kwargs = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)
    shapes = SHAPES + [(7,)]

    def weights():
        out = make_weights(8, dtype=torch.float32, shapes=shapes)
        out[-1] = out[-1].detach().half().requires_grad_()
        return out

    def groups(ps):
        return [{"params": ps[:2], "potential": "negative_entropy"}, {"params": ps[2:5], "potential": "3-norm"},
                {"params": ps[5:], "potential": "hypentropy:0.5"}]

    gen = torch.Generator().manual_seed(7)
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(10)]

    def apply(params, opt, gs):
        for p, g in zip(params, gs):
            p.grad = g.to(p.dtype)
        opt.step()

    straight = weights()
    opt = MirrorDescent(groups(straight), **kwargs, **path(saved_with))
    for k, gs in enumerate(grads):
        if k == 4:
            for group in opt.param_groups:
                group.update(path(loaded_into))
        apply(straight, opt, gs)

    first = weights()
    opt1 = MirrorDescent(groups(first), **kwargs, **path(saved_with))
    for gs in grads[:4]:
        apply(first, opt1, gs)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"weights": [p.detach() for p in first], "optimizer": opt1.state_dict()}, checkpoint)

    loaded = torch.load(checkpoint, weights_only=True)
    assert [g["potential"] for g in loaded["optimizer"]["param_groups"]] == ["negative_entropy", "3-norm", "hypentropy:0.5"]
    assert loaded["optimizer"]["state"][len(shapes) - 1]["momentum_buffer"].dtype == torch.float32
    resumed = [w.clone().requires_grad_() for w in loaded["weights"]]
    opt2 = MirrorDescent(groups(resumed), lr=0.5, potential="2-norm", **path(loaded_into))
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[1]["potential"] == "3-norm"
    assert all(group["fused"] == path(loaded_into)["fused"] for group in opt2.param_groups)  # the path stays its own
    assert opt2.state[resumed[-1]]["momentum_buffer"].dtype == torch.float32
    for gs in grads[4:]:
        apply(resumed, opt2, gs)
    for a, b in zip(straight, resumed):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(opt.state[straight[-1]]["momentum_buffer"], opt2.state[resumed[-1]]["momentum_buffer"])


def test_state_is_created_lazily():
    params = make_weights(0)
    opt = MirrorDescent(params, lr=0.1, momentum=0.9)
    assert len(opt.state) == 0
    params[0].grad = torch.ones_like(params[0])
    opt.step()  # only the parameter with a gradient moves and gets a buffer
    assert list(opt.state) == [params[0]]
    torch.testing.assert_close(opt.state[params[0]]["momentum_buffer"], torch.ones_like(params[0]))
    assert MirrorDescent(make_weights(0), lr=0.1).state_dict()["state"] == {}


def test_closure_and_functional_api():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = MirrorDescent([w], lr=0.1, potential="negative_entropy")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    torch.testing.assert_close(w.detach(), torch.tensor([math.exp(-0.2), -2 * math.exp(-0.4)]))
    p, g = torch.tensor([0.5]), torch.tensor([1.0])
    bufs = [None]
    mirror_descent([p], [g], bufs, lr=0.1, momentum=0.9, potential="2-norm")
    assert torch.equal(bufs[0], g) and p.item() == pytest.approx(0.4)


@pytest.mark.parametrize("name", PATHS)
def test_non_contiguous_and_mixed_dtype_parameters(name):
    base = torch.randn(4, 3, dtype=torch.float64).abs() + 0.1
    w_t = base.t().clone().t().requires_grad_()  # non-contiguous leaf
    w_32 = torch.rand(5, dtype=torch.float32).add(0.1).requires_grad_()
    w_t.grad, w_32.grad = torch.ones_like(w_t), torch.ones_like(w_32)
    before = w_t.detach().clone(), w_32.detach().clone()
    MirrorDescent([w_t, w_32], lr=0.1, momentum=0.9, potential="negative_entropy", **path(name)).step()
    torch.testing.assert_close(w_t.detach(), before[0] * math.exp(-0.1))
    torch.testing.assert_close(w_32.detach(), before[1] * math.exp(-0.1))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("where", ["gradient", "weight"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_raises_naming_the_parameter(name, where, bad):
    params = make_weights(0, dtype=torch.float32)
    opt = MirrorDescent([{"params": params[:1]}, {"params": params[1:]}], lr=0.1, momentum=0.9, potential="3-norm", **path(name))
    gen = torch.Generator().manual_seed(0)
    set_grads(params, gen)
    opt.step()
    set_grads(params, gen)
    target = params[3]  # index 2 of param group 1, shape (2, 3, 3, 3)
    with torch.no_grad():
        (target.grad if where == "gradient" else target)[1, 2, 0, 1] = bad
    weights = [p.detach().clone() for p in params]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in params]
    with pytest.raises(FloatingPointError, match=rf"non-finite {where} \(nan or inf\) in parameter 2 of param group 1 \(shape \(2, 3, 3, 3\)\); the step stopped"):
        opt.step()
    # no nan/inf was written anywhere: the only non-finite value is the one put there
    assert sum(int((~torch.isfinite(p)).sum()) for p in params) == (where == "weight")
    assert all(torch.isfinite(opt.state[p]["momentum_buffer"]).all() for p in params)
    # the step stopped there: the parameter after it is untouched, the one before it was updated
    assert torch.equal(params[4].detach(), weights[4])
    assert torch.equal(opt.state[params[4]]["momentum_buffer"], buffers[4])
    assert not torch.equal(params[2].detach(), weights[2])
    after, buffer = target.detach(), opt.state[target]["momentum_buffer"]
    if name == "fused":  # its finite elements were updated; the bad one kept its weight and buffer
        bad_element = torch.zeros(target.shape, dtype=torch.bool)
        bad_element[1, 2, 0, 1] = True
        assert (after[~bad_element] != weights[3][~bad_element]).all()
        torch.testing.assert_close(after[bad_element], weights[3][bad_element], rtol=0, atol=0, equal_nan=True)
        assert buffer[1, 2, 0, 1] == buffers[3][1, 2, 0, 1] and not torch.equal(buffer, buffers[3])
    elif name == "foreach":  # its chunk was not written
        torch.testing.assert_close(after[1], weights[3][1], rtol=0, atol=0, equal_nan=True)
    else:  # the parameter was not written
        torch.testing.assert_close(after, weights[3], rtol=0, atol=0, equal_nan=True)
        assert torch.equal(buffer, buffers[3])


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("potential, what", [("negative_entropy", r"exp\(-lr sign\(w\) d\)"), ("hypentropy:0.1", r"sinh\(lr d\)")])
def test_overflowing_step_raises(name, potential, what):
    w = torch.full((10,), -0.5, dtype=torch.float32, requires_grad=True)
    w.grad = torch.full((10,), 1e3, dtype=torch.float32)
    what = r"the new weight in torch\.float32 is not finite" if name == "fused" else what
    with pytest.raises(FloatingPointError, match=rf"overflowed in parameter 0 of param group 0 \(shape \(10,\)\): {what}"):
        MirrorDescent([w], lr=1.0, potential=potential, **path(name)).step()
    assert torch.equal(w.detach(), torch.full((10,), -0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", PATHS)
def test_rounding_to_low_precision_that_overflows_raises(name, dtype):
    big = torch.finfo(dtype).max
    w = torch.tensor([big, 1.0], dtype=dtype, requires_grad=True)
    w.grad = torch.tensor([-big, 0.0], dtype=dtype)
    with pytest.raises(FloatingPointError, match=rf"overflowed in parameter 0 .*new weight in {dtype}"):
        MirrorDescent([w], lr=1.0, **path(name)).step()
    assert w[0] == big and w[1] == 1.0


@pytest.mark.parametrize("name", PATHS)
def test_non_finite_next_to_zero_is_caught(name):
    """The fast check multiplies gradients with weights: inf * 0 must still be caught."""
    for grad_value, weight_value, what in [(math.inf, 0.0, "gradient"), (0.0, math.nan, "weight")]:
        w = torch.ones(100, requires_grad=True)
        w.grad = torch.ones(100)
        with torch.no_grad():
            w[37], w.grad[37] = weight_value, grad_value
        with pytest.raises(FloatingPointError, match=f"non-finite {what}"):
            MirrorDescent([w], lr=0.1, **path(name)).step()


@pytest.mark.parametrize("name", PATHS)
def test_large_finite_values_are_not_reported(name):
    """Per-tensor sums overflow here, but no element is non-finite: the step must go ahead."""
    w = torch.full((10,), 3e38, dtype=torch.float32, requires_grad=True)
    w.grad = torch.full((10,), 3e38, dtype=torch.float32)
    MirrorDescent([w], lr=1e-40, potential="2-norm", **path(name)).step()
    assert torch.isfinite(w).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-0.1), "invalid lr"),
        (dict(lr=math.nan), "invalid lr"),
        (dict(lr="0.1"), "invalid lr"),
        (dict(momentum=-0.5), "invalid momentum"),
        (dict(weight_decay=-1.0), "invalid weight_decay"),
        (dict(nesterov=True), "nesterov momentum requires momentum > 0"),
        (dict(nesterov=True, momentum=0.9, dampening=0.1), "dampening = 0"),
        (dict(potential="entropy"), "unknown potential 'entropy'; known:"),
        (dict(potential="1-norm"), "p > 1"),
        (dict(potential="hypentropy:0"), "beta > 0"),
        (dict(fused=True, foreach=True), "cannot both be set"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MirrorDescent(make_weights(0), **kwargs)


def test_bad_param_group_raises():
    opt = MirrorDescent(make_weights(0, shapes=[(2,)]), lr=0.1)
    with pytest.raises(ValueError, match="unknown potential"):
        opt.add_param_group({"params": make_weights(1, shapes=[(2,)]), "potential": "kl"})
    with pytest.raises(ValueError, match="invalid lr"):
        opt.add_param_group({"params": make_weights(1, shapes=[(2,)]), "lr": -1.0})


def test_sparse_and_mismatched_gradients_raise():
    w = torch.ones(3, requires_grad=True)
    w.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        MirrorDescent([w], lr=0.1).step()
    with pytest.raises(ValueError, match="equal shape"):
        mirror_descent([torch.ones(3)], [torch.ones(4)], [], lr=0.1)


def test_fused_needs_the_cpu():
    w = torch.ones(3, device="meta", requires_grad=True)
    w.grad = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="fused=True needs plain tensors on the CPU"):
        MirrorDescent([w], lr=0.1, fused=True).step()


# ---------------------------------------------------------------- float16 / bfloat16 parameters


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("potential", ["3-norm", "negative_entropy", "hypentropy:0.1"])
def test_low_precision_is_computed_in_float32_and_rounded_once(name, dtype, potential):
    """One step on float16/bfloat16 weights is the float32 step of the same values, rounded once;
    the momentum buffer is float32."""
    gen = torch.Generator().manual_seed(21)
    w32 = make_weights(5, torch.float32, shapes=[(300,)])[0].detach().to(dtype).float()  # values exact in dtype
    g32 = (torch.randn(300, generator=gen) * 0.3).to(dtype).float()
    w = w32.to(dtype).requires_grad_()
    w.grad = g32.to(dtype)
    opt = MirrorDescent([w], lr=0.05, momentum=0.9, potential=potential, **path(name))
    opt.step()
    reference = w32.clone().requires_grad_()
    reference.grad = g32
    MirrorDescent([reference], lr=0.05, momentum=0.9, potential=potential, **path("single")).step()
    assert w.dtype == dtype
    expected = reference.detach().to(dtype).float()
    torch.testing.assert_close(w.detach().float(), expected, rtol=torch.finfo(dtype).eps, atol=0)  # at most 1 ulp (a tie)
    assert (w.detach().float() == expected).float().mean() > 0.97
    buffer = opt.state[w]["momentum_buffer"]
    assert buffer.dtype == torch.float32 and torch.equal(buffer, g32)


# ---------------------------------------------------------------- the 2-norm is torch's fused SGD


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", SGD_SETTINGS, ids=lambda k: ",".join(k) or "plain")
def test_2_norm_fused_path_is_torch_fused_sgd(kwargs, dtype):
    """The fused 2-norm step gives what torch.optim.SGD(fused=True) gives (weights and momentum
    buffers), on tensors long enough for the vector loop, its tail and two threads' ranges."""
    shapes = SHAPES + [(40_003,)]
    gen = torch.Generator().manual_seed(3)
    grads = [[torch.randn(s, generator=gen, dtype=dtype) * 0.1 for s in shapes] for _ in range(20)]
    results = []
    for factory in (lambda p: MirrorDescent(p, lr=0.05, potential="2-norm", **path("fused"), **kwargs),
                    lambda p: torch.optim.SGD(p, lr=0.05, fused=True, **kwargs)):
        params = make_weights(0, dtype, shapes)
        opt = factory(params)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        buffers = [opt.state[p]["momentum_buffer"] for p in params] if kwargs.get("momentum") else []
        results.append([p.detach() for p in params] + buffers)
    assert len(results[0]) == len(results[1])
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-15)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tol)


def test_fused_step_bumps_version_counters():
    """The kernel writes through data pointers and bumps the version counters, as in-place ops do
    (autograd then refuses a backward through a graph that saved the old weight)."""
    w = torch.randn(50, requires_grad=True)
    opt = MirrorDescent([w], lr=0.1, momentum=0.9, **path("fused"))
    w.grad = torch.ones_like(w)
    opt.step()
    buf = opt.state[w]["momentum_buffer"]
    versions = w._version, buf._version
    loss = (w * w).sum()  # saves w for backward
    w.grad = torch.ones_like(w)
    opt.step()
    assert w._version == versions[0] + 1 and buf._version == versions[1] + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("where", ["gradient", "weight", "momentum buffer"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_2_norm_fused_non_finite_writes_the_finite_elements(where, bad):
    """A non-finite element in the middle of a parameter: the error names it; every finite element
    of that parameter and the parameters before it were written, the parameters after it were not."""
    params = make_weights(3, dtype=torch.float32, shapes=[(10,), (70,), (33,)])
    opt = MirrorDescent(params, lr=0.1, momentum=0.9, potential="2-norm", **path("fused"))
    gen = torch.Generator().manual_seed(1)
    set_grads(params, gen)
    opt.step()
    set_grads(params, gen)
    with torch.no_grad():
        target = {"gradient": params[1].grad, "weight": params[1], "momentum buffer": opt.state[params[1]]["momentum_buffer"]}[where]
        target[37] = bad
    before = [p.detach().clone() for p in params]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in params]
    expected = [p.detach() - 0.1 * (0.9 * b + p.grad) for p, b in zip(params, buffers)]
    with pytest.raises(FloatingPointError, match=rf"non-finite {where} \(nan or inf\) in parameter 1 of param group 0 \(shape \(70,\)\)"):
        opt.step()
    after = [p.detach() for p in params]
    torch.testing.assert_close(after[0], expected[0], rtol=1e-6, atol=1e-7)
    finite = torch.ones(70, dtype=torch.bool)
    finite[37] = False
    torch.testing.assert_close(after[1][finite], expected[1][finite], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(after[1][37], before[1][37], rtol=0, atol=0, equal_nan=True)
    assert torch.equal(after[2], before[2]) and torch.equal(opt.state[params[2]]["momentum_buffer"], buffers[2])
    buffer = opt.state[params[1]]["momentum_buffer"]
    torch.testing.assert_close(buffer[37], buffers[1][37], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("saved_with, loaded_into", [("fused", "fused"), ("fused", "foreach"), ("foreach", "fused"), ("single", "fused")])
def test_2_norm_state_dict_round_trip_across_paths(tmp_path, saved_with, loaded_into, dtype):
    """Checkpoint after 3 steps on one path, resume on another: bit for bit what switching in place gives."""
    kwargs = dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3, potential="2-norm")
    gen = torch.Generator().manual_seed(5)
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES] for _ in range(8)]

    def apply(params, opt, gs):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()

    straight = make_weights(4, dtype)
    opt = MirrorDescent(straight, **kwargs, **path(saved_with))
    for k, gs in enumerate(grads):
        if k == 3:
            opt.param_groups[0].update(path(loaded_into))
        apply(straight, opt, gs)

    first = make_weights(4, dtype)
    opt1 = MirrorDescent(first, **kwargs, **path(saved_with))
    for gs in grads[:3]:
        apply(first, opt1, gs)
    torch.save({"weights": [p.detach() for p in first], "optimizer": opt1.state_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = [w.clone().requires_grad_() for w in loaded["weights"]]
    opt2 = MirrorDescent(resumed, lr=1.0, potential="3-norm", **path(loaded_into))
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.param_groups[0]["potential"] == "2-norm"
    for gs in grads[3:]:
        apply(resumed, opt2, gs)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    for p, q in zip(straight, resumed):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("potential", ["hypentropy:0.1", "2.5-norm", "4-norm", "1.8-norm"])
def test_fused_fast_paths_match_the_single_tensor_path(potential, dtype):
    """The kernel's shortcuts: hypentropy's Taylor series of sinh and cosh for steps |lr d| < 1/16
    (vectors of small steps, of large steps and of both), and p-norm powers |w|^e by products and a
    square root when e is a multiple of 1/2 (2.5-norm forward, 4-norm forward; 1.8-norm neither)."""
    gen = torch.Generator().manual_seed(8)
    n = 4096
    w0 = (torch.randn(n, generator=gen, dtype=dtype) * 0.5)
    # steps lr |d| up to about 1 (larger ones leave float32 hypentropy ill-conditioned on either path:
    # w cosh c and sqrt(w^2 + beta^2) sinh c nearly cancel)
    g = torch.randn(n, generator=gen, dtype=dtype) * torch.logspace(-8, 0.5, n, dtype=dtype)
    g[: n // 2] = g[: n // 2][torch.randperm(n // 2, generator=gen)]  # small and large steps mixed in the first half
    out = []
    for name in ("fused", "single"):
        w = w0.clone().requires_grad_()
        w.grad = g.clone()
        MirrorDescent([w], lr=0.1, potential=potential, **path(name)).step()
        out.append(w.detach())
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(out[0], out[1], **tol)


def test_fused_float32_exp2_over_its_whole_range():
    """The kernel's own float32 exp2, through negative entropy (w 2^(-lr log2(e) sign(w) d), lr = 1):
    within 3 ulp of 2^x for the float32 exponent x the kernel forms, over the normal range and into
    the subnormal results; subnormal weights get their sign's factor, and zeros stay zero even
    under steps whose factor would overflow."""
    x = torch.cat([torch.linspace(-125.0, 127.0, 20_011), torch.linspace(-148.0, -126.0, 101)])  # log2 factor
    w = torch.cat([torch.ones(20_011), -torch.ones(101)])  # both signs
    w = torch.cat([w, torch.tensor([0.0, -0.0, 1e-40, -1e-40, 0.0])])
    rate = torch.tensor(-1.0 / math.log(2.0), dtype=torch.float32)  # the kernel's -lr log2(e)
    g = torch.cat([x / rate * torch.sign(w[:-5]), torch.tensor([-1e30, 1e30, 1.0, 1.0, 3e38])])
    exponent = (rate * torch.sign(w)) * g  # float32, rounded as the kernel rounds it
    expected = w.double() * torch.exp2(exponent.double())
    w = w.clone().requires_grad_()
    w.grad = g.clone()
    MirrorDescent([w], lr=1.0, potential="negative_entropy", **path("fused")).step()
    got = w.detach().double()
    torch.testing.assert_close(got, expected, rtol=3 * 2**-23, atol=2 * 2**-149)
    assert bool((got[-5:-3] == 0).all()) and bool((got[-1] == 0).all())
    assert torch.equal(torch.signbit(w.detach()[-5:-3]), torch.tensor([False, True]))  # zeros keep their sign
    assert bool(got[-3] > 0) and bool(got[-2] < 0)


def test_fused_float32_log2_over_its_whole_range():
    """The kernel's own float32 log2, through the 2.5-norm with lr = 0: y = |w|^1.5 (a square root
    and a product, exact to rounding) and back as 2^(log2(y) / 1.5), for |w| from 1e-25 (y
    subnormal) to 1e25, against the same y mapped back in float64."""
    magnitude = torch.logspace(-25, 25, 10_007, dtype=torch.float32)
    w = torch.cat([magnitude, -magnitude, torch.zeros(3)]).requires_grad_()
    w.grad = torch.zeros_like(w)
    y = w.detach().abs().sqrt() * w.detach().abs()  # float32, as the kernel computes it
    expected = torch.sign(w.detach()).double() * y.double() ** (2 / 3)
    MirrorDescent([w], lr=0.0, potential="2.5-norm", **path("fused")).step()
    normal = y >= torch.finfo(torch.float32).tiny
    # the error of 2^(e log2 y) grows with |log2 y| (at most about 126): about 1e-5 relative
    torch.testing.assert_close(w.detach().double()[normal], expected[normal], rtol=1e-5, atol=0)
    torch.testing.assert_close(w.detach().double()[~normal], expected[~normal], rtol=1e-3, atol=1e-30)
    assert bool((w.detach()[-3:] == 0).all())


@pytest.mark.parametrize("bad_at", [5, 69_990])  # in the first thread's half, in the second's
def test_fused_non_finite_on_two_threads_stops_at_that_parameter(bad_at):
    """With two threads sharing each parameter, a non-finite gradient found by either thread stops
    the step after that parameter: the one before it was updated, the one after it untouched."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = make_weights(6, torch.float32, shapes=[(70_000,)] * 3)
        opt = MirrorDescent(params, lr=0.1, momentum=0.9, potential="3-norm", **path("fused"))
        gen = torch.Generator().manual_seed(2)
        set_grads(params, gen)
        params[1].grad[bad_at] = math.nan
        before = [p.detach().clone() for p in params]
        reference = before[0].clone().requires_grad_()  # parameter 0's step on the single-tensor path
        reference.grad = params[0].grad.clone()
        MirrorDescent([reference], lr=0.1, momentum=0.9, potential="3-norm", **path("single")).step()
        with pytest.raises(FloatingPointError, match=r"non-finite gradient \(nan or inf\) in parameter 1 of param group 0"):
            opt.step()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(params[0].detach(), reference.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(params[2].detach(), before[2])
    changed = params[1].detach() != before[1]
    assert not bool(changed[bad_at]) and float(changed.float().mean()) > 0.99
