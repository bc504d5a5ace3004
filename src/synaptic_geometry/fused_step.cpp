// The fused CPU path of synaptic_geometry.optim.MirrorDescent: one pass over each parameter.
//
// For every element the kernel reads the weight, the gradient and the momentum buffer once,
// computes SGD's direction, the step in the dual space and the map back in registers, and writes
// the weight and the buffer once. An element is written only if everything it produced is finite:
// s = (dd - dd) + (w_new - w_new) is 0 when the direction dd and the new weight are finite and nan
// otherwise (a non-finite gradient, weight or buffer makes dd or w_new non-finite, and so does an
// overflow). Tensors are processed in order; the first tensor with a non-finite element ends the
// step and its index is returned (-1 when every element was finite). Built on first use by
// torch.utils.cpp_extension as a Python module with one function, step (see optim._fused_kernel);
// the potentials are numbered as in optim.py.
//
// Speed: the momentum variant (none, first step, later steps; with or without nesterov) is a
// template parameter, so the inner loop has no branches but the finiteness test; maximize and
// weight decay are arithmetic (d = sign * g + weight_decay * w), not branches. The loop reads and
// writes through local restrict pointers, so the compiler keeps them in registers.

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

using at::vec::Vectorized;

enum Kind : int64_t { TWO_NORM = 0, THREE_NORM, ONE_POINT_FIVE_NORM, P_NORM, NEGATIVE_ENTROPY, HYPENTROPY };
// The momentum buffer's part in a step: none (momentum 0), created from this step's direction
// (the first step), or carried over; nesterov adds momentum times the new buffer to the direction.
enum Mode : int { PLAIN = 0, FRESH, FRESH_NESTEROV, CARRY, CARRY_NESTEROV };

constexpr int64_t GRAIN = 16384;    // at least this many elements per thread
constexpr int64_t CACHE_LINE = 64;  // bytes; threads' ranges start on cache lines

// Elementwise functions with one spelling for scalars and vectors.
template <typename S> S v_abs(S x) { return std::abs(x); }
template <typename S> Vectorized<S> v_abs(Vectorized<S> x) { return x.abs(); }
template <typename S> S v_sqrt(S x) { return std::sqrt(x); }
template <typename S> Vectorized<S> v_sqrt(Vectorized<S> x) { return x.sqrt(); }
template <typename S> S v_exp2(S x) { return std::exp2(x); }
template <typename S> Vectorized<S> v_exp2(Vectorized<S> x) { return x.exp2(); }
template <typename S> S v_log2(S x) { return std::log2(x); }
template <typename S> Vectorized<S> v_log2(Vectorized<S> x) { return x.log2(); }
template <typename S> S v_expm1(S x) { return std::expm1(x); }
template <typename S> Vectorized<S> v_expm1(Vectorized<S> x) { return x.expm1(); }
template <typename S> S v_copysign(S x, S y) { return std::copysign(x, y); }
template <typename S> Vectorized<S> v_copysign(Vectorized<S> x, Vectorized<S> y) { return x.copysign(y); }
template <typename S> S v_fmadd(S a, S b, S c) { return a * b + c; }
template <typename S> Vectorized<S> v_fmadd(Vectorized<S> a, Vectorized<S> b, Vectorized<S> c) {
  return at::vec::fmadd(a, b, c);
}
template <typename S> S v_sign(S x) { return static_cast<S>((x > 0) - (x < 0)); }
template <typename S> Vectorized<S> v_sign(Vectorized<S> x) {
  const Vectorized<S> zero(0), one(1);
  return ((x > zero) & one) - ((x < zero) & one);
}
// a where s == 0 (finite), b elsewhere
template <typename S> Vectorized<S> where_finite(Vectorized<S> s, Vectorized<S> a, Vectorized<S> b) {
  return Vectorized<S>::blendv(b, a, s == Vectorized<S>(0));
}

