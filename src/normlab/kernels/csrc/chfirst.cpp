// Channels-first normalization: x viewed as (N, C, S), statistics over C at every (n, s).
//
// LayerNorm2d (ConvNeXt's channels-first LayerNorm) and the per-position RMSNorm of a CNN,
// without permuting to channels-last and back.  Positions are processed in tiles of TS so that
// a tile's C x TS block stays in cache across the passes; every inner loop runs along s
// (contiguous), with per-position sums.
#include "common.h"

#include <torch/library.h>

namespace normlab {
namespace {

inline int64_t tile_for(int64_t C, int64_t S) {
  int64_t ts = std::max<int64_t>(16, std::min<int64_t>(1024, 16384 / std::max<int64_t>(C, 1)));
  ts = (ts / 16) * 16;
  return std::max<int64_t>(1, std::min(ts, S));
}

constexpr int64_t kChanChunk = 256;

// whether x[c * S] is the same for every channel c (one position of an (N, C, S) sample)
template <typename T>
inline bool column_constant(const T* x, int64_t C, int64_t S) {
  const auto v0 = ld(x, 0);
  for (int64_t c = 1; c < C; ++c)
    if (ld(x, c * S) != v0) return false;
  return true;
}

// per-position sums over c of f(x[c, s]) for one tile, chunked over c into double
template <typename T, typename F>
inline void tile_sums(const T* x, int64_t C, int64_t S, int64_t ts, F f, std::vector<double>& out,
                      std::vector<acc_t<T>>& part) {
  using A = acc_t<T>;
  std::fill(out.begin(), out.begin() + ts, 0.0);
  for (int64_t c0 = 0; c0 < C; c0 += kChanChunk) {
    const int64_t c1 = std::min(C, c0 + kChanChunk);
    std::fill(part.begin(), part.begin() + ts, A(0));
    for (int64_t c = c0; c < c1; ++c) {
      const T* xc = x + c * S;
      A* p = part.data();
#pragma omp simd
      for (int64_t i = 0; i < ts; ++i) p[i] += f(ld(xc, i), i);
    }
    for (int64_t i = 0; i < ts; ++i) out[i] += part[i];
  }
}

// per-position sums over c of (x - shift) and (x - shift)^2 for one tile
template <typename T>
inline void tile_dev_sums(const T* x, int64_t C, int64_t S, int64_t ts, const acc_t<T>* shift,
                          std::vector<double>& sd, std::vector<double>& sq, std::vector<acc_t<T>>& pd,
                          std::vector<acc_t<T>>& pq) {
  using A = acc_t<T>;
  std::fill(sd.begin(), sd.begin() + ts, 0.0);
  std::fill(sq.begin(), sq.begin() + ts, 0.0);
  for (int64_t c0 = 0; c0 < C; c0 += kChanChunk) {
    const int64_t c1 = std::min(C, c0 + kChanChunk);
    std::fill(pd.begin(), pd.begin() + ts, A(0));
    std::fill(pq.begin(), pq.begin() + ts, A(0));
    A* a = pd.data();
    A* b = pq.data();
    for (int64_t c = c0; c < c1; ++c) {
      const T* xc = x + c * S;
#pragma omp simd
      for (int64_t i = 0; i < ts; ++i) {
        const A d = ld(xc, i) - shift[i];
        a[i] += d;
        b[i] += d * d;
      }
    }
    for (int64_t i = 0; i < ts; ++i) {
      sd[i] += pd[i];
      sq[i] += pq[i];
    }
  }
}

template <typename T, bool Center>
void fwd_impl(const T* x, T* y, acc_t<T>* stats, const acc_t<T>* w, const acc_t<T>* b, int64_t N, int64_t C,
              int64_t S, double eps) {
  using A = acc_t<T>;
  const int64_t TS = tile_for(C, S), tiles = (S + TS - 1) / TS, NS = N * S;
  at::parallel_for(0, N * tiles, grain_for(C * TS), [&](int64_t t0, int64_t t1) {
    std::vector<double> acc(TS), acc2(TS);
    std::vector<A> part(TS), part2(TS), shift(TS), corr(TS), var(TS), rstd(TS);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / tiles, s0 = (t % tiles) * TS, ts = std::min(TS, S - s0);
      const T* xt = x + n * C * S + s0;
      T* yt = y + n * C * S + s0;
      const A inv = A(1) / A(C);
      if (Center) {
        tile_sums(xt, C, S, ts, [](A v, int64_t) { return v; }, acc, part);
        for (int64_t i = 0; i < ts; ++i) shift[i] = A(acc[i]) * inv;
        const A* sh = shift.data();
        tile_dev_sums(xt, C, S, ts, sh, acc, acc2, part, part2);
        for (int64_t i = 0; i < ts; ++i) {
          corr[i] = A(acc[i]) * inv;
          var[i] = std::max(A(acc2[i]) * inv - corr[i] * corr[i], A(0));
          if (var[i] > A(0) && near_constant(shift[i], corr[i], var[i]) && column_constant(xt + i, C, S)) {
            corr[i] = ld(xt, i) - shift[i];  // a constant position: variance 0, as the reference (see common.h)
            var[i] = A(0);
          }
        }
      } else {
        tile_sums(xt, C, S, ts, [](A v, int64_t) { return v * v; }, acc, part);
        for (int64_t i = 0; i < ts; ++i) var[i] = A(acc[i]) * inv;
      }
      for (int64_t i = 0; i < ts; ++i) {
        rstd[i] = A(1) / std::sqrt(var[i] + A(eps));
        const int64_t at = n * S + s0 + i;
        if (Center) {
          stats[at] = shift[i];
          stats[NS + at] = corr[i];
          stats[2 * NS + at] = var[i];
        } else {
          stats[at] = var[i];
        }
      }
      const A* sh = shift.data();
      const A* co = corr.data();
      const A* rs = rstd.data();
      for (int64_t c = 0; c < C; ++c) {
        const T* xc = xt + c * S;
        T* yc = yt + c * S;
        const A wc = w ? w[c] : A(1), bc = b ? b[c] : A(0);
#pragma omp simd
        for (int64_t i = 0; i < ts; ++i) {
          const A v = Center ? ((ld(xc, i) - sh[i]) - co[i]) * rs[i] : ld(xc, i) * rs[i];
          st(yc, i, v * wc + bc);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> chfirst_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                               const c10::optional<at::Tensor>& bias, double eps, bool center) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "normlab chfirst_fwd: expects a contiguous (N, C, S) input");
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
  check_numel(weight, C, "weight", "chfirst_fwd");
  check_numel(bias, C, "bias", "chfirst_fwd");
  at::Tensor y = at::empty_like(x);
  prepare_output(y);
  const bool dbl = x.scalar_type() == at::kDouble;
  at::Tensor stats = at::empty({center ? 3 : 1, N, S}, x.options().dtype(dbl ? at::kDouble : at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_chfirst_fwd", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> w, b;
    if (has(weight)) w = as_acc<A>(weight, C, A(1));
    if (has(bias)) b = as_acc<A>(bias, C, A(0));
    const A* wp = w.empty() ? nullptr : w.data();
    const A* bp = b.empty() ? nullptr : b.data();
    if (center) fwd_impl<scalar_t, true>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), stats.data_ptr<A>(), wp, bp, N, C, S, eps);
    else fwd_impl<scalar_t, false>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), stats.data_ptr<A>(), wp, bp, N, C, S, eps);
  });
  return {y, stats};
}

