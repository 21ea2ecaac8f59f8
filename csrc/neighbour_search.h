// Exact k-nearest and radius neighbour search in a ragged batch of point clouds.
//
// Graph g owns points [ptr[g], ptr[g+1]); no neighbour is looked for outside a point's graph. A
// k-d tree is built per graph rather than reusing the engine's ball tree (csrc/ball_tree.h): the
// ball tree pads graphs to power-of-two slot counts and splits down to single points, which a
// search does not need, while a k-d tree with bucket leaves of kLeafSize points has n / 16 nodes,
// one box each, and its points stored contiguously in tree order, so a leaf is one streamed block.
// A node of n > kLeafSize points is split at n / 2 along its widest dimension (the largest
// high - low of its bounding box, the first on ties).
//
// The result of a query q is fixed by the data alone, not by the tree: among the nodes of q's graph
// (q itself only if loop) whose squared distance d2 <= radius_sq, the `count` smallest by the key
// (d2, node index). d2 is summed in double over the dimensions in order from the differences of the
// coordinates, never from |a|^2 + |b|^2 - 2ab, whose cancellation would reorder close neighbours.
// A box's lower bound on d2 is summed the same way from differences that are never larger than a
// point's, and rounding is monotone, so it never exceeds the d2 of a point inside: pruning a box
// whose bound is above the current count-th d2 (strictly: a point at an equal d2 and a lower index
// would still win) loses nothing. The sources of a query are returned in ascending node index.
//
// Queries are processed in tree order, so that consecutive queries of a thread visit the same
// leaves; each keeps its best `count` candidates in a max-heap on the key. Every thread appends its
// queries' results to its own buffer; the edges are then laid out by target in one more pass, so
// nothing larger than the edges is ever allocated.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "parallel.h"

namespace erwin {

constexpr int64_t kLeafSize = 16;
// Subtrees of more points than this are built by OpenMP tasks of their own.
constexpr int64_t kTaskPoints = int64_t{1} << 14;

struct KdNode {
  int64_t begin, end;  // tree-order positions of the node's points
  int64_t right;       // index of the right child (the left one follows the node); -1 for a leaf
};

// Number of nodes of the subtree over n points: nodes are stored in preorder, so a node's right
// child comes after its left subtree, at a position known before the left subtree is built.
inline int64_t kd_subtree_nodes(int64_t n) {
  return n <= kLeafSize ? 1 : 1 + kd_subtree_nodes(n / 2) + kd_subtree_nodes(n - n / 2);
}

struct KdForest {
  int64_t dim = 0;
  std::vector<double> coords;    // [N, dim] in tree order
  std::vector<int64_t> index;    // tree position -> node index
  std::vector<KdNode> nodes;     // every graph's nodes, preorder
  std::vector<double> boxes;     // [nodes, 2, dim]: low then high
  std::vector<int64_t> root;     // per graph: its root node, -1 if it has no point
};

template <class Scalar>
class KdBuilder {
 public:
  KdBuilder(const Scalar* pos, KdForest& forest) : pos_(pos), f_(forest) {}

  // Builds the subtree of node `id` over the points in index[begin, end).
  void build(int64_t id, int64_t begin, int64_t end) {
    const int64_t dim = f_.dim;
    double* low = f_.boxes.data() + id * 2 * dim;
    double* high = low + dim;
    std::fill(low, low + dim, std::numeric_limits<double>::infinity());
    std::fill(high, high + dim, -std::numeric_limits<double>::infinity());
    for (int64_t i = begin; i < end; ++i) {
      const Scalar* row = pos_ + f_.index[i] * dim;
      for (int64_t d = 0; d < dim; ++d) {
        low[d] = std::min(low[d], double(row[d]));
        high[d] = std::max(high[d], double(row[d]));
      }
    }
    KdNode& node = f_.nodes[id];
    node.begin = begin;
    node.end = end;
    node.right = -1;
    if (end - begin <= kLeafSize) return;
    int64_t split = 0;
    for (int64_t d = 1; d < dim; ++d) {
      if (high[d] - low[d] > high[split] - low[split]) split = d;
    }
    const int64_t mid = begin + (end - begin) / 2;
    const Scalar* column = pos_ + split;
    std::nth_element(f_.index.begin() + begin, f_.index.begin() + mid, f_.index.begin() + end,
                     [column, dim](int64_t a, int64_t b) { return column[a * dim] < column[b * dim]; });
    node.right = id + 1 + kd_subtree_nodes(mid - begin);
    const int64_t right = node.right;
    if (end - begin > kTaskPoints) {
#pragma omp task firstprivate(id, begin, mid)
      build(id + 1, begin, mid);
      build(right, mid, end);
#pragma omp taskwait
    } else {
      build(id + 1, begin, mid);
      build(right, mid, end);
    }
  }

