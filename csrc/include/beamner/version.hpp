#pragma once

namespace beamner {
constexpr const char* kVersion = "0.1.0";
}  // namespace beamner
