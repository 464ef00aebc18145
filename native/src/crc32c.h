// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of dpms records. `seed` is a
// previous result, so Crc32c(b, Crc32c(a, 0)) == Crc32c(a || b, 0).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dpms {

// Hardware (SSE4.2 crc32 instruction) when the CPU has it, else the table version.
uint32_t Crc32c(const uint8_t* data, size_t length, uint32_t seed);
// The portable table version, always.
uint32_t Crc32cSoftware(const uint8_t* data, size_t length, uint32_t seed);

}  // namespace dpms
