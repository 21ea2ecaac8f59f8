// Ball attention on CPU (Erwin, eqs. 8-10), forward and backward, float32:
//
//   O = softmax(S) V,   S = Q K^T / sqrt(E) + sigma_h D + H
//
// per ball and head, with Q, K, V [m, E], D the ball's [m, m] distances, sigma_h the head's bias
// scale and H = -inf on hidden keys (tree padding), 0 elsewhere.
//
// One (ball, head) pair is one task. Its scores are formed four query rows at a time in a [4, m]
// buffer that stays in L1 and are never stored: the forward pass keeps each row's log-sum-exp
// L, and the backward pass recomputes the probabilities P = exp(S - L) from it, as flash
// attention does. Through PyTorch, the [balls, heads, m, m] probabilities are written, read back
// and kept for the backward pass, which costs more time than forming them twice, and most of the
// layer's memory. The head width E is a template parameter, so that loops over it unroll and the
// loops over the m keys vectorise.
//
// Layouts (contiguous): q, k, v, out and their gradients [balls, heads, m, E]; distance
// [balls, m, m]; hidden [balls, m] (nonzero: key hidden) or null; lse [balls, heads, m];
// sigma [heads]; grad_sigma_parts [balls, heads]. Every row needs one visible key. m is a
// multiple of kRows. Validated in Python and by the bindings.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

// Clones of the kernels for AVX-512, AVX2 and the baseline, picked at load time for the CPU at hand.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define ERWIN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ERWIN_MULTIVERSION
#endif

namespace erwin {

constexpr int kRows = 4;  // query rows per tile
constexpr float kInfinity = std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 as 2^n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, exp(r) by its Taylor
// polynomial of degree 7 (truncation error below 1e-8). Branch-free, so that it vectorises; 0 below
// -87.3 (and for -inf), NaN for NaN. n is read off the bits of x / ln 2 + 1.5 * 2^23, whose low
// mantissa bits hold it, so no float is converted to an integer.
inline float exp_nonpositive(float x) {
  const float clamped = x < -87.3f ? -87.3f : x;
  const float shifted = clamped * 1.44269504f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (clamped - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits - 0x4B400000u + 127u) << 23;  // 2^n
  float power;
  std::memcpy(&power, &bits, sizeof power);
  return x < -87.3f ? 0.0f : p * power;
}

// out[r][j] += sum_c rows[r][c] * transposed[c][j] for the kRows rows of a tile.
template <int E>
inline void add_rows_times_transposed(const float* rows, const float* transposed, int64_t m, float* out) {
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    float sum[kRows];
    for (int r = 0; r < kRows; ++r) sum[r] = out[r * m + j];
#pragma GCC unroll 64
    for (int c = 0; c < E; ++c) {
      const float x = transposed[c * m + j];
      for (int r = 0; r < kRows; ++r) sum[r] += rows[r * E + c] * x;
    }
    for (int r = 0; r < kRows; ++r) out[r * m + j] = sum[r];
  }
}

// out[r][c] = scale * sum_j weights[r][j] * matrix[j][c].
template <int E>
inline void weights_times(const float* weights, const float* matrix, int64_t m, float scale, float* out) {
  float sum[kRows][E] = {};
  for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
    for (int c = 0; c < E; ++c) {
      for (int r = 0; r < kRows; ++r) sum[r][c] += weights[r * m + j] * matrix[j * E + c];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < E; ++c) out[r * E + c] = scale * sum[r][c];
  }
}

// matrix[j][c] += sum_r weights[r][j] * rows[r][c].
template <int E>
inline void add_weights_transposed_times(const float* weights, const float* rows, int64_t m, float* matrix) {
  for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
    for (int c = 0; c < E; ++c) {
      float sum = matrix[j * E + c];
      for (int r = 0; r < kRows; ++r) sum += weights[r * m + j] * rows[r * E + c];
      matrix[j * E + c] = sum;
    }
  }
}

// What one task needs of the inputs: its ball's distances and hidden keys, its Q, K, V.
struct Task {
  const float* distance;  // [m, m]
  const uint8_t* hidden;  // [m] or null
  const float* q;         // [m, E]
  const float* k;
  const float* v;
  float sigma;
};

inline Task task(const float* q, const float* k, const float* v, const float* sigma, const float* distance,
                 const uint8_t* hidden, int64_t heads, int64_t m, int64_t e, int64_t ball_head) {
  const int64_t ball = ball_head / heads, offset = ball_head * m * e;
  return {distance + ball * m * m, hidden ? hidden + ball * m : nullptr, q + offset, k + offset, v + offset,
          sigma[ball_head % heads]};
}

// [E, m] copy of a task's [m, E] matrix.
template <int E>
inline void transpose(const float* matrix, int64_t m, std::vector<float>& out) {
  for (int64_t j = 0; j < m; ++j) {
    for (int c = 0; c < E; ++c) out[c * m + j] = matrix[j * E + c];
  }
}

