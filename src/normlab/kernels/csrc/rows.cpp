// Row normalization: x viewed as (R, L), statistics of each contiguous row.
//
// Serves LayerNorm / RMSNorm over trailing dims (L = their product, per-element affine), the
// CNN LayerNorm over (C, H, W), GroupNorm (a row is one group of one sample: K channels of S
// positions, L = K * S, the affine per channel) and InstanceNorm (K = 1).  Affine index of
// element i of row r: (r % G) * K + i / S, with weight/bias of G * K entries.
//
// Optionally a residual is added first (the fused add + norm): sum = x + residual is rounded
// to x's dtype and stored, and the row is normalized from the stored sum, exactly as the
// unfused `norm(x + residual)`.
#include "common.h"
#include "entry.h"

#include <torch/library.h>

namespace normlab {
namespace {

template <typename T, bool Center, bool HasW, bool HasB>
inline void emit_vec(const T* src, T* y, int64_t n, acc_t<T> shift, acc_t<T> corr, acc_t<T> rstd,
                     const acc_t<T>* w, const acc_t<T>* b) {
  using A = acc_t<T>;
  // (x - shift) - corr before the scaling, as the reference: exactly 0 on a constant row (corr is then
  // x - shift itself), so the output is exactly beta; a multiply-add (x - shift) * rstd - corr * rstd
  // would leave the product's rounding error there
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    A v = Center ? ((ld(src, i) - shift) - corr) * rstd : ld(src, i) * rstd;
    if (HasW) v = v * w[i];
    if (HasB) v = v + b[i];
    st(y, i, v);
  }
}

template <typename T, bool Center>
inline void emit_seg(const T* src, T* y, int64_t n, acc_t<T> shift, acc_t<T> corr, acc_t<T> rstd,
                     acc_t<T> w, acc_t<T> b) {
  using A = acc_t<T>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    // (x - shift - corr) * rstd first, then the affine: the reference's order of rounding
    const A v = Center ? ((ld(src, i) - shift) - corr) * rstd : ld(src, i) * rstd;
    st(y, i, v * w + b);
  }
}

template <typename T, bool Center>
void fwd_impl(const T* x, const T* res, T* sum_out, T* y, acc_t<T>* stats, const acc_t<T>* w,
              const acc_t<T>* b, int64_t R, int64_t L, int64_t G, int64_t K, int64_t S, double eps, bool stream) {
  using A = acc_t<T>;
  at::parallel_for(0, R, grain_for(L), [&](int64_t r0, int64_t r1) {
    T* sum_stage = stream && res != nullptr ? stage<T>(0, L) : nullptr;
    T* y_stage = stream ? stage<T>(1, L) : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const T* src = x + r * L;
      if (r + 1 < r1) {
        prefetch_row(src + L, L);
        if (res != nullptr) prefetch_row(res + (r + 1) * L, L);
      }
      if (res != nullptr) {
        T* s = stream ? sum_stage : sum_out + r * L;
        const T* q = res + r * L;
#pragma omp simd
        for (int64_t i = 0; i < L; ++i) st(s, i, ld(src, i) + ld(q, i));
        src = s;
      }
      const Moments<T> m = run_moments(src, L, Center);
      const A rstd = A(1) / std::sqrt(m.var + A(eps));
      if (Center) {
        stats[r] = m.shift;
        stats[R + r] = m.corr;
        stats[2 * R + r] = m.var;
      } else {
        stats[r] = m.var;
      }
      T* yr = stream ? y_stage : y + r * L;
      const A* wr = w ? w + (r % G) * K : nullptr;
      const A* br = b ? b + (r % G) * K : nullptr;
      if (S == 1) {
        if (wr && br) emit_vec<T, Center, true, true>(src, yr, L, m.shift, m.corr, rstd, wr, br);
        else if (wr) emit_vec<T, Center, true, false>(src, yr, L, m.shift, m.corr, rstd, wr, br);
        else if (br) emit_vec<T, Center, false, true>(src, yr, L, m.shift, m.corr, rstd, wr, br);
        else emit_vec<T, Center, false, false>(src, yr, L, m.shift, m.corr, rstd, wr, br);
      } else {
        for (int64_t k = 0; k < K; ++k)
          emit_seg<T, Center>(src + k * S, yr + k * S, S, m.shift, m.corr, rstd, wr ? wr[k] : A(1),
                              br ? br[k] : A(0));
      }
      if (stream) {
        stream_copy(y + r * L, yr, L * int64_t(sizeof(T)));
        if (res != nullptr) stream_copy(sum_out + r * L, src, L * int64_t(sizeof(T)));
      }
    }
    if (stream) stream_fence();
  });
}

}  // namespace

