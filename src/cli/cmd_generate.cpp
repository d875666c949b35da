#include <unistd.h>

#include <cstdio>

#include "commands.hpp"
#include "kvscope/runtime/generate.hpp"
#include "kvscope/runtime/loaded_model.hpp"
#include "kvscope/runtime/threads.hpp"

namespace kvscope::cli {

Action add_generate(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, prompt;
    int max_tokens = 256, threads = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0;
    bool quiet = false;
    int bos = -1;  // --bos / --no-bos
    bool no_echo = false;
  };
  auto a = std::make_shared<Args>();
  app.add_option("--model,-m", a->model,
                 "llama2.c checkpoint, Hugging Face model directory or GGUF file")
      ->required();
  app.add_option("--tokenizer", a->tokenizer,
                 "tokenizer file (default: tokenizer.json, *.model or tok*.bin beside the model)");
  app.add_option("--prompt,-p", a->prompt, "text to continue (default: start from BOS)");
  app.add_option("--max-tokens,-n", a->max_tokens, "new tokens at most")->check(at_least(0));
  app.add_option("--temperature,-t", a->temperature, "sampling temperature; 0 is greedy")
      ->check(at_least(0));
  app.add_option("--top-p", a->top_p, "nucleus sampling mass in (0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed,-s", a->seed, "random seed for sampling");
  app.add_option("--threads", a->threads, "threads (0: all cores)")->check(at_least(0));
  app.add_flag("--quiet,-q", a->quiet, "do not print timings to stderr");
  add_bos_flags(app, a->bos);
  app.add_flag("--no-echo", a->no_echo, "print only the continuation, not the prompt before it");
  return [a]() {
    set_threads(a->threads);
    LoadedModel lm = load_model_and_tokenizer(a->model, a->tokenizer);
    apply_bos_flags(a->bos, *lm.tokenizer, lm.tokenizer_path);
    const Model& m = lm.model;
    const Tokenizer* tok = lm.tokenizer.get();
    GenerateOptions o;
    o.prompt = a->prompt;
    o.max_tokens = a->max_tokens;
    o.temperature = a->temperature;
    o.top_p = a->top_p;
    o.seed = a->seed;
    // Each piece is flushed to a terminal as it comes; into a file or pipe stdio's
    // buffering writes it (a write system call per token was a tenth of the decode time
    // of a small model).
    const bool tty = ::isatty(::fileno(stdout)) == 1;
    // The prompt, then its continuation, as llama2.c's run and llama.cpp print them.
    if (!a->no_echo) write_stdout(a->prompt);
    const GenerateResult r = generate(m, *tok, o, [tty](const std::string& piece) {
      write_stdout(piece);
      if (tty) std::fflush(stdout);
    });
    write_stdout("\n");  // main() flushes and checks the stream
    if (!a->quiet)
      std::fprintf(stderr, "%s: %zu prompt tokens in %.3f s, %zu new tokens at %.1f tok/s\n",
                   m.name.c_str(), r.prompt_ids.size(), r.prefill_seconds, r.new_ids.size(),
                   r.decode_seconds > 0 ? double(r.new_ids.size()) / r.decode_seconds : 0.0);
    return 0;
  };
}

}  // namespace kvscope::cli
