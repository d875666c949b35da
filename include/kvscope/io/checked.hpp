// Size arithmetic driven by a file's header. A lying header can make rows * cols * 4 wrap
// around 2^64 and land on the file's real size; every product and sum here is checked, so
// such a header gets an Error (or a "does not fit" answer), never a wrapped size.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kvscope {

// a * b, or nullopt when the product does not fit in uint64.
inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b, or nullopt on overflow.
inline std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// A running byte count that remembers an overflow instead of wrapping: add(n, a, b, ...)
// adds the product of its factors. value() is meaningful only while ok().
class ByteCount {
 public:
  ByteCount() = default;
  explicit ByteCount(uint64_t start) : v_(start) {}

  template <class... F>
  ByteCount& add(uint64_t first, F... rest) {
    std::optional<uint64_t> p = first;
    ((p = p ? checked_mul(*p, uint64_t(rest)) : std::nullopt), ...);
    const std::optional<uint64_t> s = p ? checked_add(v_, *p) : std::nullopt;
    if (!s)
      ok_ = false;
    else
      v_ = *s;
    return *this;
  }
  bool ok() const { return ok_; }
  uint64_t value() const { return v_; }
  // Fits in `limit` bytes (false once it overflowed).
  bool fits(uint64_t limit) const { return ok_ && v_ <= limit; }

 private:
  uint64_t v_ = 0;
  bool ok_ = true;
};

// A tensor's bytes [begin, end) within a file's data section.
struct ByteSpan {
  uint64_t begin = 0, end = 0;
  std::string name;
};

// The first two spans (by position) that share a byte, or nullopt. Empty spans share
// nothing. Two tensors over the same bytes would make one weight silently another's (V
// computed from K's bytes), so loaders refuse them.
inline std::optional<std::pair<ByteSpan, ByteSpan>> first_overlap(std::vector<ByteSpan> spans) {
  std::erase_if(spans, [](const ByteSpan& s) { return s.end <= s.begin; });
  std::sort(spans.begin(), spans.end(),
            [](const ByteSpan& a, const ByteSpan& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end) return std::make_pair(spans[i - 1], spans[i]);
  return std::nullopt;
}

}  // namespace kvscope
