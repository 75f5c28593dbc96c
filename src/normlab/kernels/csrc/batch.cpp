// Batch normalization: statistics of each channel over every other dim, optionally masked.
//
// Two layouts: "ncs", x viewed as (N, C, S) with the channel in the middle (BatchNorm2d/3d on
// contiguous NCHW), processed channel by channel; and "cols", x viewed as (M, C) with the channel
// last (BatchNorm1d on (N, C), BatchNorm(channel_dim=-1) on (B, T, D), channels-last NCHW),
// processed in row blocks with per-thread column sums.  A mask ((N, S) or (M,), bool, True = real)
// keeps elements out of the statistics; every element is normalized.  With given statistics
// (running mean and variance: eval mode, a frozen layer) nothing is reduced.
//
// stats: (4, C) = shift, corr, biased var, count (the number of real elements per channel).
#include "common.h"
#include "entry.h"

#include <c10/util/accumulate.h>
#include <torch/library.h>

namespace normlab {
namespace {

template <typename A>
struct ChannelStats {
  std::vector<A> shift, corr, var, rstd;
  explicit ChannelStats(int64_t C) : shift(C, A(0)), corr(C, A(0)), var(C, A(0)), rstd(C, A(0)) {}
};

// ------------------------------------------------------------------------------- (N, C, S)
// A channel's output as one multiply-add after the shift: y = ((x - shift) - corr) * rstd * w + b
// = (x - shift) * k + (b - corr * k) with k = rstd * w; x - shift keeps the digits a large mean
// costs, and the folded constants cost an ulp or two against the reference's order of rounding.  A
// channel whose batch variance is 0 (constant) gives exactly b, as the reference's (x - shift) - corr
// = 0 does (the multiply-add would leave the rounding error of corr * k).  Not with a mask (the
// padded elements, outside the statistics, are normalized too), not with given (running) statistics
// (used as they are), and not where rstd is infinite (eps = 0: the reference's 0 * inf is NaN).
template <typename A>
inline void channel_affine(const ChannelStats<A>& cs, const A* w, const A* b, int64_t c, bool exact_constant, A& k,
                           A& bk) {
  const bool constant = exact_constant && cs.var[c] == A(0) && std::isfinite(cs.rstd[c]);
  k = constant ? A(0) : cs.rstd[c] * (w ? w[c] : A(1));
  bk = (b ? b[c] : A(0)) - cs.corr[c] * k;
}

template <typename T>
inline void ncs_apply_channel(const T* x, T* y, int64_t c, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w,
                              const acc_t<T>* b, int64_t N, int64_t C, int64_t S, bool exact_constant);

// per channel: the statistics, then (y given) the output, while the channel's values are in cache
template <typename T>
void ncs_stats(const T* x, const bool* mask, int64_t N, int64_t C, int64_t S, double count,
               ChannelStats<acc_t<T>>& cs, double eps, T* y, const acc_t<T>* w, const acc_t<T>* b) {
  using A = acc_t<T>;
  const A inv = A(1) / A(std::max(count, 1.0));
  at::parallel_for(0, C, grain_for(N * S), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        if (!mask) {
          s += sum1(xr, S);
          continue;
        }
        const bool* mr = mask + n * S;
        for (int64_t i0 = 0; i0 < S; i0 += kChunk) {
          const int64_t i1 = std::min(S, i0 + kChunk);
          A p = 0;
#pragma omp simd reduction(+ : p)
          for (int64_t i = i0; i < i1; ++i) p += mr[i] ? ld(xr, i) : A(0);
          s += p;
        }
      }
      const A shift = A(s) * inv;
      double sd = 0, sq = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        if (!mask) {
          sum_dev(xr, S, shift, sd, sq);
          continue;
        }
        const bool* mr = mask + n * S;
        for (int64_t i0 = 0; i0 < S; i0 += kChunk) {
          const int64_t i1 = std::min(S, i0 + kChunk);
          A a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
          for (int64_t i = i0; i < i1; ++i) {
            const A d = mr[i] ? ld(xr, i) - shift : A(0);
            a += d;
            b += d * d;
          }
          sd += a;
          sq += b;
        }
      }
      cs.shift[c] = shift;
      cs.corr[c] = A(sd) * inv;
      cs.var[c] = std::max(A(sq) * inv - cs.corr[c] * cs.corr[c], A(0));
      cs.rstd[c] = A(1) / std::sqrt(cs.var[c] + A(eps));
      if (y) ncs_apply_channel(x, y, c, cs, w, b, N, C, S, mask == nullptr);
    }
  });
}