// (R, L) of a rows call: x itself when row is 0 (x is (R, L)), else x of any shape as rows of `row`
// elements (contiguous, so a row is `row` consecutive elements); y, the sum and dx then keep x's shape
inline std::pair<int64_t, int64_t> rows_of(const at::Tensor& x, int64_t row, const char* who) {
  TORCH_CHECK(x.is_contiguous(), "normlab ", who, ": expects a contiguous input");
  if (row == 0) {
    TORCH_CHECK(x.dim() == 2, "normlab ", who, ": expects an (R, L) input, got ", x.dim(), " dims");
    return {x.size(0), x.size(1)};
  }
  TORCH_CHECK(row > 0 && x.numel() % row == 0, "normlab ", who, ": ", x.numel(), " elements are not rows of ", row);
  return {x.numel() / row, row};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_fwd_nd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                           const c10::optional<at::Tensor>& bias,
                                                           const c10::optional<at::Tensor>& residual, int64_t groups,
                                                           int64_t seg, double eps, bool center, int64_t row) {
  const auto [R, L] = rows_of(x, row, "rows_fwd");
  const int64_t G = groups, S = seg;
  TORCH_CHECK(G >= 1 && S >= 1 && L % S == 0, "normlab rows_fwd: bad groups/seg");
  const int64_t K = L / S;
  check_numel(weight, G * K, "weight", "rows_fwd");
  check_numel(bias, G * K, "bias", "rows_fwd");
  TORCH_CHECK(R % G == 0, "normlab rows_fwd: ", R, " rows are not a multiple of groups=", G);
  at::Tensor y = at::empty_like(x);
  at::Tensor sum_out;
  at::Tensor res;
  if (has(residual)) {
    res = residual->contiguous();
    TORCH_CHECK(res.sizes() == x.sizes() && res.scalar_type() == x.scalar_type(),
                "normlab rows_fwd: residual must match x");
    sum_out = at::empty_like(x);
  }
  const bool dbl = x.scalar_type() == at::kDouble;
  at::Tensor stats = at::empty({center ? 3 : 1, R}, x.options().dtype(dbl ? at::kDouble : at::kFloat));
  const int64_t row_bytes = L * int64_t(x.element_size());
  // what the call writes: y, and the sum when fused (its four tensors then overflow the cache at half
  // the size of a plain call's two; A/B at 4096x768 fp32, 2 threads: fused 0.92-1.00 ms -> 0.77-0.78)
  const bool backed_y = prepare_output(y);
  if (sum_out.defined()) prepare_output(sum_out);
  const bool stream = streams((sum_out.defined() ? 2 : 1) * R * row_bytes, row_bytes, backed_y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_rows_fwd", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> w, b;
    if (has(weight)) w = as_acc<A>(weight, G * K, A(1));
    if (has(bias)) b = as_acc<A>(bias, G * K, A(0));
    auto run = [&](auto center_tag) {
      constexpr bool C = decltype(center_tag)::value;
      fwd_impl<scalar_t, C>(x.data_ptr<scalar_t>(), res.defined() ? res.data_ptr<scalar_t>() : nullptr,
                            sum_out.defined() ? sum_out.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
                            stats.data_ptr<A>(), w.empty() ? nullptr : w.data(), b.empty() ? nullptr : b.data(),
                            R, L, G, K, S, eps, stream);
    };
    if (center) run(std::true_type{});
    else run(std::false_type{});
  });
  return {y, stats, sum_out.defined() ? sum_out : at::empty({0}, x.options())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                        const c10::optional<at::Tensor>& bias,
                                                        const c10::optional<at::Tensor>& residual, int64_t groups,
                                                        int64_t seg, double eps, bool center) {
  return rows_fwd_nd(x, weight, bias, residual, groups, seg, eps, center, 0);
}

