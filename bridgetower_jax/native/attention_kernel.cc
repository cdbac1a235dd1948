// Fused bidirectional attention for XLA:CPU, float32: out = softmax(q k^T * scale, masked keys) v.
//
// Why: XLA:CPU hands q.k, the softmax and p.v of an attention to its GEMM library as one fusion that
// runs at about half of PyTorch's speed (a BridgeTower-base vision layer at batch 4: 13-17 ms against
// 6.4 ms). Here each (batch, head) pair is one task: its keys are packed once, transposed, and every
// block of query rows goes through scores, softmax and p.v while its [rows, keys] scores stay in L1.
//
// Layouts are the projections' own, so no transposes are needed on either side:
//   q [B, Tq, N, D], k and v [B, Tk, N, D], key_mask [B, Tk] (bool, true = attend), out [B, Tq, N, D].
// Masked keys score the float32 minimum before the softmax, as transformers does (a row with every key
// masked averages all of them; with no keys at all the output is 0, as an empty sum). D is 16, 32, 64
// or 128 (checked here and by the caller).
//
// Registered with XLA through its FFI (`BridgetowerAttention`); the tasks run on XLA's intra-op pool.
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

inline v16 load(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
inline v16 splat(float x) { return v16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// exp(x) for x <= 0 (scores minus their row maximum): Cody-Waite reduction x = n ln2 + r, a degree-6
// polynomial for exp(r) on [-ln2/2, ln2/2] (relative error ~1e-7), and the scaling by 2^n. Below
// -87.3 the result is flushed to 0 (expf is subnormal there; weights that small change no sum).
#if defined(__AVX512F__)
// AVX-512: the rounding and the 2^n scaling are one instruction each (roundscale, scalef), and the
// flush is the scalef's zero mask: 15 vector operations where the portable version (2^n from the
// exponent bits, the flush a select) takes ~22.
inline v16 exp_nonpositive(v16 x) {
  const __m512 xv = reinterpret_cast<__m512>(x);
  // NaN is kept (not-less-than is true for it) and passed through by max: it propagates, as in expf.
  const __mmask16 keep = _mm512_cmp_ps_mask(xv, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);
  const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-87.3f), xv);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return reinterpret_cast<v16>(_mm512_maskz_scalef_ps(keep, p, n));
}
#else
inline v16 exp_nonpositive(v16 x) {
  const v16 lo = splat(-87.3f);
  v16 xc = x < lo ? lo : x;
  xc = xc > v16{} ? v16{} : xc;                          // defensive: inputs are <= 0 by construction
  const float magic = 12582912.0f;                       // 1.5 * 2^23: adding it rounds to an integer
  v16 t = xc * splat(1.44269504088896341f) + splat(magic);
  v16 n = t - splat(magic);
  v16 r = xc - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  v16 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  v16 e = p * r * r + r + splat(1.0f);
  v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
  v16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  e = e * scale;
  return x < lo ? v16{} : e;
}
#endif

// Sum of the 16 lanes, as a tree (4 dependent adds rather than 15).
inline float horizontal_sum(v16 x) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(reinterpret_cast<__m512>(x));
#else
  float lanes[16];
  std::memcpy(lanes, &x, sizeof lanes);
  for (int width = 8; width > 0; width /= 2)
    for (int t = 0; t < width; ++t) lanes[t] += lanes[t + width];
  return lanes[0];
#endif
}

struct Shapes {
  int64_t batch, q_len, k_len, heads, depth, k_pad;   // k_pad: keys rounded up to 16
};

// Per-thread scratch: the task's keys in blocks of 16 transposed ([k_pad / 16][depth][16], zero past
// k_len), its values packed ([k_len, depth]: p.v reads them once per block of rows, and contiguous
// rows read ~15% faster than rows a token apart), which keys it attends (1 attended, 0 masked, -1
// padding, over k_pad) and one block of scores.
struct Scratch {
  std::vector<float> kt, vp, scores, keep;
};

constexpr int kKeyVectors = 2;    // keys per score tile: 16 x this (3 and 4 measured no faster)
constexpr int kRows = 12;        // query rows per block
// Register tiles: with AVX-512 a v16 is one of 32 registers, so 24 accumulators fit (12 x 2 for
// the scores, 6 x 4 for p.v at D = 64); elsewhere (AVX2, NEON) a v16 takes 2-4 of 16-32 registers.
#if defined(__AVX512F__)
constexpr int kScoreRows = 12, kValueAccumulators = 24;
#else
constexpr int kScoreRows = 3, kValueAccumulators = 4;
#endif

