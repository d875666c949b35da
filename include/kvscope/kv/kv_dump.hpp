// K/V dumps in HDF5 (schema: docs/hdf5-schema.md). The writer streams: each sequence's
// tensors are written as soon as its forward pass produces them, through an HDF5 chunk
// cache bounded independently of the number of sequences, so memory does not grow with
// the dump. Output goes to FILE.partial and is renamed to FILE only when complete.
// The reader iterates by layer, head and block of sequences without loading the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvscope/io/sequences.hpp"
#include "kvscope/model/dtype.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope {

// Per-head tensors a dump may hold. Names are the dataset names under /layer_NN/.
//   k_pre_rope, k, v : [n_seq, n_kv_heads, seq_len, head_dim]
//   q, attn_out      : [n_seq, n_heads, seq_len, head_dim]  (attn_out: before W_O)
// plus /logits [n_seq, seq_len, vocab] (final layer) when asked for.
inline const std::vector<std::string>& dump_tensor_names() {
  static const std::vector<std::string> n = {"k_pre_rope", "k", "v", "q", "attn_out"};
  return n;
}

struct DumpOptions {
  int seq_len = 0;  // tokens per sequence, BOS included; 0 = ModelConfig::default_seq_len()
  int n_seq = 1;    // sequences to dump
  std::vector<std::string> tensors = {"k_pre_rope", "k", "v"};  // from dump_tensor_names()
  bool logits = false;                                          // also /logits
  DType dtype = DType::F32;  // F32 or F16 (stored as IEEE half; h5py reads float16)
  int gzip = 0;              // 0: no compression; 1..9: deflate level, with the shuffle filter
  // Chunk shape [chunk_seqs, chunk_heads, seq_len, head_dim]. Both 0 (default): contiguous
  // datasets when uncompressed (each sequence's slice is one write, no chunk index), else
  // chunks of one head of one sequence.
  int chunk_seqs = 0;
  int chunk_heads = 0;
  bool force = false;  // overwrite an existing output file
  // seq_len beyond the model's trained context is refused unless this is set: positions
  // the model never saw give activations no paper's claim is about.
  bool allow_extrapolation = false;
  std::string keys = "seq_len and n_seq";  // the settings named when the text is too short
  // Called after each sequence is staged: (sequences done, n_seq, tensor bytes so far).
  std::function<void(int, int, int64_t)> on_sequence;
};

// Where the dumped activations come from, for the root attributes.
// Checks the options that do not need the model (seq_len 0 = "the model's context" passes),
// naming `where` in the Error: callers run it before loading anything.
void check_dump_options(const DumpOptions& o, const std::string& where);

struct DumpSource {
  std::string model_name;
  std::vector<std::filesystem::path> model_files;
  std::filesystem::path tokenizer_file;
  std::string tokenizer_kind;
  std::filesystem::path text_file;
  std::string text_format;  // "plain" or "jsonl"
  // Filled by dump_kv from the model: its format and the dtypes its weights were stored in
  // (a quantized GGUF's K/V come from dequantized weights, and the dump says so).
  std::string model_format;
  std::map<std::string, int64_t> stored_dtypes;
};

struct DumpStats {
  int n_seq = 0, seq_len = 0;
  int64_t tensor_bytes = 0;      // bytes of tensor data handed to HDF5 (before compression)
  int64_t file_bytes = 0;        // size of the finished file
  double seconds = 0.0;          // the whole dump
  double forward_seconds = 0.0;  // inside the forward pass (excluding the writes)
  double write_seconds = 0.0;    // inside HDF5 writes (and f16 conversion)
};

// Sequences: consecutive BOS-led windows of `stream` (include/kvscope/io/sequences.hpp).

// Under MPI with N ranks, rank r's sequences go to the shard file shard_name(out, r, N)
// beside `out` (e.g. x.rank0of2.h5) and `out` holds virtual datasets over them: one
// logical file that h5py and KVDumpReader read as if it were whole (docs/distributed.md).
std::string shard_name(const std::filesystem::path& out, int rank, int ranks);

// Writes `out` (via out.partial). Throws Error naming the file: existing output without
// force, bad options, HDF5/disk errors (the partial file is removed).
DumpStats dump_kv(const Model& m, const Tokenizer& tok, std::span<const int32_t> stream,
                  const DumpOptions& opt, const DumpSource& src, const std::filesystem::path& out);

// What a dump holds (from its root attributes and dataset shapes).
struct DumpInfo {
  int n_seq = 0, seq_len = 0;
  ModelConfig config;  // dims, heads, RoPE layout/theta, ...
  std::string model_name, model_sha256, tokenizer_kind, text_file, text_sha256;
  std::string dtype;                 // "f32" or "f16"
  std::vector<std::string> tensors;  // per-head tensors present
  bool logits = false;
  int heads_of(const std::string& tensor) const;  // n_heads or n_kv_heads
};

class KVDumpReader {
 public:
  // Opens and validates the schema; throws Error naming the file and what is wrong.
  explicit KVDumpReader(const std::filesystem::path& path);
  ~KVDumpReader();
  KVDumpReader(KVDumpReader&&) noexcept;
  KVDumpReader& operator=(KVDumpReader&&) noexcept;

  const DumpInfo& info() const;
  bool has(const std::string& tensor) const;
  // One head of one tensor for sequences [seq0, seq0 + n): out is [n, seq_len, head_dim]
  // float32 (f16 dumps are widened).
  void read_head(int layer, const std::string& tensor, int head, int seq0, int n, float* out) const;
  // fn(seq0, n, data [n, seq_len, head_dim]) over consecutive blocks of `block` sequences;
  // holds one block in memory.
  void for_each_block(int layer, const std::string& tensor, int head, int block,
                      const std::function<void(int, int, const float*)>& fn) const;
  std::vector<int32_t> tokens(int seq0, int n) const;  // [n, seq_len]
  std::vector<float> logits(int seq) const;            // [seq_len, vocab]
  struct Source {
    std::string file;
    int64_t token_offset, document;
  };
  std::vector<Source> sources() const;
  // /vocab: the tokenizer's spelling of each token id (empty for dumps written before it
  // existed).
  std::vector<std::string> vocab() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope
