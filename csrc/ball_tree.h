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
// Each graph's points are sorted once per dimension (radix sort). A node then owns the same
// range of every sorted list: its spread along d is read off the ends of list d, and its median
// split is the first half of the list of the split dimension, so a split is a stable partition
// of the other lists, linear and branch-free, with no selection. Nodes of at most 64 points
// switch to bit masks: a node is one 64-bit mask per dimension over the points' ranks along it,
// spreads come from its lowest and highest bit, and a split moves half of the points' bits.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace erwin {

// Unsigned integers that order as the coordinates do, so a radix sort can order them.
// -0 and +0 are equal coordinates, and must tie (then compare by id) as in the float order.
inline uint32_t order_key(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (value == 0) bits = 0;
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

inline uint64_t order_key(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (value == 0) bits = 0;
  return bits & (uint64_t{1} << 63) ? ~bits : bits | (uint64_t{1} << 63);
}

// Left child of a node with num_points points and num_slots slots: (points, slots). Blocks
// have 2^block_shift slots. An even number of blocks halves the points, with no division.
inline std::pair<int64_t, int64_t> left_share(int64_t num_points, int64_t num_slots, int block_shift) {
  if (num_slots > (int64_t{1} << block_shift)) {
    const int64_t blocks = num_slots >> block_shift, left_blocks = blocks / 2;
    return {blocks % 2 == 0 ? num_points / 2 : num_points * left_blocks / blocks, left_blocks << block_shift};
  }
  return {num_points / 2, num_slots / 2};
}

struct TreeOutput {
  int64_t* index;
  bool* mask;
  int block_shift;  // blocks have 2^block_shift slots

  void leaf(int64_t slot_lo, int64_t num_slots, int64_t point) const {
    std::fill_n(index + slot_lo, num_slots, point);
    mask[slot_lo] = true;
    std::fill_n(mask + slot_lo + 1, num_slots - 1, false);
  }
};

// An allocator that leaves new elements uninitialised (scalars only): the work arrays are
// written before they are read, and zeroing them first cost a few percent.
template <class T>
struct Uninitialized : std::allocator<T> {
  template <class U>
  struct rebind {  // std::allocator's own would make the vector's allocator a plain one
    using other = Uninitialized<U>;
  };
  template <class U>
  void construct(U* element) noexcept {
    ::new (static_cast<void*>(element)) U;
  }
};
template <class T>
using Buffer = std::vector<T, Uninitialized<T>>;

// Nodes with at most this many points never make OpenMP tasks.
constexpr int64_t kTaskCutoff = 4096;
// Nodes with at most this many points are built on bit masks (one 64-bit word per dimension).
constexpr int64_t kSmall = 64;

// A fixed-size array for kDim > 0 (no allocation per task), a vector for run-time dimensions.
template <class T, int kDim, int64_t kPerDim>
using Table = std::conditional_t<(kDim > 0), std::array<T, (kDim > 0 ? kDim : 1) * kPerDim>, std::vector<T>>;

template <class T, int kDim, int64_t kPerDim>
Table<T, kDim, kPerDim> make_table(int64_t dim) {
  if constexpr (kDim > 0) {
    return {};
  } else {
    return std::vector<T>(dim * kPerDim);
  }
}

// Builds the subtrees of nodes with at most kSmall points. Point e of such a node is the e-th
// in its order along dimension 0; a set of its points is, for every dimension d, the mask of
// their ranks along d. One instance per OpenMP task, reused for all small nodes of the task.
template <class Scalar, int kDim>
class SmallNodes {
 public:
  explicit SmallNodes(int64_t dim)
      : dim_(dim),
        ids_(),
        order_(make_table<uint8_t, kDim, kSmall>(dim)),
        rank_bit_(make_table<uint64_t, kDim, kSmall>(dim)),
        value_(make_table<Scalar, kDim, kSmall>(dim)),
        nodes_(),
        masks_(make_table<uint64_t, kDim, 2 * kSmall>(dim)) {}

  int64_t dim() const {
    if constexpr (kDim > 0) return kDim;
    return dim_;
  }

  // sorted[d * stride + r]: id of the point of rank r along d, global_id(id) its id in the
  // input; point_of[id] is scratch.
  template <class Index, class GlobalId>
  void build(const Scalar* coords, int64_t num_points, const Index* sorted, int64_t stride, uint8_t* point_of,
             GlobalId global_id, int64_t slot_lo, int64_t num_slots, const TreeOutput& out) {
    const int64_t dim = this->dim();
    const Index* by_first = sorted;
    for (int64_t e = 0; e < num_points; ++e) {
      ids_[e] = global_id(by_first[e]);
      point_of[by_first[e]] = uint8_t(e);
    }
    for (int64_t d = 0; d < dim; ++d) {
      const Index* by_d = sorted + d * stride;
      for (int64_t r = 0; r < num_points; ++r) {
        const uint8_t e = point_of[by_d[r]];
        order_[d * kSmall + r] = e;
        rank_bit_[d * kSmall + e] = uint64_t{1} << r;
        value_[d * kSmall + r] = coords[by_d[r] * dim + d];
      }
    }
    nodes_[0] = {num_points, slot_lo, num_slots};
    std::fill_n(masks_.data(), dim, num_points == 64 ? ~uint64_t{0} : (uint64_t{1} << num_points) - 1);
    split_all(out);
  }

 private:
  struct Node {
    int64_t num_points, slot_lo, num_slots;
  };

  // Breadth-first, one depth at a time: nodes_[i] with masks_ row i (masks[d]: the ranks along
  // d of its points) for the nodes of one depth, rows kSmall + i for their children. Nodes of
  // one depth are of (nearly) one size, so the loops below run (nearly) the same number of
  // times for all of them, and their branches are predicted well.
  void split_all(const TreeOutput& out) {
    const int64_t dim = this->dim();
    Node* nodes = nodes_.data();
    Node* children = nodes + kSmall;
    uint64_t* masks_of = masks_.data();
    uint64_t* children_masks = masks_of + kSmall * dim;
    for (int64_t count = 1; count > 0;) {
      int64_t next = 0;
      for (int64_t i = 0; i < count; ++i) {
        const auto [num_points, slot_lo, num_slots] = nodes[i];
        const uint64_t* masks = masks_of + i * dim;
        if (num_points == 1) {  // along dimension 0 rank and point coincide
          out.leaf(slot_lo, num_slots, ids_[__builtin_ctzll(masks[0])]);
          continue;
        }
        int64_t best = 0;
        double best_spread = -1;
        for (int64_t d = 0; d < dim; ++d) {
          const Scalar low = value_[d * kSmall + __builtin_ctzll(masks[d])];
          const Scalar high = value_[d * kSmall + 63 - __builtin_clzll(masks[d])];
          const double spread = double(high) - double(low);
          const bool wider = spread > best_spread;  // selects, not a branch: wider is a coin flip
          best = wider ? d : best;
          best_spread = wider ? spread : best_spread;
        }
        const auto [left_points, left_slots] = left_share(num_points, num_slots, out.block_shift);
        const uint8_t* by_best = &order_[best * kSmall];
        if (num_points == 2) {  // two leaves, the smaller key first: no masks to build
          out.leaf(slot_lo, left_slots, ids_[by_best[__builtin_ctzll(masks[best])]]);
          out.leaf(slot_lo + left_slots, num_slots - left_slots, ids_[by_best[63 - __builtin_clzll(masks[best])]]);
          continue;
        }
        uint64_t rest = masks[best];
        for (int64_t k = 0; k < left_points; ++k) rest &= rest - 1;
        const uint64_t left_ranks = masks[best] ^ rest;  // the left_points lowest ranks along best
        uint64_t* left = children_masks + next * dim;
        uint64_t* right = left + dim;
        for (int64_t d = 0; d < dim; ++d) {
          uint64_t bits = left_ranks;
          if (d != best) {  // a loop over set bits: short, and not worth vectorising
            bits = 0;
            for (uint64_t ranks = left_ranks; ranks != 0; ranks &= ranks - 1) {
              bits |= rank_bit_[d * kSmall + by_best[__builtin_ctzll(ranks)]];
            }
          }
          left[d] = bits;
          right[d] = masks[d] ^ bits;
        }
        children[next++] = {left_points, slot_lo, left_slots};
        children[next++] = {num_points - left_points, slot_lo + left_slots, num_slots - left_slots};
      }
      std::swap(nodes, children);
      std::swap(masks_of, children_masks);
      count = next;
    }
  }

  const int64_t dim_;
  std::array<int64_t, kSmall> ids_;            // point -> id in the input
  Table<uint8_t, kDim, kSmall> order_;         // [d][rank] -> point
  Table<uint64_t, kDim, kSmall> rank_bit_;     // [d][point] -> 1 << rank
  Table<Scalar, kDim, kSmall> value_;          // [d][rank] -> coordinate
  std::array<Node, 2 * kSmall> nodes_;         // the nodes of one depth, then their children
  Table<uint64_t, kDim, 2 * kSmall> masks_;    // [row][d] -> ranks along d of the node in row
};

// The tree of one graph, or of one node of it that an OpenMP task builds. Index holds ids
// within it (int32 whenever they fit). Every dimension has a list of the ids sorted along it,
// in two copies (a split reads one and writes the other); a node owns the same range of each.
//
// A task's node is first copied out (ids renumbered, coordinates and lists its own), so that
// the scratch array side_, indexed by id, is never shared between threads: ids of sibling
// subtrees interleave, and threads writing to the same cache lines would slow each other down.
template <class Scalar, int kDim, class Index>
class GraphTree {
 public:
  // A whole graph: ids are positions in the input after first_id.
  GraphTree(const Scalar* coords, int64_t num_points, int64_t dim, int64_t first_id, TreeOutput out,
            int64_t task_size)
      : num_points_(num_points),
        dim_(dim),
        first_id_(first_id),
        task_size_(task_size),
        out_(out),
        coords_(coords + first_id * dim),
        lists_(2 * dim * num_points),
        side_(num_points),
        renumber_(num_points > task_size ? num_points : 0) {
    for (int64_t d = 0; d < dim; ++d) {
#pragma omp task default(none) firstprivate(d) if (num_points_ > task_size_)
      sort_along(d);
    }
#pragma omp taskwait
  }

  // Node [lo, hi) of parent's lists of parity `parity`; id r is its point of rank r along 0.
  GraphTree(GraphTree& parent, int64_t lo, int64_t hi, int64_t parity)
      : num_points_(hi - lo),
        dim_(parent.dim_),
        first_id_(0),
        task_size_(parent.task_size_),
        out_(parent.out_),
        own_coords_(num_points_ * dim()),
        global_ids_(num_points_),
        coords_(own_coords_.data()),
        lists_(2 * dim() * num_points_),
        side_(num_points_),
        renumber_(num_points_ > task_size_ ? num_points_ : 0) {
    const Index* by_first = parent.list(parity, 0) + lo;
    Index* first = list(0, 0);
    for (int64_t r = 0; r < num_points_; ++r) {
      const Index id = by_first[r];
      parent.renumber_[id] = Index(r);
      first[r] = Index(r);
      global_ids_[r] = parent.global_id(id);
      std::copy_n(parent.coords_ + id * dim(), dim(), &own_coords_[r * dim()]);
    }
    for (int64_t d = 1; d < dim(); ++d) {
      const Index* from = parent.list(parity, d) + lo;
      Index* to = list(0, d);
      for (int64_t r = 0; r < num_points_; ++r) to[r] = parent.renumber_[from[r]];
    }
  }

  // Builds the tree into slots [slot_lo, slot_lo + num_slots) of the output.
  void build(int64_t slot_lo, int64_t num_slots) {
    SmallNodes<Scalar, kDim> small(dim());
    split(0, num_points_, 0, slot_lo, num_slots, small);
#pragma omp taskwait  // tasks copy from this tree
  }

 private:
  int64_t dim() const {
    if constexpr (kDim > 0) return kDim;
    return dim_;
  }

  Index* list(int64_t parity, int64_t d) { return lists_.data() + (parity * dim() + d) * num_points_; }

  Scalar coord(Index id, int64_t d) const { return coords_[id * dim() + d]; }

  int64_t global_id(Index id) const { return global_ids_.empty() ? first_id_ + id : global_ids_[id]; }

  // list(0, d) = ids ordered by (coordinate d, id): least-significant-digit radix sort by bytes
  // of the order key; it is stable and starts from ascending ids, so ties stay in id order.
  void sort_along(int64_t d) {
    using Key = decltype(order_key(Scalar{}));
    struct Entry {
      Key key;
      Index id;
    };
    constexpr int kBytes = sizeof(Key);
    Buffer<Entry> entries(num_points_), scratch(num_points_);
    std::array<std::array<int64_t, 256>, kBytes> counts{};
    for (int64_t i = 0; i < num_points_; ++i) {
      const Key key = order_key(coord(Index(i), d));
      entries[i] = {key, Index(i)};
      for (int b = 0; b < kBytes; ++b) ++counts[b][(key >> (8 * b)) & 255];
    }
    // A byte that all keys share leaves the order as it is: skip its pass.
    std::array<int, kBytes> passes;
    int num_passes = 0;
    for (int b = 0; b < kBytes; ++b) {
      if (counts[b][(entries[0].key >> (8 * b)) & 255] != num_points_) passes[num_passes++] = b;
    }
    Index* sorted = list(0, d);
    if (num_passes == 0) {
      for (int64_t i = 0; i < num_points_; ++i) sorted[i] = Index(i);
      return;
    }
    for (int p = 0; p < num_passes; ++p) {
      const int shift = 8 * passes[p];
      std::array<int64_t, 256>& offsets = counts[passes[p]];
      int64_t total = 0;
      for (int64_t& count : offsets) total += std::exchange(count, total);
      if (p + 1 < num_passes) {
        for (const Entry& entry : entries) scratch[offsets[(entry.key >> shift) & 255]++] = entry;
        entries.swap(scratch);
      } else {  // the last pass writes the ids straight into the list
        for (const Entry& entry : entries) sorted[offsets[(entry.key >> shift) & 255]++] = entry.id;
      }
    }
  }

  // Node [lo, hi) of the lists of parity `parity`; the children use the other parity.
  void split(int64_t lo, int64_t hi, int64_t parity, int64_t slot_lo, int64_t num_slots,
             SmallNodes<Scalar, kDim>& small) {
    const int64_t n = hi - lo;
    if (n <= kSmall) {
      small.build(coords_, n, list(parity, 0) + lo, num_points_, side_.data(),
                  [this](Index id) { return global_id(id); }, slot_lo, num_slots, out_);
      return;
    }
    int64_t best = 0;
    double best_spread = -1;
    for (int64_t d = 0; d < dim(); ++d) {
      const Index* sorted = list(parity, d);
      const double spread = double(coord(sorted[hi - 1], d)) - double(coord(sorted[lo], d));
      if (spread > best_spread) {
        best = d;
        best_spread = spread;
      }
    }
    const auto [left_points, left_slots] = left_share(n, num_slots, out_.block_shift);
    const int64_t mid = lo + left_points;
    const Index* by_best = list(parity, best);
    for (int64_t r = lo; r < mid; ++r) side_[by_best[r]] = 0;
    for (int64_t r = mid; r < hi; ++r) side_[by_best[r]] = 1;
    for (int64_t d = 0; d < dim(); ++d) {
#pragma omp task default(none) firstprivate(d, lo, hi, mid, parity, best) if (n > task_size_)
      {
        const Index* from = list(parity, d);
        Index* to = list(1 - parity, d);
        if (d == best) {
          std::copy(from + lo, from + hi, to + lo);
        } else {  // stable partition by side, with no branch on it (the sides are coin flips)
          int64_t left = lo, right = mid;
          for (int64_t r = lo; r < hi; ++r) {
            const Index id = from[r];
            const int64_t goes_right = side_[id];
            to[left + ((right - left) & -goes_right)] = id;  // a select GCC would make a branch of
            left += 1 - goes_right;
            right += goes_right;
          }
        }
      }
    }
#pragma omp taskwait
    if (n > task_size_) {
#pragma omp task default(none) firstprivate(lo, mid, parity, slot_lo, left_slots)
      GraphTree(*this, lo, mid, 1 - parity).build(slot_lo, left_slots);
    } else {
      split(lo, mid, 1 - parity, slot_lo, left_slots, small);
    }
    split(mid, hi, 1 - parity, slot_lo + left_slots, num_slots - left_slots, small);
  }

  const int64_t num_points_, dim_, first_id_, task_size_;
  const TreeOutput out_;
  Buffer<Scalar> own_coords_;   // a task's copy: [id][d]
  Buffer<int64_t> global_ids_;  // a task's ids in the input; empty for a graph
  const Scalar* coords_;
  Buffer<Index> lists_;     // [parity][d][rank along d] -> id
  Buffer<uint8_t> side_;    // [id] scratch: child of a split, point of a small node
  Buffer<Index> renumber_;  // [id] -> id in a task's copy; only where tasks are made
};

template <class Scalar, int kDim, class Index>
void build_ball_trees_dim(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                          int64_t num_graphs, TreeOutput out) {
  // Nodes above this size make tasks: about four per thread, never tiny ones.
#ifdef _OPENMP
  const int64_t threads = omp_get_max_threads();
#else
  const int64_t threads = 1;
#endif
  const int64_t task_size = std::max(kTaskCutoff, node_ptr[num_graphs] / (4 * threads));
#pragma omp parallel default(none) shared(coords, dim, node_ptr, slot_ptr, num_graphs, out, task_size)
#pragma omp single
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (node_ptr[g + 1] == node_ptr[g]) continue;
#pragma omp task default(none) shared(coords, dim, node_ptr, slot_ptr, out, task_size) firstprivate(g)
    GraphTree<Scalar, kDim, Index>(coords, node_ptr[g + 1] - node_ptr[g], dim, node_ptr[g], out, task_size)
        .build(slot_ptr[g], slot_ptr[g + 1] - slot_ptr[g]);
  }
}

template <class Scalar, int kDim>
void build_ball_trees_index(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                            int64_t num_graphs, TreeOutput out) {
  int64_t largest = 0;
  for (int64_t g = 0; g < num_graphs; ++g) largest = std::max(largest, node_ptr[g + 1] - node_ptr[g]);
  if (largest <= INT32_MAX) {  // half the bytes to move in every pass
    build_ball_trees_dim<Scalar, kDim, int32_t>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  } else {
    build_ball_trees_dim<Scalar, kDim, int64_t>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  }
}

// Fills index[slot] (point id, global) and mask[slot] for every slot of every graph; blocks
// (see left_share) have 2^block_shift slots.
template <class Scalar>
void build_ball_trees(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                      int64_t num_graphs, int block_shift, int64_t* index, bool* mask) {
  const TreeOutput out{index, mask, block_shift};
  switch (dim) {
    case 1: return build_ball_trees_index<Scalar, 1>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    case 2: return build_ball_trees_index<Scalar, 2>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    case 3: return build_ball_trees_index<Scalar, 3>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    default: return build_ball_trees_index<Scalar, 0>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  }
}

}  // namespace erwin