template <typename T>
inline void ncs_apply_channel(const T* x, T* y, int64_t c, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w,
                              const acc_t<T>* b, int64_t N, int64_t C, int64_t S, bool exact_constant) {
  using A = acc_t<T>;
  const A sh = cs.shift[c];
  A k, bk;
  channel_affine(cs, w, b, c, exact_constant, k, bk);
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + (n * C + c) * S;
    T* yr = y + (n * C + c) * S;
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) st(yr, i, (ld(xr, i) - sh) * k + bk);
  }
}

// the output with given per-channel statistics, rows of S in parallel
template <typename T>
void ncs_apply(const T* x, T* y, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w, const acc_t<T>* b, int64_t N,
               int64_t C, int64_t S) {
  using A = acc_t<T>;
  at::parallel_for(0, N * C, grain_for(S), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r % C;
      const A sh = cs.shift[c];
      A k, bk;
      channel_affine(cs, w, b, c, false, k, bk);  // given statistics only
      const T* xr = x + r * S;
      T* yr = y + r * S;
#pragma omp simd
      for (int64_t i = 0; i < S; ++i) st(yr, i, (ld(xr, i) - sh) * k + bk);
    }
  });
}

// sums over every element of a channel of dy and dy * xhat; then dx
template <typename T>
void ncs_bwd(const T* dy, const T* x, const bool* mask, T* dx, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w,
             acc_t<T>* dw, acc_t<T>* db, int64_t N, int64_t C, int64_t S, double count, bool batch_stats) {
  using A = acc_t<T>;
  const A inv = A(1) / A(std::max(count, 1.0));
  at::parallel_for(0, C, grain_for(N * S), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const A sh = cs.shift[c], co = cs.corr[c], rs = cs.rstd[c];
      double sdy = 0, sdyx = 0;
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        const T* gr = dy + (n * C + c) * S;
        for (int64_t i0 = 0; i0 < S; i0 += kChunk) {
          const int64_t i1 = std::min(S, i0 + kChunk);
          A a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
          for (int64_t i = i0; i < i1; ++i) {
            const A g = ld(gr, i);
            a += g;
            b += g * (((ld(xr, i) - sh) - co) * rs);
          }
          sdy += a;
          sdyx += b;
        }
      }
      if (dw) dw[c] = A(sdyx);
      if (db) db[c] = A(sdy);
      const A wc = w ? w[c] : A(1);
      const A k = wc * rs;
      const A m1 = batch_stats ? A(sdy) * inv : A(0), m2 = batch_stats ? A(sdyx) * inv : A(0);
      for (int64_t n = 0; n < N; ++n) {
        const T* xr = x + (n * C + c) * S;
        const T* gr = dy + (n * C + c) * S;
        T* dr = dx + (n * C + c) * S;
        if (mask) {
          const bool* mr = mask + n * S;
#pragma omp simd
          for (int64_t i = 0; i < S; ++i) {
            const A xh = ((ld(xr, i) - sh) - co) * rs;
            const A through = m1 + xh * m2;  // computed for every element, selected: no branch
            st(dr, i, k * (ld(gr, i) - (mr[i] ? through : A(0))));
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < S; ++i) {
            const A xh = ((ld(xr, i) - sh) - co) * rs;
            st(dr, i, k * (ld(gr, i) - m1 - xh * m2));
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------- (M, C)
// rows per block: about 64K elements (a block stays in L2 between its two passes), 16 to 1024 rows
inline int64_t row_block(int64_t C) { return std::max<int64_t>(16, std::min<int64_t>(1024, 65536 / std::max<int64_t>(C, 1))); }

// Column statistics in one pass over memory: each block of row_block(C) rows is reduced while it is
// in cache with the corrected two-pass formula (its mean, and the sum of squared deviations from
// it), and the blocks are merged in double with Chan et al.'s pairwise update
//   n = na + nb,  mean = mean_a + d nb / n,  M2 = M2a + M2b + d^2 na nb / n,  d = mean_b - mean_a,
// which is as precise as two passes over the whole column (no E[x^2] - E[x]^2 cancellation).
template <typename T>
void cols_stats(const T* x, const bool* mask, int64_t M, int64_t C, double count, ChannelStats<acc_t<T>>& cs) {
  using A = acc_t<T>;
  (void)count;
  const int64_t parts = at::get_num_threads();
  const int64_t RB = row_block(C), blocks = (M + RB - 1) / RB;
  ThreadSums<double> tn(1, parts), tmean(C, parts), tm2(C, parts);  // apart by cache lines (see common.h)
  at::parallel_for(0, blocks, grain_for(RB * C), [&](int64_t b0, int64_t b1) {
    double* mean = tmean.mine();
    double* m2 = tm2.mine();
    double& n = *tn.mine();
    std::vector<A> pa(C), pb(C), bm(C);
    for (int64_t bl = b0; bl < b1; ++bl) {
      const int64_t r0 = bl * RB, r1 = std::min(M, r0 + RB);
      int64_t nb = 0;
      std::fill(pa.begin(), pa.end(), A(0));
      A* a = pa.data();
      int64_t r = r0;
      if (!mask) {  // four rows per sweep of the accumulators (a quarter of their loads and stores)
        for (; r + 4 <= r1; r += 4) {
          const T *x0 = x + r * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) a[c] += (ld(x0, c) + ld(x1, c)) + (ld(x2, c) + ld(x3, c));
        }
        nb += r - r0;
      }
      for (; r < r1; ++r) {
        if (mask && !mask[r]) continue;
        ++nb;
        const T* xr = x + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] += ld(xr, c);
      }
      if (nb == 0) continue;
      const A inv = A(1) / A(nb);
      A* m = bm.data();
      for (int64_t c = 0; c < C; ++c) m[c] = a[c] * inv;
      std::fill(pa.begin(), pa.end(), A(0));
      std::fill(pb.begin(), pb.end(), A(0));
      A* q = pb.data();
      r = r0;
      if (!mask) {
        for (; r + 4 <= r1; r += 4) {
          const T *x0 = x + r * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A d0 = ld(x0, c) - m[c], d1 = ld(x1, c) - m[c], d2 = ld(x2, c) - m[c], d3 = ld(x3, c) - m[c];
            a[c] += (d0 + d1) + (d2 + d3);
            q[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
          }
        }
      }
      for (; r < r1; ++r) {
        if (mask && !mask[r]) continue;
        const T* xr = x + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A d = ld(xr, c) - m[c];
          a[c] += d;
          q[c] += d * d;
        }
      }
      const double nn = n + double(nb), wb = double(nb) / nn, cross = n * double(nb) / nn, inb = 1.0 / double(nb);
      for (int64_t c = 0; c < C; ++c) {
        const double corr = double(a[c]) * inb;
        const double block_mean = double(m[c]) + corr;
        const double block_m2 = std::max(double(q[c]) - double(nb) * corr * corr, 0.0);
        const double d = block_mean - mean[c];
        mean[c] += d * wb;
        m2[c] += block_m2 + d * d * cross;
      }
      n = nn;
    }
  });
  // merge the threads' partial statistics the same way
  for (int64_t c = 0; c < C; ++c) {
    double n = 0, mean = 0, m2 = 0;
    for (int64_t t = 0; t < parts; ++t) {
      const double nb = *tn.part(t);
      if (nb == 0) continue;
      const double nn = n + nb, d = tmean.part(t)[c] - mean;
      mean += d * nb / nn;
      m2 += tm2.part(t)[c] + d * d * n * nb / nn;
      n = nn;
    }
    cs.shift[c] = A(mean);
    cs.corr[c] = A(mean - double(cs.shift[c]));
    cs.var[c] = A(n > 0 ? m2 / n : 0.0);
  }
}

template <typename T>
void cols_apply(const T* x, T* y, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w, const acc_t<T>* b, int64_t M,
                int64_t C, bool exact_constant) {
  using A = acc_t<T>;
  std::vector<A> k(C), bv(C, A(0));
  for (int64_t c = 0; c < C; ++c) channel_affine(cs, w, b, c, exact_constant, k[c], bv[c]);
  const A* sh = cs.shift.data();
  const A* kv = k.data();
  const A* bp = bv.data();
  at::parallel_for(0, M, grain_for(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      T* yr = y + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) st(yr, c, (ld(xr, c) - sh[c]) * kv[c] + bp[c]);
    }
  });
}