// Hyperparameters of one step in the compute type S (float32, or float64 for float64 weights).
template <typename S> struct Hyper {
  S lr, momentum, one_minus_dampening, weight_decay;
  S grad_sign;                   // -1 if maximize, else 1
  S exponent, inverse_exponent;  // p-norms: p - 1 and 1 / (p - 1)
  S entropy_rate;                // negative entropy: -lr * log2(e)
  S beta_squared;                // hypentropy
};

// w_new = inv_grad(grad(w) - lr * dd), elementwise, for the potential K.
template <int64_t K, typename V, typename S> V dual_step(V w, V dd, const Hyper<S>& h) {
  const V lr(h.lr);
  if constexpr (K == TWO_NORM) {
    return w - lr * dd;
  } else if constexpr (K == THREE_NORM) {  // grad = sign(w) w^2, inverse sign(y) sqrt|y|
    V y = w * v_abs(w) - lr * dd;
    return v_copysign(v_sqrt(v_abs(y)), y);
  } else if constexpr (K == ONE_POINT_FIVE_NORM) {  // grad = sign(w) sqrt|w|, inverse y |y|
    V y = v_copysign(v_sqrt(v_abs(w)), w) - lr * dd;
    return y * v_abs(y);
  } else if constexpr (K == P_NORM) {  // |x|^e = 2^(e log2|x|), and 0 maps to 0
    V y = v_copysign(v_exp2(V(h.exponent) * v_log2(v_abs(w))), w) - lr * dd;
    return v_copysign(v_exp2(V(h.inverse_exponent) * v_log2(v_abs(y))), y);
  } else if constexpr (K == NEGATIVE_ENTROPY) {  // w exp(-lr sign(w) dd)
    return w * v_exp2(V(h.entropy_rate) * v_sign(w) * dd);
  } else {  // hypentropy: beta sinh(arcsinh(w / beta) - c) = w cosh(c) - sqrt(w^2 + beta^2) sinh(c)
    static_assert(K == HYPENTROPY, "unknown potential");
    // cosh and sinh from one expm1: with m = e^c - 1 and r = e^-c, sinh c = m (1 + r) / 2 (no
    // cancellation for small c) and cosh c = (e^c + r) / 2
    const V one(1), half(0.5);
    V m = v_expm1(lr * dd);
    V r = one / (m + one);
    return w * ((m + one + r) * half) - v_sqrt(w * w + V(h.beta_squared)) * (m * (one + r) * half);
  }
}

// SGD's direction, the momentum buffer and the new weight for one element or one vector.
// Returns s: 0 where everything is finite, nan elsewhere.
template <int64_t K, int M, typename V, typename S>
V update(V w, V g, V b, const Hyper<S>& h, V& w_new, V& b_new) {
  // maximize and weight decay as arithmetic: exact for weight_decay = 0 and finite w (0 * w = 0)
  V d = v_fmadd(g, V(h.grad_sign), V(h.weight_decay) * w);
  V dd = d;
  if constexpr (M != PLAIN) {
    if constexpr (M == FRESH || M == FRESH_NESTEROV) {
      b_new = d;
    } else {
      b_new = v_fmadd(V(h.momentum), b, V(h.one_minus_dampening) * d);
    }
    dd = (M == FRESH_NESTEROV || M == CARRY_NESTEROV) ? v_fmadd(V(h.momentum), b_new, d) : b_new;
  }
  w_new = dual_step<K, V, S>(w, dd, h);
  if constexpr (K == TWO_NORM) {
    // w_new = w - lr dd is finite only if w and dd are, and dd only if d and b_new are
    // (0 * inf = nan covers lr = 0 and the other zero factors)
    return w_new - w_new;
  } else {  // other maps can send a non-finite dd to a finite weight (negative entropy: exp2(-inf) = 0)
    return (dd - dd) + (w_new - w_new);
  }
}

