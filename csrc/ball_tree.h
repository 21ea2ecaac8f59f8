// Ball-tree slot assignment for a ragged batch of point clouds (Erwin, Alg. 1).
//
// Graph g owns points [node_ptr[g], node_ptr[g+1]) and slots [slot_ptr[g], slot_ptr[g+1]).
// A tree node holding n points and s slots (n <= s) is split along the dimension of largest
// spread (first one on ties). Inside a block (s <= block_size) the left child gets floor(n/2)
// points and s/2 slots (the paper's median split); a node spanning k = s / block_size blocks
// gives floor(k/2) blocks and floor(n * floor(k/2) / k) points to the left. A node with one
// point fills all of its slots with it; the first of them is marked real in the mask.
//
// Points are ordered by the key (coordinate, point id): ties are broken by id, so the result
// is a pure function of the input, whatever the thread count. The pure-PyTorch engine in
// torch_geometric_erwin/tree/torch_engine.py implements the same rule and must agree exactly.
//
// The coordinates are copied once into a row-major buffer that is permuted in place together
// with the point ids, so every pass over a node reads contiguous memory.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace erwin {

// kDim > 0 fixes the dimension at compile time (inlined row swaps and key loads for the
// common 1-, 2- and 3-D clouds); kDim == 0 reads it at run time. Scalar is the input's float
// type: float32 keys order exactly as their float64 values, and spreads are differenced in
// double, so both give the trees of the float64 rule while float32 rows move half the bytes.
template <class Scalar, int kDim>
class PointBuffer {
 public:
  PointBuffer(const Scalar* coords, int64_t num_points, int64_t dim)
      : coords_(coords, coords + num_points * dim), ids_(num_points), runtime_dim_(dim) {
    std::iota(ids_.begin(), ids_.end(), int64_t{0});
  }

  int64_t id(int64_t row) const { return ids_[row]; }

  int64_t stride() const {
    if constexpr (kDim > 0) return kDim;
    return runtime_dim_;
  }

  // (coordinate along dim, id) of row a is smaller than that of row b.
  bool less(int64_t a, int64_t b, int64_t dim) const {
    const Scalar va = coords_[a * stride() + dim], vb = coords_[b * stride() + dim];
    return va < vb || (va == vb && ids_[a] < ids_[b]);
  }

  void swap_rows(int64_t a, int64_t b) {
    std::swap_ranges(&coords_[a * stride()], &coords_[a * stride()] + stride(), &coords_[b * stride()]);
    std::swap(ids_[a], ids_[b]);
  }

  int64_t split_dimension(int64_t lo, int64_t hi) const {
    if constexpr (kDim > 0) {
      std::array<Scalar, kDim> low, high;
      return split_dimension_into(lo, hi, low.data(), high.data());
    } else {
      std::vector<Scalar> low(stride()), high(stride());
      return split_dimension_into(lo, hi, low.data(), high.data());
    }
  }

  // Rearrange rows [lo, hi) so that [lo, mid) holds the mid - lo smallest keys.
  void select(int64_t lo, int64_t hi, int64_t mid, int64_t dim) {
    // Median-of-three needs ~2 log2(n) rounds on any realistic input; past a generous cap the
    // input is adversarial, and sorting what is left keeps the worst case at O(n log n).
    int64_t rounds = 0, max_rounds = 16;
    for (int64_t size = hi - lo; size > 1; size /= 2) max_rounds += 4;
    while (hi - lo > 3) {
      if (++rounds > max_rounds) {
        sort_rows(lo, hi, dim);
        return;
      }
      const int64_t pivot = hi - lo > kSampleThreshold ? sample_pivot(lo, hi, mid, dim)
                                                       : median_of_three(lo, lo + (hi - lo) / 2, hi - 1, dim);
      const int64_t position = partition_around(lo, hi, pivot, dim);
      if (mid == position) return;
      if (mid < position) {
        hi = position;
      } else {
        lo = position + 1;
      }
    }
    for (int64_t i = lo + 1; i < hi; ++i) {
      for (int64_t j = i; j > lo && less(j, j - 1, dim); --j) swap_rows(j, j - 1);
    }
  }