template <typename T>
void cols_bwd(const T* dy, const T* x, const bool* mask, T* dx, const ChannelStats<acc_t<T>>& cs, const acc_t<T>* w,
              acc_t<T>* dw, acc_t<T>* db, int64_t M, int64_t C, double count, bool batch_stats) {
  using A = acc_t<T>;
  const A inv = A(1) / A(std::max(count, 1.0));
  const int64_t parts = at::get_num_threads();
  const int64_t RB = row_block(C), blocks = (M + RB - 1) / RB;
  ThreadSums<double> tot(C, parts), tot2(C, parts);
  const A* sh = cs.shift.data();
  const A* co = cs.corr.data();
  const A* rs = cs.rstd.data();
  at::parallel_for(0, blocks, grain_for(RB * C), [&](int64_t b0, int64_t b1) {
    double* t = tot.mine();
    double* t2 = tot2.mine();
    std::vector<A> pa(C), pb(C);
    for (int64_t bl = b0; bl < b1; ++bl) {
      std::fill(pa.begin(), pa.end(), A(0));
      std::fill(pb.begin(), pb.end(), A(0));
      A* a = pa.data();
      A* b = pb.data();
      // sums of dy and of dy * (x - shift); corr and rstd are applied per column afterwards
      const int64_t r1 = std::min(M, (bl + 1) * RB);
      int64_t r = bl * RB;
      for (; r + 4 <= r1; r += 4) {  // four rows per sweep of the accumulators, as in cols_stats
        const T *x0 = x + r * C, *x1 = x0 + C, *x2 = x1 + C, *x3 = x2 + C;
        const T *g0 = dy + r * C, *g1 = g0 + C, *g2 = g1 + C, *g3 = g2 + C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A e0 = ld(g0, c), e1 = ld(g1, c), e2 = ld(g2, c), e3 = ld(g3, c);
          a[c] += (e0 + e1) + (e2 + e3);
          b[c] += (e0 * (ld(x0, c) - sh[c]) + e1 * (ld(x1, c) - sh[c])) +
                  (e2 * (ld(x2, c) - sh[c]) + e3 * (ld(x3, c) - sh[c]));
        }
      }
      for (; r < r1; ++r) {
        const T* xr = x + r * C;
        const T* gr = dy + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const A g = ld(gr, c);
          a[c] += g;
          b[c] += g * (ld(xr, c) - sh[c]);
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        t[c] += pa[c];
        t2[c] += pb[c];
      }
    }
  });
  // dx = k (dy - m1 - xhat m2), xhat = ((x - shift) - corr) rstd, k = w rstd, folded per column into
  // dx = k dy - s2 (x - shift) + c0 with s2 = k m2 rstd, c0 = s2 corr - k m1 (x - shift stays exact)
  std::vector<A> k(C), s2(C), c0(C);
  for (int64_t c = 0; c < C; ++c) {
    double sdy = 0, sdd = 0;
    for (int64_t t = 0; t < parts; ++t) {
      sdy += tot.part(t)[c];
      sdd += tot2.part(t)[c];
    }
    const double sdyx = (sdd - double(co[c]) * sdy) * double(rs[c]);  // sum of dy * xhat
    if (dw) dw[c] = A(sdyx);
    if (db) db[c] = A(sdy);
    k[c] = (w ? w[c] : A(1)) * rs[c];
    const A m1 = batch_stats ? A(sdy) * inv : A(0), m2 = batch_stats ? A(sdyx) * inv : A(0);
    s2[c] = k[c] * m2 * rs[c];
    c0[c] = s2[c] * co[c] - k[c] * m1;
  }
  const A* kv = k.data();
  const A* sv = s2.data();
  const A* cv = c0.data();
  at::parallel_for(0, M, grain_for(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * C;
      const T* gr = dy + r * C;
      T* dr = dx + r * C;
      if (mask && !mask[r]) {  // a padded row: no gradient through the statistics
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) st(dr, c, kv[c] * ld(gr, c));
        continue;
      }
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) st(dr, c, kv[c] * ld(gr, c) - sv[c] * (ld(xr, c) - sh[c]) + cv[c]);
    }
  });
}

