// Ball attention on CPU (Erwin, eqs. 8-10), forward and backward, float32:
//
//   O = softmax(S) V,   S = Q K^T / sqrt(E) + sigma_h D + H
//
// per ball and head, with Q, K, V [m, E], D the ball's [m, m] distances |p_i - p_j| of its positions
// relative to its centre, sigma_h the head's bias scale and H = -inf on hidden keys (tree padding), 0
// elsewhere.
//
// One (ball, head) pair is one task. Its scores are formed four query rows at a time in a [4, m]
// buffer that stays in L1 and are never stored: the forward pass keeps each row's log-sum-exp
// L, and the backward pass recomputes the probabilities P = exp(S - L) from it, as flash
// attention does. Through PyTorch, the [balls, heads, m, m] probabilities are written, read back
// and kept for the backward pass, which costs more time than forming them twice, and most of the
// layer's memory. D is formed from the ball's positions in a buffer of the thread, once per ball
// for all of its heads (a thread's tasks run through a ball's heads in turn), so that no
// [balls, m, m] distance tensor exists either: at ball size 128 it would take 512 bytes per point. The head width E is a template parameter, so that loops over it unroll and the
// loops over the m keys vectorise.
//
// Layouts (row-major, as the layer's linear maps read and write them): qkv and grad_qkv
// [balls * m, 3 * heads * E], each row Q, K, V of every head, "(three h e)"; out and grad_out
// [balls * m, heads * E], "(h e)"; rel_pos [balls * m, dims]; hidden [balls, m] (nonzero: key
// hidden) or null; lse [balls, heads, m]; sigma [heads]; grad_sigma_parts [balls, heads]. Every
// row needs one visible key. m is a multiple of kRows. Validated in Python and by the bindings.
// A task copies its rows of Q, K, V (and of dO) into contiguous buffers in the caches: reading
// the slabs in place saves the layer a copy of all of Q, K, V into a head-major layout, and one
// of its output back, in both passes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "vector_math.h"

namespace erwin {

constexpr int kRows = 4;  // query rows per tile
constexpr float kInfinity = std::numeric_limits<float>::infinity();

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

// out[r * stride + c] = scale * sum_j weights[r][j] * matrix[j][c].
template <int E>
inline void weights_times(const float* weights, const float* matrix, int64_t m, float scale, float* out,
                          int64_t stride) {
  float sum[kRows][E] = {};
  for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
    for (int c = 0; c < E; ++c) {
      for (int r = 0; r < kRows; ++r) sum[r][c] += weights[r * m + j] * matrix[j * E + c];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < E; ++c) out[r * stride + c] = scale * sum[r][c];
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

// block [m, E] = scale * the m rows of E columns at slab, `stride` floats apart.
template <int E>
inline void gather(const float* slab, int64_t stride, int64_t m, float scale, float* block) {
  for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
    for (int c = 0; c < E; ++c) block[j * E + c] = scale * slab[j * stride + c];
  }
}

// block [E, m] = the m rows of E columns at slab, transposed.
template <int E>
inline void gather_transposed(const float* slab, int64_t stride, int64_t m, float* block) {
  for (int64_t j = 0; j < m; ++j) {
    for (int c = 0; c < E; ++c) block[c * m + j] = slab[j * stride + c];
  }
}

// The m rows of E columns at slab, `stride` floats apart, = block [m, E].
template <int E>
inline void scatter(const float* block, int64_t m, int64_t stride, float* slab) {
  for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
    for (int c = 0; c < E; ++c) slab[j * stride + c] = block[j * E + c];
  }
}

// The pairwise distances of one ball, formed in a thread's buffers from its positions.
class BallDistances {
 public:
  BallDistances(int64_t m, int64_t dims) : m_(m), dims_(dims), coords_(dims * m), distance_(m * m) {}

