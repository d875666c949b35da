// Internal to the K/V dump writer: the HDF5 file being written (layout per
// docs/hdf5-schema.md) with every dataset's rows staged in small batches. HDF5 costs tens
// of microseconds per H5Dwrite whatever its size, so rows of several sequences are
// written together: each dataset holds at most one batch (~1 MB, or one row of chunks
// when chunked), which bounds memory independently of the number of sequences.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "kvscope/io/hdf5_util.hpp"
#include "kvscope/kv/kv_dump.hpp"

namespace kvscope {

// One dataset whose first axis is the sequence: rows are staged and written in batches.
class RowBatch {
 public:
  RowBatch() = default;
  RowBatch(h5::Handle dataset, hid_t mem_type, std::vector<hsize_t> row_shape, size_t row_bytes,
           int batch, std::string where);
  // Copies one row (row_bytes) for sequence `seq`; rows must come in sequence order.
  void stage(int seq, const void* row);
  // The staging slot for sequence `seq`'s row, to be filled by the caller (e.g. the
  // forward pass) and then committed: the same as stage() without the copy.
  void* slot(int seq);
  void commit(int seq);
  void flush();  // writes staged rows (call once more at the end)
  hid_t id() const { return dataset_; }

 private:
  void write(const void* rows);  // count_ rows from first_

  h5::Handle dataset_;
  hid_t mem_type_ = -1;
  std::vector<hsize_t> row_shape_;
  size_t row_bytes_ = 0;
  int batch_ = 1, first_ = 0, count_ = 0;
  std::vector<char> buf_;
  std::string where_;
};

// A shard of a dump written by several MPI ranks: sequences [first, first + count) of the
// whole dump, held by `file` (a name in the same directory).
struct DumpShard {
  std::string file;
  int64_t first = 0, count = 0;
};

struct DumpDatasetMaker;  // kv_dump_file.cpp: creates the datasets

class DumpFile {
 public:
  // Creates `path` (the .partial name) with every dataset and root attribute, and /vocab
  // (`vocab`: the tokenizer's spelling of each id). With `shards`, every dataset whose first
  // axis is the sequence is an HDF5 virtual dataset over the shards' datasets of the same
  // name (nothing is staged into it; missing shard data reads as NaN, tokens as -1).
  DumpFile(const std::filesystem::path& path, const ModelConfig& c, const DumpOptions& opt,
           const DumpSource& src, int32_t bos, const std::vector<std::string>& vocab,
           const std::vector<DumpShard>& shards = {});
  ~DumpFile();

  // Row `seq` of layer `layer`'s tensor opt.tensors[t]: [heads, seq_len, head_dim] floats.
  void stage_tensor(int layer, size_t t, int seq, const float* data);
  // Zero-copy variant for f32 dumps: the slot to fill with that row (n floats), or
  // nullptr when the row needs conversion (f16); then commit_tensor() once it is filled.
  float* tensor_slot(int layer, size_t t, int seq, size_t n);
  void commit_tensor(int layer, size_t t, int seq);
  void stage_tokens(int seq, const int32_t* ids);
  void stage_source(int seq, int64_t token_offset, int64_t document);
  void stage_logits(int seq, const float* logits);  // [seq_len, vocab]
  // Writes what is staged and flushes the file; after this only destruction remains.
  void finish();
  int64_t tensor_bytes() const { return tensor_bytes_; }

 private:
  void make_sources(const DumpDatasetMaker& maker);
  void make_layers(const DumpDatasetMaker& maker, const ModelConfig& c);

  std::string where_;
  DumpOptions opt_;
  int T_ = 0, hd_ = 0, vocab_ = 0;
  h5::Handle file_;
  std::vector<h5::Handle> groups_;
  std::vector<RowBatch> per_head_;  // [layer * tensors + t]
  std::vector<int> heads_;          // per tensor
  RowBatch tokens_, sources_, logits_;
  h5::Handle source_type_;
  std::string text_name_;
  std::vector<uint16_t> half_;  // IEEE half bits
  std::vector<char> source_row_;
  int64_t tensor_bytes_ = 0;
};

}  // namespace kvscope
