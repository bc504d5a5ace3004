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
// writes through local restrict pointers, so the compiler keeps them in registers. Shortcuts:
// hypentropy uses the Taylor series of sinh and cosh when every lane of a vector steps by less than
// 1/16 (the usual case; else one expm1 and a division), and p-norm powers |x|^e with e a multiple
// of 1/2 are products and a square root (else exp2 and log2).

#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

// the inner loop's helpers are inlined, so that its vectors stay in registers
#define ALWAYS_INLINE inline __attribute__((always_inline))

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
Vectorized<double> v_exp2(Vectorized<double> x) { return x.exp2(); }
ALWAYS_INLINE Vectorized<float> v_exp2(Vectorized<float> x);  // below
template <typename S> S v_log2(S x) { return std::log2(x); }
Vectorized<double> v_log2(Vectorized<double> x) { return x.log2(); }
ALWAYS_INLINE Vectorized<float> v_log2(Vectorized<float> x);  // below; for x >= 0 only
template <typename S> S v_expm1(S x) { return std::expm1(x); }
template <typename S> Vectorized<S> v_expm1(Vectorized<S> x) { return x.expm1(); }
template <typename S> S v_copysign(S x, S y) { return std::copysign(x, y); }
// |x| with the sign bit of y, by bit operations (ATen's copysign is a function call into Sleef)
template <typename S> Vectorized<S> v_copysign(Vectorized<S> x, Vectorized<S> y) {
  return x.abs() | (y & Vectorized<S>(S(-0.0)));
}
template <typename S> S v_fmadd(S a, S b, S c) { return a * b + c; }
template <typename S> Vectorized<S> v_fmadd(Vectorized<S> a, Vectorized<S> b, Vectorized<S> c) {
  return at::vec::fmadd(a, b, c);
}
template <typename S> S v_sign(S x) { return static_cast<S>((x > 0) - (x < 0)); }
// sign(x) without comparisons (on AVX-512, ATen's comparisons turn a mask register into a vector,
// which measured slow in this loop): min(|x| 2^k, 1), with 2^k beyond the smallest subnormal's
// inverse (k = 150 for float32, 1100 for float64, as two factors), is 1 for every nonzero x and 0
// for 0; it then takes the sign bit of x. nan stays nan.
template <typename S> Vectorized<S> v_sign(Vectorized<S> x) {
  using V = Vectorized<S>;
  constexpr bool single = std::is_same_v<S, float>;
  const V magnitude = at::vec::clamp_max(x.abs() * V(single ? S(0x1p100) : S(0x1p600)) *
                                             V(single ? S(0x1p50) : S(0x1p500)), V(S(1)));
  return magnitude | (x & V(S(-0.0)));
}
#if defined(CPU_CAPABILITY_AVX512)
// the same from a mask register: +-1 with the sign bit of x where x != 0 (or nan), else 0
ALWAYS_INLINE Vectorized<float> v_sign(Vectorized<float> x) {
  const __mmask16 nonzero = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  return _mm512_maskz_mov_ps(nonzero, Vectorized<float>(1.0f) | (x & Vectorized<float>(-0.0f)));
}
#endif
// float32 exp2 and log2 computed inline. ATen's exp2() and log2() are calls into Sleef, one per
// vector; around a call every live vector register is saved and restored, and that made negative
// entropy and the general p-norm compute-bound at several times the memory-bound time of a step.
// Both are written here from their textbook reductions (error bounds below) with ATen's elementwise
// vector operations, so they build for every instruction set; float64 keeps Sleef's.
using VF = Vectorized<float>;
using VI = Vectorized<int32_t>;