  // distance [m, m] of the ball's positions rel_pos [m, dims]: sqrt(sum_d (p_id - p_jd)^2), the
  // squares summed in the order of the dimensions.
  const float* of(const float* rel_pos, int64_t ball) {
    if (ball == ball_) return distance_.data();
    ball_ = ball;
    const float* p = rel_pos + ball * m_ * dims_;
    for (int64_t j = 0; j < m_; ++j) {
      for (int64_t d = 0; d < dims_; ++d) coords_[d * m_ + j] = p[j * dims_ + d];
    }
    for (int64_t i = 0; i < m_; ++i) {
      float* row = distance_.data() + i * m_;
      std::fill(row, row + m_, 0.0f);
      for (int64_t d = 0; d < dims_; ++d) {
        const float* column = coords_.data() + d * m_;
        const float x = column[i];
#pragma omp simd
        for (int64_t j = 0; j < m_; ++j) {
          const float difference = x - column[j];
          row[j] += difference * difference;
        }
      }
#pragma omp simd
      for (int64_t j = 0; j < m_; ++j) row[j] = std::sqrt(row[j]);
    }
    return distance_.data();
  }

 private:
  int64_t m_, dims_, ball_ = -1;
  std::vector<float> coords_, distance_;
};

// Where one (ball, head) task reads and writes: its ball's distances and hidden keys, the offsets of
// its Q in the qkv slab (K and V follow, heads * E columns apart), of its rows in the out slab and
// in lse.
struct Task {
  const float* distance;  // [m, m]
  const uint8_t* hidden;  // [m] or null
  float sigma;
  int64_t qkv, out, lse;
};

inline Task task(const float* sigma, const float* rel_pos, BallDistances& distances, const uint8_t* hidden,
                 int64_t heads, int64_t m, int64_t e, int64_t ball_head) {
  const int64_t ball = ball_head / heads, head = ball_head % heads;
  return {distances.of(rel_pos, ball), hidden ? hidden + ball * m : nullptr, sigma[head],
          ball * m * 3 * heads * e + head * e, ball * m * heads * e + head * e, ball_head * m};
}

// The scores S of query rows [i, i + kRows) into scores [kRows, m], from the task's Q / sqrt(E)
// [m, E] and K^T [E, m].
template <int E>
inline void tile_scores(const Task& t, const float* scaled_q, const float* keys_transposed, int64_t m, int64_t i,
                        float* scores) {
  const float* distance = t.distance + i * m;
#pragma omp simd
  for (int64_t x = 0; x < kRows * m; ++x) scores[x] = t.sigma * distance[x];
  add_rows_times_transposed<E>(scaled_q + i * E, keys_transposed, m, scores);
  if (t.hidden) {
    for (int r = 0; r < kRows; ++r) {
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) scores[r * m + j] = t.hidden[j] ? -kInfinity : scores[r * m + j];
    }
  }
}

template <int E>
ERWIN_MULTIVERSION void ball_attention_forward(const float* qkv, const float* sigma, const float* rel_pos,
                                               int64_t dims, const uint8_t* hidden, int64_t balls, int64_t heads,
                                               int64_t m, int threads, float* out, float* lse) {
  const float scale = 1.0f / std::sqrt(float(E));
  const int64_t out_stride = heads * E, qkv_stride = 3 * out_stride;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scaled_q(m * E), keys_transposed(E * m), values(m * E), scores(kRows * m);
    BallDistances distances(m, dims);
#pragma omp for schedule(static)
    for (int64_t ball_head = 0; ball_head < balls * heads; ++ball_head) {
      const Task t = task(sigma, rel_pos, distances, hidden, heads, m, E, ball_head);
      gather<E>(qkv + t.qkv, qkv_stride, m, scale, scaled_q.data());
      gather_transposed<E>(qkv + t.qkv + out_stride, qkv_stride, m, keys_transposed.data());
      gather<E>(qkv + t.qkv + 2 * out_stride, qkv_stride, m, 1.0f, values.data());
      for (int64_t i = 0; i < m; i += kRows) {
        tile_scores<E>(t, scaled_q.data(), keys_transposed.data(), m, i, scores.data());
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
          lse[t.lse + i + r] = max + std::log(sum);
        }
        weights_times<E>(scores.data(), values.data(), m, 1.0f, out + t.out + i * out_stride, out_stride);
      }
    }
  }
}