// --------------------------------------------------------------------------------- ops
struct Geometry {
  int64_t N, C, S;  // cols: N = M rows, S = 1
  bool cols;
};

// x of any shape of the layout, contiguous: cols (*, C), the channel last, M = the product of the
// rest; else (N, C, *), S = the product of the trailing dims.  Outputs keep x's shape.
Geometry geometry(const at::Tensor& x, bool cols) {
  if (cols) {
    TORCH_CHECK(x.dim() >= 2 && x.is_contiguous(), "normlab batch: cols layout expects a contiguous (*, C) input");
    return {c10::multiply_integers(x.sizes().slice(0, x.dim() - 1)), x.size(-1), 1, true};
  }
  TORCH_CHECK(x.dim() >= 2 && x.is_contiguous(), "normlab batch: expects a contiguous (N, C, *) input");
  return {x.size(0), x.size(1), c10::multiply_integers(x.sizes().slice(2)), false};
}

template <typename A>
void fill_given(ChannelStats<A>& cs, const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& var,
                int64_t C) {
  cs.shift = as_acc<A>(mean, C, A(0));
  cs.var = as_acc<A>(var, C, A(1));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> batch_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                             const c10::optional<at::Tensor>& bias,
                                             const c10::optional<at::Tensor>& mask_in,
                                             const c10::optional<at::Tensor>& mean,
                                             const c10::optional<at::Tensor>& var, double eps, bool cols) {
  const Geometry g = geometry(x, cols);
  const bool given = has(mean);
  TORCH_CHECK(given == has(var), "normlab batch_fwd: give both mean and var (running statistics) or neither");
  check_numel(weight, g.C, "weight", "batch_fwd");
  check_numel(bias, g.C, "bias", "batch_fwd");
  check_numel(mean, g.C, "mean", "batch_fwd");
  check_numel(var, g.C, "var", "batch_fwd");
  at::Tensor mask;
  if (has(mask_in)) {
    mask = mask_in->contiguous();
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.numel() == g.N * g.S, "normlab batch: bad mask");
  }
  at::Tensor y = at::empty_like(x);
  prepare_output(y);
  const bool dbl = x.scalar_type() == at::kDouble;
  at::Tensor stats = at::empty({given ? 0 : 4, g.C}, x.options().dtype(dbl ? at::kDouble : at::kFloat));
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  double count = double(g.N * g.S);
  if (mp && !given) {
    int64_t k = 0;
    for (int64_t i = 0; i < g.N * g.S; ++i) k += mp[i];
    count = double(k);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_batch_fwd", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> w, b;
    if (has(weight)) w = as_acc<A>(weight, g.C, A(1));
    if (has(bias)) b = as_acc<A>(bias, g.C, A(0));
    ChannelStats<A> cs(g.C);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const A* wp = w.empty() ? nullptr : w.data();
    const A* bp = b.empty() ? nullptr : b.data();
    scalar_t* yp = y.data_ptr<scalar_t>();
    if (!given && !g.cols) {  // statistics and output channel by channel
      ncs_stats(xp, mp, g.N, g.C, g.S, count, cs, eps, yp, wp, bp);
    } else {
      if (given) fill_given(cs, mean, var, g.C);
      else cols_stats(xp, mp, g.N, g.C, count, cs);
      for (int64_t c = 0; c < g.C; ++c) cs.rstd[c] = A(1) / std::sqrt(cs.var[c] + A(eps));
      if (g.cols) cols_apply(xp, yp, cs, wp, bp, g.N, g.C, !given && mp == nullptr);
      else ncs_apply(xp, yp, cs, wp, bp, g.N, g.C, g.S);
    }
    if (!given) {
      A* sp = stats.data_ptr<A>();
      for (int64_t c = 0; c < g.C; ++c) {
        sp[c] = cs.shift[c];
        sp[g.C + c] = cs.corr[c];
        sp[2 * g.C + c] = cs.var[c];
        sp[3 * g.C + c] = A(count);
      }
    }
  });
  return {y, stats};
}

