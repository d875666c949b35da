#include "kvscope/runtime/kv_cache.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "huge_pages.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/model/model_config.hpp"

namespace kvscope {

using runtime_detail::reserve_huge;

KVCache::KVCache(const ModelConfig& c, int capacity)
    : n_layers_(c.n_layers),
      n_kv_heads_(c.n_kv_heads),
      head_dim_(c.head_dim),
      capacity_(capacity),
      window_(c.sliding_window) {
  KV_CHECK(capacity > 0, "KV cache capacity must be positive, got {}", capacity);
  const size_t heads = size_t(c.n_layers) * c.n_kv_heads;
  const size_t n = heads * size_t(capacity) * c.head_dim;
  reserve_huge(k_, n);
  reserve_huge(v_, n);
  k_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  bias_.assign(heads * size_t(capacity), 0.0f);
  pos_.assign(heads * size_t(capacity), 0);
  used_.assign(heads, 0);
  merged_.assign(heads, 0);
  biased_.assign(heads, 0);
  edited_.assign(heads, 0);
  for (int l = 0; l < c.n_layers; ++l) layer_window_.push_back(c.window_of(l));
}

int KVCache::max_used() const {
  int m = 0;
  for (int u : used_) m = std::max(m, u);
  return m;
}

bool KVCache::any_edited() const {
  return std::any_of(edited_.begin(), edited_.end(), [](uint8_t e) { return e != 0; });
}

int64_t KVCache::slots_in_use() const {
  int64_t s = 0;
  for (int u : used_) s += u;
  return s;
}

void KVCache::append(int l, const float* keys, const float* values, int stride, int T) {
  const int hd = head_dim_;
  for (int g = 0; g < n_kv_heads_; ++g) {
    const size_t h = head(l, g);
    const int n_prev = used_[h];
    KV_ASSERT(n_prev + T <= capacity_);
    float* kd = k_head(l, g) + size_t(n_prev) * hd;
    float* vd = v_head(l, g) + size_t(n_prev) * hd;
    int32_t* pd = pos_.data() + h * capacity_ + n_prev;
    for (int t = 0; t < T; ++t) {
      std::memcpy(kd + size_t(t) * hd, keys + size_t(t) * stride + size_t(g) * hd,
                  sizeof(float) * size_t(hd));
      std::memcpy(vd + size_t(t) * hd, values + size_t(t) * stride + size_t(g) * hd,
                  sizeof(float) * size_t(hd));
      pd[t] = length_ + t;
    }
    // Slots past the used ones may hold a stale offset from a reused state.
    if (biased_[h]) std::fill_n(bias_.data() + h * capacity_ + n_prev, T, 0.0f);
  }
}

void KVCache::commit(int T) {
  for (int& u : used_) u += T;
  length_ += T;
  if (trim_windows_) trim_to_windows();
}

// Drops from every windowed layer's (unedited) heads the slots no later query can see:
// keeps the last `window`, moved to the front.
void KVCache::trim_to_windows() {
  const int hd = head_dim_;
  for (int l = 0; l < n_layers_; ++l) {
    const int W = layer_window_[size_t(l)];
    if (W == 0) continue;
    for (int g = 0; g < n_kv_heads_; ++g) {
      const size_t h = head(l, g);
      const int drop = used_[h] - W;
      if (drop <= 0 || edited_[h]) continue;
      float* k = k_head(l, g);
      float* v = v_head(l, g);
      int32_t* p = pos_.data() + h * capacity_;
      std::memmove(k, k + size_t(drop) * hd, sizeof(float) * size_t(W) * hd);
      std::memmove(v, v + size_t(drop) * hd, sizeof(float) * size_t(W) * hd);
      std::memmove(p, p + drop, sizeof(int32_t) * size_t(W));
      used_[h] = W;
    }
  }
}

void KVCache::keep(int l, int g, std::span<const int> kept, bool merge, int merge_at) {
  const size_t h = head(l, g);
  const int n = used_[h], hd = head_dim_;
  for (size_t i = 0; i < kept.size(); ++i)
    KV_CHECK(kept[i] >= 0 && kept[i] < n && (i == 0 || kept[i] > kept[i - 1]),
             "KV cache keep (layer {}, head {}): slot {} at index {} is not ascending within "
             "the {} used slots",
             l, g, kept[i], i, n);
  float* K = k_head(l, g);
  float* V = v_head(l, g);
  float* B = bias_.data() + h * capacity_;
  int32_t* P = pos_.data() + h * capacity_;
  // The merged slot: mean K and V of the dropped slots (one that already stands for m
  // tokens counts m times), worth their count.
  std::vector<double> kmean, vmean;
  int64_t count = 0;
  if (merge) {
    kmean.assign(size_t(hd), 0.0);
    vmean.assign(size_t(hd), 0.0);
    size_t ki = 0;
    for (int j = 0; j < n; ++j) {
      if (ki < kept.size() && kept[size_t(ki)] == j) {
        KV_CHECK(P[j] != kMerged,
                 "KV cache keep (layer {}, head {}): the merged slot {} must be dropped to be "
                 "merged into",
                 l, g, j);
        ++ki;
        continue;
      }
      const double w = P[j] == kMerged ? double(merged_[h]) : 1.0;
      for (int d = 0; d < hd; ++d) {
        kmean[size_t(d)] += w * K[size_t(j) * hd + d];
        vmean[size_t(d)] += w * V[size_t(j) * hd + d];
      }
      count += P[j] == kMerged ? merged_[h] : 1;
    }
  }
  // Compact in place: kept slots are ascending and each moves to a slot no later than its
  // own (the merged slot takes a dropped slot's room).
  int out = 0;
  bool placed = false;
  auto place_merged = [&] {
    for (int d = 0; d < hd; ++d) {
      K[size_t(out) * hd + d] = float(kmean[size_t(d)] / double(count));
      V[size_t(out) * hd + d] = float(vmean[size_t(d)] / double(count));
    }
    B[out] = float(std::log(double(count)));
    P[out] = kMerged;
    biased_[h] = 1;
    merged_[h] = int(count);
    placed = true;
    ++out;
  };
  for (size_t i = 0; i < kept.size(); ++i) {
    if (merge && count > 0 && !placed && out == merge_at) place_merged();
    const int j = kept[i];
    if (j != out) {
      std::memmove(K + size_t(out) * hd, K + size_t(j) * hd, sizeof(float) * size_t(hd));
      std::memmove(V + size_t(out) * hd, V + size_t(j) * hd, sizeof(float) * size_t(hd));
      B[out] = B[j];
      P[out] = P[j];
    }
    ++out;
  }
  if (merge && count > 0 && !placed) place_merged();
  if (!placed && std::find(P, P + out, kMerged) == P + out) merged_[h] = 0;
  // Slots past the kept ones will hold decoded tokens: no offset.
  std::fill(B + out, B + capacity_, 0.0f);
  used_[h] = out;
  edited_[h] = 1;
  ++edits_;
}

void KVCache::rollback(const Mark& m) {
  KV_CHECK(m.edits == edits_ && m.used.size() == used_.size(),
           "KV cache rollback: a cache policy changed the cache after the mark ({} edits then, "
           "{} now)",
           m.edits, edits_);
  used_ = m.used;
  length_ = m.length;
}

void KVCache::clear() {
  length_ = 0;
  for (size_t h = 0; h < biased_.size(); ++h)  // every offset is 0 unless a merge set it
    if (biased_[h]) std::fill_n(bias_.data() + h * capacity_, capacity_, 0.0f);
  std::fill(used_.begin(), used_.end(), 0);
  std::fill(merged_.begin(), merged_.end(), 0);
  std::fill(biased_.begin(), biased_.end(), 0);
  std::fill(edited_.begin(), edited_.end(), 0);
}

}  // namespace kvscope
