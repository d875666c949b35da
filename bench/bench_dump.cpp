// K/V dump cost: peak RSS for 8 and for 128 sequences (must stay within 10%: the writer
// streams), and throughput next to a plain sequential write of the same number of bytes
// measured in the same run, with the forward pass's share of the time.
//
//   build/bench/bench_dump [threads]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/kv/kv_dump.hpp"
#include "kvscope/model/synthetic_model.hpp"
#include "kvscope/runtime/perplexity.hpp"
#include "kvscope/runtime/threads.hpp"

using namespace kvscope;
using namespace kvscope::bench;
namespace fs = std::filesystem;

namespace {

const std::string kData = KVSCOPE_SOURCE_DIR "/data/";

struct Job {
  const char* label;
  const char* model;
  int seq_len;
};

DumpStats run_dump(const Job& j, int n_seq, const fs::path& out, bool all_tensors) {
  const fs::path mp =
      fs::path(j.model).is_absolute() ? fs::path(j.model) : fs::path(kData + j.model);
  const Model m = load_model(mp);
  const auto tok = load_tokenizer(find_tokenizer_for(mp));
  TextSpec ts;
  ts.path = kData + "text/janeausten/emma.txt";  // long enough for 128 x 512 tokens
  const std::vector<int32_t> stream = token_stream(*tok, load_documents(ts));
  DumpOptions o;
  o.seq_len = j.seq_len;
  o.n_seq = n_seq;
  if (all_tensors) o.tensors = dump_tensor_names();
  o.force = true;
  const DumpSource src{m.name, m.files, find_tokenizer_for(mp), tok->kind(), ts.path, "plain",
                       {},     {}};
  return dump_kv(m, *tok, stream, o, src, out);
}

// Peak RSS (bytes) of a child process that runs one dump.
long child_peak_rss(const Job& j, int n_seq, const fs::path& out) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    run_dump(j, n_seq, out, /*all_tensors=*/true);
    const long rss = peak_rss_bytes();
    if (write(fds[1], &rss, sizeof rss) != sizeof rss) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  long rss = -1;
  if (read(fds[0], &rss, sizeof rss) != sizeof rss) rss = -1;
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  return rss;
}

// MB/s of writing `bytes` sequentially in 1 MiB fwrite calls, flushed to the kernel
// (as the dump is: neither fsyncs).
double plain_write_mbs(const fs::path& path, int64_t bytes) {
  std::vector<char> buf(1 << 20, 7);
  const double t0 = now_seconds();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  for (int64_t left = bytes; left > 0; left -= int64_t(buf.size()))
    std::fwrite(buf.data(), 1, size_t(std::min<int64_t>(left, int64_t(buf.size()))), f);
  std::fclose(f);
  const double dt = now_seconds() - t0;
  fs::remove(path);
  return double(bytes) / dt / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = set_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  const fs::path dir = fs::temp_directory_path() / "kvscope_bench_dump";
  fs::create_directories(dir);
  std::printf("threads: %d, output in %s\n\n", threads, dir.c_str());

  std::printf("Peak RSS of a dump of every tensor (k_pre_rope, k, v, q, attn_out), f32:\n");
  std::printf("%-16s %7s | %12s %12s | %8s\n", "model", "seq_len", "8 seqs MiB", "128 seqs MiB",
              "growth");
  const Job jobs[] = {{"babyllama105", "models/babyllama105/model5000.bin", 256},
                      {"tinystories656K", "models/tinystories656K", 512},
                      {"stories260K", "models/stories260K/stories260K.bin", 512}};
  for (const Job& j : jobs) {
    const long a = child_peak_rss(j, 8, dir / "m8.h5");
    const long b = child_peak_rss(j, 128, dir / "m128.h5");
    const double file_mb = double(fs::file_size(dir / "m128.h5")) / 1e6;
    std::printf("%-16s %7d | %12.1f %12.1f | %+7.1f%%   (128-seq file: %.0f MB)\n", j.label,
                j.seq_len, a / 1048576.0, b / 1048576.0, 100.0 * (double(b) - a) / a, file_mb);
    fs::remove(dir / "m8.h5");
    fs::remove(dir / "m128.h5");
  }

  // A GEMM-sized model too (dim 2048, 4 layers, 4 KV heads of 128): its rows are 1 MB,
  // where the tiny models' are 64-128 KB.
  const fs::path synth = fs::temp_directory_path() / "kvscope_bench_synthetic_2048";
  if (!fs::exists(synth / "config.json")) {
    SyntheticSpec s;
    ModelConfig& c = s.config;
    c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 4, c.n_heads = 16, c.n_kv_heads = 4;
    c.head_dim = 128, c.vocab_size = 32000, c.max_seq_len = 2048;
    write_synthetic_hf_model(synth, s);
  }
  // Its tokenizer: tinystories656K's (ids stay below 2048).
  if (!fs::exists(synth / "tokenizer.json"))
    fs::copy_file(kData + "models/tinystories656K/tokenizer.json", synth / "tokenizer.json");
  const std::string synth_path = synth.string();
  std::printf("\nThroughput, sequences of k_pre_rope, k, v (f32, uncompressed):\n");
  std::printf("%-16s %4s | %9s %9s | %11s %11s %8s | %8s\n", "model", "seqs", "MB", "dump MB/s",
              "write MB/s", "plain MB/s", "ratio", "forward");
  std::vector<std::pair<Job, int>> tjobs;
  for (const Job& j : jobs) tjobs.push_back({j, 64});
  tjobs.push_back({{"synthetic d2048", synth_path.c_str(), 512}, 16});
  for (const auto& [j, n] : tjobs) {
    const DumpStats st = run_dump(j, n, dir / "t.h5", /*all_tensors=*/false);
    const double plain = plain_write_mbs(dir / "plain.bin", st.tensor_bytes);
    const double write_mbs = st.tensor_bytes / st.write_seconds / 1e6;
    std::printf("%-16s %4d | %9.1f %9.1f | %11.1f %11.1f %7.0f%% | %7.0f%%\n", j.label, n,
                st.tensor_bytes / 1e6, st.tensor_bytes / st.seconds / 1e6, write_mbs, plain,
                100.0 * write_mbs / plain, 100.0 * st.forward_seconds / st.seconds);
    fs::remove(dir / "t.h5");
  }
  std::printf(
      "\ndump MB/s: tensor bytes / whole dump time; write MB/s: tensor bytes / time inside HDF5 "
      "writes;\nplain MB/s: the same bytes written with fwrite in the same run; forward: share "
      "of the dump time in the forward pass.\n");
  return 0;
}