// The scores S of query rows [i, i + kRows) into scores [kRows, m]; scaled_q gets those rows of
// Q / sqrt(E).
template <int E>
inline void tile_scores(const Task& t, const std::vector<float>& keys_transposed, int64_t m, int64_t i,
                        float* scaled_q, float* scores) {
  const float scale = 1.0f / std::sqrt(float(E));
  for (int x = 0; x < kRows * E; ++x) scaled_q[x] = t.q[i * E + x] * scale;
  const float* distance = t.distance + i * m;
#pragma omp simd
  for (int64_t x = 0; x < kRows * m; ++x) scores[x] = t.sigma * distance[x];
  add_rows_times_transposed<E>(scaled_q, keys_transposed.data(), m, scores);
  if (t.hidden) {
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) scores[r * m + j] = t.hidden[j] ? -kInfinity : scores[r * m + j];
    }
  }
}

template <int E>
ERWIN_MULTIVERSION void ball_attention_forward(const float* q, const float* k, const float* v, const float* sigma,
                                               const float* distance, const uint8_t* hidden, int64_t balls,
                                               int64_t heads, int64_t m, int threads, float* out, float* lse) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> keys_transposed(E * m), scaled_q(kRows * E), scores(kRows * m);
#pragma omp for schedule(static)
    for (int64_t ball_head = 0; ball_head < balls * heads; ++ball_head) {
      const Task t = task(q, k, v, sigma, distance, hidden, heads, m, E, ball_head);
      transpose<E>(t.k, m, keys_transposed);
      for (int64_t i = 0; i < m; i += kRows) {
        tile_scores<E>(t, keys_transposed, m, i, scaled_q.data(), scores.data());
        for (int r = 0; r < kRows; ++r) {
          float* row = scores.data() + r * m;
          float max = -kInfinity, sum = 0.0f;
#pragma omp simd reduction(max : max)
          for (int64_t j = 0; j < m; ++j) max = row[j] > max ? row[j] : max;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < m; ++j) {
            row[j] = exp_nonpositive(row[j] - max);
            sum += row[j];
          }
          const float inverse = 1.0f / sum;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) row[j] *= inverse;
          lse[ball_head * m + i + r] = max + std::log(sum);
        }
        weights_times<E>(scores.data(), t.v, m, 1.0f, out + (ball_head * m + i) * E);
      }
    }
  }
}

// Gradients of Q, K, V and, per task, of sigma (summed over balls by the caller, in a fixed order).
// With dP = dO V^T and delta = rowsum(dO * O): dS = P * (dP - delta), dQ = dS K / sqrt(E),
// dK = dS^T Q / sqrt(E), dV = P^T dO, dsigma = sum(dS * D).
template <int E>
ERWIN_MULTIVERSION void ball_attention_backward(const float* q, const float* k, const float* v, const float* sigma,
                                                const float* distance, const uint8_t* hidden, const float* out,
                                                const float* lse, const float* grad_out, int64_t balls,
                                                int64_t heads, int64_t m, int threads, float* grad_q, float* grad_k,
                                                float* grad_v, float* grad_sigma_parts) {
  const float scale = 1.0f / std::sqrt(float(E));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> keys_transposed(E * m), values_transposed(E * m), scaled_q(kRows * E);
    std::vector<float> probabilities(kRows * m), grad_scores(kRows * m);
#pragma omp for schedule(static)
    for (int64_t ball_head = 0; ball_head < balls * heads; ++ball_head) {
      const Task t = task(q, k, v, sigma, distance, hidden, heads, m, E, ball_head);
      const int64_t offset = ball_head * m * E;
      transpose<E>(t.k, m, keys_transposed);
      transpose<E>(t.v, m, values_transposed);
      float* dk = grad_k + offset;
      float* dv = grad_v + offset;
      std::fill(dk, dk + m * E, 0.0f);
      std::fill(dv, dv + m * E, 0.0f);
      float grad_sigma = 0.0f;
      for (int64_t i = 0; i < m; i += kRows) {
        tile_scores<E>(t, keys_transposed, m, i, scaled_q.data(), probabilities.data());
        const float* d_out = grad_out + offset + i * E;
        for (int r = 0; r < kRows; ++r) {
          const float row_lse = lse[ball_head * m + i + r];
          float delta = 0.0f;
          for (int c = 0; c < E; ++c) delta += d_out[r * E + c] * out[offset + (i + r) * E + c];
          float* p = probabilities.data() + r * m;
          float* ds = grad_scores.data() + r * m;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) {
            p[j] = exp_nonpositive(p[j] - row_lse);
            ds[j] = -delta;
          }
        }
        add_rows_times_transposed<E>(d_out, values_transposed.data(), m, grad_scores.data());
        const float* distance_rows = t.distance + i * m;
#pragma omp simd reduction(+ : grad_sigma)
        for (int64_t x = 0; x < kRows * m; ++x) {
          grad_scores[x] *= probabilities[x];
          grad_sigma += grad_scores[x] * distance_rows[x];
        }
        weights_times<E>(grad_scores.data(), t.k, m, scale, grad_q + offset + i * E);
        add_weights_transposed_times<E>(grad_scores.data(), scaled_q.data(), m, dk);
        add_weights_transposed_times<E>(probabilities.data(), d_out, m, dv);
      }
      grad_sigma_parts[ball_head] = grad_sigma;
    }
  }
}

}  // namespace erwin