// Lane masks for v_log2: AVX-512 compares into mask registers and blends from them; ATen's
// comparisons there turn the mask into a vector and back, which measured slow in this loop.
#if defined(CPU_CAPABILITY_AVX512)
using Mask = __mmask16;
ALWAYS_INLINE Mask less(VF a, VF b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
ALWAYS_INLINE VF select(Mask m, VF yes, VF no) { return _mm512_mask_blend_ps(m, no, yes); }
#else
using Mask = VF;
ALWAYS_INLINE Mask less(VF a, VF b) { return a < b; }
ALWAYS_INLINE VF select(Mask m, VF yes, VF no) { return VF::blendv(no, yes, m); }
#endif

#if !defined(CPU_CAPABILITY_AVX512)
// 2^k for integers -126 <= k <= 127: the float with biased exponent k + 127 and mantissa 0
ALWAYS_INLINE VF power_of_two(VI k) { return at::vec::cast<float>((k + VI(127)) << VI(23)); }
#endif

// 2^x: x = n + f with n = round(x) and |f| <= 1/2; 2^f = e^(f ln 2) by its Taylor polynomial of
// degree 7 (truncation error below (ln2 / 2)^8 / 8! * 2^(1/2) < 1e-8 relative, so the result is
// within about 2 ulp of 2^x); then p 2^n by AVX-512's scalef, else as a product of two powers of
// two, so that a result beyond the float range overflows to inf or underflows through the
// subnormals to 0 by IEEE rounding. nan stays nan (the clamp and the arithmetic propagate it).
ALWAYS_INLINE Vectorized<float> v_exp2(VF x) {
  x = at::vec::clamp(x, VF(-151.0f), VF(129.0f));  // beyond these 2^x rounds to 0 or inf
  const VF n = x.round();
  const VF f = x - n;
  constexpr double ln2 = 0.693147180559945309417;
  VF p(static_cast<float>(ln2 * ln2 * ln2 * ln2 * ln2 * ln2 * ln2 / 5040));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2 * ln2 * ln2 * ln2 * ln2 * ln2 / 720)));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2 * ln2 * ln2 * ln2 * ln2 / 120)));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2 * ln2 * ln2 * ln2 / 24)));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2 * ln2 * ln2 / 6)));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2 * ln2 / 2)));
  p = at::vec::fmadd(p, f, VF(static_cast<float>(ln2)));
  p = at::vec::fmadd(p, f, VF(1.0f));
#if defined(CPU_CAPABILITY_AVX512)
  return _mm512_scalef_ps(p, n);  // p 2^n in one instruction, with IEEE overflow and underflow
#else
  const VI k = at::vec::convert_to_int_of_same_size(n);  // exact: n is an integer with |n| <= 151
  const VI half = k >> VI(1);
  return p * power_of_two(half) * power_of_two(k - half);
#endif
}

// log2 a for a >= 0 (0 gives -inf, inf gives inf, nan gives nan). a = 2^e m with m in
// [1/sqrt2, sqrt2) (subnormals scaled by 2^24 first); ln m = 2 atanh(t) with t = (m - 1) / (m + 1),
// |t| <= 0.172, by the series 2 (t + t^3/3 + ... + t^9/9), truncation error below 2 |t|^11 / 11 /
// (1 - t^2) < 1e-9 relative to ln m; then log2 a = e + ln m / ln 2.
ALWAYS_INLINE Vectorized<float> v_log2(VF a) {
  const VF zero(0.0f), one(1.0f);
  const Mask subnormal = less(a, VF(0x1p-126f));
  const VF b = select(subnormal, a * VF(0x1p24f), a);
  const VI bits = at::vec::cast<int32_t>(b);
  VF m = at::vec::cast<float>((bits & VI(0x007fffff)) | VI(0x3f800000));  // in [1, 2)
  const Mask above = less(VF(1.41421356f), m);
  m = select(above, m * VF(0.5f), m);
  const VF e = at::vec::convert_to_fp_of_same_size<float>((bits >> VI(23)) - VI(127)) + select(above, one, zero) -
               select(subnormal, VF(24.0f), zero);
  const VF t = (m - one) / (m + one);
  const VF t2 = t * t;
  VF series = at::vec::fmadd(t2, VF(2.0f / 9), VF(2.0f / 7));
  series = at::vec::fmadd(series, t2, VF(2.0f / 5));
  series = at::vec::fmadd(series, t2, VF(2.0f / 3));
  series = at::vec::fmadd(series, t2, VF(2.0f));
  const VF log2a = at::vec::fmadd(t * series, VF(1.44269504f), e);
  // 0 gives -inf; inf and nan give themselves (less(x, inf) is false for both)
  const VF special = select(less(a, VF(0x1p-149f)), VF(-INFINITY), a);
  return select(less(a, VF(INFINITY)) & less(zero, a), log2a, special);
}

