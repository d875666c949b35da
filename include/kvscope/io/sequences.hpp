// How analyses cut a text into model inputs: consecutive windows of the token stream
// (documents as token_stream() makes them, BOS at each document start), each starting
// with BOS. Used by dumps, spectra and calibration alike, so they all see the same
// sequences for the same text.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kvscope {

// Sequence i covers stream[offset_i, ...): [BOS] + the next seq_len - 1 tokens, or seq_len
// tokens when the window already starts at a BOS (or there is no BOS, bos < 0). Throws
// when the stream holds fewer than n_seq windows, naming `source` (the text file) and
// `keys` (the settings that chose seq_len and n_seq, e.g. "kv_spectrum.seq_len and
// kv_spectrum.tokens") in the message.
std::vector<size_t> plan_sequences(std::span<const int32_t> stream, int seq_len, int n_seq,
                                   int32_t bos, const std::string& source = "the text",
                                   const std::string& keys = "");

// The tokens of the sequence that starts at `offset` (as plan_sequences laid it out).
std::vector<int32_t> sequence_tokens(std::span<const int32_t> stream, size_t offset, int seq_len,
                                     int32_t bos);

}  // namespace kvscope
