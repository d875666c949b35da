#include "kvscope/kv/compressed_run.hpp"

#include <algorithm>
#include <cstring>

#include "kvscope/io/error.hpp"

namespace kvscope {

CompressedRun::CompressedRun(const Model& m, int capacity, PolicyNeeds needs, int elem_bytes,
                             std::shared_ptr<const KVCodec> store_codec, int reference_kv_heads)
    : m_(&m),
      st_(m.config, capacity),
      needs_(needs),
      elem_bytes_(elem_bytes),
      codec_(std::move(store_codec)),
      ref_heads_(reference_kv_heads > 0 ? reference_kv_heads : m.config.n_kv_heads) {
  const ModelConfig& c = m.config;
  if (codec_) {
    const std::string why = codec_->unreachable(c);
    KV_CHECK(why.empty(), "model '{}': the cache's codec cannot run: {}", m.name, why);
  }
  KV_CHECK(c.positional != PositionalKind::kAlibi,
           "model '{}': cache policies assume slot = position, which ALiBi's distance bias "
           "breaks once tokens are dropped",
           m.name);
  // Decoding may be replayed from a mark: slots must not move.
  st_.cache.set_trim_windows(false);
  if (needs_.window_queries > 0)
    wq_.assign(size_t(c.n_layers),
               std::vector<float>(size_t(c.n_heads) * needs_.window_queries * c.head_dim, 0.0f));
  if (needs_.attention_mass) mass_q_.resize(size_t(c.n_layers) * c.n_heads);
}

void CompressedRun::on_layer(const LayerCapture& cap) {
  const int W = needs_.window_queries;
  if (W == 0) return;
  const int hd = cap.head_dim, T = cap.n_tokens, take = std::min(T, W);
  std::vector<float>& buf = wq_[size_t(cap.layer)];
  for (int h = 0; h < cap.n_heads; ++h) {
    float* rows = buf.data() + size_t(h) * W * hd;
    // Shift the kept rows left, then copy this call's last `take` queries to the end.
    std::memmove(rows, rows + size_t(take) * hd, sizeof(float) * size_t(W - take) * hd);
    std::memcpy(rows + size_t(W - take) * hd, cap.q + (size_t(h) * T + size_t(T - take)) * hd,
                sizeof(float) * size_t(take) * hd);
  }
  if (cap.layer == m_->config.n_layers - 1) rows_ = std::min(W, rows_ + T);
}

void CompressedRun::on_attention(const AttentionRows& r) {
  std::vector<double>& acc = mass_q_[size_t(r.layer) * m_->config.n_heads + size_t(r.head)];
  if (int(acc.size()) < r.n_keys) acc.resize(size_t(r.n_keys), 0.0);
  for (int i = 0; i < r.n_q; ++i)
    for (int j = 0; j < r.n_keys; ++j) acc[size_t(j)] += r.weights[size_t(i) * r.n_keys + j];
}

ForwardOptions CompressedRun::options(LogitsMode logits, bool observe) {
  ForwardOptions o;
  o.logits = logits;
  if (observe && (needs_.window_queries > 0 || needs_.attention_mass)) o.observer = this;
  if (codec_ && codec_->on_store())
    o.on_append = [this](int l, int T) {
      CodecView v;
      v.config = &m_->config, v.cache = &st_.cache, v.state = &tags_;
      v.elem_bytes = elem_bytes_;
      codec_->store(v, l, T);
    };
  return o;
}

void CompressedRun::prefill(std::span<const int32_t> tokens) {
  forward(*m_, st_, tokens, options(LogitsMode::kNone, true));
}

void CompressedRun::encode() {
  if (!codec_) return;
  CodecView v;
  v.config = &m_->config, v.cache = &st_.cache, v.state = &tags_;
  v.rope[0] = &st_.rope[0], v.rope[1] = &st_.rope[1];
  v.step = step_;
  v.elem_bytes = elem_bytes_;
  const int w = codec_->needs().window_queries;
  if (w > 0) {
    KV_ASSERT(w <= needs_.window_queries);
    v.window_q = &wq_, v.n_window = std::min(w, rows_), v.window_stride = needs_.window_queries;
  }
  codec_->encode(v);
}

LayerView CompressedRun::view(int l, const EvictionPolicy& p) {
  LayerView v;
  v.config = &m_->config;
  v.cache = &st_.cache;
  v.layer = l;
  v.step = step_;
  v.seed = seed_;
  const PolicyNeeds pn = p.needs();
  if (pn.window_queries > 0) {
    KV_ASSERT(pn.window_queries <= needs_.window_queries);
    v.n_window = std::min(pn.window_queries, rows_);
    v.window_stride = needs_.window_queries;
    v.window_q =
        wq_[size_t(l)].data() + size_t(needs_.window_queries - v.n_window) * m_->config.head_dim;
  }
  if (pn.attention_mass) {
    KV_ASSERT(needs_.attention_mass);
    const ModelConfig& c = m_->config;
    const int group = c.group_size();
    mass_kv_.assign(size_t(c.n_kv_heads), {});
    for (int g = 0; g < c.n_kv_heads; ++g) {
      std::vector<double>& dst = mass_kv_[size_t(g)];
      dst.assign(size_t(st_.cache.used(l, g)), 0.0);
      for (int h = g * group; h < (g + 1) * group; ++h) {
        const std::vector<double>& src = mass_q_[size_t(l) * c.n_heads + size_t(h)];
        for (size_t j = 0; j < dst.size() && j < src.size(); ++j) dst[j] += src[j];
      }
    }
    v.mass = &mass_kv_;
  }
  return v;
}

void CompressedRun::evict() {
  if (!policy_) return;
  const ModelConfig& c = m_->config;
  KVCache& kc = st_.cache;
  const int nkv = c.n_kv_heads, group = c.group_size();
  for (int l = 0; l < c.n_layers; ++l) {
    LayerBudget b;
    b.per_head.assign(budgets_.begin() + size_t(l) * nkv, budgets_.begin() + size_t(l + 1) * nkv);
    b.pooled = policy_->pooled();
    bool over = false;
    int64_t total = 0, held = 0;
    for (int g = 0; g < nkv; ++g) {
      const int B = b.per_head[size_t(g)], u = kc.used(l, g);
      over |= B != LayerBudget::kUnlimited && u > B;
      total += B, held += u;
    }
    if (b.pooled) {
      over = held > total;
      b.floor = int(policy_->alpha * double(total) / nkv);
    }
    if (!over) continue;
    const std::vector<HeadKeep> sel = policy_->select(view(l, *policy_), b);
    for (int g = 0; g < nkv; ++g) {
      const HeadKeep& k = sel[size_t(g)];
      const int used = kc.used(l, g);
      if (int(k.slots.size()) == used && !k.merge) continue;
      kc.keep(l, g, k.slots, k.merge, k.merge_at);
      tags_.follow(kc, l, g, k.slots);
      if (!needs_.attention_mass) continue;
      // The attention mass follows its slots; a merged slot gets the dropped ones' sum.
      const auto pos = kc.positions(l, g);
      for (int h = g * group; h < (g + 1) * group; ++h) {
        std::vector<double>& acc = mass_q_[size_t(l) * c.n_heads + size_t(h)];
        acc.resize(std::max(acc.size(), size_t(used)), 0.0);
        std::vector<double> next;
        double dropped = 0.0;
        for (size_t j = 0, ki = 0; j < size_t(used); ++j)
          if (ki < k.slots.size() && size_t(k.slots[ki]) == j)
            next.push_back(acc[j]), ++ki;
          else
            dropped += acc[j];
        for (size_t i = 0; i < pos.size(); ++i)
          if (pos[i] == KVCache::kMerged) next.insert(next.begin() + ptrdiff_t(i), dropped);
        acc = std::move(next);
      }
    }
  }
}

void CompressedRun::measure() {
  const ModelConfig& c = m_->config;
  const int64_t per_slot = int64_t(2) * c.head_dim * elem_bytes_;
  int64_t held = tags_.bytes(st_.cache, elem_bytes_);
  if (policy_ && decoding_) held += policy_->state_bytes(c, st_.cache.slots_in_use(), elem_bytes_);
  peak_ = std::max(peak_, held);
  peak_full_ =
      std::max(peak_full_, int64_t(c.n_layers) * ref_heads_ * st_.cache.length() * per_slot);
}

bool CompressedRun::compress(const Variant& v, uint64_t seed) {
  const ModelConfig& c = m_->config;
  const KVCache& kc = st_.cache;
  const int n = kc.length();
  check_compressible(kc, v.name);
  const double full = double(int64_t(c.n_layers) * ref_heads_ * n) * 2 * c.head_dim * elem_bytes_;
  KV_CHECK(!v.model || v.model.get() == m_,
           "cache variant '{}': its model was not the one this run prefilled", v.name);
  if (v.codec) {
    KV_CHECK(!codec_ || codec_ == v.codec, "cache variant '{}': the prefill ran with another codec",
             v.name);
    KV_CHECK(codec_ || !v.codec->on_store(),
             "cache variant '{}': a codec that stores tokens as written must run the prefill",
             v.name);
    const std::string why = v.codec->unreachable(c);
    KV_CHECK(why.empty(), "cache variant '{}' on model '{}': {}", v.name, m_->name, why);
    KV_CHECK(!v.policy || v.codec->per_head(),
             "cache variant '{}': its codec holds latents shared by several heads, which a "
             "per-head eviction policy cannot drop (use heads: 1)",
             v.name);
    const PolicyNeeds cn = v.codec->needs();
    KV_CHECK(cn.window_queries <= needs_.window_queries,
             "cache variant '{}': the prefill did not record what its codec needs", v.name);
  }
  if (v.policy) {
    const PolicyNeeds pn = v.policy->needs();
    KV_CHECK(
        pn.window_queries <= needs_.window_queries && (!pn.attention_mass || needs_.attention_mass),
        "cache policy '{}': the prefill did not record what it needs", v.name);
    std::vector<int> budgets =
        v.budgets.empty() ? v.policy->head_budgets(c, v.share, n) : v.budgets;
    if (budgets.empty()) return false;
    KV_CHECK(int(budgets.size()) == kc.heads(), "cache policy '{}': {} budgets for {} KV heads",
             v.name, budgets.size(), kc.heads());
    policy_ = v.policy;
    budgets_ = std::move(budgets);
    decoding_ = v.during_decoding;
    seed_ = seed;
    evict();
  }
  codec_ = v.codec;
  encode();
  peak_share_ = v.peak_share;
  peak_ = peak_full_ = 0;
  measure();
  share_after_prefill_ = double(tags_.bytes(kc, elem_bytes_)) / full;
  return true;
}

std::span<const float> CompressedRun::step(int32_t token) {
  const std::span<const float> logits =
      forward(*m_, st_, std::span<const int32_t>(&token, 1), options(LogitsMode::kLast, decoding_));
  ++step_;
  encode();
  measure();
  if (decoding_) evict();
  return logits;
}

double CompressedRun::share() const {
  return peak_share_ ? double(peak_) / double(peak_full_) : share_after_prefill_;
}

CompressedRun::CompressedRun(const CompressedRun& o, BranchTag)
    : ForwardObserver(o),
      m_(o.m_),
      st_(o.st_.fork()),
      needs_(o.needs_),
      elem_bytes_(o.elem_bytes_),
      rows_(o.rows_),
      wq_(o.wq_),
      mass_q_(o.mass_q_),
      policy_(o.policy_),
      codec_(o.codec_),
      tags_(o.tags_),
      ref_heads_(o.ref_heads_),
      budgets_(o.budgets_),
      decoding_(o.decoding_),
      peak_share_(o.peak_share_),
      seed_(o.seed_),
      step_(o.step_),
      share_after_prefill_(o.share_after_prefill_),
      peak_(o.peak_),
      peak_full_(o.peak_full_) {}

CompressedRun CompressedRun::branch() const {
  return CompressedRun(*this, BranchTag{});
}

void CompressedRun::absorb_peaks(const CompressedRun& other) {
  peak_ = std::max(peak_, other.peak_);
  peak_full_ = std::max(peak_full_, other.peak_full_);
}

}  // namespace kvscope