namespace {

// One row's backward.  w (the affine of this row's group), dw and db (this thread's sums) always
// point somewhere (ones / scratch when the layer has no weight), so the inner loops have no branches
// and vectorize; NeedP: the parameter gradients are wanted (else dw and db are not touched).
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w  (no mean(g) term without centering)
template <typename T, bool Center, bool HasDsum, bool NeedP>
inline void bwd_row(const T* xr, const T* gr, const T* ds, T* dxr, acc_t<T> shift, acc_t<T> corr, acc_t<T> rstd,
                    const acc_t<T>* w, acc_t<T>* dw, acc_t<T>* db, int64_t L, int64_t K, int64_t S) {
  using A = acc_t<T>;
  double sg = 0, sgx = 0;
  if (S == 1) {
    auto term = [&](int64_t i, A& a, A& b) {
      const A xh = Center ? ((ld(xr, i) - shift) - corr) * rstd : ld(xr, i) * rstd;
      const A g0 = ld(gr, i);
      const A g = g0 * w[i];
      a += g;
      b += g * xh;
      if (NeedP) {  // a load and a store each per element: skipped when no parameter gradient is wanted
        dw[i] += g0 * xh;
        db[i] += g0;
      }
    };
    for (int64_t c0 = 0; c0 < L; c0 += kChunk) {
      const int64_t c1 = std::min(L, c0 + kChunk);
      A p[kLanes] = {}, q[kLanes] = {};  // independent partial sums (see common.h)
      int64_t i = c0;
      for (; i + kLanes <= c1; i += kLanes) {
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) term(i + j, p[j], q[j]);
      }
      A a = fold_lanes(p), b = fold_lanes(q);
      for (; i < c1; ++i) term(i, a, b);
      sg += a;
      sgx += b;
    }
  } else {
    for (int64_t k = 0; k < K; ++k) {
      const T* xs = xr + k * S;
      const T* gs = gr + k * S;
      double pw = 0, pb = 0;
      for (int64_t c0 = 0; c0 < S; c0 += kChunk) {
        const int64_t c1 = std::min(S, c0 + kChunk);
        A a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = c0; i < c1; ++i) {
          const A xh = Center ? ((ld(xs, i) - shift) - corr) * rstd : ld(xs, i) * rstd;
          const A g0 = ld(gs, i);
          a += g0;
          b += g0 * xh;
        }
        pb += a;
        pw += b;
      }
      sg += w[k] * A(pb);
      sgx += w[k] * A(pw);
      if (NeedP) {
        dw[k] += A(pw);
        db[k] += A(pb);
      }
    }
  }
  const A inv = A(1) / A(L);
  const A mg = Center ? A(sg) * inv : A(0);
  const A mgx = A(sgx) * inv;
  const int64_t segs = S == 1 ? 1 : K, n = S == 1 ? L : S;
  for (int64_t k = 0; k < segs; ++k) {
    const T* xs = xr + k * n;
    const T* gs = gr + k * n;
    const T* dss = HasDsum ? ds + k * n : nullptr;
    T* dxs = dxr + k * n;
    const A* wv = S == 1 ? w : nullptr;
    const A wk = S == 1 ? A(1) : w[k];
    if (S == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const A xh = Center ? ((ld(xs, i) - shift) - corr) * rstd : ld(xs, i) * rstd;
        A v = rstd * (ld(gs, i) * wv[i] - mg - xh * mgx);
        if (HasDsum) v += ld(dss, i);
        st(dxs, i, v);
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const A xh = Center ? ((ld(xs, i) - shift) - corr) * rstd : ld(xs, i) * rstd;
        A v = rstd * (ld(gs, i) * wk - mg - xh * mgx);
        if (HasDsum) v += ld(dss, i);
        st(dxs, i, v);
      }
    }
  }
}