// stats: the (4, C) batch statistics of batch_fwd, or (2, C) given mean and var (then no
// gradient flows through the statistics)
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_bwd(const at::Tensor& dy_in, const at::Tensor& x,
                                                         const c10::optional<at::Tensor>& weight,
                                                         const c10::optional<at::Tensor>& mask_in,
                                                         const at::Tensor& stats_in, double eps, bool cols,
                                                         bool need_weight, bool need_bias,
                                                         const c10::optional<at::Tensor>& bias_like) {
  const Geometry g = geometry(x, cols);
  const at::Tensor dy = dy_in.contiguous();
  TORCH_CHECK(dy.sizes() == x.sizes(), "normlab batch_bwd: dy must have x's shape");
  at::Tensor mask;
  if (has(mask_in)) {
    mask = mask_in->contiguous();
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.numel() == g.N * g.S, "normlab batch_bwd: bad mask");
  }
  check_numel(weight, g.C, "weight", "batch_bwd");
  check_numel(bias_like, g.C, "bias", "batch_bwd");
  TORCH_CHECK(stats_in.dim() == 2 && (stats_in.size(0) == 4 || stats_in.size(0) == 2) && stats_in.size(1) == g.C,
              "normlab batch_bwd: stats must be the (4, C) batch statistics or the (2, C) given mean and var, C = ",
              g.C, ", got shape ", stats_in.sizes());
  const bool batch_stats = stats_in.size(0) == 4;
  at::Tensor dx = at::empty_like(x);
  prepare_output(dx);
  at::Tensor dw, db;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "normlab_batch_bwd", [&] {
    using A = acc_t<scalar_t>;
    const at::Tensor stats = stats_in.to(std::is_same<A, double>::value ? at::kDouble : at::kFloat).contiguous();
    const A* sp = stats.data_ptr<A>();
    ChannelStats<A> cs(g.C);
    double count = 1;
    for (int64_t c = 0; c < g.C; ++c) {
      if (batch_stats) {
        cs.shift[c] = sp[c];
        cs.corr[c] = sp[g.C + c];
        cs.var[c] = sp[2 * g.C + c];
        count = sp[3 * g.C + c];
      } else {
        cs.shift[c] = sp[c];
        cs.var[c] = sp[g.C + c];
      }
      cs.rstd[c] = A(1) / std::sqrt(cs.var[c] + A(eps));
    }
    std::vector<A> w, gw(g.C), gb(g.C);
    if (has(weight)) w = as_acc<A>(weight, g.C, A(1));
    const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
    const A* wp = w.empty() ? nullptr : w.data();
    if (g.cols)
      cols_bwd(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), mp, dx.data_ptr<scalar_t>(), cs, wp, gw.data(),
               gb.data(), g.N, g.C, count, batch_stats);
    else
      ncs_bwd(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), mp, dx.data_ptr<scalar_t>(), cs, wp, gw.data(),
              gb.data(), g.N, g.C, g.S, count, batch_stats);
    const auto opts = x.options().dtype(std::is_same<A, double>::value ? at::kDouble : at::kFloat);
    dw = grad_tensor<A>(gw, weight, need_weight, opts);
    db = grad_tensor<A>(gb, bias_like, need_bias, opts);
  });
  return {dx, dw, db};
}

