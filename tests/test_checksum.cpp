// SHA-256 against published test vectors and against data/SHA256SUMS.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "kvscope/io/checksum.hpp"
#include "kvscope/io/error.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using kvscope::test::TempDir;
using kvscope::test::write_bytes;

namespace {

const fs::path kData = KVSCOPE_TEST_DATA_DIR;
// The value listed in data/SHA256SUMS for the stories260K checkpoint.
const std::string kStories260K = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696";

}  // namespace

TEST_CASE("sha256: FIPS 180-2 test vectors", "[infra][checksum]") {
  CHECK(kvscope::sha256_string("") ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(kvscope::sha256_string("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(kvscope::sha256_string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  TempDir tmp("sha_vectors");
  write_bytes(tmp.path / "empty", "");
  write_bytes(tmp.path / "abc", "abc");
  write_bytes(tmp.path / "million_a", std::string(1000000, 'a'));
  CHECK(kvscope::sha256_file(tmp.path / "empty") ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(kvscope::sha256_file(tmp.path / "abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(kvscope::sha256_file(tmp.path / "million_a") ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256_file: streaming over chunk boundaries equals one-shot", "[infra][checksum]") {
  TempDir tmp("sha_stream");
  std::string s(3 * (1 << 20) + 12345, '\0');  // crosses the 1 MiB read chunk three times
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_bytes(tmp.path / "blob", s);
  CHECK(kvscope::sha256_file(tmp.path / "blob") == kvscope::sha256_string(s));
  REQUIRE_THROWS_WITH(kvscope::sha256_file(tmp.path / "nope.bin"),
                      Contains("nope.bin") && Contains("No such file"));
}

TEST_CASE("verify_against_sums: the real stories260K checkpoint", "[infra][checksum]") {
  CHECK(kvscope::verify_against_sums(kData / "models/stories260K/stories260K.bin",
                                     kData / "SHA256SUMS") == kStories260K);
  // A different spelling of the same path resolves to the same entry.
  CHECK(kvscope::verify_against_sums(kData / "models/./stories260K/../stories260K/stories260K.bin",
                                     kData / "SHA256SUMS") == kStories260K);
}

TEST_CASE("verify_against_sums: a corrupted copy names both hashes", "[infra][checksum]") {
  TempDir tmp("sha_corrupt");
  fs::create_directories(tmp.path / "models/stories260K");
  const fs::path copy = tmp.path / "models/stories260K/stories260K.bin";
  fs::copy_file(kData / "models/stories260K/stories260K.bin", copy);
  write_bytes(tmp.path / "SHA256SUMS", kStories260K + "  ./models/stories260K/stories260K.bin\n");
  REQUIRE(kvscope::verify_against_sums(copy, tmp.path / "SHA256SUMS") == kStories260K);

  {  // flip one byte in the middle
    std::fstream f(copy, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(1000);
    char c = 0;
    f.get(c);
    f.seekp(1000);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  const std::string actual = kvscope::sha256_file(copy);
  REQUIRE(actual != kStories260K);
  REQUIRE_THROWS_WITH(kvscope::verify_against_sums(copy, tmp.path / "SHA256SUMS"),
                      Contains("stories260K.bin") && Contains("expected " + kStories260K) &&
                          Contains("got " + actual));
}

TEST_CASE("verify_against_sums: no entry, bad line, missing file", "[infra][checksum]") {
  TempDir tmp("sha_noentry");
  write_bytes(tmp.path / "a.txt", "abc");
  write_bytes(tmp.path / "b.txt", "abc");
  write_bytes(tmp.path / "SUMS",
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  ./a.txt\n");
  CHECK(kvscope::verify_against_sums(tmp.path / "a.txt", tmp.path / "SUMS").size() == 64);
  REQUIRE_THROWS_WITH(kvscope::verify_against_sums(tmp.path / "b.txt", tmp.path / "SUMS"),
                      Contains("no entry for") && Contains("b.txt") && Contains("SUMS"));

  write_bytes(tmp.path / "BAD", "# comment\nnot a checksum line\n");
  REQUIRE_THROWS_WITH(kvscope::verify_against_sums(tmp.path / "a.txt", tmp.path / "BAD"),
                      Contains("BAD:2:") && Contains("not a sha256sum line"));
  REQUIRE_THROWS_WITH(kvscope::verify_against_sums(tmp.path / "gone.txt", tmp.path / "SUMS"),
                      Contains("gone.txt") && Contains("does not exist"));
}