 private:
  const Scalar* pos_;
  KdForest& f_;
};

// One tree per graph of node_ptr [num_graphs + 1] over pos [N, dim].
template <class Scalar>
KdForest build_kd_forest(const Scalar* pos, int64_t dim, const int64_t* node_ptr, int64_t num_graphs,
                         int threads) {
  KdForest f;
  f.dim = dim;
  const int64_t n = node_ptr[num_graphs];
  f.index.resize(n);
  f.root.assign(num_graphs, -1);
  int64_t total = 0;
  for (int64_t g = 0; g < num_graphs; ++g) {
    const int64_t size = node_ptr[g + 1] - node_ptr[g];
    if (size > 0) {
      f.root[g] = total;
      total += kd_subtree_nodes(size);
    }
  }
  f.nodes.resize(total);
  f.boxes.resize(total * 2 * dim);
  for (int64_t i = 0; i < n; ++i) f.index[i] = i;
  KdBuilder<Scalar> builder(pos, f);
#pragma omp parallel num_threads(threads)
#pragma omp single
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (f.root[g] < 0) continue;
    const int64_t root = f.root[g], begin = node_ptr[g], end = node_ptr[g + 1];
#pragma omp task default(none) firstprivate(root, begin, end) shared(builder)
    builder.build(root, begin, end);
  }
  f.coords.resize(n * dim);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    const Scalar* row = pos + f.index[i] * dim;
    for (int64_t d = 0; d < dim; ++d) f.coords[i * dim + d] = double(row[d]);
  }
  return f;
}

// A candidate neighbour; the search keeps the smallest by (d2, index).
struct Candidate {
  double d2;
  int64_t index;
  bool operator<(const Candidate& other) const {
    return d2 < other.d2 || (d2 == other.d2 && index < other.index);
  }
};

// The search of one query. Dim > 0 fixes the dimension at compile time; Dim = 0 reads it from f.
template <int Dim>
class KdQuery {
 public:
  KdQuery(const KdForest& f, int64_t count, double radius_sq, bool loop)
      : f_(f), count_(count), radius_sq_(radius_sq), loop_(loop) {
    heap_.reserve(count);
  }

  // Fills heap_ with the best candidates of the query at tree position `at` in the tree at `root`.
  void run(int64_t root, int64_t at) {
    query_ = f_.coords.data() + at * dim();
    self_ = f_.index[at];
    heap_.clear();
    bound_ = radius_sq_;
    if (box_d2(root) <= bound_) visit(root);
  }

  // The sources found by the last run, in ascending node index, written to out.
  int64_t sources(int64_t* out) const {
    const int64_t m = int64_t(heap_.size());
    for (int64_t i = 0; i < m; ++i) out[i] = heap_[i].index;
    std::sort(out, out + m);
    return m;
  }

  int64_t found() const { return int64_t(heap_.size()); }

 private:
  int64_t dim() const { return Dim > 0 ? Dim : f_.dim; }

  double box_d2(int64_t node) const {
    const int64_t dim = this->dim();
    const double* low = f_.boxes.data() + node * 2 * dim;
    const double* high = low + dim;
    double d2 = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const double below = low[d] - query_[d], above = query_[d] - high[d];
      const double gap = below > 0 ? below : (above > 0 ? above : 0.0);
      d2 += gap * gap;
    }
    return d2;
  }

  void visit(int64_t id) {
    const KdNode& node = f_.nodes[id];
    if (node.right < 0) {
      scan(node.begin, node.end);
      return;
    }
    const double left_d2 = box_d2(id + 1), right_d2 = box_d2(node.right);
    const bool left_first = left_d2 <= right_d2;
    const int64_t near = left_first ? id + 1 : node.right, far = left_first ? node.right : id + 1;
    const double near_d2 = left_first ? left_d2 : right_d2, far_d2 = left_first ? right_d2 : left_d2;
    if (near_d2 <= bound_) visit(near);
    if (far_d2 <= bound_) visit(far);  // bound_ may have shrunk meanwhile
  }

  void scan(int64_t begin, int64_t end) {
    const int64_t dim = this->dim();
    for (int64_t i = begin; i < end; ++i) {
      const double* row = f_.coords.data() + i * dim;
      double d2 = 0;
      for (int64_t d = 0; d < dim; ++d) {
        const double diff = row[d] - query_[d];
        d2 += diff * diff;
      }
      if (d2 > bound_) continue;
      const int64_t index = f_.index[i];
      if (!loop_ && index == self_) continue;
      const Candidate candidate{d2, index};
      if (int64_t(heap_.size()) < count_) {
        heap_.push_back(candidate);
        std::push_heap(heap_.begin(), heap_.end());
        if (int64_t(heap_.size()) == count_) bound_ = heap_.front().d2;
      } else if (candidate < heap_.front()) {
        std::pop_heap(heap_.begin(), heap_.end());
        heap_.back() = candidate;
        std::push_heap(heap_.begin(), heap_.end());
        bound_ = heap_.front().d2;
      }
    }
  }

  const KdForest& f_;
  const int64_t count_;
  const double radius_sq_;
  const bool loop_;
  const double* query_ = nullptr;
  int64_t self_ = 0;
  double bound_ = 0;
  std::vector<Candidate> heap_;
};

