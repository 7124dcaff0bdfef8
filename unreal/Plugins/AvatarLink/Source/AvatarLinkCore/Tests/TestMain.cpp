#include <cstdio>
#include <cstring>

#include "TestFramework.h"

namespace avatarlink_test {

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> registry;
  return registry;
}

int& CurrentFailures() {
  static int failures = 0;
  return failures;
}

}  // namespace avatarlink_test

// avatarlink_core_tests [name-prefix]: runs the matching tests (all without an argument).
int main(int argc, char** argv) {
  const char* prefix = argc > 1 ? argv[1] : "";
  int run = 0;
  int failed = 0;
  for (const avatarlink_test::TestCase& test : avatarlink_test::Registry()) {
    if (std::strncmp(test.name, prefix, std::strlen(prefix)) != 0) {
      continue;
    }
    avatarlink_test::CurrentFailures() = 0;
    test.function();
    ++run;
    const bool passed = avatarlink_test::CurrentFailures() == 0;
    failed += passed ? 0 : 1;
    std::printf("%s %s\n", passed ? "PASS" : "FAIL", test.name);
  }
  std::printf("%d tests, %d failed\n", run, failed);
  if (run == 0) {
    std::printf("no test matches '%s'\n", prefix);
    return 2;
  }
  return failed == 0 ? 0 : 1;
}