 private:
  static constexpr int64_t kSampleThreshold = 256;

  // One pass over the rows, all dimensions at once (independent min/max chains per dimension).
  int64_t split_dimension_into(int64_t lo, int64_t hi, Scalar* low, Scalar* high) const {
    const int64_t dim = stride();
    std::copy_n(&coords_[lo * dim], dim, low);
    std::copy_n(&coords_[lo * dim], dim, high);
    for (int64_t row = lo + 1; row < hi; ++row) {
      const Scalar* point = &coords_[row * dim];
      for (int64_t d = 0; d < dim; ++d) {
        low[d] = std::min(low[d], point[d]);
        high[d] = std::max(high[d], point[d]);
      }
    }
    int64_t best = 0;
    for (int64_t d = 1; d < dim; ++d) {
      if (double(high[d]) - double(low[d]) > double(high[best]) - double(low[best])) best = d;
    }
    return best;
  }

  // A pivot whose rank is close to mid's: the element of the same relative rank in an evenly
  // spaced sample of ~sqrt(n) rows. It leaves the target in a part of size O(n^0.75) after
  // one or two passes, about 1.5 n work for a median instead of ~2.75 n with median-of-three.
  int64_t sample_pivot(int64_t lo, int64_t hi, int64_t mid, int64_t dim) const {
    const int64_t n = hi - lo;
    int64_t size = 1;
    while (size * size < n) ++size;
    std::vector<int64_t> sample(size);
    for (int64_t k = 0; k < size; ++k) sample[k] = lo + (2 * k + 1) * n / (2 * size);
    const int64_t rank = std::min(size - 1, (mid - lo) * size / n);
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(),
                     [&](int64_t a, int64_t b) { return less(a, b, dim); });
    return sample[rank];
  }

  int64_t median_of_three(int64_t a, int64_t b, int64_t c, int64_t dim) const {
    if (less(a, b, dim)) {
      if (less(b, c, dim)) return b;
      return less(a, c, dim) ? c : a;
    }
    if (less(a, c, dim)) return a;
    return less(b, c, dim) ? c : b;
  }

  // Moves the pivot row to its sorted position p within [lo, hi) and returns p: keys in
  // [lo, p) are smaller, keys in (p, hi) larger. Lomuto's scheme with an unconditional swap
  // and a data-dependent increment, so the loop has no unpredictable branch (the comparisons
  // of a median split are coin flips, and mispredictions dominated the branchy version).
  int64_t partition_around(int64_t lo, int64_t hi, int64_t pivot_row, int64_t dim) {
    swap_rows(pivot_row, hi - 1);
    const Scalar pivot_value = coords_[(hi - 1) * stride() + dim];
    const int64_t pivot_id = ids_[hi - 1];
    int64_t store = lo;
    for (int64_t row = lo; row < hi - 1; ++row) {
      const Scalar v = coords_[row * stride() + dim];
      const bool smaller = (v < pivot_value) | ((v == pivot_value) & (ids_[row] < pivot_id));
      swap_rows(store, row);
      store += smaller;
    }
    swap_rows(store, hi - 1);
    return store;
  }

  void sort_rows(int64_t lo, int64_t hi, int64_t dim) {
    std::vector<int64_t> order(hi - lo);
    std::iota(order.begin(), order.end(), lo);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return less(a, b, dim); });
    std::vector<Scalar> coords(order.size() * stride());
    std::vector<int64_t> ids(order.size());
    for (size_t k = 0; k < order.size(); ++k) {
      std::copy_n(&coords_[order[k] * stride()], stride(), &coords[k * stride()]);
      ids[k] = ids_[order[k]];
    }
    std::copy(coords.begin(), coords.end(), &coords_[lo * stride()]);
    std::copy(ids.begin(), ids.end(), &ids_[lo]);
  }

  std::vector<Scalar> coords_;
  std::vector<int64_t> ids_;
  const int64_t runtime_dim_;
};

