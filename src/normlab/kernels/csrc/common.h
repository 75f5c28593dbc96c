// Shared pieces of normlab's CPU kernels: dtype loads/stores, chunked sums, the corrected two-pass
// statistics of one contiguous run, weights as an accumulation-type buffer, per-thread scratch.
//
// Precision rule (the same as normlab.functional): statistics in float32 for float32/bf16/fp16
// inputs and in float64 for float64; the variance is the corrected two-pass one, with the first
// pass mean (shift) and its correction (corr) kept apart; the output is rounded once, at the end.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/stack.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace normlab {

// accumulation type: float for every float type but double
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;

// Loads and stores are written without branches or memcpy so that loops over them vectorize
// (the compiler turns the selects into blends); every conversion is exact or rounds as c10 does.
inline float ld(const float* p, int64_t i) { return p[i]; }
inline double ld(const double* p, int64_t i) { return p[i]; }
inline float ld(const c10::BFloat16* p, int64_t i) { return std::bit_cast<float>(uint32_t(p[i].x) << 16); }
// IEEE half -> float, denormals, inf and NaN included, with no denormal float on the way: a normal
// half by rebiasing its exponent in the integer bits, a subnormal one as its mantissa (an integer)
// times 2^-24, which is a normal float.  (Scaling the bits as a float denormal by 2^112 is zeroed
// when the CPU flushes denormals, as torch.set_flush_denormal(True) makes it do; every fp16
// subnormal is a normal float32, and torch's own conversion keeps it.)
inline float ld(const c10::Half* p, int64_t i) {
  const uint32_t h = p[i].x;
  const uint32_t em = h & 0x7FFFu;
  const uint32_t normal = (em << 13) + 0x38000000u;                       // exponent 15 -> 127
  const uint32_t sub = std::bit_cast<uint32_t>(float(int32_t(em)) * 0x1p-24f);
  const uint32_t special = (em << 13) | 0x7F800000u;                       // inf, NaN (payload kept)
  const uint32_t bits = em >= 0x7C00u ? special : (em < 0x0400u ? sub : normal);
  return std::bit_cast<float>(bits | ((h & 0x8000u) << 16));
}

inline void st(float* p, int64_t i, float v) { p[i] = v; }
inline void st(double* p, int64_t i, double v) { p[i] = v; }
// round to nearest even, NaN to the canonical quiet NaN: bit-identical to c10's float -> bfloat16
inline void st(c10::BFloat16* p, int64_t i, float v) {
  const uint32_t u = std::bit_cast<uint32_t>(v);
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  p[i].x = uint16_t(v != v ? 0x7FC0u : r);
}
inline void st(c10::Half* p, int64_t i, float v) { p[i] = c10::Half(v); }

// Sums are taken in chunks: inside a chunk kLanes independent partial sums (a few vector
// registers, so the adds do not wait on each other), chunk sums added in double, so long
// reductions (a GroupNorm row, a BatchNorm channel) keep float32 accuracy.
constexpr int64_t kChunk = 1024;
constexpr int64_t kLanes = 32;

// the sum of the kLanes partial sums, pairwise (halving: a few vector adds, not kLanes dependent
// scalar ones, which cost as much as the whole pass over a short row); p is overwritten
template <typename A>
inline A fold_lanes(A* p) {
  for (int64_t h = kLanes / 2; h >= 1; h /= 2) {
#pragma omp simd
    for (int64_t j = 0; j < h; ++j) p[j] += p[j + h];
  }
  return p[0];
}

// sum of f(x[i]) over x[0..n): kLanes partial sums per chunk, chunk sums in double
template <typename T, typename F>
inline double sum_of(const T* x, int64_t n, F f) {
  using A = acc_t<T>;
  double total = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1 = std::min(n, c0 + kChunk);
    A p[kLanes] = {};
    int64_t i = c0;
    for (; i + kLanes <= c1; i += kLanes) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) p[j] += f(ld(x, i + j));
    }
    A s = fold_lanes(p);
    for (; i < c1; ++i) s += f(ld(x, i));
    total += s;
  }
  return total;
}

template <typename T>
inline double sum1(const T* x, int64_t n) {
  return sum_of(x, n, [](acc_t<T> v) { return v; });
}

template <typename T>
inline double sum_sq(const T* x, int64_t n) {
  return sum_of(x, n, [](acc_t<T> v) { return v * v; });
}

