// The messages of Erwin's embedding (eq. 14) on CPU, float32, summed per target node:
//
//   m_ij = LN(GELU(a_j + b_i + W_p o_ij)),   s_i = sum_{j -> i} m_ij
//
// for every edge j -> i with position offset o_ij = p_j - p_i, where a = W_s h and b = W_t h + bias
// are the caller's per-node terms, GELU the exact (erf) one and LN a LayerNorm over the C channels
// with weight gamma and bias beta.
//
// No per-edge tensor exists in either pass. The forward pass sums every target's messages in a
// C-float buffer. The backward pass forms each message again, twice: once per target, for the
// gradients of b and the target's share of those of gamma and W_p, and once per source, for the
// gradient of a; so every output row has one writer and no thread shares an accumulator. Each
// pass walks a list of the edges grouped by the node it writes (by target, by source), whose
// edge data are contiguous, so that only the other end's rows are gathered.
//
// Layouts (row-major): per_source, per_target, summed and their gradients [nodes, C];
// offset_weight W_p^T [D, C]; an EdgeList's source, target [edges] and offset [edges, D], with
// ptr [nodes + 1] the first edge of every node; grad_parts [nodes, (1 + D) C], per target node the
// partial sums of the gradients of gamma [C] and W_p^T [D, C]. Validated in Python and by the
// bindings.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include "vector_math.h"

namespace erwin {

// The layer: per-node terms, weights and sizes.
struct EdgeLayer {
  const float* per_source;
  const float* per_target;
  const float* offset_weight;
  const float* gamma;
  const float* beta;
  int64_t nodes, dims;
  float eps;
};

// The edges grouped by one end: those of node n are [ptr[n], ptr[n + 1]).
struct EdgeList {
  const int64_t* source;
  const int64_t* target;
  const float* offset;
  const int64_t* ptr;
};

// Edges ahead whose gathered rows are prefetched: the rows of random neighbours are cache misses
// that the out-of-order core, busy with an edge's long chain of arithmetic, does not reach itself.
constexpr int64_t kAhead = 4;

template <int C>
inline void prefetch_row(const float* rows, int64_t row) {
  for (int c = 0; c < C; c += 16) __builtin_prefetch(rows + row * C + c);
}

// What the backward pass needs of one message of C channels: GELU's slope at the pre-activations,
// the normalised activations and the LayerNorm's 1 / std.
template <int C>
struct Message {
  float slope[C], normalised[C];
  float inverse_std;
};

// The message of edge e before the LayerNorm's affine map, into message.normalised (and, with
// kSlope, GELU's slope into message.slope).
// The sum of values [C], which it overwrites, as a tree of pairwise sums: log2(C) dependent steps,
// where a reduction loop compiles to a chain of C - 1 scalar additions (the order of a loop's
// float additions is kept).
template <int C>
inline float tree_sum(float* values) {
  for (int width = C / 2; width > 0; width /= 2) {
#pragma omp simd
    for (int c = 0; c < width; ++c) values[c] += values[c + width];
  }
  return values[0];
}

template <int C, bool kSlope>
inline void normalised_message(const EdgeLayer& g, const EdgeList& edges, int64_t e, Message<C>& message) {
  const float* a = g.per_source + edges.source[e] * C;
  const float* b = g.per_target + edges.target[e] * C;
  const float* offset = edges.offset + e * g.dims;
  float* x = message.normalised;
  float scratch[C];
#pragma omp simd
  for (int c = 0; c < C; ++c) x[c] = a[c] + b[c];
  for (int64_t d = 0; d < g.dims; ++d) {
    const float* w = g.offset_weight + d * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) x[c] += w[c] * offset[d];
  }
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    // GELU(x) = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, GELU'(x) = Phi(x) + x phi(x)
    const float gaussian = exp_nonpositive(-0.5f * x[c] * x[c]);
    const float cdf = 0.5f + 0.5f * erf_given_gaussian(0.70710678f * x[c], gaussian);
    if (kSlope) message.slope[c] = cdf + 0.39894228f * x[c] * gaussian;
    x[c] *= cdf;
    scratch[c] = x[c];
  }
  const float mean = tree_sum<C>(scratch) / float(C);
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    x[c] -= mean;
    scratch[c] = x[c] * x[c];
  }
  message.inverse_std = 1.0f / std::sqrt(tree_sum<C>(scratch) / float(C) + g.eps);
