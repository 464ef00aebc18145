// CRC-32C: the SSE4.2 path (8 bytes per crc32 instruction), chosen at run time, and a byte-table
// fallback that gives identical results (tests compare them).
#include "crc32c.h"

#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace dpms {

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // Castagnoli, bit-reflected

struct Table {
  uint32_t entries[256];
  constexpr Table() : entries() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t crc = i;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kPolynomial : 0u);
      entries[i] = crc;
    }
  }
};
constexpr Table kTable;

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const uint8_t* data, size_t length, uint32_t seed) {
  uint64_t crc = ~seed;
  for (; length >= 8; data += 8, length -= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);  // unaligned load
    crc = _mm_crc32_u64(crc, word);
  }
  uint32_t crc32 = static_cast<uint32_t>(crc);
  for (; length > 0; ++data, --length) crc32 = _mm_crc32_u8(crc32, *data);
  return ~crc32;
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t Crc32cSoftware(const uint8_t* data, size_t length, uint32_t seed) {
  uint32_t crc = ~seed;
  for (size_t i = 0; i < length; ++i) crc = kTable.entries[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

uint32_t Crc32c(const uint8_t* data, size_t length, uint32_t seed) {
#if defined(__x86_64__)
  if (HasSse42()) return Crc32cHardware(data, length, seed);
#endif
  return Crc32cSoftware(data, length, seed);
}

}  // namespace dpms