// sum of (x - shift) and of (x - shift)^2 over x[0..n)
template <typename T>
inline void sum_dev(const T* x, int64_t n, acc_t<T> shift, double& sd, double& sq) {
  using A = acc_t<T>;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1 = std::min(n, c0 + kChunk);
    A p[kLanes] = {}, q[kLanes] = {};
    int64_t i = c0;
    for (; i + kLanes <= c1; i += kLanes) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) {
        const A d = ld(x, i + j) - shift;
        p[j] += d;
        q[j] += d * d;
      }
    }
    A a = fold_lanes(p), b = fold_lanes(q);
    for (; i < c1; ++i) {
      const A d = ld(x, i) - shift;
      a += d;
      b += d * d;
    }
    sd += a;
    sq += b;
  }
}

// Statistics of one contiguous run: shift (first-pass mean), corr (mean of x - shift) and the
// biased variance mean((x - shift)^2) - corr^2 (clamped at 0); without centering only the mean
// square.  Each sum is rounded to A once, as the reference's torch.sum in the compute dtype.
template <typename T>
struct Moments {
  acc_t<T> shift = 0, corr = 0, var = 0;
};

// A constant run's variance is 0, as the reference computes it; the sums above leave it at the
// rounding error of shift and corr instead (~1e-21 for a row of 18 ones: with eps = 0 the output
// is then beta where the reference's 0 * inf is NaN).  A variance within a few ulps of shift's
// square is checked against the values themselves: only such nearly constant runs pay that pass.
template <typename A>
inline bool near_constant(A shift, A corr, A var) {
  constexpr A eps = std::numeric_limits<A>::epsilon();
  return var <= (shift * shift + corr * corr) * (A(64) * eps * eps);
}

template <typename T>
inline bool is_constant(const T* x, int64_t n) {
  const auto v0 = ld(x, 0);
  for (int64_t i = 1; i < n; ++i)
    if (ld(x, i) != v0) return false;
  return true;
}

template <typename T>
inline Moments<T> run_moments(const T* x, int64_t n, bool center) {
  using A = acc_t<T>;
  Moments<T> m;
  const A inv = n > 0 ? A(1) / A(n) : A(0);
  if (!center) {
    m.var = A(sum_sq(x, n)) * inv;
    return m;
  }
  m.shift = A(sum1(x, n)) * inv;
  double sd = 0, sq = 0;
  sum_dev(x, n, m.shift, sd, sq);
  m.corr = A(sd) * inv;
  m.var = std::max(A(sq) * inv - m.corr * m.corr, A(0));
  if (m.var > A(0) && near_constant(m.shift, m.corr, m.var) && is_constant(x, n)) {
    m.corr = ld(x, 0) - m.shift;  // exact (Sterbenz): every (x - shift) - corr is then 0
    m.var = A(0);
  }
  return m;
}

// An optional weight/bias tensor as a contiguous buffer of the accumulation type.
template <typename A>
inline std::vector<A> as_acc(const c10::optional<at::Tensor>& t, int64_t n, A fill) {
  std::vector<A> out(n, fill);
  if (t.has_value() && t->defined()) {
    at::Tensor c = t->to(std::is_same<A, double>::value ? at::kDouble : at::kFloat).contiguous();
    const A* p = c.data_ptr<A>();
    std::copy(p, p + n, out.begin());
  }
  return out;
}

// Ask for the next row while this one is computed, when it is short (at most kPrefetchRow bytes):
// its passes then run from cache with the next row's traffic overlapping them.  A long row's burst
// of prefetches did worse than the hardware's own streams (A/B over 32 processes: LayerNorm
// 8x512x768 fp32 forward+backward 1.05x torch with, 1.10x without; 2048x4096 forward 1.00x with,
// 0.97x without).
constexpr int64_t kPrefetchRow = 8192;

template <typename T>
inline void prefetch_row(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * int64_t(sizeof(T));
  if (bytes > kPrefetchRow) return;
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}