template <typename T, bool Center, bool HasDsum, bool NeedP>
void bwd_impl(const T* dy, const T* x, const T* dsum, T* dx, const acc_t<T>* stats, const acc_t<T>* w,
              ThreadSums<acc_t<T>>& tw, ThreadSums<acc_t<T>>& tb, int64_t R, int64_t L, int64_t G, int64_t K, int64_t S,
              double eps, bool stream) {
  using A = acc_t<T>;
  at::parallel_for(0, R, grain_for(L), [&](int64_t r0, int64_t r1) {
    A* dwb = tw.mine();
    A* dbb = tb.mine();
    T* dx_stage = stream ? stage<T>(0, L) : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const A var = Center ? stats[2 * R + r] : stats[r];
      const int64_t off = (r % G) * K;
      bwd_row<T, Center, HasDsum, NeedP>(x + r * L, dy + r * L, HasDsum ? dsum + r * L : nullptr,
                                  stream ? dx_stage : dx + r * L, Center ? stats[r] : A(0),
                                  Center ? stats[R + r] : A(0), A(1) / std::sqrt(var + A(eps)), w + off,
                                  NeedP ? dwb + off : dwb, NeedP ? dbb + off : dbb, L, K, S);  // unused if !NeedP
      if (stream) stream_copy(dx + r * L, dx_stage, L * int64_t(sizeof(T)));
    }
    if (stream) stream_fence();
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_bwd_nd(const at::Tensor& dy_in, const at::Tensor& x,
                                                           const c10::optional<at::Tensor>& weight,
                                                           const at::Tensor& stats,
                                                           const c10::optional<at::Tensor>& dsum_in, int64_t groups,
                                                           int64_t seg, double eps, bool center, bool need_weight,
                                                           bool need_bias, const c10::optional<at::Tensor>& bias_like,
                                                           int64_t row) {
  const auto [R, L] = rows_of(x, row, "rows_bwd");
  const at::Tensor dy = dy_in.contiguous();
  TORCH_CHECK(dy.sizes() == x.sizes(), "normlab rows_bwd: dy must have x's shape");
  at::Tensor dsum;
  if (has(dsum_in)) dsum = dsum_in->contiguous();
  TORCH_CHECK(groups >= 1 && seg >= 1 && L % seg == 0 && R % groups == 0, "normlab rows_bwd: bad groups/seg");
  const int64_t G = groups, S = seg, K = L / S, P = G * K;
  check_numel(weight, P, "weight", "rows_bwd");
  check_numel(bias_like, P, "bias", "rows_bwd");
  check_stats(stats, {center ? 3 : 1, R}, acc_type(x), "rows_bwd");
  TORCH_CHECK(!has(dsum_in) || dsum_in->numel() == 0 || dsum_in->sizes() == x.sizes(),
              "normlab rows_bwd: dsum must have x's shape");
  at::Tensor dx = at::empty_like(x);
  at::Tensor dw, db;
  const int64_t row_bytes = L * int64_t(x.element_size());
  const bool stream = streams(R * row_bytes, row_bytes, prepare_output(dx));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_rows_bwd", [&] {
    using A = acc_t<scalar_t>;
    const std::vector<A> w = as_acc<A>(weight, P, A(1));  // ones without a weight: no branch per element
    const int64_t parts = at::get_num_threads();
    const bool need_p = need_weight || need_bias;  // both are summed when either is wanted
    ThreadSums<A> tw(need_p ? P : 0, parts), tb(need_p ? P : 0, parts);
    const at::Tensor st_ = stats.contiguous();
    auto run = [&](auto center_tag, auto dsum_tag, auto p_tag) {
      constexpr bool C = decltype(center_tag)::value, D = decltype(dsum_tag)::value, NP = decltype(p_tag)::value;
      bwd_impl<scalar_t, C, D, NP>(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                               D ? dsum.data_ptr<scalar_t>() : nullptr, dx.data_ptr<scalar_t>(), st_.data_ptr<A>(),
                               w.data(), tw, tb, R, L, G, K, S, eps, stream);
    };
    const bool fused = dsum.defined() && dsum.numel();
    auto with_p = [&](auto center_tag, auto dsum_tag) {
      if (need_p) run(center_tag, dsum_tag, std::true_type{});
      else run(center_tag, dsum_tag, std::false_type{});
    };
    if (center && fused) with_p(std::true_type{}, std::true_type{});
    else if (center) with_p(std::true_type{}, std::false_type{});
    else if (fused) with_p(std::false_type{}, std::true_type{});
    else with_p(std::false_type{}, std::false_type{});
    const auto opts = x.options().dtype(std::is_same<A, double>::value ? at::kDouble : at::kFloat);
    dw = grad_tensor<A>(need_weight ? tw.total() : std::vector<A>(), weight, need_weight, opts);
    db = grad_tensor<A>(need_bias ? tb.total() : std::vector<A>(), bias_like, need_bias, opts);
  });
  return {dx, dw, db};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_bwd(const at::Tensor& dy, const at::Tensor& x,
                                                        const c10::optional<at::Tensor>& weight, const at::Tensor& stats,
                                                        const c10::optional<at::Tensor>& dsum, int64_t groups,
                                                        int64_t seg, double eps, bool center, bool need_weight,
                                                        bool need_bias, const c10::optional<at::Tensor>& bias_like) {
  return rows_bwd_nd(dy, x, weight, stats, dsum, groups, seg, eps, center, need_weight, need_bias, bias_like, 0);
}

// the streaming-store threshold in bytes (see common.h): set it when bytes >= 0, return the old one
int64_t stream_bytes(int64_t bytes) {
  const int64_t old = stream_threshold().load();
  if (bytes >= 0) stream_threshold().store(bytes);
  return old;
}

TORCH_LIBRARY_FRAGMENT(normlab, m) {
  m.def("stream_bytes(int bytes) -> int", &stream_bytes);
  m.def("rows_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual, int groups, int seg, float eps, "
        "bool center) -> (Tensor, Tensor, Tensor)");
  m.def("rows_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor stats, Tensor? dsum, int groups, int seg, float eps, "
        "bool center, bool need_weight, bool need_bias, Tensor? bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(normlab, CPU, m) {
  m.impl("rows_fwd", &rows_fwd);
  m.impl("rows_bwd", &rows_bwd);
}

}  // namespace normlab