// Fold batch statistics into running ones in place, as normlab.Norm._update_running_stats does:
// running = lerp(running, batch, factor) with the unbiased batch variance, where factor is
// `momentum`, or 1 / num_batches_tracked when momentum < 0 (the cumulative average); a channel
// whose statistics are non-finite or come from fewer than `min_count` values keeps its running
// values.  Returns the channels whose statistics were non-finite (bool, for the caller's warning).
at::Tensor batch_update(at::Tensor& running_mean, at::Tensor& running_var, const at::Tensor& num_batches_tracked,
                        const at::Tensor& stats_in, double momentum, int64_t min_count) {
  TORCH_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), "normlab batch_update: contiguous buffers");
  const int64_t C = running_mean.numel();
  TORCH_CHECK(running_var.numel() == C && running_var.scalar_type() == running_mean.scalar_type(),
              "normlab batch_update: running_var must match running_mean (", C, " elements)");
  TORCH_CHECK(stats_in.dim() == 2 && stats_in.size(0) == 4 && stats_in.size(1) == C,
              "normlab batch_update: stats must be the (4, C) batch statistics, C = ", C, ", got shape ",
              stats_in.sizes());
  TORCH_CHECK(num_batches_tracked.numel() == 1, "normlab batch_update: num_batches_tracked must have one element");
  const at::Tensor stats = stats_in.to(at::kDouble).contiguous();
  const double* sp = stats.data_ptr<double>();
  const double factor = momentum >= 0 ? momentum : 1.0 / double(std::max<int64_t>(num_batches_tracked.item<int64_t>(), 1));
  at::Tensor bad = at::empty({C}, running_mean.options().dtype(at::kBool));
  bool* bp = bad.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, running_mean.scalar_type(), "normlab_batch_update", [&] {
    scalar_t* rm = running_mean.data_ptr<scalar_t>();
    scalar_t* rv = running_var.data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) {
      const double mean = sp[c] + sp[C + c], var = sp[2 * C + c], n = sp[3 * C + c];
      const bool finite = std::isfinite(mean) && std::isfinite(var);
      bp[c] = !finite;
      if (!finite || n < double(min_count)) continue;
      const double unbiased = var * (n / std::max(n - 1.0, 1.0));
      const double m0 = double(rm[c]), v0 = double(rv[c]);
      rm[c] = scalar_t(m0 + factor * (mean - m0));
      rv[c] = scalar_t(v0 + factor * (unbiased - v0));
    }
  });
  return bad;
}

TORCH_LIBRARY_FRAGMENT(normlab, m) {
  m.def("batch_fwd(Tensor x, Tensor? weight, Tensor? bias, Tensor? mask, Tensor? mean, Tensor? var, float eps, "
        "bool cols) -> (Tensor, Tensor)");
  m.def("batch_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor? mask, Tensor stats, float eps, bool cols, "
        "bool need_weight, bool need_bias, Tensor? bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(normlab, CPU, m) {
  m.impl("batch_fwd", &batch_fwd);
  m.impl("batch_bwd", &batch_bwd);
}

}  // namespace normlab