// One tensor: weights and gradients of type P, buffer and arithmetic of type S. True if all finite.
template <int64_t K, int M, typename P, typename S>
bool step_tensor(P* w_data, const P* g_data, S* b_data, int64_t n, const Hyper<S>& hyper) {
  constexpr bool has_buffer = M != PLAIN;
  constexpr bool reads_buffer = M == CARRY || M == CARRY_NESTEROV;
  std::atomic<bool> finite{true};
  constexpr int64_t unit = CACHE_LINE / sizeof(P);  // elements per cache line
  at::parallel_for(0, (n + unit - 1) / unit, GRAIN / unit, [&](int64_t first_unit, int64_t end_unit) {
    const Hyper<S> h = hyper;  // a local copy: the stores below cannot alias it, so it stays in registers
    P* __restrict__ w = w_data;
    const P* __restrict__ g = g_data;
    S* __restrict__ b = b_data;
    const int64_t begin = first_unit * unit, end = std::min(end_unit * unit, n);
    int64_t i = begin;
    bool all_finite = true;
    if constexpr (std::is_same_v<P, S>) {  // float32 and float64: vectorized
      using V = Vectorized<S>;
      constexpr int all_lanes = (1 << V::size()) - 1;
      for (; i + V::size() <= end; i += V::size()) {
        V wv = V::loadu(w + i), gv = V::loadu(g + i);
        V bv = reads_buffer ? V::loadu(b + i) : V(0);
        V w_new, b_new;
        V s = update<K, M, V, S>(wv, gv, bv, h, w_new, b_new);
        if (s.zero_mask() == all_lanes) {  // every lane finite: the common case
          w_new.store(w + i);
          if constexpr (has_buffer) b_new.store(b + i);
        } else {  // write the finite lanes only
          where_finite(s, w_new, wv).store(w + i);
          if constexpr (has_buffer) where_finite(s, b_new, bv).store(b + i);
          all_finite = false;
        }
      }
    }
    for (; i < end; ++i) {  // the tail, and float16/bfloat16 weights (computed in S = float32)
      S wv = static_cast<S>(w[i]);
      S bv = reads_buffer ? b[i] : S(0);
      S w_new, b_new = 0;
      S s = update<K, M, S, S>(wv, static_cast<S>(g[i]), bv, h, w_new, b_new);
      P w_out = static_cast<P>(w_new);  // rounding to float16 may overflow
      if (s == 0 && static_cast<S>(w_out) - static_cast<S>(w_out) == 0) {
        w[i] = w_out;
        if constexpr (has_buffer) b[i] = b_new;
      } else {
        all_finite = false;
      }
    }
    if (!all_finite) finite.store(false);
  });
  return finite.load();
}

template <int64_t K, typename P, typename S>
bool step_typed(const at::Tensor& w, const at::Tensor& g, const at::Tensor* b, int mode, const Hyper<S>& h) {
  P* wp = w.data_ptr<P>();
  const P* gp = g.data_ptr<P>();
  S* bp = b ? b->data_ptr<S>() : nullptr;
  const int64_t n = w.numel();
  switch (mode) {
    case PLAIN: return step_tensor<K, PLAIN, P, S>(wp, gp, bp, n, h);
    case FRESH: return step_tensor<K, FRESH, P, S>(wp, gp, bp, n, h);
    case FRESH_NESTEROV: return step_tensor<K, FRESH_NESTEROV, P, S>(wp, gp, bp, n, h);
    case CARRY: return step_tensor<K, CARRY, P, S>(wp, gp, bp, n, h);
    default: return step_tensor<K, CARRY_NESTEROV, P, S>(wp, gp, bp, n, h);
  }
}

template <int64_t K>
bool step_one(const at::Tensor& w, const at::Tensor& g, const at::Tensor* b, int mode, const Hyper<double>& hd) {
  const Hyper<float> hf{static_cast<float>(hd.lr), static_cast<float>(hd.momentum),
                        static_cast<float>(hd.one_minus_dampening), static_cast<float>(hd.weight_decay),
                        static_cast<float>(hd.grad_sign), static_cast<float>(hd.exponent),
                        static_cast<float>(hd.inverse_exponent), static_cast<float>(hd.entropy_rate),
                        static_cast<float>(hd.beta_squared)};
  switch (w.scalar_type()) {
    case at::kFloat: return step_typed<K, float, float>(w, g, b, mode, hf);
    case at::kDouble: return step_typed<K, double, double>(w, g, b, mode, hd);
    case at::kHalf: return step_typed<K, at::Half, float>(w, g, b, mode, hf);
    case at::kBFloat16: return step_typed<K, at::BFloat16, float>(w, g, b, mode, hf);
    default: TORCH_CHECK(false, "fused mirror descent: unsupported dtype ", w.scalar_type());
  }
}