template <typename T, bool Center>
void bwd_impl(const T* dy, const T* x, T* dx, const acc_t<T>* stats, const acc_t<T>* w,
              ThreadSums<acc_t<T>>* tw, ThreadSums<acc_t<T>>* tb, int64_t N, int64_t C, int64_t S, double eps) {
  using A = acc_t<T>;
  const int64_t TS = tile_for(C, S), tiles = (S + TS - 1) / TS, NS = N * S;
  at::parallel_for(0, N * tiles, grain_for(C * TS), [&](int64_t t0, int64_t t1) {
    A* dwb = tw ? tw->mine() : nullptr;
    A* dbb = tb ? tb->mine() : nullptr;
    std::vector<A> sh(TS), co(TS), rs(TS), mg(TS), mgx(TS), pa(TS), pb(TS);
    std::vector<double> sg(TS), sgx(TS);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / tiles, s0 = (t % tiles) * TS, ts = std::min(TS, S - s0);
      const int64_t base = n * C * S + s0;
      for (int64_t i = 0; i < ts; ++i) {
        const int64_t at = n * S + s0 + i;
        sh[i] = Center ? stats[at] : A(0);
        co[i] = Center ? stats[NS + at] : A(0);
        const A var = Center ? stats[2 * NS + at] : stats[at];
        rs[i] = A(1) / std::sqrt(var + A(eps));
        sg[i] = 0;
        sgx[i] = 0;
      }
      A* a = pa.data();
      A* bb = pb.data();
      const A* s_ = sh.data();
      const A* c_ = co.data();
      const A* r_ = rs.data();
      for (int64_t c0 = 0; c0 < C; c0 += kChanChunk) {
        const int64_t c1 = std::min(C, c0 + kChanChunk);
        std::fill(pa.begin(), pa.begin() + ts, A(0));
        std::fill(pb.begin(), pb.begin() + ts, A(0));
        for (int64_t c = c0; c < c1; ++c) {
          const T* xc = x + base + c * S;
          const T* gc = dy + base + c * S;
          const A wc = w ? w[c] : A(1);
          A pw = 0, pbias = 0;
#pragma omp simd reduction(+ : pw, pbias)
          for (int64_t i = 0; i < ts; ++i) {
            const A xh = Center ? ((ld(xc, i) - s_[i]) - c_[i]) * r_[i] : ld(xc, i) * r_[i];
            const A g0 = ld(gc, i);
            a[i] += g0 * wc;
            bb[i] += g0 * wc * xh;
            pw += g0 * xh;
            pbias += g0;
          }
          if (dwb) dwb[c] += pw;
          if (dbb) dbb[c] += pbias;
        }
        for (int64_t i = 0; i < ts; ++i) {
          sg[i] += a[i];
          sgx[i] += bb[i];
        }
      }
      const A inv = A(1) / A(C);
      for (int64_t i = 0; i < ts; ++i) {
        mg[i] = Center ? A(sg[i]) * inv : A(0);
        mgx[i] = A(sgx[i]) * inv;
      }
      const A* m1 = mg.data();
      const A* m2 = mgx.data();
      for (int64_t c = 0; c < C; ++c) {
        const T* xc = x + base + c * S;
        const T* gc = dy + base + c * S;
        T* dc = dx + base + c * S;
        const A wc = w ? w[c] : A(1);
#pragma omp simd
        for (int64_t i = 0; i < ts; ++i) {
          const A xh = Center ? ((ld(xc, i) - s_[i]) - c_[i]) * r_[i] : ld(xc, i) * r_[i];
          st(dc, i, r_[i] * (ld(gc, i) * wc - m1[i] - xh * m2[i]));
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> chfirst_bwd(const at::Tensor& dy_in, const at::Tensor& x,
                                                           const c10::optional<at::Tensor>& weight,
                                                           const at::Tensor& stats, double eps, bool center,
                                                           bool need_weight, bool need_bias,
                                                           const c10::optional<at::Tensor>& bias_like) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "normlab chfirst_bwd: expects a contiguous (N, C, S) input");
  const at::Tensor dy = dy_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2);
  TORCH_CHECK(dy.sizes() == x.sizes(), "normlab chfirst_bwd: dy must have x's shape");
  check_numel(weight, C, "weight", "chfirst_bwd");
  check_numel(bias_like, C, "bias", "chfirst_bwd");
  check_stats(stats, {center ? 3 : 1, N, S}, acc_type(x), "chfirst_bwd");
  at::Tensor dx = at::empty_like(x);
  prepare_output(dx);
  at::Tensor dw, db;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_chfirst_bwd", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> w;
    if (has(weight)) w = as_acc<A>(weight, C, A(1));
    const int64_t parts = at::get_num_threads();
    ThreadSums<A> tw(need_weight ? C : 0, parts), tb(need_bias ? C : 0, parts);
    const at::Tensor st_ = stats.contiguous();
    auto args = std::make_tuple(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                                st_.data_ptr<A>(), w.empty() ? nullptr : w.data(),
                                need_weight ? &tw : nullptr, need_bias ? &tb : nullptr);
    if (center) std::apply([&](auto... a) { bwd_impl<scalar_t, true>(a..., N, C, S, eps); }, args);
    else std::apply([&](auto... a) { bwd_impl<scalar_t, false>(a..., N, C, S, eps); }, args);
    const auto opts = x.options().dtype(std::is_same<A, double>::value ? at::kDouble : at::kFloat);
    dw = grad_tensor<A>(need_weight ? tw.total() : std::vector<A>(), weight, need_weight, opts);
    db = grad_tensor<A>(need_bias ? tb.total() : std::vector<A>(), bias_like, need_bias, opts);
  });
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(normlab, m) {
  m.def("chfirst_fwd(Tensor x, Tensor? weight, Tensor? bias, float eps, bool center) -> (Tensor, Tensor)");
  m.def("chfirst_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor stats, float eps, bool center, bool need_weight, "
        "bool need_bias, Tensor? bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(normlab, CPU, m) {
  m.impl("chfirst_fwd", &chfirst_fwd);
  m.impl("chfirst_bwd", &chfirst_bwd);
}

}  // namespace normlab