#pragma omp simd
  for (int c = 0; c < C; ++c) x[c] *= message.inverse_std;
}

// grad_pre [C]: the gradient of the message's pre-activations, given that of the message, grad [C].
template <int C>
inline void message_gradient(const EdgeLayer& g, const Message<C>& message, const float* grad, float* grad_pre) {
  const float* x = message.normalised;
  float grad_x[C], grad_x_x[C];
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    grad_x[c] = grad[c] * g.gamma[c];
    grad_x_x[c] = grad_x[c] * x[c];
    grad_pre[c] = grad_x[c];
  }
  const float mean_grad = tree_sum<C>(grad_x) / float(C), mean_grad_x = tree_sum<C>(grad_x_x) / float(C);
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    grad_pre[c] = message.inverse_std * (grad_pre[c] - mean_grad - x[c] * mean_grad_x) * message.slope[c];
  }
}

template <int C>
ERWIN_MULTIVERSION void edge_messages_forward(const EdgeLayer& g, const EdgeList& by_target, int threads,
                                              float* summed) {
  const int64_t edges = by_target.ptr[g.nodes];
#pragma omp parallel num_threads(threads)
  {
    Message<C> message;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < g.nodes; ++i) {
      float sum[C] = {};
      for (int64_t e = by_target.ptr[i]; e < by_target.ptr[i + 1]; ++e) {
        if (e + kAhead < edges) prefetch_row<C>(g.per_source, by_target.source[e + kAhead]);
        normalised_message<C, false>(g, by_target, e, message);
#pragma omp simd
        for (int c = 0; c < C; ++c) sum[c] += message.normalised[c] * g.gamma[c] + g.beta[c];
      }
      std::copy(sum, sum + C, summed + i * C);
    }
  }
}

template <int C>
ERWIN_MULTIVERSION void edge_messages_backward(const EdgeLayer& g, const EdgeList& by_target,
                                               const EdgeList& by_source, const float* grad_summed, int threads,
                                               float* grad_per_source, float* grad_per_target, float* grad_parts) {
  const int64_t parts = (1 + g.dims) * C, edges = by_target.ptr[g.nodes];
#pragma omp parallel num_threads(threads)
  {
    Message<C> message;
    float grad_pre[C];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < g.nodes; ++i) {
      const float* grad = grad_summed + i * C;
      float grad_b[C] = {}, grad_gamma[C] = {}, grad_weight[C * 4] = {};  // D <= 4, checked by the bindings
      for (int64_t e = by_target.ptr[i]; e < by_target.ptr[i + 1]; ++e) {
        if (e + kAhead < edges) prefetch_row<C>(g.per_source, by_target.source[e + kAhead]);
        normalised_message<C, true>(g, by_target, e, message);
        message_gradient<C>(g, message, grad, grad_pre);
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          grad_b[c] += grad_pre[c];
          grad_gamma[c] += grad[c] * message.normalised[c];
        }
        for (int64_t d = 0; d < g.dims; ++d) {
          const float offset = by_target.offset[e * g.dims + d];
#pragma omp simd
          for (int c = 0; c < C; ++c) grad_weight[d * C + c] += grad_pre[c] * offset;
        }
      }
      std::copy(grad_b, grad_b + C, grad_per_target + i * C);
      std::copy(grad_gamma, grad_gamma + C, grad_parts + i * parts);
      std::copy(grad_weight, grad_weight + g.dims * C, grad_parts + i * parts + C);
    }
#pragma omp for schedule(static)
    for (int64_t j = 0; j < g.nodes; ++j) {
      float grad_a[C] = {};
      for (int64_t e = by_source.ptr[j]; e < by_source.ptr[j + 1]; ++e) {
        if (e + kAhead < edges) {
          prefetch_row<C>(g.per_target, by_source.target[e + kAhead]);
          prefetch_row<C>(grad_summed, by_source.target[e + kAhead]);
        }
        normalised_message<C, true>(g, by_source, e, message);
        message_gradient<C>(g, message, grad_summed + by_source.target[e] * C, grad_pre);
#pragma omp simd
        for (int c = 0; c < C; ++c) grad_a[c] += grad_pre[c];
      }
      std::copy(grad_a, grad_a + C, grad_per_source + j * C);
    }
  }
}

}  // namespace erwin
