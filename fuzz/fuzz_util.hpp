// Shared by the fuzz targets: the loaders read files, so each input is written to a
// scratch file first (in /dev/shm when there is one: no disk traffic per execution).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

namespace kvscope::fuzz {

// A directory private to this process, created on first use.
const std::filesystem::path& scratch_dir();

// Writes `bytes` to scratch_dir()/name and returns the path.
std::filesystem::path write_scratch(const std::string& name, std::string_view bytes);

// The input as a string_view.
inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The separator a two-file input (config.json + model.safetensors) uses between its parts.
inline constexpr std::string_view kSplit = "\n--8<--\n";

}  // namespace kvscope::fuzz
