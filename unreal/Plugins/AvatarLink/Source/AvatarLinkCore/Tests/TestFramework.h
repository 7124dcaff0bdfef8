// A minimal test framework (no download, no exceptions): tests register themselves by name, a failed check prints
// where and why and marks the test failed, the runner returns non-zero when any selected test failed.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace avatarlink_test {

using TestFunction = void (*)();

struct TestCase {
  const char* name;
  TestFunction function;
};

std::vector<TestCase>& Registry();
// Counts failed checks of the running test.
int& CurrentFailures();

struct Registrar {
  Registrar(const char* name, TestFunction function) { Registry().push_back(TestCase{name, function}); }
};

inline void ReportFailure(const char* file, int line, const std::string& what) {
  std::printf("  %s:%d: %s\n", file, line, what.c_str());
  ++CurrentFailures();
}

}  // namespace avatarlink_test

// A test named suite_case; the runner's argument selects tests by name prefix ("decoder" runs decoder_*).
#define AL_TEST(name)                                                                        \
  static void name();                                                                        \
  static const ::avatarlink_test::Registrar name##_registrar(#name, &name); /* NOLINT */     \
  static void name()

#define AL_CHECK(condition)                                                                  \
  do {                                                                                       \
    if (!(condition)) ::avatarlink_test::ReportFailure(__FILE__, __LINE__, "CHECK(" #condition ")"); \
  } while (0)

// Stops the test at a failed check when what follows would be meaningless (e.g. indexing an empty vector).
#define AL_REQUIRE(condition)                                                                \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      ::avatarlink_test::ReportFailure(__FILE__, __LINE__, "REQUIRE(" #condition ")");       \
      return;                                                                                \
    }                                                                                        \
  } while (0)

#define AL_CHECK_NEAR(actual, expected, tolerance)                                           \
  do {                                                                                       \
    const double al_actual = static_cast<double>(actual);                                    \
    const double al_expected = static_cast<double>(expected);                                \
    if (!(std::fabs(al_actual - al_expected) <= static_cast<double>(tolerance))) {           \
      char al_buffer[256];                                                                   \
      std::snprintf(al_buffer, sizeof(al_buffer), "%s = %.9g, expected %.9g (+- %g)", #actual, al_actual, \
                    al_expected, static_cast<double>(tolerance));                            \
      ::avatarlink_test::ReportFailure(__FILE__, __LINE__, al_buffer);                       \
    }                                                                                        \
  } while (0)

#define AL_CHECK_EQ(actual, expected)                                                        \
  do {                                                                                       \
    if (!((actual) == (expected))) {                                                         \
      ::avatarlink_test::ReportFailure(__FILE__, __LINE__, "CHECK_EQ(" #actual ", " #expected ")"); \
    }                                                                                        \
  } while (0)

// The string contains the fragment (error messages).
#define AL_CHECK_CONTAINS(text, fragment)                                                    \
  do {                                                                                       \
    const std::string al_text = (text);                                                      \
    if (al_text.find(fragment) == std::string::npos) {                                       \
      ::avatarlink_test::ReportFailure(__FILE__, __LINE__,                                   \
                                       "'" + al_text + "' does not contain '" + (fragment) + "'"); \
    }                                                                                        \
  } while (0)
