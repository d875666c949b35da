// After a fuzzed tokenizer loads: encode a fixed sample (ASCII, Latin-1, CJK, digits,
// whitespace runs) and decode the ids back, so the tables the loader built get used.
#pragma once

#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope::fuzz {

inline void exercise(const Tokenizer& tok) {
  const std::string sample = "Once upon a time,  Lily saw 123 cats.\n\tÜber 日本 <s></s>\r\n";
  const std::vector<int32_t> ids = tok.encode(sample);
  (void)tok.decode(ids);
  for (int32_t id = 0; id < tok.vocab_size() && id < 64; ++id) (void)tok.piece(id);
}

}  // namespace kvscope::fuzz
