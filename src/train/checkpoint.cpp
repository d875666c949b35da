#include "kvscope/train/checkpoint.hpp"

#include <fstream>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/model/hf_config.hpp"
#include "kvscope/model/safetensors.hpp"

namespace kvscope {

namespace fs = std::filesystem;
using nlohmann::json;

namespace train {

namespace {

void write_tensors(const fs::path& file,
                   const std::vector<std::pair<std::string, std::span<const float>>>& vectors) {
  // One safetensors file of named flat f32 vectors (the AdamW moments).
  std::vector<SafetensorsSpec> specs;
  for (const auto& [name, v] : vectors) specs.push_back({name, DType::F32, {int64_t(v.size())}});
  SafetensorsWriter wr(file, specs);
  for (const auto& [name, v] : vectors) wr.write(v.data(), v.size() * sizeof(float));
  wr.finish();
}

}  // namespace

void save_checkpoint(const fs::path& dir, const Layout& L, std::span<const float> w,
                     const AdamState& adam, const json& state, const fs::path& tokenizer) {
  const ModelConfig& c = L.config;
  // make_layout accepts the compressed keys of a reduced model so that it can fine-tune,
  // but Hugging Face's LLaMA has no k_compress / q_project: such a checkpoint would load
  // as a different model.
  KV_CHECK(!c.compressed_keys(),
           "checkpoint {}: a model with compressed keys (k_proj_heads {}, {} KV heads) has no "
           "Hugging Face form",
           dir.string(), c.k_proj_heads, c.n_kv_heads);
  KV_CHECK(c.positional != PositionalKind::kRope || c.rope_layout == RopeLayout::kRotateHalf,
           "checkpoint {}: a RoPE model must use the rotate-half layout to be saved in Hugging "
           "Face format",
           dir.string());
  KV_CHECK(w.size() == L.size, "checkpoint {}: {} weights for {} parameters", dir.string(),
           w.size(), L.size);
  fs::path tmp = dir;
  tmp += ".partial";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  write_file_atomic(tmp / "config.json", hf_config_json(c, DType::F32).dump(2) + "\n");
  {
    std::vector<SafetensorsSpec> specs;
    for (const TensorSpec& t : L.tensors)
      specs.push_back(
          {t.name, DType::F32,
           t.rows == 1 ? std::vector<int64_t>{t.cols} : std::vector<int64_t>{t.rows, t.cols}});
    SafetensorsWriter wr(tmp / "model.safetensors", specs);
    for (const TensorSpec& t : L.tensors)
      wr.write(w.data() + t.offset, size_t(t.rows * t.cols) * sizeof(float));
    wr.finish();
  }
  if (!adam.m.empty())
    write_tensors(tmp / "optimizer.safetensors", {{"adam_m", adam.m}, {"adam_v", adam.v}});
  json st = state;
  st["adam_step"] = adam.step;
  write_file_atomic(tmp / "trainer_state.json", st.dump(2) + "\n");
  fs::copy_file(tokenizer, tmp / tokenizer.filename(), fs::copy_options::overwrite_existing);
  fs::remove_all(dir);
  fs::rename(tmp, dir);
}

std::optional<Checkpoint> load_checkpoint(const fs::path& dir, const Layout& L) {
  if (!fs::exists(dir / "trainer_state.json")) return std::nullopt;
  Checkpoint ck;
  try {
    ck.state = json::parse(read_file_bytes(dir / "trainer_state.json"));
  } catch (const json::exception& e) {
    throw Error(
        fmt::format("{}: invalid JSON: {}", (dir / "trainer_state.json").string(), e.what()));
  }
  const SafetensorsFile model = open_safetensors(dir / "model.safetensors");
  const std::string mfile = (dir / "model.safetensors").string();
  KV_CHECK(model.tensors.size() == L.tensors.size(), "{}: {} tensors, the configured model has {}",
           mfile, model.tensors.size(), L.tensors.size());
  ck.w.assign(L.size, 0.0f);
  for (const TensorSpec& t : L.tensors) {
    const auto it = model.tensors.find(t.name);
    KV_CHECK(it != model.tensors.end(), "{}: tensor '{}' is missing", mfile, t.name);
    KV_CHECK(it->second.tensor.numel() == t.rows * t.cols,
             "{}: tensor '{}' has {} values, expected {}", mfile, t.name, it->second.tensor.numel(),
             t.rows * t.cols);
    const std::vector<float> v = it->second.tensor.to_f32();
    std::copy(v.begin(), v.end(), ck.w.begin() + long(t.offset));
  }
  if (fs::exists(dir / "optimizer.safetensors")) {
    const SafetensorsFile opt = open_safetensors(dir / "optimizer.safetensors");
    for (const auto& [name, x] : opt.tensors) {
      KV_CHECK(size_t(x.tensor.numel()) == L.size, "{}: '{}' has {} values, expected {}",
               (dir / "optimizer.safetensors").string(), name, x.tensor.numel(), L.size);
      (name == "adam_m" ? ck.adam.m : ck.adam.v) = x.tensor.to_f32();
    }
  }
  ck.adam.step = ck.state.value("adam_step", int64_t(0));
  return ck;
}

}  // namespace train
}  // namespace kvscope
