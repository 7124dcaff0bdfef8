// A small streaming JSON writer for avatar_client's one-object report (no dependency to install).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace avatarlink {

class JsonWriter {
 public:
  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  void BeginArray() { Open('['); }
  void EndArray() { Close(']'); }

  // Inside an object: the key of the next value.
  JsonWriter& Key(const std::string& key) {
    Separate();
    out_ += Quote(key);
    out_ += ':';
    after_key_ = true;
    return *this;
  }

  void String(const std::string& value) { Raw(Quote(value)); }
  void Bool(bool value) { Raw(value ? "true" : "false"); }
  void Null() { Raw("null"); }
  void Int(int64_t value) { Raw(std::to_string(value)); }
  void UInt(uint64_t value) { Raw(std::to_string(value)); }
  // Non-finite numbers have no JSON form: null.
  void Number(double value) {
    if (!std::isfinite(value)) {
      Null();
      return;
    }
    char buffer[40];
    std::snprintf(buffer, sizeof(buffer), "%.17g", value);
    Raw(buffer);
  }

  const std::string& Text() const { return out_; }

 private:
  void Separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_.empty()) {
      if (!first_.back()) {
        out_ += ',';
      }
      first_.back() = false;
    }
  }
  void Raw(const std::string& text) {
    Separate();
    out_ += text;
  }
  void Open(char bracket) {
    Separate();
    out_ += bracket;
    first_.push_back(true);
  }
  void Close(char bracket) {
    out_ += bracket;
    first_.pop_back();
  }
  static std::string Quote(const std::string& text) {
    std::string quoted = "\"";
    for (const char c : text) {
      switch (c) {
        case '"':
          quoted += "\\\"";
          break;
        case '\\':
          quoted += "\\\\";
          break;
        case '\n':
          quoted += "\\n";
          break;
        case '\r':
          quoted += "\\r";
          break;
        case '\t':
          quoted += "\\t";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buffer[8];
            std::snprintf(buffer, sizeof(buffer), "\\u%04x", static_cast<unsigned>(c));
            quoted += buffer;
          } else {
            quoted += c;  // UTF-8 passes through
          }
      }
    }
    return quoted + "\"";
  }

  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace avatarlink