// Gradients of Q, K, V (into grad_qkv) and, per task, of sigma (summed over balls by the caller, in
// a fixed order). With dP = dO V^T and delta = rowsum(dO * O): dS = P * (dP - delta),
// dQ = dS K / sqrt(E), dK = dS^T Q / sqrt(E), dV = P^T dO, dsigma = sum(dS * D).
template <int E>
ERWIN_MULTIVERSION void ball_attention_backward(const float* qkv, const float* sigma, const float* rel_pos,
                                                int64_t dims, const uint8_t* hidden, const float* out, const float* lse,
                                                const float* grad_out, int64_t balls, int64_t heads, int64_t m,
                                                int threads, float* grad_qkv, float* grad_sigma_parts) {
  const float scale = 1.0f / std::sqrt(float(E));
  const int64_t out_stride = heads * E, qkv_stride = 3 * out_stride;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scaled_q(m * E), keys(m * E), keys_transposed(E * m), values_transposed(E * m);
    std::vector<float> d_out(m * E), grad_keys(m * E), grad_values(m * E);
    std::vector<float> probabilities(kRows * m), grad_scores(kRows * m);
    BallDistances distances(m, dims);
#pragma omp for schedule(static)
    for (int64_t ball_head = 0; ball_head < balls * heads; ++ball_head) {
      const Task t = task(sigma, rel_pos, distances, hidden, heads, m, E, ball_head);
      gather<E>(qkv + t.qkv, qkv_stride, m, scale, scaled_q.data());
      gather<E>(qkv + t.qkv + out_stride, qkv_stride, m, 1.0f, keys.data());
      gather_transposed<E>(qkv + t.qkv + out_stride, qkv_stride, m, keys_transposed.data());
      gather_transposed<E>(qkv + t.qkv + 2 * out_stride, qkv_stride, m, values_transposed.data());
      gather<E>(grad_out + t.out, out_stride, m, 1.0f, d_out.data());
      std::fill(grad_keys.begin(), grad_keys.end(), 0.0f);
      std::fill(grad_values.begin(), grad_values.end(), 0.0f);
      float grad_sigma = 0.0f;
      for (int64_t i = 0; i < m; i += kRows) {
        tile_scores<E>(t, scaled_q.data(), keys_transposed.data(), m, i, probabilities.data());
        const float* d_out_rows = d_out.data() + i * E;
        for (int r = 0; r < kRows; ++r) {
          const float row_lse = lse[t.lse + i + r];
          const float* out_row = out + t.out + (i + r) * out_stride;
          float delta = 0.0f;
          for (int c = 0; c < E; ++c) delta += d_out_rows[r * E + c] * out_row[c];
          float* p = probabilities.data() + r * m;
          float* ds = grad_scores.data() + r * m;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) {
            p[j] = exp_nonpositive(p[j] - row_lse);
            ds[j] = -delta;
          }
        }
        add_rows_times_transposed<E>(d_out_rows, values_transposed.data(), m, grad_scores.data());
        const float* distance_rows = t.distance + i * m;
#pragma omp simd reduction(+ : grad_sigma)
        for (int64_t x = 0; x < kRows * m; ++x) {
          grad_scores[x] *= probabilities[x];
          grad_sigma += grad_scores[x] * distance_rows[x];
        }
        weights_times<E>(grad_scores.data(), keys.data(), m, scale, grad_qkv + t.qkv + i * qkv_stride, qkv_stride);
        add_weights_transposed_times<E>(grad_scores.data(), scaled_q.data() + i * E, m, grad_keys.data());
        add_weights_transposed_times<E>(probabilities.data(), d_out_rows, m, grad_values.data());
      }
      scatter<E>(grad_keys.data(), m, qkv_stride, grad_qkv + t.qkv + out_stride);
      scatter<E>(grad_values.data(), m, qkv_stride, grad_qkv + t.qkv + 2 * out_stride);
      grad_sigma_parts[ball_head] = grad_sigma;
    }
  }
}

}  // namespace erwin