struct TreeOutput {
  int64_t* index;
  bool* mask;
};

// Nodes with more points than this split their children into OpenMP tasks.
constexpr int64_t kTaskCutoff = 4096;

template <class Points>
void build_node(Points& points, TreeOutput out, int64_t lo, int64_t hi,
                       int64_t slot_lo, int64_t num_slots, int64_t block_size) {
  const int64_t n = hi - lo;
  if (n == 1) {
    std::fill_n(out.index + slot_lo, num_slots, points.id(lo));
    out.mask[slot_lo] = true;
    std::fill_n(out.mask + slot_lo + 1, num_slots - 1, false);
    return;
  }
  if (n == 2 && num_slots == 2) {  // a full leaf: both points, smaller key first
    const int64_t first = points.less(lo, lo + 1, points.split_dimension(lo, hi)) ? lo : lo + 1;
    out.index[slot_lo] = points.id(first);
    out.index[slot_lo + 1] = points.id(2 * lo + 1 - first);
    out.mask[slot_lo] = out.mask[slot_lo + 1] = true;
    return;
  }
  int64_t left_points, left_slots;
  if (num_slots > block_size) {
    const int64_t blocks = num_slots / block_size, left_blocks = blocks / 2;
    left_points = n * left_blocks / blocks;
    left_slots = left_blocks * block_size;
  } else {
    left_points = n / 2;
    left_slots = num_slots / 2;
  }
  points.select(lo, hi, lo + left_points, points.split_dimension(lo, hi));
  const int64_t mid = lo + left_points;
  if (n > kTaskCutoff) {
#pragma omp task default(none) shared(points) firstprivate(out, lo, mid, slot_lo, left_slots, block_size)
    build_node(points, out, lo, mid, slot_lo, left_slots, block_size);
  } else {
    build_node(points, out, lo, mid, slot_lo, left_slots, block_size);
  }
  build_node(points, out, mid, hi, slot_lo + left_slots, num_slots - left_slots, block_size);
}

template <class Scalar, int kDim>
void build_ball_trees_dim(const Scalar* coords, int64_t num_points, int64_t dim,
                          const int64_t* node_ptr, const int64_t* slot_ptr, int64_t num_graphs,
                          int64_t block_size, int64_t* index, bool* mask) {
  PointBuffer<Scalar, kDim> points(coords, num_points, dim);
  const TreeOutput out{index, mask};
#pragma omp parallel default(none) shared(points, node_ptr, slot_ptr) firstprivate(out, num_graphs, block_size)
#pragma omp single
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (node_ptr[g + 1] == node_ptr[g]) continue;
#pragma omp task default(none) shared(points, node_ptr, slot_ptr) firstprivate(out, g, block_size)
    build_node(points, out, node_ptr[g], node_ptr[g + 1], slot_ptr[g], slot_ptr[g + 1] - slot_ptr[g],
               block_size);
  }
}

// Fills index[slot] (point id, global) and mask[slot] for every slot of every graph.
template <class Scalar>
void build_ball_trees(const Scalar* coords, int64_t num_points, int64_t dim,
                             const int64_t* node_ptr, const int64_t* slot_ptr, int64_t num_graphs,
                             int64_t block_size, int64_t* index, bool* mask) {
  switch (dim) {
    case 1: return build_ball_trees_dim<Scalar, 1>(coords, num_points, dim, node_ptr, slot_ptr, num_graphs, block_size, index, mask);
    case 2: return build_ball_trees_dim<Scalar, 2>(coords, num_points, dim, node_ptr, slot_ptr, num_graphs, block_size, index, mask);
    case 3: return build_ball_trees_dim<Scalar, 3>(coords, num_points, dim, node_ptr, slot_ptr, num_graphs, block_size, index, mask);
    default: return build_ball_trees_dim<Scalar, 0>(coords, num_points, dim, node_ptr, slot_ptr, num_graphs, block_size, index, mask);
  }
}

}  // namespace erwin