// scores[r, j] = sum_d q[r, d] k[j, d] for ROWS rows and the 16 * KV keys from j, in ROWS x KV
// accumulators. kt holds the keys in blocks of 16 ([k_pad / 16][depth][16]), so each block is one
// contiguous stream over d. Keys with keep[j] = 0 (masked) score the float32 minimum, as in
// transformers; the padding (keep[j] = -1) scores -inf, below that, so its weight is 0 even in a row
// whose keys are all masked (where the masked keys' scores are the maximum). row_max[r] takes the
// tile's maximum.
template <int ROWS, int KV>
inline void score_tile(const float* q, int64_t q_stride, const float* kt, const float* keep, int64_t depth,
                       int64_t k_pad, int64_t j, float* scores, v16* row_max) {
  const v16 lowest = splat(-FLT_MAX), none = splat(-__builtin_inff()), zero{};
  v16 acc[ROWS][KV] = {};
  const float* kb = kt + j * depth;          // block j / 16 starts at (j / 16) * depth * 16
  for (int64_t d = 0; d < depth; ++d) {
    v16 kv[KV];
#pragma GCC unroll 4
    for (int c = 0; c < KV; ++c) kv[c] = load(kb + c * depth * 16 + d * 16);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      v16 qv = splat(q[r * q_stride + d]);
#pragma GCC unroll 4
      for (int c = 0; c < KV; ++c) acc[r][c] += qv * kv[c];
    }
  }
#pragma GCC unroll 4
  for (int c = 0; c < KV; ++c) {
    const v16 kc = load(keep + j + 16 * c);
    const v16i attend = kc > zero;
    const v16 excluded = kc < zero ? none : lowest;
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      v16 sc = attend ? acc[r][c] : excluded;
      store(scores + r * k_pad + j + 16 * c, sc);
      row_max[r] = sc > row_max[r] ? sc : row_max[r];
    }
  }
}

// A block of ROWS rows against every key: 32-key tiles, then a 16-key one where k_pad needs it.
template <int ROWS>
inline void score_rows(const float* q, int64_t q_stride, const float* kt, const float* keep, int64_t depth,
                       int64_t k_pad, float* scores, float* row_max) {
  v16 mx[ROWS];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) mx[r] = splat(-FLT_MAX);
  int64_t j = 0;
  for (; j + 16 * kKeyVectors <= k_pad; j += 16 * kKeyVectors)
    score_tile<ROWS, kKeyVectors>(q, q_stride, kt, keep, depth, k_pad, j, scores, mx);
  for (; j < k_pad; j += 16) score_tile<ROWS, 1>(q, q_stride, kt, keep, depth, k_pad, j, scores, mx);
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    float m = mx[r][0];
    for (int t = 1; t < 16; ++t) m = std::max(m, mx[r][t]);
    row_max[r] = m;
  }
}

