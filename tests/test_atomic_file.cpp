// AtomicFile: a result file appears only complete, and write errors are never silent.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "kvscope/io/atomic_file.hpp"
#include "kvscope/io/error.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using kvscope::AtomicFile;
using kvscope::Error;

using kvscope::test::slurp;
using kvscope::test::TempDir;

TEST_CASE("AtomicFile: content appears only after commit", "[infra][atomic_file]") {
  TempDir tmp("atomic_commit");
  const fs::path p = tmp.path / "table.csv";
  {
    AtomicFile f(p);
    CHECK(f.partial_path() == tmp.path / "table.csv.partial");
    f.write("a,b\n");
    f.write("1,2\n");
    CHECK_FALSE(fs::exists(p));
    CHECK(fs::exists(f.partial_path()));
    f.commit();
    CHECK(fs::exists(p));
    CHECK_FALSE(fs::exists(f.partial_path()));
  }
  CHECK(slurp(p) == "a,b\n1,2\n");  // and the destructor after commit kept it
}

TEST_CASE("AtomicFile: an exception before commit leaves neither file", "[infra][atomic_file]") {
  TempDir tmp("atomic_throw");
  const fs::path p = tmp.path / "out.json";
  try {
    AtomicFile f(p);
    f.write("{\"half\": ");
    throw std::runtime_error("experiment failed half-way");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(fs::exists(p));
  CHECK_FALSE(fs::exists(kvscope::partial_path_for(p)));
  CHECK(fs::is_empty(tmp.path));
}

TEST_CASE("AtomicFile: an old file stays intact until the new one commits",
          "[infra][atomic_file]") {
  TempDir tmp("atomic_replace");
  const fs::path p = tmp.path / "r.csv";
  kvscope::write_file_atomic(p, "old\n");
  {
    AtomicFile f(p);
    f.write("new\n");
    CHECK(slurp(p) == "old\n");
  }  // no commit: the old file survives, the partial one is gone
  CHECK(slurp(p) == "old\n");
  CHECK_FALSE(fs::exists(kvscope::partial_path_for(p)));
  kvscope::write_file_atomic(p, "new\n");
  CHECK(slurp(p) == "new\n");
}

TEST_CASE("AtomicFile: a missing directory is named in the error", "[infra][atomic_file]") {
  TempDir tmp("atomic_nodir");
  const fs::path dir = tmp.path / "no_such_dir";
  REQUIRE_THROWS_WITH(kvscope::write_file_atomic(dir / "out.csv", "x"),
                      Contains("no_such_dir/out.csv.partial") &&
                          Contains("No such file or directory") &&
                          Contains("directory '" + dir.string() + "' does not exist"));
  REQUIRE_THROWS_AS(AtomicFile(dir / "out.csv"), Error);
}

TEST_CASE("FileWriter: a full disk (/dev/full) throws 'No space left'", "[infra][atomic_file]") {
  if (!fs::exists("/dev/full")) {
    WARN("no /dev/full on this system; full-disk test skipped");
    return;
  }
  SECTION("small write: stdio buffers it and the error surfaces at flush") {
    kvscope::FileWriter w("/dev/full");
    w.write("hello");  // buffered, so it succeeds
    REQUIRE_THROWS_WITH(w.close(), Contains("/dev/full") && Contains("No space left on device"));
    CHECK_FALSE(w.is_open());
  }
  SECTION("large write: fwrite itself fails") {
    kvscope::FileWriter w("/dev/full");
    const std::string big(4 << 20, 'x');  // larger than any stdio buffer
    auto write_and_close = [&] {
      w.write(big);
      w.close();
    };
    REQUIRE_THROWS_WITH(write_and_close(),
                        Contains("/dev/full") && Contains("No space left on device"));
  }
}
