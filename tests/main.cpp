// Test runner. Tests run on one thread unless KVSCOPE_TEST_THREADS says otherwise:
// ctest runs several test processes at once, and tests that are about threading set
// their own count (see test_threads.cpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>

#include "kvscope/runtime/threads.hpp"

int main(int argc, char* argv[]) {
  const char* env = std::getenv("KVSCOPE_TEST_THREADS");
  kvscope::set_threads(env ? std::atoi(env) : 1);
  return Catch::Session().run(argc, argv);
}