// out[r, :] = (sum_j p[r, j] v[j, :]) * inv_sum[r] for ROWS rows, DV = depth / 16 vectors per row.
template <int ROWS, int DV>
inline void weighted_values(const float* p, int64_t k_pad, const float* v, int64_t v_stride, int64_t k_len,
                            const float* inv_sum, float* out, int64_t out_stride) {
  v16 acc[ROWS][DV] = {};
  for (int64_t j = 0; j < k_len; ++j) {
    v16 vj[DV];
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) vj[c] = load(v + j * v_stride + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      v16 pr = splat(p[r * k_pad + j]);
#pragma GCC unroll 8
      for (int c = 0; c < DV; ++c) acc[r][c] += pr * vj[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    v16 s = splat(inv_sum[r]);
#pragma GCC unroll 8
    for (int c = 0; c < DV; ++c) store(out + r * out_stride + 16 * c, acc[r][c] * s);
  }
}

template <int DV>
void weighted_values_any(int rows, const float* p, int64_t k_pad, const float* v, int64_t v_stride,
                         int64_t k_len, const float* inv_sum, float* out, int64_t out_stride) {
  // AVX-512: 6 rows x 4 vectors (D = 64) is 24 accumulators, the most that leave registers for v and p.
  constexpr int kBlock = std::clamp(kValueAccumulators / DV, 1, 6);
  int r = 0;
  for (; r + kBlock <= rows; r += kBlock)
    weighted_values<kBlock, DV>(p + r * k_pad, k_pad, v, v_stride, k_len, inv_sum + r, out + r * out_stride, out_stride);
  for (; r + 2 <= rows; r += 2)
    weighted_values<2, DV>(p + r * k_pad, k_pad, v, v_stride, k_len, inv_sum + r, out + r * out_stride, out_stride);
  for (; r < rows; ++r)
    weighted_values<1, DV>(p + r * k_pad, k_pad, v, v_stride, k_len, inv_sum + r, out + r * out_stride, out_stride);
}

void score_rows_any(int rows, const float* q, int64_t q_stride, const float* kt, const float* keep, int64_t depth,
                    int64_t k_pad, float* scores, float* row_max) {
  // AVX-512: 12 rows x 2 vectors is 24 accumulators, and each pass over the packed keys serves 12 rows.
  int r = 0;
  constexpr int kBlock = kScoreRows;
  for (; r + kBlock <= rows; r += kBlock)
    score_rows<kBlock>(q + r * q_stride, q_stride, kt, keep, depth, k_pad, scores + r * k_pad, row_max + r);
  for (; r + 4 <= rows; r += 4)
    score_rows<4>(q + r * q_stride, q_stride, kt, keep, depth, k_pad, scores + r * k_pad, row_max + r);
  for (; r < rows; ++r)
    score_rows<1>(q + r * q_stride, q_stride, kt, keep, depth, k_pad, scores + r * k_pad, row_max + r);
}

// One (batch, head) pair.
void attend_one(const Shapes& s, int64_t b, int64_t h, const float* q, const float* k, const float* v,
                const bool* key_mask, float scale, float* out, Scratch& w) {
  const int64_t row_stride = s.heads * s.depth;       // between consecutive tokens of one head
  const int64_t D = s.depth;
  w.kt.resize(D * s.k_pad);
  w.scores.resize(kRows * s.k_pad);
  w.keep.resize(s.k_pad);
  const float* kb = k + b * s.k_len * row_stride + h * D;
  const float* vb = v + b * s.k_len * row_stride + h * D;
  // Keys in blocks of 16, each transposed to [D, 16] (the block's rows stay in L1 while it is written
  // column by column). The scale goes on the keys, once: q.k is scaled either way, and for D = 64 the
  // scale is a power of two, so the products are the same.
  for (int64_t j0 = 0; j0 < s.k_pad; j0 += 16) {
    float* block = w.kt.data() + j0 * D;
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = j0; j < j0 + 16; ++j)
        block[d * 16 + (j - j0)] = j < s.k_len ? kb[j * row_stride + d] * scale : 0.0f;
  }
  w.vp.resize(s.k_len * D);
  for (int64_t j = 0; j < s.k_len; ++j) std::memcpy(w.vp.data() + j * D, vb + j * row_stride, D * sizeof(float));
  // 1 where a key is attended, 0 where it is masked, -1 for the padding.
  for (int64_t j = 0; j < s.k_pad; ++j) w.keep[j] = j >= s.k_len ? -1.0f : key_mask[b * s.k_len + j] ? 1.0f : 0.0f;
  float inv_sum[kRows];
  for (int64_t i0 = 0; i0 < s.q_len; i0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, s.q_len - i0));
    const float* qb = q + (b * s.q_len + i0) * row_stride + h * D;
    float row_max[kRows];
    score_rows_any(rows, qb, row_stride, w.kt.data(), w.keep.data(), D, s.k_pad, w.scores.data(), row_max);
    for (int r = 0; r < rows; ++r) {
      float* row = w.scores.data() + r * s.k_pad;
      const float m = row_max[r];
      // Exponentials in place; the padding's are 0 (its scores are -inf), so it adds nothing to the
      // sum, and p.v never reads it.
      v16 total{};
      const v16 mx = splat(m);
      for (int64_t j = 0; j < s.k_pad; j += 16) {
        v16 e = exp_nonpositive(load(row + j) - mx);
        store(row + j, e);
        total += e;
      }
      inv_sum[r] = 1.0f / horizontal_sum(total);
    }
    float* ob = out + (b * s.q_len + i0) * row_stride + h * D;
    switch (D / 16) {
      case 1: weighted_values_any<1>(rows, w.scores.data(), s.k_pad, w.vp.data(), D, s.k_len, inv_sum, ob, row_stride); break;
      case 2: weighted_values_any<2>(rows, w.scores.data(), s.k_pad, w.vp.data(), D, s.k_len, inv_sum, ob, row_stride); break;
      case 4: weighted_values_any<4>(rows, w.scores.data(), s.k_pad, w.vp.data(), D, s.k_len, inv_sum, ob, row_stride); break;
      case 8: weighted_values_any<8>(rows, w.scores.data(), s.k_pad, w.vp.data(), D, s.k_len, inv_sum, ob, row_stride); break;
    }
  }
}