// a where s == 0 (finite), b elsewhere
template <typename S> Vectorized<S> where_finite(Vectorized<S> s, Vectorized<S> a, Vectorized<S> b) {
  return Vectorized<S>::blendv(b, a, s == Vectorized<S>(0));
}

// Whether hypentropy's step may use the Taylor series of sinh and cosh: |c| < 1/16 in every lane
// (a nan lane counts as small: the series keeps it nan, and the finiteness test catches it)
template <typename S> bool hypentropy_series(S c) { return !(std::abs(c) >= S(0.0625)); }
template <typename S> bool hypentropy_series(Vectorized<S> c) {
  return (c.abs() >= Vectorized<S>(S(0.0625))).zero_mask() == (1 << Vectorized<S>::size()) - 1;
}

// Hyperparameters of one step in the compute type S (float32, or float64 for float64 weights).
template <typename S> struct Hyper {
  S lr, momentum, one_minus_dampening, weight_decay;
  S grad_sign;                   // -1 if maximize, else 1
  S exponent, inverse_exponent;  // p-norms: p - 1 and 1 / (p - 1)
  S entropy_rate;                // negative entropy: -lr * log2(e)
  S beta_squared;                // hypentropy
  int exponent_halves, inverse_exponent_halves;  // 2 e when e is a multiple of 1/2 up to 4, else 0
};

// a^e for a >= 0; when e = k / 2 (k = halves > 0) by k / 2 products and a square root, else as
// 2^(e log2 a) (two transcendental functions)
template <typename V, typename S> ALWAYS_INLINE V signless_power(V a, S e, int halves) {
  if (halves == 0) return v_exp2(V(e) * v_log2(a));
  V r = (halves & 1) ? v_sqrt(a) : a;
  for (int j = (halves & 1) ? 0 : 1; j < halves / 2; ++j) r = r * a;
  return r;
}

// 2 e if e is a positive multiple of 1/2 up to 4 (a^e then needs no exp or log), else 0
int halves_of(double e) {
  const double k = 2 * e;
  return (k >= 1 && k <= 8 && k == std::floor(k)) ? static_cast<int>(k) : 0;
}

// w_new = inv_grad(grad(w) - lr * dd), elementwise, for the potential K.
template <int64_t K, typename V, typename S> ALWAYS_INLINE V dual_step(V w, V dd, const Hyper<S>& h) {
  const V lr(h.lr);
  if constexpr (K == TWO_NORM) {
    return w - lr * dd;
  } else if constexpr (K == THREE_NORM) {  // grad = sign(w) w^2, inverse sign(y) sqrt|y|
    V y = w * v_abs(w) - lr * dd;
    return v_copysign(v_sqrt(v_abs(y)), y);
  } else if constexpr (K == ONE_POINT_FIVE_NORM) {  // grad = sign(w) sqrt|w|, inverse y |y|
    V y = v_copysign(v_sqrt(v_abs(w)), w) - lr * dd;
    return y * v_abs(y);
  } else if constexpr (K == P_NORM) {  // |x|^e = 2^(e log2|x|) or products and a sqrt; 0 maps to 0
    V y = v_copysign(signless_power<V>(v_abs(w), h.exponent, h.exponent_halves), w) - lr * dd;
    return v_copysign(signless_power<V>(v_abs(y), h.inverse_exponent, h.inverse_exponent_halves), y);
  } else if constexpr (K == NEGATIVE_ENTROPY) {  // w exp(-lr sign(w) dd)
    return w * v_exp2(V(h.entropy_rate) * v_sign(w) * dd);
  } else {  // hypentropy: beta sinh(arcsinh(w / beta) - c) = w cosh(c) - sqrt(w^2 + beta^2) sinh(c)
    static_assert(K == HYPENTROPY, "unknown potential");
    const V c = lr * dd, one(1);
    V cosh_c, sinh_c;
    // small steps (every lane |c| < 1/16, the usual case): Taylor series, truncation error below
    // c^9 / 9! relative to sinh c (< 1e-15) and c^10 / 10! for cosh c; no exp, no division
    if (hypentropy_series(c)) {
      const V c2 = c * c;
      sinh_c = c * v_fmadd(c2, v_fmadd(c2, v_fmadd(c2, V(S(1) / 5040), V(S(1) / 120)), V(S(1) / 6)), one);
      cosh_c = v_fmadd(c2, v_fmadd(c2, v_fmadd(c2, v_fmadd(c2, V(S(1) / 40320), V(S(1) / 720)), V(S(1) / 24)),
                                   V(S(0.5))), one);
    } else {
      // cosh and sinh from one expm1: with m = e^c - 1 and r = e^-c, sinh c = m (1 + r) / 2 (no
      // cancellation for small c) and cosh c = (e^c + r) / 2
      const V half(0.5);
      V m = v_expm1(c);
      V r = one / (m + one);
      cosh_c = (m + one + r) * half;
      sinh_c = m * (one + r) * half;
    }
    return w * cosh_c - v_sqrt(w * w + V(h.beta_squared)) * sinh_c;
  }
}