// The step over all tensors (in order); returns the index of the first tensor with a non-finite
// element, or -1. Bumps the version counter of every tensor it wrote (as an in-place op would).
int64_t step(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& grads,
             const std::vector<at::Tensor>& buffers, const std::vector<int64_t>& fresh, int64_t kind, double lr,
             double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
             double potential_parameter) {
  const bool has_buffer = !buffers.empty();
  TORCH_CHECK(grads.size() == weights.size() && (!has_buffer || (buffers.size() == weights.size() &&
              fresh.size() == weights.size())), "fused mirror descent: lists of unequal lengths");
  TORCH_CHECK(kind >= TWO_NORM && kind <= HYPENTROPY, "fused mirror descent: unknown potential kind ", kind);
  const double exponent = kind == P_NORM ? potential_parameter - 1 : 1;
  const Hyper<double> h{lr, momentum, 1 - dampening, weight_decay, maximize ? -1.0 : 1.0,
                        exponent, 1 / exponent, -lr / std::log(2.0),
                        kind == HYPENTROPY ? potential_parameter * potential_parameter : 0};
  for (size_t t = 0; t < weights.size(); ++t) {
    const at::Tensor& w = weights[t];
    const at::Tensor& g = grads[t];
    const at::Tensor* b = has_buffer ? &buffers[t] : nullptr;
    const at::ScalarType state_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(w.device().is_cpu() && g.device().is_cpu() && w.is_contiguous() && g.is_contiguous() &&
                g.scalar_type() == w.scalar_type() && g.numel() == w.numel() &&
                (!b || (b->device().is_cpu() && b->is_contiguous() && b->numel() == w.numel() &&
                        b->scalar_type() == state_type)),
                "fused mirror descent: tensor ", t, " is not a contiguous CPU tensor or does not match its "
                "gradient/buffer");
    const int mode = !has_buffer ? PLAIN : fresh[t] != 0 ? (nesterov ? FRESH_NESTEROV : FRESH)
                                                         : (nesterov ? CARRY_NESTEROV : CARRY);
    bool finite;
    switch (kind) {
      case TWO_NORM: finite = step_one<TWO_NORM>(w, g, b, mode, h); break;
      case THREE_NORM: finite = step_one<THREE_NORM>(w, g, b, mode, h); break;
      case ONE_POINT_FIVE_NORM: finite = step_one<ONE_POINT_FIVE_NORM>(w, g, b, mode, h); break;
      case P_NORM: finite = step_one<P_NORM>(w, g, b, mode, h); break;
      case NEGATIVE_ENTROPY: finite = step_one<NEGATIVE_ENTROPY>(w, g, b, mode, h); break;
      default: finite = step_one<HYPENTROPY>(w, g, b, mode, h); break;
    }
    w.unsafeGetTensorImpl()->bump_version();
    if (b) b->unsafeGetTensorImpl()->bump_version();
    if (!finite) return static_cast<int64_t>(t);
  }
  return -1;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("step", &step, "One fused mirror descent step over lists of tensors (see optim.py)",
        pybind11::arg("weights"), pybind11::arg("grads"), pybind11::arg("buffers"), pybind11::arg("fresh"),
        pybind11::arg("kind"), pybind11::arg("lr"), pybind11::arg("momentum"), pybind11::arg("dampening"),
        pybind11::arg("weight_decay"), pybind11::arg("nesterov"), pybind11::arg("maximize"),
        pybind11::arg("potential_parameter"), pybind11::call_guard<pybind11::gil_scoped_release>());
}