// The (batch, head) tasks, claimed one at a time by the calling thread and by helpers on XLA's pool.
// The caller never waits on a task nobody has started: it claims every unclaimed one itself, and waits
// only for those already running elsewhere, so two kernels sharing a pool cannot deadlock.
struct Job {
  Shapes s;
  const float *q, *k, *v;
  const bool* key_mask;
  float scale;
  float* out;
  std::atomic<int64_t> next{0}, done{0};

  std::atomic<bool> failed{false};     // scratch allocation failed in some task

  void work() {
    thread_local Scratch scratch;
    const int64_t tasks = s.batch * s.heads;
    for (int64_t t; (t = next.fetch_add(1)) < tasks;) {
      try {
        attend_one(s, t / s.heads, t % s.heads, q, k, v, key_mask, scale, out, scratch);
      } catch (const std::exception&) {   // no exception may cross into XLA's pool or the FFI
        failed.store(true);
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Named types: the registration macro below cannot take template arguments with commas.
using Tokens = ffi::Buffer<ffi::F32, 4>;
using KeyMask = ffi::Buffer<ffi::PRED, 2>;
using TokensOut = ffi::ResultBuffer<ffi::F32, 4>;

ffi::Error Attention(ffi::ThreadPool pool, Tokens q, Tokens k, Tokens v, KeyMask key_mask, float scale,
                     TokensOut out) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = key_mask.dimensions();
  if (kd[0] != qd[0] || kd[2] != qd[2] || kd[3] != qd[3] || vd[0] != kd[0] || vd[1] != kd[1] || vd[2] != kd[2] ||
      vd[3] != kd[3] || md[0] != kd[0] || md[1] != kd[1])
    return ffi::Error::InvalidArgument("attention kernel: q [B,Tq,N,D], k and v [B,Tk,N,D], key_mask [B,Tk] disagree");
  const int64_t depth = qd[3];
  if (depth != 16 && depth != 32 && depth != 64 && depth != 128)
    return ffi::Error::InvalidArgument("attention kernel: head width must be 16, 32, 64 or 128");
  if (kd[1] == 0) {      // no keys: every output is an empty sum
    std::fill(out->typed_data(), out->typed_data() + out->element_count(), 0.0f);
    return ffi::Error::Success();
  }
  std::shared_ptr<Job> job;
  try {
    job = std::make_shared<Job>();
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("attention kernel: out of memory");
  }
  job->s = Shapes{qd[0], qd[1], kd[1], qd[2], depth, (kd[1] + 15) / 16 * 16};
  job->q = q.typed_data();
  job->k = k.typed_data();
  job->v = v.typed_data();
  job->key_mask = key_mask.typed_data();
  job->scale = scale;
  job->out = out->typed_data();
  const int64_t tasks = job->s.batch * job->s.heads;
  if (tasks == 0 || job->s.q_len == 0) return ffi::Error::Success();
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), tasks) - 1;
  try {
    for (int64_t i = 0; i < helpers; ++i) pool.Schedule([job] { job->work(); });
  } catch (const std::bad_alloc&) {    // fewer helpers: this thread claims what they would have
  }
  job->work();
  while (job->done.load(std::memory_order_acquire) < tasks) std::this_thread::yield();
  if (job->failed.load()) return ffi::Error::Internal("attention kernel: out of memory for its scratch");
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BridgetowerAttention, Attention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Tokens>()
                                  .Arg<Tokens>()
                                  .Arg<Tokens>()
                                  .Arg<KeyMask>()
                                  .Attr<float>("scale")
                                  .Ret<Tokens>());