// SGD's direction, the momentum buffer and the new weight for one element or one vector.
// Returns s: 0 where everything is finite, nan elsewhere.
template <int64_t K, int M, typename V, typename S>
ALWAYS_INLINE V update(V w, V g, V b, const Hyper<S>& h, V& w_new, V& b_new) {
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

// One vector of `lanes` elements at w, g, b (float32 or float64; a partial vector, read with zeros
// beyond its end, for a range's tail). True if every element was finite.
template <int64_t K, int M, typename S>
ALWAYS_INLINE bool step_vector(S* __restrict__ w, const S* __restrict__ g, S* __restrict__ b, int lanes,
                               const Hyper<S>& h) {
  using V = Vectorized<S>;
  constexpr bool has_buffer = M != PLAIN;
  constexpr bool reads_buffer = M == CARRY || M == CARRY_NESTEROV;
  const bool full = lanes == V::size();
  V wv = full ? V::loadu(w) : V::loadu(w, lanes);
  V gv = full ? V::loadu(g) : V::loadu(g, lanes);
  V bv = reads_buffer ? (full ? V::loadu(b) : V::loadu(b, lanes)) : V(0);
  V w_new, b_new;
  V s = update<K, M, V, S>(wv, gv, bv, h, w_new, b_new);
  const int used = full ? (1 << V::size()) - 1 : (1 << lanes) - 1;
  if ((s.zero_mask() & used) == used) {  // every lane finite: the common case
    w_new.store(w, lanes);
    if constexpr (has_buffer) b_new.store(b, lanes);
    return true;
  }
  where_finite(s, w_new, wv).store(w, lanes);  // write the finite lanes only
  if constexpr (has_buffer) where_finite(s, b_new, bv).store(b, lanes);
  return false;
}

// Elements [begin, end) of one tensor: weights and gradients of type P, buffer and arithmetic of
// type S. True if every element was finite.
template <int64_t K, int M, typename P, typename S>
bool step_range(P* __restrict__ w, const P* __restrict__ g, S* __restrict__ b, int64_t begin, int64_t end,
                const Hyper<S>& hyper) {
  constexpr bool has_buffer = M != PLAIN;
  constexpr bool reads_buffer = M == CARRY || M == CARRY_NESTEROV;
  const Hyper<S> h = hyper;  // a local copy: the stores below cannot alias it, so it stays in registers
  int64_t i = begin;
  bool all_finite = true;
  if constexpr (std::is_same_v<P, S>) {  // float32 and float64: vectorized
    using V = Vectorized<S>;
    for (; i + V::size() <= end; i += V::size()) {
      all_finite &= step_vector<K, M>(w + i, g + i, has_buffer ? b + i : b, V::size(), h);
    }
    if (i < end) {
      all_finite &= step_vector<K, M>(w + i, g + i, has_buffer ? b + i : b, static_cast<int>(end - i), h);
    }
  } else {
    for (; i < end; ++i) {  // float16/bfloat16 weights, computed in S = float32
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
  }
  return all_finite;
}

// One tensor's work, with its types and variant resolved before the threads start.
using RangeFn = bool (*)(void*, const void*, void*, int64_t, int64_t, const void*);
struct Job {
  RangeFn fn;
  void* w;
  const void* g;
  void* b;
  int64_t n, unit;   // elements, and elements per cache line
  const void* hyper;  // Hyper<float> or Hyper<double>
};

template <int64_t K, int M, typename P, typename S>
bool range_fn(void* w, const void* g, void* b, int64_t begin, int64_t end, const void* h) {
  return step_range<K, M, P, S>(static_cast<P*>(w), static_cast<const P*>(g), static_cast<S*>(b), begin, end,
                                *static_cast<const Hyper<S>*>(h));
}

template <int64_t K, typename P, typename S> RangeFn pick_mode(int mode) {
  switch (mode) {
    case PLAIN: return range_fn<K, PLAIN, P, S>;
    case FRESH: return range_fn<K, FRESH, P, S>;
    case FRESH_NESTEROV: return range_fn<K, FRESH_NESTEROV, P, S>;
    case CARRY: return range_fn<K, CARRY, P, S>;
    default: return range_fn<K, CARRY_NESTEROV, P, S>;
  }
}

template <int64_t K> RangeFn pick_type(at::ScalarType type, int mode) {
  switch (type) {
    case at::kFloat: return pick_mode<K, float, float>(mode);
    case at::kDouble: return pick_mode<K, double, double>(mode);
    case at::kHalf: return pick_mode<K, at::Half, float>(mode);
    case at::kBFloat16: return pick_mode<K, at::BFloat16, float>(mode);
    default: TORCH_CHECK(false, "fused mirror descent: unsupported dtype ", type);
  }
}

RangeFn pick(int64_t kind, at::ScalarType type, int mode) {
  switch (kind) {
    case TWO_NORM: return pick_type<TWO_NORM>(type, mode);
    case THREE_NORM: return pick_type<THREE_NORM>(type, mode);
    case ONE_POINT_FIVE_NORM: return pick_type<ONE_POINT_FIVE_NORM>(type, mode);
    case P_NORM: return pick_type<P_NORM>(type, mode);
    case NEGATIVE_ENTROPY: return pick_type<NEGATIVE_ENTROPY>(type, mode);
    default: return pick_type<HYPENTROPY>(type, mode);
  }
}

// Thread tid's part of a tensor of n elements: whole cache lines, at least GRAIN elements per
// thread (a small tensor is done by fewer threads).
void thread_range(int64_t n, int64_t unit, int tid, int team, int64_t& begin, int64_t& end) {
  const int64_t units = (n + unit - 1) / unit;
  const int64_t active = std::max<int64_t>(1, std::min<int64_t>(team, n / GRAIN));
  begin = end = 0;
  if (tid >= active) return;
  const int64_t per = (units + active - 1) / active;
  begin = std::min(units, tid * per) * unit;
  end = std::min(n, std::min(units, (tid + 1) * per) * unit);
}

// The step over all tensors, in order; returns the index of the first tensor with a non-finite
// element, or -1. One team of threads does every tensor (one parallel region per step, not one
// per tensor): the threads split each tensor, meet at a barrier, and stop together after the
// first tensor with a non-finite element, so the tensors after it are not touched. Bumps the
// version counter of every tensor it wrote (as an in-place op would).
int64_t step(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& grads,
             const std::vector<at::Tensor>& buffers, const std::vector<int64_t>& fresh, int64_t kind, double lr,
             double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
             double potential_parameter) {
  const bool has_buffer = !buffers.empty();
  TORCH_CHECK(grads.size() == weights.size() && (!has_buffer || (buffers.size() == weights.size() &&
              fresh.size() == weights.size())), "fused mirror descent: lists of unequal lengths");
  TORCH_CHECK(kind >= TWO_NORM && kind <= HYPENTROPY, "fused mirror descent: unknown potential kind ", kind);
  const double exponent = kind == P_NORM ? potential_parameter - 1 : 1;
  const Hyper<double> hd{lr, momentum, 1 - dampening, weight_decay, maximize ? -1.0 : 1.0,
                         exponent, 1 / exponent, -lr / std::log(2.0),
                         kind == HYPENTROPY ? potential_parameter * potential_parameter : 0,
                         halves_of(exponent), halves_of(1 / exponent)};
  const Hyper<float> hf{static_cast<float>(hd.lr), static_cast<float>(hd.momentum),
                        static_cast<float>(hd.one_minus_dampening), static_cast<float>(hd.weight_decay),
                        static_cast<float>(hd.grad_sign), static_cast<float>(hd.exponent),
                        static_cast<float>(hd.inverse_exponent), static_cast<float>(hd.entropy_rate),
                        static_cast<float>(hd.beta_squared), hd.exponent_halves, hd.inverse_exponent_halves};
  const int64_t count = static_cast<int64_t>(weights.size());
  std::vector<Job> jobs;
  jobs.reserve(count);
  for (int64_t t = 0; t < count; ++t) {  // every check before anything is written
    const at::Tensor& w = weights[t];
    const at::Tensor& g = grads[t];
    const at::Tensor* b = has_buffer ? &buffers[t] : nullptr;
    const at::ScalarType type = w.scalar_type();
    const at::ScalarType state_type = type == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(w.device().is_cpu() && g.device().is_cpu() && w.is_contiguous() && g.is_contiguous() &&
                g.scalar_type() == type && g.numel() == w.numel() &&
                (!b || (b->device().is_cpu() && b->is_contiguous() && b->numel() == w.numel() &&
                        b->scalar_type() == state_type)),
                "fused mirror descent: tensor ", t, " is not a contiguous CPU tensor or does not match its "
                "gradient/buffer");
    const int mode = !has_buffer ? PLAIN : fresh[t] != 0 ? (nesterov ? FRESH_NESTEROV : FRESH)
                                                         : (nesterov ? CARRY_NESTEROV : CARRY);
    jobs.push_back(Job{pick(kind, type, mode), w.data_ptr(), g.data_ptr(), b ? b->data_ptr() : nullptr,
                       w.numel(), CACHE_LINE / static_cast<int64_t>(w.element_size()),
                       type == at::kDouble ? static_cast<const void*>(&hd) : static_cast<const void*>(&hf)});
  }
  std::atomic<int64_t> first_bad{count};
  auto run = [&](int tid, int team) {
    for (int64_t t = 0; t < count; ++t) {
      const Job& job = jobs[t];
      int64_t begin, end;
      thread_range(job.n, job.unit, tid, team, begin, end);
      if (begin < end && !job.fn(job.w, job.g, job.b, begin, end, job.hyper)) {
        int64_t seen = first_bad.load();
        while (t < seen && !first_bad.compare_exchange_weak(seen, t)) {
        }
      }
#ifdef _OPENMP
      if (team > 1) {
#pragma omp barrier
      }
#endif
      // values <= t were stored before this barrier, so every thread stops at the same tensor
      if (first_bad.load() <= t) break;
    }
  };
  const int threads = at::get_num_threads();
#ifdef _OPENMP
  if (threads > 1 && count > 0 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
  } else {
    run(0, 1);
  }
#else
  (void)threads;
  run(0, 1);
#endif
  const int64_t stopped = first_bad.load();
  for (int64_t t = 0; t < std::min(count, stopped + 1); ++t) {
    weights[t].unsafeGetTensorImpl()->bump_version();
    if (has_buffer) buffers[t].unsafeGetTensorImpl()->bump_version();
  }
  return stopped < count ? stopped : -1;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("step", &step, "One fused mirror descent step over lists of tensors (see optim.py)",
        pybind11::arg("weights"), pybind11::arg("grads"), pybind11::arg("buffers"), pybind11::arg("fresh"),
        pybind11::arg("kind"), pybind11::arg("lr"), pybind11::arg("momentum"), pybind11::arg("dampening"),
        pybind11::arg("weight_decay"), pybind11::arg("nesterov"), pybind11::arg("maximize"),
        pybind11::arg("potential_parameter"), pybind11::call_guard<pybind11::gil_scoped_release>());
}
