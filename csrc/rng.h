// Counter-based random numbers, bit-identical to metarl/kernels/rng.py.
//   bits(key, counter, lane) = mix32(mix32(counter + 0x9E3779B9 * lane) ^ key)   (mod 2^32)
//   uniform = (bits >> 8) * 2^-24   in [0, 1), exact in float32
#pragma once
#include <cstdint>

namespace metarl {

constexpr uint32_t kGolden = 0x9E3779B9u;

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

inline float uniform(int64_t key, int64_t counter, uint32_t lane) {
  uint32_t x = mix32(static_cast<uint32_t>(counter) + kGolden * lane);
  uint32_t b = mix32(x ^ static_cast<uint32_t>(key));
  return static_cast<float>(b >> 8) * (1.0f / 16777216.0f);
}

}  // namespace metarl
