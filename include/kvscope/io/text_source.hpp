// The texts experiments read, as a list of documents (byte strings, UTF-8 expected but
// not validated). Bytes inside a document are kept exactly as in the file: WikiText-2's
// CRLF line ends stay CRLF, so token counts match other tools reading the same file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace kvscope {

struct TextSpec {
  enum Format { Plain, Jsonl };
  std::string name;                    // label for tables and manifests, e.g. "tinystories_valid"
  std::filesystem::path path;          // the file
  Format format = Plain;               // Plain: raw text; Jsonl: one JSON object per line
  std::string jsonl_field = "text";    // Jsonl: the string field holding the document
  std::string doc_separator;           // Plain: a line equal to this ends a document, e.g.
                                       // "<|endoftext|>"; empty = the whole file is one document
  size_t max_docs = 0;                 // keep at most this many documents (0 = all)
  size_t max_bytes = 0;                // keep whole documents while their total fits (0 = all);
                                       // a first document larger than this is cut at a UTF-8
                                       // character boundary instead of dropped
  size_t read_limit = kTextReadLimit;  // never read more of the file than this (see below)

  // 1 GiB: far above the shipped texts (WikiText-2's 10.9 MB), far below what a laptop holds.
  static constexpr size_t kTextReadLimit = size_t(1) << 30;
};

// Loads the documents of `spec`, in file order, after max_docs then max_bytes. The file is
// read in growing chunks only as far as max_docs / max_bytes need (so a stream such as
// /dev/zero works with a limit); a file that gives more than read_limit bytes before the
// limits are met is refused, naming the file and suggesting max_bytes / max_docs.
// Plain without separator: the whole file (an empty file gives no documents).
// Plain with separator: split on lines equal to it (a trailing CR is ignored when
// comparing); each document loses its leading and trailing CR/LF; empty ones are dropped.
// Jsonl: one document per non-blank line, the value of `jsonl_field` (empty strings kept,
// so document i is the i-th non-blank line). Throws Error naming the file for a missing
// file, and "FILE:LINE: ..." (1-based) for invalid JSON, a line that is not an object, or
// a missing / non-string field.
std::vector<std::string> load_documents(const TextSpec& spec);

// The whole file as bytes. Throws Error "cannot read 'PATH': strerror" when it cannot, and
// "PATH: larger than LIMIT bytes" for a file (or endless stream) over `limit`.
std::string read_file_bytes(const std::filesystem::path& path,
                            size_t limit = TextSpec::kTextReadLimit);

// "plain" / "jsonl".
const char* format_name(TextSpec::Format f);

// Largest n <= max such that s[0, n) does not end inside a UTF-8 multi-byte sequence.
size_t utf8_prefix_length(const std::string& s, size_t max);

}  // namespace kvscope
