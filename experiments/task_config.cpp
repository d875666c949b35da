#include "task_config.hpp"

#include "kvscope/io/error.hpp"

namespace kvscope {

namespace {

void check_depths(YamlMap& m, const std::vector<double>& depths) {
  for (double d : depths)
    KV_CHECK(d >= 0 && d <= 1, "{}: key '{}': depth {} is not in [0, 1]", m.file(),
             m.key_path("depths"), d);
}

}  // namespace

RecallTask parse_recall_task(YamlMap rc) {
  RecallTask t;
  t.lengths = rc.list_or<int>("lengths", {});
  t.depths = rc.list_or<double>("depths", t.depths);
  t.names = rc.list_or<std::string>("names", t.names);
  t.needle = rc.get_or<std::string>("needle", t.needle);
  t.cue = rc.get_or<std::string>("cue", t.cue);
  t.trials = rc.get_at_least_or<int>("trials", 1, t.trials);
  KV_CHECK(t.needle.find("{}") != std::string::npos,
           "{}: key '{}' must contain {{}} where the name goes", rc.file(), rc.key_path("needle"));
  check_depths(rc, t.depths);
  return t;
}

PasskeyTask parse_passkey_task(YamlMap pk, bool multikey) {
  PasskeyTask t;
  t.lengths = pk.list_or<int>("lengths", {});
  t.depths = pk.list_or<double>("depths", t.depths);
  t.key = pk.get_at_least_or<int>("key", 2, t.key);
  t.token_lo = pk.get_at_least_or<int>("token_lo", -1, -1);
  t.token_hi = pk.get_at_least_or<int>("token_hi", 0, 0);
  t.trials = pk.get_at_least_or<int>("trials", 1, t.trials);
  t.distractors = multikey ? pk.get_at_least_or<int>("distractors", 1, 3) : 0;
  check_depths(pk, t.depths);
  return t;
}

}  // namespace kvscope
