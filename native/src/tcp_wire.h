// The tcp provider's wire format (docs/TCP-WIRE.md has the same tables): fixed little-endian
// headers shared by the serving thread (tcp_server_loop.cc) and the client (tcp_client.cc). Requests
// (client -> server) have a 32-byte header, responses (server -> client) a 16-byte one; each is
// followed by a payload whose length the header and opcode determine. Everything here is plain data
// and inline helpers: no allocation, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dpms::tcpwire {

constexpr uint16_t kRequestMagic = 0x5144;   // bytes 'D' 'Q'
constexpr uint16_t kResponseMagic = 0x5244;  // bytes 'D' 'R'
constexpr uint8_t kVersion = 1;

constexpr size_t kRequestHeaderBytes = 32;
constexpr size_t kResponseHeaderBytes = 16;

// Largest READ/WRITE payload in one frame; larger length fields are bad frames.
constexpr uint32_t kMaxDataBytes = 16u << 20;
// Largest two-sided message either side may be configured for.
constexpr uint32_t kMaxMessageLimit = 16u << 20;
constexpr uint32_t kDefaultMaxMessageBytes = 64u << 10;
constexpr size_t kMaxRegions = 256;

enum Opcode : uint8_t {
  kAuth = 1,       // client -> server: clientNonce(32) | proof(32); length = 64
  kRead = 2,       // length = bytes to read; response payload = the bytes
  kWrite = 3,      // payload = length bytes
  kWriteImm = 4,   // payload = length bytes; aux = the 32-bit immediate
  kCas = 5,        // length = 8; payload = expected(8) | desired(8); response payload = value found(8)
  kFaa = 6,        // length = 8; payload = delta(8); response payload = value before(8)
  kPersist = 7,    // length | aux << 32 = bytes to make durable; no payload
  kMessage = 8,    // payload = length bytes (a two-sided message); response payload = the reply
  kHello = 0x81,   // server -> client: serverNonce(32)
  kWelcome = 0x82, // server -> client: proof(32) | nodeId | regionCount | maxMessageBytes | 0, then regions
};

enum StatusByte : uint8_t {
  kOk = 0,
  kBadRegion = 1,    // no region with that index
  kBadRkey = 2,      // the rkey does not match the region's
  kOutOfBounds = 3,  // [offset, offset+length) leaves the region
  kMisaligned = 4,   // an atomic at an offset that is not 8-byte aligned
  kIoError = 5,      // PERSIST: the flush failed (msync); the connection stays up
};

// The request header, decoded. Field order follows the wire layout.
struct Request {
  uint8_t opcode = 0;
  uint32_t requestId = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t rkey = 0;
  uint16_t region = 0;
  uint16_t flags = 0;
  uint32_t aux = 0;
};

struct Response {
  uint8_t opcode = 0;
  uint32_t requestId = 0;
  uint32_t length = 0;
  uint8_t status = 0;
};

// WELCOME payload: fixed part, then kRegionEntryBytes per region.
constexpr size_t kWelcomeFixedBytes = 48;
constexpr size_t kRegionEntryBytes = 16;
constexpr size_t kHelloPayloadBytes = 32;
constexpr size_t kAuthPayloadBytes = 64;

// Little-endian loads and stores (the hosts we build for are little-endian; memcpy keeps them
// alignment-safe and compiles to plain moves).
inline uint16_t Load16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t Load32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t Load64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
inline void Store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void Store32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void Store64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format is little-endian and so is the host");

inline void EncodeRequest(uint8_t* p, const Request& r) {
  Store16(p + 0, kRequestMagic);
  p[2] = kVersion;
  p[3] = r.opcode;
  Store32(p + 4, r.requestId);
  Store64(p + 8, r.offset);
  Store32(p + 16, r.length);
  Store32(p + 20, r.rkey);
  Store16(p + 24, r.region);
  Store16(p + 26, r.flags);
  Store32(p + 28, r.aux);
}

// False on a bad magic or version (the only checks that do not depend on the opcode).
inline bool DecodeRequest(const uint8_t* p, Request* r) {
  if (Load16(p) != kRequestMagic || p[2] != kVersion) return false;
  r->opcode = p[3];
  r->requestId = Load32(p + 4);
  r->offset = Load64(p + 8);
  r->length = Load32(p + 16);
  r->rkey = Load32(p + 20);
  r->region = Load16(p + 24);
  r->flags = Load16(p + 26);
  r->aux = Load32(p + 28);
  return true;
}

inline void EncodeResponse(uint8_t* p, uint8_t opcode, uint32_t requestId, uint32_t length, uint8_t status) {
  Store16(p + 0, kResponseMagic);
  p[2] = kVersion;
  p[3] = opcode;
  Store32(p + 4, requestId);
  Store32(p + 8, length);
  p[12] = status;
  p[13] = 0;
  p[14] = 0;
  p[15] = 0;
}

inline bool DecodeResponse(const uint8_t* p, Response* r) {
  if (Load16(p) != kResponseMagic || p[2] != kVersion || p[13] != 0 || p[14] != 0 || p[15] != 0) return false;
  r->opcode = p[3];
  r->requestId = Load32(p + 4);
  r->length = Load32(p + 8);
  r->status = p[12];
  return true;
}

// Payload bytes that follow a request header, or -1 when the header is malformed for its opcode
// (unknown opcode, nonzero fields the opcode does not use, a length over the limits). Access checks
// (region, rkey, bounds, alignment) are not done here: they are answered with a status.
inline int64_t RequestPayloadBytes(const Request& r, uint32_t maxMessageBytes) {
  if (r.flags != 0) return -1;
  switch (r.opcode) {
    case kRead:
      if (r.length > kMaxDataBytes || r.aux != 0) return -1;
      return 0;
    case kWrite:
      if (r.length > kMaxDataBytes || r.aux != 0) return -1;
      return r.length;
    case kWriteImm:
      if (r.length > kMaxDataBytes) return -1;
      return r.length;
    case kCas:
      if (r.length != 8 || r.aux != 0) return -1;
      return 16;
    case kFaa:
      if (r.length != 8 || r.aux != 0) return -1;
      return 8;
    case kPersist:
      return 0;
    case kMessage:
      if (r.length > maxMessageBytes || r.offset != 0 || r.rkey != 0 || r.region != 0 || r.aux != 0) return -1;
      return r.length;
    default:
      return -1;  // kAuth after the handshake, server opcodes, unknown values
  }
}

// Bytes a request touches in its region (PERSIST's length is 64-bit: low word + aux).
inline uint64_t AccessBytes(const Request& r) {
  if (r.opcode == kPersist) return static_cast<uint64_t>(r.length) | (static_cast<uint64_t>(r.aux) << 32);
  return r.length;
}

// [offset, offset+length) inside [0, size), without overflow.
inline bool InBounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace dpms::tcpwire
