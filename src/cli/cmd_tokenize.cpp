// kvscope tokenize: the ids a model would see for a text, like llama.cpp's llama-tokenize,
// so a user can check a tokenizer against another implementation before trusting a run.
#include <cstdio>

#include "commands.hpp"
#include "kvscope/io/error.hpp"
#include "kvscope/io/text_source.hpp"
#include "kvscope/model/model.hpp"
#include "kvscope/tokenizer/tokenizer.hpp"

namespace kvscope::cli {

namespace {

// A piece on one line: backslash, newline, carriage return and tab escaped C-style (llama2.c's
// BOS piece is "\n<s>\n"); every other byte as stored.
std::string piece_line(const std::string& piece) {
  std::string s;
  for (char ch : piece) {
    if (ch == '\\')
      s += "\\\\";
    else if (ch == '\n')
      s += "\\n";
    else if (ch == '\r')
      s += "\\r";
    else if (ch == '\t')
      s += "\\t";
    else
      s += ch;
  }
  return s;
}

// The most text `tokenize --text` holds (the ids and their text are held as well).
constexpr size_t kTokenizeLimit = size_t(256) << 20;

}  // namespace

Action add_tokenize(CLI::App& app) {
  struct Args {
    std::string model, tokenizer, text, prompt;
    bool pieces = false;
    int bos = -1;  // --bos / --no-bos
  };
  auto a = std::make_shared<Args>();
  app.add_option("--model,-m", a->model,
                 "model whose tokenizer to use (tokenizer.json, *.model or tok*.bin beside it)");
  app.add_option("--tokenizer", a->tokenizer, "tokenizer file (instead of --model)");
  auto* text = app.add_option("--text", a->text, "text file to tokenize");
  auto* prompt = app.add_option("--prompt,-p", a->prompt, "text to tokenize");
  text->excludes(prompt);
  app.add_flag("--pieces", a->pieces,
               "print one 'id<TAB>piece' line per token (\\n, \\r, \\t, \\\\ escaped)");
  add_bos_flags(app, a->bos);
  return [a, text, prompt]() {
    KV_CHECK(!a->model.empty() || !a->tokenizer.empty(), "tokenize: give --model or --tokenizer");
    KV_CHECK(text->count() + prompt->count() == 1, "tokenize: give --text FILE or --prompt TEXT");
    const std::filesystem::path tok_path =
        a->tokenizer.empty() ? find_tokenizer_for(a->model) : std::filesystem::path(a->tokenizer);
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(tok_path);
    apply_bos_flags(a->bos, *tok, tok_path);
    // Bounded: the whole text is held, so a stream such as /dev/zero stops with an error.
    const std::string input = text->count() ? read_file_bytes(a->text, kTokenizeLimit) : a->prompt;
    std::vector<int32_t> ids;
    if (tok->sequence_bos() >= 0) ids.push_back(tok->sequence_bos());
    const std::vector<int32_t> body = tok->encode(input);
    ids.insert(ids.end(), body.begin(), body.end());
    // Written a block at a time (stdio buffers it); main() checks the stream at the end.
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (a->pieces)
        out += std::to_string(ids[i]) + "\t" + piece_line(tok->piece(ids[i])) + "\n";
      else
        out += (i ? " " : "") + std::to_string(ids[i]);
      if (out.size() >= (size_t(1) << 16)) {
        write_stdout(out);
        out.clear();
      }
    }
    if (!a->pieces) out += "\n";
    write_stdout(out);
    return 0;
  };
}

}  // namespace kvscope::cli
