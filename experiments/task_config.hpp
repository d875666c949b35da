// YAML keys shared by kv_cache_policies and kv_frontier: the recall and passkey tasks
// (documented in docs/experiments.md), and the small helpers both runs use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kvscope/io/yaml_util.hpp"
#include "kvscope/kv/policy_eval.hpp"

namespace kvscope {

// lengths, depths, names, needle, cue, trials
RecallTask parse_recall_task(YamlMap rc);
// lengths, depths, key, token_lo, token_hi, trials (+ distractors for the multi-key needle)
PasskeyTask parse_passkey_task(YamlMap pk, bool multikey);

inline bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A token stream without its BOS tokens (a task places its own).
inline std::vector<int32_t> without_bos(std::vector<int32_t> t, int32_t bos) {
  t.erase(std::remove(t.begin(), t.end(), bos), t.end());
  return t;
}

}  // namespace kvscope