// Where a query's sources lie in its thread's buffer.
struct QueryResult {
  int64_t thread, offset, size;
};

template <int Dim>
void search_kd_forest(const KdForest& f, const int64_t* node_ptr, int64_t num_graphs, int64_t count,
                      double radius_sq, bool loop, int threads, std::vector<std::vector<int64_t>>& buffers,
                      std::vector<QueryResult>& results) {
  const int64_t n = node_ptr[num_graphs];
  results.assign(n, QueryResult{0, 0, 0});
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int64_t thread = omp_get_thread_num();
#pragma omp single
    buffers.resize(omp_get_num_threads());
#else
    const int64_t thread = 0;
    buffers.resize(1);
#endif
    std::vector<int64_t>& buffer = buffers[thread];
    KdQuery<Dim> query(f, count, radius_sq, loop);
    int64_t graph = 0;
#pragma omp for schedule(dynamic, 256)
    for (int64_t at = 0; at < n; ++at) {
      // queries arrive in increasing order within a chunk, so the graph only moves forward
      if (at < node_ptr[graph] || at >= node_ptr[graph + 1]) {
        graph = std::upper_bound(node_ptr, node_ptr + num_graphs + 1, at) - node_ptr - 1;
      }
      query.run(f.root[graph], at);
      const int64_t offset = int64_t(buffer.size());
      buffer.resize(offset + query.found());
      query.sources(buffer.data() + offset);
      results[f.index[at]] = QueryResult{thread, offset, query.found()};
    }
  }
}

// Edges [2, E] (row 0 the neighbour, row 1 the centre, grouped by centre in ascending order and by
// neighbour index within a centre) of every point of pos [N, dim]. `allocate(E)` returns the output,
// 2 * E int64.
template <class Scalar, class Allocate>
int64_t* neighbour_search(const Scalar* pos, int64_t dim, const int64_t* node_ptr, int64_t num_graphs,
                          int64_t count, double radius_sq, bool loop, int threads, Allocate allocate) {
  threads = threads_for(node_ptr[num_graphs] - node_ptr[0], threads);
  const KdForest f = build_kd_forest(pos, dim, node_ptr, num_graphs, threads);
  int64_t largest = 0;
  for (int64_t g = 0; g < num_graphs; ++g) largest = std::max(largest, node_ptr[g + 1] - node_ptr[g]);
  count = std::min(count, largest);  // the heaps reserve count entries
  std::vector<std::vector<int64_t>> buffers;
  std::vector<QueryResult> results;
  switch (dim) {
    case 1: search_kd_forest<1>(f, node_ptr, num_graphs, count, radius_sq, loop, threads, buffers, results); break;
    case 2: search_kd_forest<2>(f, node_ptr, num_graphs, count, radius_sq, loop, threads, buffers, results); break;
    case 3: search_kd_forest<3>(f, node_ptr, num_graphs, count, radius_sq, loop, threads, buffers, results); break;
    default: search_kd_forest<0>(f, node_ptr, num_graphs, count, radius_sq, loop, threads, buffers, results);
  }
  const int64_t n = node_ptr[num_graphs];
  std::vector<int64_t> offsets(n + 1, 0);
  for (int64_t q = 0; q < n; ++q) offsets[q + 1] = offsets[q] + results[q].size;
  const int64_t edges = offsets[n];
  int64_t* out = allocate(edges);
  int64_t* source = out;
  int64_t* target = out + edges;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t q = 0; q < n; ++q) {
    const QueryResult& r = results[q];
    std::copy_n(buffers[r.thread].data() + r.offset, r.size, source + offsets[q]);
    std::fill_n(target + offsets[q], r.size, q);
  }
  return out;
}

}  // namespace erwin
