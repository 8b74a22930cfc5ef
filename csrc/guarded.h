// The error convention of txcat's C++ shims (c10d_shim.cpp, quantized_linear.cpp): an entry point
// runs its body through `guarded`, which catches every C++ exception and returns its first line
// as a malloc'ed string (NULL on success) for the Rust side to read and free() (src/shim.rs).
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

#include <c10/util/Exception.h>

namespace txcat_shim {

inline char* dup_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// c10::Error's what() carries a C++ backtrace after the first line; callers want the message.
inline std::string first_line(const char* what) {
  std::string s(what == nullptr ? "" : what);
  auto end = s.find('\n');
  return end == std::string::npos ? s : s.substr(0, end);
}

template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_string(first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return dup_string(first_line(e.what()));
  } catch (...) {
    return dup_string("unknown C++ exception");
  }
}

}  // namespace txcat_shim
