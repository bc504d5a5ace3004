// The fused CPU path of synaptic_geometry.optim.MirrorDescent: one pass over each parameter.
//
// For every element the kernel reads the weight, the gradient and the momentum buffer once,
// computes SGD's direction, the step in the dual space and the map back in registers, and writes
// the weight and the buffer once. An element is written only if everything it produced is finite:
// s = (dd - dd) + (w_new - w_new) is 0 when the direction dd and the new weight are finite and nan
// otherwise (a non-finite gradient, weight or buffer makes dd or w_new non-finite, and so does an
// overflow). Tensors are processed in order; the first tensor with a non-finite element ends the
// step and its index is returned (-1 when every element was finite). Built on first use by
// torch.utils.cpp_extension and registered as torch.ops.synaptic_geometry.mirror_descent_step
// (see optim._fused_kernel); the potentials are numbered as in optim.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

namespace {

using at::vec::Vectorized;

enum Kind : int64_t { TWO_NORM = 0, THREE_NORM, ONE_POINT_FIVE_NORM, P_NORM, NEGATIVE_ENTROPY, HYPENTROPY };

constexpr int64_t GRAIN = 32768;  // at least this many elements per thread (ATen's grain size)
constexpr int64_t CACHE_LINE = 64;  // bytes; threads' ranges start on cache lines (aligned vector loads)

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
template <typename S> S v_neg(S x) { return -x; }
template <typename S> Vectorized<S> v_neg(Vectorized<S> x) { return x.neg(); }
template <typename S> S v_copysign(S x, S y) { return std::copysign(x, y); }
template <typename S> Vectorized<S> v_copysign(Vectorized<S> x, Vectorized<S> y) { return x.copysign(y); }
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
  bool has_buffer, nesterov, maximize;
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
template <int64_t K, typename V, typename S>
V update(V w, V g, V b, bool fresh, const Hyper<S>& h, V& w_new, V& b_new) {
  V d = h.maximize ? v_neg(g) : g;
  if (h.weight_decay != 0) d = d + V(h.weight_decay) * w;
  V dd = d;
  if (h.has_buffer) {
    b_new = fresh ? d : V(h.momentum) * b + V(h.one_minus_dampening) * d;
    dd = h.nesterov ? d + V(h.momentum) * b_new : b_new;
  }
  w_new = dual_step<K, V, S>(w, dd, h);
  return (dd - dd) + (w_new - w_new);
}

// One tensor: weights and gradients of type P, buffer and arithmetic of type S. True if all finite.
template <int64_t K, typename P, typename S>
bool step_tensor(P* w, const P* g, S* b, bool fresh, int64_t n, const Hyper<S>& hyper) {
  std::atomic<bool> finite{true};
  constexpr int64_t unit = CACHE_LINE / sizeof(P);  // elements per cache line
  at::parallel_for(0, (n + unit - 1) / unit, GRAIN / unit, [&](int64_t first_unit, int64_t end_unit) {
    const Hyper<S> h = hyper;  // a local copy: the stores below cannot alias it, so it stays in registers
    const int64_t begin = first_unit * unit, end = std::min(end_unit * unit, n);
    int64_t i = begin;
    bool all_finite = true;
    if constexpr (std::is_same_v<P, S>) {  // float32 and float64: vectorized
      using V = Vectorized<S>;
      constexpr int all_lanes = (1 << V::size()) - 1;
      for (; i + V::size() <= end; i += V::size()) {
        V wv = V::loadu(w + i), gv = V::loadu(g + i);
        V bv = h.has_buffer ? V::loadu(b + i) : V(0);
        V w_new, b_new;
        V s = update<K, V, S>(wv, gv, bv, fresh, h, w_new, b_new);
        if (s.zero_mask() == all_lanes) {  // every lane finite: the common case
          w_new.store(w + i);
          if (h.has_buffer) b_new.store(b + i);
        } else {  // write the finite lanes only
          where_finite(s, w_new, wv).store(w + i);
          if (h.has_buffer) where_finite(s, b_new, bv).store(b + i);
          all_finite = false;
        }
      }
    }
    for (; i < end; ++i) {  // the tail, and float16/bfloat16 weights (computed in S = float32)
      S wv = static_cast<S>(w[i]);
      S bv = h.has_buffer ? b[i] : S(0);
      S w_new, b_new = 0;
      S s = update<K, S, S>(wv, static_cast<S>(g[i]), bv, fresh, h, w_new, b_new);
      P w_out = static_cast<P>(w_new);  // rounding to float16 may overflow
      if (s == 0 && static_cast<S>(w_out) - static_cast<S>(w_out) == 0) {
        w[i] = w_out;
        if (h.has_buffer) b[i] = b_new;
      } else {
        all_finite = false;
      }
    }
    if (!all_finite) finite.store(false);
  });
  return finite.load();
}

template <int64_t K, typename P, typename S>
bool step_typed(const at::Tensor& w, const at::Tensor& g, const at::Tensor* b, bool fresh, const Hyper<S>& h) {
  return step_tensor<K, P, S>(w.data_ptr<P>(), g.data_ptr<P>(), b ? b->data_ptr<S>() : nullptr, fresh, w.numel(), h);
}

template <int64_t K>
bool step_one(const at::Tensor& w, const at::Tensor& g, const at::Tensor* b, bool fresh, const Hyper<double>& hd) {
  Hyper<float> hf{static_cast<float>(hd.lr), static_cast<float>(hd.momentum),
                  static_cast<float>(hd.one_minus_dampening), static_cast<float>(hd.weight_decay),
                  hd.has_buffer, hd.nesterov, hd.maximize,
                  static_cast<float>(hd.exponent), static_cast<float>(hd.inverse_exponent),
                  static_cast<float>(hd.entropy_rate), static_cast<float>(hd.beta_squared)};
  switch (w.scalar_type()) {
    case at::kFloat: return step_typed<K, float, float>(w, g, b, fresh, hf);
    case at::kDouble: return step_typed<K, double, double>(w, g, b, fresh, hd);
    case at::kHalf: return step_typed<K, at::Half, float>(w, g, b, fresh, hf);
    case at::kBFloat16: return step_typed<K, at::BFloat16, float>(w, g, b, fresh, hf);
    default: TORCH_CHECK(false, "fused mirror descent: unsupported dtype ", w.scalar_type());
  }
}

int64_t mirror_descent_step(at::TensorList weights, at::TensorList grads, at::TensorList buffers,
                            at::IntArrayRef fresh,
                            int64_t kind, double lr, double momentum, double dampening, double weight_decay,
                            bool nesterov, bool maximize, double potential_parameter) {
  const bool has_buffer = !buffers.empty();
  TORCH_CHECK(grads.size() == weights.size() && (!has_buffer || (buffers.size() == weights.size() &&
              fresh.size() == weights.size())), "fused mirror descent: lists of unequal lengths");
  const double exponent = kind == P_NORM ? potential_parameter - 1 : 1;
  const Hyper<double> h{lr, momentum, 1 - dampening, weight_decay, has_buffer, nesterov, maximize,
                        exponent, 1 / exponent, -lr / std::log(2.0),
                        kind == HYPENTROPY ? potential_parameter * potential_parameter : 0};
  for (size_t t = 0; t < weights.size(); ++t) {
    const at::Tensor& w = weights[t];
    const at::Tensor& g = grads[t];
    const at::Tensor* b = has_buffer ? &buffers[t] : nullptr;
    TORCH_CHECK(w.is_contiguous() && g.is_contiguous() && g.scalar_type() == w.scalar_type() &&
                g.numel() == w.numel() && (!b || (b->is_contiguous() && b->numel() == w.numel())),
                "fused mirror descent: tensor ", t, " is not contiguous or does not match its gradient/buffer");
    const bool f = has_buffer && fresh[t] != 0;
    bool finite;
    switch (kind) {
      case TWO_NORM: finite = step_one<TWO_NORM>(w, g, b, f, h); break;
      case THREE_NORM: finite = step_one<THREE_NORM>(w, g, b, f, h); break;
      case ONE_POINT_FIVE_NORM: finite = step_one<ONE_POINT_FIVE_NORM>(w, g, b, f, h); break;
      case P_NORM: finite = step_one<P_NORM>(w, g, b, f, h); break;
      case NEGATIVE_ENTROPY: finite = step_one<NEGATIVE_ENTROPY>(w, g, b, f, h); break;
      case HYPENTROPY: finite = step_one<HYPENTROPY>(w, g, b, f, h); break;
      default: TORCH_CHECK(false, "fused mirror descent: unknown potential kind ", kind);
    }
    if (!finite) return static_cast<int64_t>(t);
  }
  return -1;
}

// The 2-norm step through torch's own fused SGD kernel (at::_fused_sgd_), with this file's
// finiteness test. Each tensor is cut into blocks that fit in a core's L2 cache; each thread takes
// whole blocks. A block is first run dry (update<TWO_NORM> without stores, reading the weight,
// gradient and buffer from memory), then, if every element of it is finite, updated by torch's
// kernel from the cache; a block with a non-finite element is updated by step_tensor instead (which
// writes its finite elements only), so what is written is exactly what mirror_descent_step writes.
template <typename S>
bool dry_run_finite(const S* w, const S* g, const S* b, bool fresh, int64_t n, const Hyper<S>& h) {
  using V = Vectorized<S>;
  constexpr int all_lanes = (1 << V::size()) - 1;
  V acc(0), w_new, b_new;
  int64_t i = 0;
  for (; i + V::size() <= n; i += V::size()) {
    acc = acc + update<TWO_NORM, V, S>(V::loadu(w + i), V::loadu(g + i), h.has_buffer ? V::loadu(b + i) : V(0),
                                       fresh, h, w_new, b_new);
  }
  S tail = 0, ws = 0, bs = 0;
  for (; i < n; ++i) tail += update<TWO_NORM, S, S>(w[i], g[i], h.has_buffer ? b[i] : S(0), fresh, h, ws, bs);
  return acc.zero_mask() == all_lanes && tail == 0;
}

template <typename S>
bool sgd_tensor(const at::Tensor& w, const at::Tensor& g, const at::Tensor* b, bool fresh, const Hyper<S>& h,
                int64_t block) {
  const int64_t n = w.numel();
  const at::Tensor wf = w.view({-1}), gf = g.view({-1});
  const at::Tensor bf = b ? b->view({-1}) : at::Tensor();
  S* wp = w.data_ptr<S>();
  const S* gp = g.data_ptr<S>();
  S* bp = b ? b->data_ptr<S>() : nullptr;
  std::atomic<bool> finite{true};
  at::parallel_for(0, (n + block - 1) / block, 1, [&](int64_t first, int64_t last) {
    at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: straight to the CPU kernel
    for (int64_t k = first; k < last; ++k) {
      const int64_t a = k * block, m = std::min(block, n - a);
      if (dry_run_finite<S>(wp + a, gp + a, bp ? bp + a : nullptr, fresh, m, h)) {
        std::vector<at::Tensor> bl;
        if (b) bl.push_back(bf.narrow(0, a, m));
        at::_fused_sgd_({wf.narrow(0, a, m)}, {gf.narrow(0, a, m)}, bl, static_cast<double>(h.weight_decay),
                        static_cast<double>(h.momentum), static_cast<double>(h.lr),
                        1.0 - static_cast<double>(h.one_minus_dampening), h.nesterov, h.maximize, fresh);
      } else {
        step_tensor<TWO_NORM, S, S>(wp + a, gp + a, bp ? bp + a : nullptr, fresh, m, h);
        finite.store(false);
      }
    }
  });
  return finite.load();
}

// Same signature and result as mirror_descent_step for the 2-norm; float32 and float64 only.
int64_t sgd_step(at::TensorList weights, at::TensorList grads, at::TensorList buffers, at::IntArrayRef fresh,
                 double lr, double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                 int64_t block) {
  const bool has_buffer = !buffers.empty();
  TORCH_CHECK(grads.size() == weights.size() && (!has_buffer || (buffers.size() == weights.size() &&
              fresh.size() == weights.size())), "fused SGD step: lists of unequal lengths");
  TORCH_CHECK(block > 0, "fused SGD step: block must be positive");
  const Hyper<double> hd{lr, momentum, 1 - dampening, weight_decay, has_buffer, nesterov, maximize, 1, 1, 0, 0};
  const Hyper<float> hf{static_cast<float>(lr), static_cast<float>(momentum), static_cast<float>(1 - dampening),
                        static_cast<float>(weight_decay), has_buffer, nesterov, maximize, 1, 1, 0, 0};
  for (size_t t = 0; t < weights.size(); ++t) {
    const at::Tensor& w = weights[t];
    const at::Tensor& g = grads[t];
    const at::Tensor* b = has_buffer ? &buffers[t] : nullptr;
    TORCH_CHECK(w.is_contiguous() && g.is_contiguous() && g.scalar_type() == w.scalar_type() &&
                g.numel() == w.numel() && (!b || (b->is_contiguous() && b->numel() == w.numel() &&
                b->scalar_type() == w.scalar_type())),
                "fused SGD step: tensor ", t, " is not contiguous or does not match its gradient/buffer");
    const bool f = has_buffer && fresh[t] != 0;
    bool finite;
    switch (w.scalar_type()) {
      case at::kFloat: finite = sgd_tensor<float>(w, g, b, f, hf, block); break;
      case at::kDouble: finite = sgd_tensor<double>(w, g, b, f, hd, block); break;
      default: TORCH_CHECK(false, "fused SGD step: float32 or float64 only, got ", w.scalar_type());
    }
    if (!finite) return static_cast<int64_t>(t);
  }
  return -1;
}

}  // namespace

TORCH_LIBRARY(synaptic_geometry, m) {
  m.def("mirror_descent_step(Tensor(a!)[] weights, Tensor[] grads, Tensor(b!)[] buffers, int[] fresh, int kind, "
        "float lr, float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
        "float potential_parameter) -> int");
  m.impl("mirror_descent_step", c10::DispatchKey::CPU, &mirror_descent_step);
  m.def("sgd_step(Tensor(a!)[] weights, Tensor[] grads, Tensor(b!)[] buffers, int[] fresh, float lr, "
        "float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, int block) -> int");
  m.impl("sgd_step", c10::DispatchKey::CPU, &sgd_step);
}
