// llama.cpp's KV cache types (`--cache-type-k/-v`): each token's key and value rows stored
// in ggml blocks of 32 elements along head_dim, quantized as they are written (so the
// prefill's own attention reads the stored form, as llama.cpp's does), dequantized by the
// same code that reads GGUF weights. f32, f16 and bf16 are plain element types.
// Keys: k_type, v_type (each one of f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl).
#include <fmt/format.h>

#include <cstring>

#include "kvscope/io/error.hpp"
#include "kvscope/kv/kv_codec.hpp"
#include "kvscope/model/dtype.hpp"

namespace kvscope {

namespace {

const std::vector<std::string> kTypes = {"f32",  "f16",  "bf16", "q8_0",  "q5_1",
                                         "q5_0", "q4_1", "q4_0", "iq4_nl"};

DType parse_type(const std::string& s) {
  const DType types[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,  DType::Q5_1,
                         DType::Q5_0, DType::Q4_1, DType::Q4_0, DType::IQ4_NL};
  for (size_t i = 0; i < kTypes.size(); ++i)
    if (kTypes[i] == s) return types[i];
  KV_ASSERT(false);
  return DType::F32;
}

// One row of n elements through type t and back, in place.
void round_trip(DType t, float* x, int n, std::vector<std::byte>& buf) {
  switch (t) {
    case DType::F32:
      return;
    case DType::F16:
      for (int i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
      return;
    case DType::BF16:
      for (int i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
      return;
    default:
      buf.resize(row_bytes(t, n));
      quantize_blocks(t, x, n / 32, buf.data());
      dequantize_blocks(t, buf.data(), n / 32, x);
  }
}

class GgmlCodec : public KVCodec {
 public:
  GgmlCodec(DType k, DType v) : k_(k), v_(v) {}

  std::string unreachable(const ModelConfig& c) const override {
    for (DType t : {k_, v_})
      if (dtype_quantized(t) && c.head_dim % 32 != 0)
        return fmt::format(
            "head_dim {} is not a multiple of ggml's block of 32 elements (llama.cpp refuses "
            "a {} cache for such a model too)",
            c.head_dim, dtype_name(t));
    if (c.compressed_keys()) return "the model caches compressed keys";
    return {};
  }
  bool on_store() const override { return true; }
  void store(const CodecView& v, int l, int T) const override {
    KVCache& kc = *v.cache;
    CodecState& st = *v.state;
    st.sync(kc);
    const int hd = kc.head_dim();
    const int32_t kt = st.group(0, int64_t(row_bytes(k_, hd))),
                  vt = st.group(0, int64_t(row_bytes(v_, hd)));
    std::vector<std::byte> buf;
    for (int g = 0; g < kc.n_kv_heads(); ++g) {
      const int u = kc.used(l, g);
      const size_t h = kc.head(l, g);
      for (int t = 0; t < T; ++t) {
        round_trip(k_, kc.k_head(l, g) + size_t(u + t) * hd, hd, buf);
        round_trip(v_, kc.v_head(l, g) + size_t(u + t) * hd, hd, buf);
      }
      st.k[h].resize(size_t(u + T), kt);
      st.v[h].resize(size_t(u + T), vt);
    }
  }
  // Everything is stored as written: nothing more falls due (a merged slot, made later by
  // an eviction policy, is stored by it at its own precision).
  void encode(const CodecView&) const override {}

 private:
  DType k_, v_;
};

}  // namespace

std::shared_ptr<const KVCodec> make_ggml_codec(YamlMap& keys, const std::string& k_type,
                                               const std::string& v_type) {
  const std::string k = keys.get_choice_or("k_type", kTypes, k_type);
  const std::string v = keys.get_choice_or("v_type", kTypes, v_type);
  return std::make_shared<GgmlCodec>(parse_type(k), parse_type(v));
}

}  // namespace kvscope
