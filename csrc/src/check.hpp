// Boundary checks of the engine: one macro, so that a check reads as its
// condition and its message, and the message is only built when it fails.
// Private to the engine (csrc/src) and the bindings.
#pragma once

#include <string>
#include <type_traits>

namespace beamner::detail {

inline void append(std::string& out, const std::string& part) { out += part; }
inline void append(std::string& out, const char* part) { out += part; }
/// Numbers as std::to_string writes them (floats with six decimals).
template <typename T, typename = std::enable_if_t<std::is_arithmetic<T>::value>>
void append(std::string& out, T part) {
  out += std::to_string(part);
}

/// The parts concatenated, numbers through std::to_string.
template <typename... Parts>
std::string message(const Parts&... parts) {
  std::string out;
  (append(out, parts), ...);
  return out;
}

}  // namespace beamner::detail

/// Throws Exception(message of the remaining arguments) when `condition` holds.
#define BEAMNER_THROW_IF(condition, Exception, ...)                          \
  do {                                                                       \
    if (condition) throw Exception(::beamner::detail::message(__VA_ARGS__)); \
  } while (false)
