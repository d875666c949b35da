#include "kvscope/io/sequences.hpp"

#include "kvscope/io/error.hpp"

namespace kvscope {

std::vector<size_t> plan_sequences(std::span<const int32_t> stream, int seq_len, int n_seq,
                                   int32_t bos, const std::string& source,
                                   const std::string& keys) {
  KV_CHECK(seq_len >= 2, "sequences must be at least 2 tokens long, got {}", seq_len);
  std::vector<size_t> offsets;
  size_t off = 0;
  while (int(offsets.size()) < n_seq) {
    // Tokens taken from the stream: seq_len when the window starts at a BOS (or there is
    // no BOS), else one fewer: a BOS is put in front.
    const bool at_bos = bos >= 0 && off < stream.size() && stream[off] == bos;
    const size_t take = at_bos || bos < 0 ? size_t(seq_len) : size_t(seq_len - 1);
    KV_CHECK(off + take <= stream.size(),
             "{} gives only {} sequences of {} tokens ({} tokens in all), {} were asked for{}{}{}",
             source, offsets.size(), seq_len, stream.size(), n_seq, keys.empty() ? "" : "; lower ",
             keys, keys.empty() ? "" : " or give a longer text");
    offsets.push_back(off);
    off += take;
  }
  return offsets;
}

std::vector<int32_t> sequence_tokens(std::span<const int32_t> stream, size_t offset, int seq_len,
                                     int32_t bos) {
  std::vector<int32_t> seq;
  seq.reserve(size_t(seq_len));
  if (bos >= 0 && stream[offset] != bos) seq.push_back(bos);
  while (int(seq.size()) < seq_len) seq.push_back(stream[offset++]);
  return seq;
}

}  // namespace kvscope
