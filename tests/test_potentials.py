"""Tests for synaptic_geometry.potentials: maths (property tests), numpy/torch parity, parsing, errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from synaptic_geometry import (
    Hypentropy,
    NegativeEntropy,
    PNorm,
    Potential,
    get_potential,
    require_finite,
)

NAMES = ["2-norm", "3-norm", "1.5-norm", "1.1-norm", "2.5-norm", "negative_entropy", "hypentropy:0.1", "hypentropy:2"]

FEW = settings(max_examples=30, deadline=None)  # per test, so other modules' settings are untouched


def signed_magnitudes(lo=1e-3, hi=1e2, size=(1, 20)):
    """Non-zero float64 arrays with |w| in [lo, hi] and random signs."""
    mag = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    sign = st.sampled_from([-1.0, 1.0])
    n = st.integers(*size)
    return n.flatmap(lambda k: st.tuples(arrays(np.float64, k, elements=mag), arrays(np.float64, k, elements=sign))).map(
        lambda ms: ms[0] * ms[1]
    )


def sign_of(w):
    return np.sign(w) if isinstance(w, np.ndarray) else torch.sign(w)


# ---------------------------------------------------------------- property tests


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(w=signed_magnitudes())
def test_inv_grad_inverts_grad(name, w):
    pot = get_potential(name)
    back = pot.inv_grad(pot.grad(w), sign=np.sign(w))
    np.testing.assert_allclose(back, w, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(y=arrays(np.float64, st.integers(1, 20), elements=st.floats(-5, 5)))
def test_grad_inverts_inv_grad(name, y):
    pot = get_potential(name)
    if isinstance(pot, NegativeEntropy):  # orthant chosen by the sign argument
        sign = np.where(np.arange(y.size) % 2 == 0, 1.0, -1.0)
        np.testing.assert_allclose(pot.grad(pot.inv_grad(y, sign=sign)), y, rtol=1e-9, atol=1e-12)
        return
    w = pot.inv_grad(y)
    keep = w != 0  # tiny y can underflow to w = 0 for p < 2
    np.testing.assert_allclose(pot.grad(w)[keep], y[keep], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(a=signed_magnitudes(), data=st.data())
def test_bregman_nonnegative_and_zero_only_at_equality(name, a, data):
    pot = get_potential(name)
    factors = data.draw(arrays(np.float64, a.size, elements=st.floats(0.05, 20)))
    b = a * factors  # same orthant as a, so negative entropy is defined too
    assert pot.bregman(a, b) >= 0
    assert pot.bregman(a, a) == 0
    if np.any(np.abs(factors - 1) > 1e-3):
        assert pot.bregman(a, b) > 0


@pytest.mark.parametrize("name", [n for n in NAMES if n != "negative_entropy"])
@FEW
@given(a=arrays(np.float64, 8, elements=st.floats(-50, 50)), b=arrays(np.float64, 8, elements=st.floats(-50, 50)))
def test_bregman_nonnegative_across_zero(name, a, b):
    pot = get_potential(name)
    assert pot.bregman(a, b) >= 0


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(w=signed_magnitudes(lo=0.05, hi=5.0))
def test_grad_is_numerical_gradient_of_value(name, w):
    pot = get_potential(name)
    h = 1e-6
    numeric = np.array([(pot.value(w + h * e) - pot.value(w - h * e)) / (2 * h) for e in np.eye(w.size)])
    np.testing.assert_allclose(pot.grad(w), numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(w=signed_magnitudes(lo=0.05, hi=5.0))
def test_hess_diag_is_derivative_of_grad(name, w):
    pot = get_potential(name)
    h = 1e-6
    numeric = (pot.grad(w + h) - pot.grad(w - h)) / (2 * h)  # separable: elementwise derivative
    np.testing.assert_allclose(pot.hess_diag(w), numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@FEW
@given(a=signed_magnitudes(size=(3, 12)), data=st.data())
def test_torch_and_numpy_agree(name, a, data):
    pot = get_potential(name)
    b = a * data.draw(arrays(np.float64, a.size, elements=st.floats(0.1, 10)))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for method in ("grad", "hess_diag"):
        out = getattr(pot, method)(ta)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), getattr(pot, method)(a), rtol=1e-12, atol=1e-300)
    y = pot.grad(a)
    np.testing.assert_allclose(pot.inv_grad(torch.from_numpy(y), sign=torch.sign(ta)).numpy(), pot.inv_grad(y, sign=np.sign(a)), rtol=1e-12)
    assert isinstance(pot.value(ta), torch.Tensor)
    assert math.isclose(float(pot.value(ta)), pot.value(a), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(float(pot.bregman(ta, tb)), pot.bregman(a, b), rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------- values


def test_known_values():
    assert get_potential("2-norm").value(np.array([3.0, -4.0])) == pytest.approx(12.5)
    np.testing.assert_allclose(get_potential("3-norm").grad(np.array([2.0, -3.0])), [4.0, -9.0])
    np.testing.assert_allclose(get_potential("3-norm").inv_grad(np.array([4.0, -9.0])), [2.0, -3.0])
    np.testing.assert_allclose(get_potential("1.5-norm").grad(np.array([4.0, -9.0])), [2.0, -3.0])
    ne = get_potential("negative_entropy")
    np.testing.assert_allclose(ne.grad(np.array([math.exp(-1), -1.0])), [0.0, -1.0], atol=1e-15)
    np.testing.assert_allclose(ne.hess_diag(np.array([0.5, -4.0])), [2.0, 0.25])
    assert ne.value(np.array([0.0, 1.0, math.e])) == pytest.approx(math.e)  # 0 log 0 = 0
    hyp = get_potential("hypentropy:0.5")
    assert hyp.value(np.zeros(3)) == pytest.approx(-1.5)
    np.testing.assert_allclose(hyp.grad(np.array([0.0, 0.5 * math.sinh(1.0)])), [0.0, 1.0])
    np.testing.assert_allclose(hyp.hess_diag(np.array([0.0])), [2.0])
    np.testing.assert_allclose(get_potential("2-norm").hess_diag(np.array([0.0, 7.0])), [1.0, 1.0])
    assert get_potential("1.5-norm").hess_diag(np.array([0.0]))[0] == math.inf  # p < 2: infinite curvature at 0


def test_bregman_values():
    a, b = np.array([1.0, -2.0]), np.array([3.0, 0.5])
    assert get_potential("2-norm").bregman(a, b) == pytest.approx(0.5 * np.sum((a - b) ** 2))
    p, q = np.array([0.2, 0.3]), np.array([0.4, 0.1])  # generalised KL divergence
    kl = np.sum(p * np.log(p / q) - p + q)
    assert get_potential("negative_entropy").bregman(p, q) == pytest.approx(kl)
    assert get_potential("negative_entropy").bregman(np.array([0.0]), np.array([0.3])) == pytest.approx(0.3)


def test_types_and_dtypes_are_preserved():
    pot = get_potential("3-norm")
    w32 = np.array([1.0, -2.0], dtype=np.float32)
    assert pot.grad(w32).dtype == np.float32
    assert isinstance(pot.grad([1, 2]), np.ndarray) and pot.grad([1, 2]).dtype == np.float64
    t = torch.tensor([1.0, -2.0], dtype=torch.float32)
    assert pot.grad(t).dtype == torch.float32 and isinstance(pot.grad(t), torch.Tensor)
    assert isinstance(pot.value(w32), float)
    grad_input = np.array([1.0, 2.0])
    assert get_potential("2-norm").grad(grad_input) is not grad_input


def test_attributes():
    assert get_potential("negative_entropy").keeps_sign
    assert not any(get_potential(n).keeps_sign for n in NAMES if n != "negative_entropy")
    assert get_potential("2.5-norm").p == 2.5 and get_potential("hypentropy:0.1").beta == 0.1


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "spec, name, cls",
    [
        ("2-norm", "2-norm", PNorm),
        ("3.0-norm", "3-norm", PNorm),
        (" 1.5-norm ", "1.5-norm", PNorm),
        ("1.0001-norm", "1.0001-norm", PNorm),
        ("negative_entropy", "negative_entropy", NegativeEntropy),
        ("hypentropy:0.1", "hypentropy:0.1", Hypentropy),
        ("hypentropy:1e-5", "hypentropy:1e-05", Hypentropy),
        ("hypentropy:2", "hypentropy:2", Hypentropy),
    ],
)
def test_parsing_and_round_trip(spec, name, cls):
    pot = get_potential(spec)
    assert isinstance(pot, cls) and pot.name == name
    assert get_potential(pot.name) == pot and hash(get_potential(pot.name)) == hash(pot)
    assert get_potential(pot) is pot
    assert eval(repr(pot), {"get_potential": get_potential}) == pot


def test_equality():
    assert PNorm(3) == get_potential("3-norm") != get_potential("2-norm")
    assert Hypentropy(0.1) != Hypentropy(0.2)
    assert NegativeEntropy() != "negative_entropy"
    assert len({PNorm(2), PNorm(2.0), NegativeEntropy()}) == 2


@pytest.mark.parametrize(
    "spec, message",
    [
        ("entropy", "unknown potential 'entropy'; known: '<p>-norm'"),
        ("2norm", "unknown potential"),
        ("L2", "unknown potential"),
        ("x-norm", "'x' is not a number"),
        ("1-norm", "p > 1"),
        ("0.5-norm", "p > 1"),
        ("-2-norm", "p > 1"),
        ("inf-norm", "finite p > 1"),
        ("nan-norm", "finite p > 1"),
        ("hypentropy:0", "beta > 0"),
        ("hypentropy:-0.1", "beta > 0"),
        ("hypentropy:inf", "beta > 0"),
        ("hypentropy:abc", "'abc' is not a number"),
        ("hypentropy", "unknown potential"),
        ("", "unknown potential"),
    ],
)
def test_parsing_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("'", "'")) as info:
        get_potential(spec)
    if "unknown" in message:
        for form in ("negative_entropy", "hypentropy:<beta>", "<p>-norm"):
            assert form in str(info.value)


def test_constructor_and_type_errors():
    with pytest.raises(ValueError, match="p > 1"):
        PNorm(1.0)
    with pytest.raises(ValueError, match="beta > 0"):
        Hypentropy(0.0)
    with pytest.raises(TypeError, match="name or a Potential"):
        get_potential(2)
    with pytest.raises(TypeError, match="floating-point"):
        get_potential("2-norm").grad(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="same kind"):
        get_potential("2-norm").bregman(np.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="equal shape"):
        get_potential("2-norm").bregman(np.ones(2), np.ones(3))
    with pytest.raises(TypeError, match="abstract"):
        Potential()


# ---------------------------------------------------------------- domain and non-finite input


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_non_finite_input_raises(name, bad, kind):
    pot = get_potential(name)
    w = np.array([0.5, bad, 2.0])
    if kind == "torch":
        w = torch.from_numpy(w)
    for method in (pot.value, pot.grad, pot.inv_grad, pot.hess_diag, pot.check_domain):
        with pytest.raises(ValueError, match="non-finite"):
            method(w)
    ok = np.ones(3) if kind == "numpy" else torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="non-finite"):
        pot.bregman(w, ok)
    with pytest.raises(ValueError, match="non-finite"):
        pot.bregman(ok, w)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_require_finite_counts_and_names_the_bad_elements(kind):
    x = np.array([1.0, math.nan, 2.0, math.inf, -math.inf] + [math.nan] * 8 + [0.0])
    x = torch.from_numpy(x) if kind == "torch" else x
    require_finite(x[[0, 2, -1]], "values")  # finite: no error
    with pytest.raises(ValueError, match=r"^values contain 11 non-finite value\(s\) \(nan or inf\); all values"):
        require_finite(x, "values")
    labels = [f"row {i}" for i in range(14)]
    with pytest.raises(ValueError, match=r"contain 11 non-finite value\(s\) \(nan or inf\) at row 1, row 3, row 4, "
                                         r"row 5, row 6, row 7, row 8, row 9, \.\.\.; all values must be finite"):
        require_finite(x, "values", labels)

    class Custom(ValueError):
        pass

    with pytest.raises(Custom, match="at row 1;"):
        require_finite(x[:3], "values", labels, Custom)


def test_check_domain_names_what():
    with pytest.raises(ValueError, match="gradients contain 1 non-finite"):
        get_potential("2-norm").check_domain(np.array([1.0, math.nan]), what="gradients")
    get_potential("2-norm").check_domain(np.array([0.0, -1.0]))  # in the domain: no error


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_negative_entropy_zero_is_outside_the_domain(kind):
    ne = get_potential("negative_entropy")
    w = np.array([0.3, 0.0, -0.2])
    if kind == "torch":
        w = torch.from_numpy(w)
    for method in (ne.grad, ne.hess_diag, ne.check_domain):
        with pytest.raises(ValueError, match=r"exact zero.*-inf.*never move"):
            method(w)
    with pytest.raises(ValueError, match="exact zero"):
        ne.bregman(abs(w) + 1.0, w)
    assert float(ne.value(w)) == pytest.approx(0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    for other in ("2-norm", "3-norm", "1.5-norm", "hypentropy:0.1"):
        get_potential(other).check_domain(w)  # zeros are fine elsewhere


def test_negative_entropy_orthants():
    ne = get_potential("negative_entropy")
    y = np.array([-1.0, 0.5])
    np.testing.assert_allclose(ne.inv_grad(y), np.exp(y - 1))  # default: positive orthant
    np.testing.assert_allclose(ne.inv_grad(y, sign=np.array([-1.0, -1.0])), -np.exp(-y - 1))
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        ne.inv_grad(y, sign=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="same orthant"):
        ne.bregman(np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    # the dual map is not injective across orthants: w and a negative w' share a coordinate
    w, w_neg = 0.1, -math.exp(-math.log(0.1) - 2)
    assert ne.grad(np.array([w]))[0] == pytest.approx(ne.grad(np.array([w_neg]))[0])


@pytest.mark.parametrize("name, y", [("negative_entropy", 1000.0), ("hypentropy:0.1", 800.0), ("1.1-norm", 1e35)])
def test_inv_grad_overflow_raises(name, y):
    with pytest.raises(ValueError, match="overflowed"):
        get_potential(name).inv_grad(np.array([0.0, y]))