inline bool has(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// The ops are public (torch.ops.normlab.*): a parameter, statistic or mask of the wrong size would be
// read past its end, so each op checks what it reads against the input's geometry.
inline void check_numel(const c10::optional<at::Tensor>& t, int64_t n, const char* what, const char* who) {
  if (has(t))
    TORCH_CHECK(t->numel() == n, "normlab ", who, ": ", what, " must have ", n, " elements for this input, got ",
                t->numel(), " (shape ", t->sizes(), ")");
}

// statistics of the accumulation type with the given shape (what the forward op returned)
inline void check_stats(const at::Tensor& stats, at::IntArrayRef shape, at::ScalarType acc, const char* who) {
  TORCH_CHECK(stats.sizes() == shape && stats.scalar_type() == acc, "normlab ", who, ": stats must be ", acc, " of shape ",
              shape, " (as the forward op returns them), got ", stats.scalar_type(), " of shape ", stats.sizes());
}

inline at::ScalarType acc_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Per-thread partial sums (for parameter gradients), reduced at the end.  Each thread's part starts
// on its own 128-byte boundary (two cache lines: the adjacent-line prefetcher pairs them): the parts
// are updated on every row, and two cores writing one line make it move between them on each update
// (false sharing: with the parts packed back to back, a (768, 128) LayerNorm backward took 1x to 4x
// torch's time from one process to the next, by where malloc happened to place the buffer).
template <typename A>
struct ThreadSums {
  static constexpr int64_t kPad = int64_t(128 / sizeof(A));
  int64_t n, stride, parts;
  std::vector<A> store;
  A* base;
  ThreadSums(int64_t n_, int64_t parts_)
      : n(n_), stride((n_ + kPad - 1) / kPad * kPad), parts(std::max<int64_t>(parts_, 1)),
        store(size_t(stride * parts + kPad), A(0)) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(store.data());
    base = reinterpret_cast<A*>((p + 127) & ~uintptr_t(127));
  }
  A* part(int64_t t) { return base + stride * t; }
  A* mine() { return part(int64_t(at::get_thread_num())); }
  std::vector<A> total() const {
    std::vector<A> out(size_t(n), A(0));
    for (int64_t t = 0; t < parts; ++t)
      for (int64_t i = 0; i < n; ++i) out[size_t(i)] += base[stride * t + i];
    return out;
  }
};

// a parameter gradient in the parameter's dtype (empty when not wanted)
template <typename A>
inline at::Tensor grad_tensor(const std::vector<A>& g, const c10::optional<at::Tensor>& like, bool want,
                              const at::TensorOptions& acc_opts) {
  if (!want) return at::empty({0}, acc_opts);  // defined, as the fake implementation says
  at::Tensor t = at::empty({int64_t(g.size())}, acc_opts);
  std::copy(g.begin(), g.end(), t.data_ptr<A>());
  if (has(like)) return t.to(like->scalar_type()).view(like->sizes());
  return t;
}

// Streaming stores.  An output too big to stay in the last-level cache is written with
// non-temporal stores: an ordinary store first reads the line it writes (read for ownership), so a
// normalization that reads x and writes y moves three tensors' worth of memory where the copy
// floor is two.  A row is computed into a small per-thread buffer (it stays in L1/L2) and copied
// out with stream_copy; the values are the same bits either way.  A call that writes less than the
// threshold (bytes, all its outputs together; default half the last-level cache, when what it reads
// and writes no longer fits) keeps ordinary stores, so the next layer finds its outputs in cache.
// The last-level cache of this CPU as sysfs reports it (sysconf's figure can be the whole host's on
// a VM: 384 MB where the guest sees one 32 MB L3); 32 MB when unknown.
inline int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lv(dir + "level"), sz(dir + "size");
    int level = 0;
    std::string size;
    if (!(lv >> level) || !(sz >> size) || size.empty()) continue;
    int64_t v = std::atoll(size.c_str());
    const char unit = size.back();
    if (unit == 'K') v <<= 10;
    else if (unit == 'M') v <<= 20;
    if (level >= 2 && v > best) best = v;
  }
  return best > 0 ? best : int64_t(32) << 20;
}

inline int64_t default_stream_bytes() { return last_level_cache_bytes() / 2; }

inline std::atomic<int64_t>& stream_threshold() {
  static std::atomic<int64_t> bytes{default_stream_bytes()};
  return bytes;
}

// the largest row (bytes) staged through the per-thread buffer; longer rows are written directly
constexpr int64_t kMaxStagedRow = int64_t(256) << 10;

// Whether the pages under an output already exist.  An output the allocator just got from the system
// (glibc maps every allocation of 32 MB and more afresh, so a process that does not reuse its memory
// pays this on every call) is not backed yet: each page is zeroed by the kernel at its first touch,
// and lands in the cache, where ordinary stores then hit it; streaming stores would write it to
// memory a second time.  One mincore() of the output's last page (the allocator writes its header at
// the start of a fresh mapping).  Measured side by side in one process, LayerNorm 2048x4096 fp32
// forward on fresh pages: streamed 71 ms, ordinary stores 59 ms (torch 70 ms; a loaded machine).
inline bool backed(const void* p, int64_t bytes) {
#if defined(__linux__)
  static const long page = sysconf(_SC_PAGESIZE);
  if (bytes <= 0 || page <= 0) return true;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes) - 1) & ~uintptr_t(page - 1);
  unsigned char v = 0;
  if (mincore(reinterpret_cast<void*>(last), size_t(page), &v) != 0) return true;  // unknown: as if backed
  return (v & 1) != 0;
#else
  (void)p;
  (void)bytes;
  return true;
#endif
}

// A fresh output of several huge pages asks for them (madvise MADV_HUGEPAGE, which this kernel honours
// where transparent huge pages are in "madvise" mode, a common default): its first touch then faults
// once per 2 MB instead of once per 4 KB.  Filling a fresh 32 MB tensor took 104-123 ms without,
// 40-53 ms with (a loaded 2-core VM, where each fault is a trap to the hypervisor too).  Torch's
// allocator does the same under THP_MEM_ALLOC_ENABLE=1.  NORMLAB_HUGE_PAGES=0 turns it off.
inline bool huge_pages_wanted() {
  static const bool on = [] {
    const char* v = std::getenv("NORMLAB_HUGE_PAGES");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

// Prepare an output the op has just allocated: whether its pages exist already (see backed()), and for a
// fresh one of at least 4 MB, the huge-page advice.
inline bool prepare_output(const at::Tensor& out) {
  const int64_t bytes = int64_t(out.nbytes());
  if (bytes < (int64_t(4) << 20)) return true;  // small: from the allocator's pools, and no matter
  void* p = out.data_ptr();
  const bool was_backed = backed(p, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!was_backed && huge_pages_wanted()) {
    constexpr uintptr_t kHuge = uintptr_t(2) << 20;
    const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~(kHuge - 1);
    if (e > a) madvise(reinterpret_cast<void*>(a), size_t(e - a), MADV_HUGEPAGE);  // advice: errors ignored
  }
#endif
  return was_backed;
}

// row_bytes: one row; out_bytes: what the call writes in all; backed: prepare_output() of its main output
inline bool streams(int64_t out_bytes, int64_t row_bytes, bool backed_out) {
  return backed_out && row_bytes <= kMaxStagedRow && out_bytes >= stream_threshold().load(std::memory_order_relaxed);
}

// per-thread staging buffers (slot 0 and 1), 64-byte aligned
template <typename T>
inline T* stage(int slot, int64_t n) {
  thread_local std::vector<unsigned char> buf[2];
  std::vector<unsigned char>& b = buf[slot];
  const size_t need = size_t(n) * sizeof(T) + 64;
  if (b.size() < need) b.resize(need);
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
  return reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
}

// dst[0..bytes) = src[0..bytes) with non-temporal stores (ordinary ones for the unaligned head and
// the tail); stream_fence() once a thread has written its part
inline void stream_copy(void* dst, const void* src, int64_t bytes) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  const unsigned char* s = static_cast<const unsigned char*>(src);
#if defined(__AVX__)
  constexpr int64_t V = 32;
#elif defined(__SSE2__)
  constexpr int64_t V = 16;
#else
  constexpr int64_t V = 0;
#endif
  if (V == 0 || bytes < 4 * V) {
    std::memcpy(d, s, size_t(bytes));
    return;
  }
  const int64_t head = std::min<int64_t>(bytes, (V - int64_t(reinterpret_cast<uintptr_t>(d) % V)) % V);
  std::memcpy(d, s, size_t(head));
  int64_t i = head;
#if defined(__AVX__)
  for (; i + V <= bytes; i += V)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
#elif defined(__SSE2__)
  for (; i + V <= bytes; i += V)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
#endif
  std::memcpy(d + i, s + i, size_t(bytes - i));
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Items per task: at least kMinTask elements of work each.  A smaller call runs on the calling
// thread alone: waking the other threads of the pool (asleep after the matmuls around a norm)
// costs more than the work (a LayerNorm over a 32K-element tensor takes a few microseconds).
constexpr int64_t kMinTask = 32768;
inline int64_t grain_for(int64_t per_item) { return std::max<int64_t>(1, kMinTask / std::max<int64_t>(per_item, 1)); }

}  // namespace normlab
