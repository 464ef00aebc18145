// Pieces shared by the two sides of the 'verbs' transport provider (verbs_server.cc, verbs_client.cc):
// the two-sided message framing, the registered staging ring, libuv handle ownership, argument checks
// and the mapping of work-completion statuses to DPMS_* codes. Everything here runs on the Node main
// thread; nothing blocks.
#pragma once

#include <infiniband/verbs.h>
#include <napi.h>
#include <rdma/rdma_cma.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"

namespace dpms::verbs {

// ---- Message framing (SEND/RECV) ----
//
// Every two-sided message starts with a 16-byte header (little-endian integers):
//   magic u32 "DPMV" | type u8 | status u8 | reserved u16 | requestId u32 | payloadBytes u32
// and a receiver accepts a message only if the completion's byte count is exactly 16 + payloadBytes.
constexpr uint32_t kMagic = 0x564d5044;  // "DPMV" read as little-endian bytes
constexpr size_t kHeaderBytes = 16;

enum class MessageType : uint8_t {
  kHello = 1,        // server -> client: serverNonce[32]
  kAuth = 2,         // client -> server: clientNonce[32] proof[32] maxMessageBytes u32 reserved u32
  kWelcome = 3,      // server -> client: proof[32] nodeId u32 maxMessageBytes u32 credits u32 count u32, regions
  kCall = 4,         // client -> server: payload (requestId set)
  kReply = 5,        // server -> client: payload (requestId of the call)
  kPersist = 6,      // client -> server: region u32 rkey u32 offset u64 length u64 (a flush request)
  kPersistDone = 7,  // server -> client: status 0 = durable, 1 = refused (bad rkey / range)
};

struct Header {
  uint32_t magic;
  uint8_t type;
  uint8_t status;
  uint16_t reserved;
  uint32_t requestId;
  uint32_t payloadBytes;
};
static_assert(sizeof(Header) == kHeaderBytes, "the header is 16 bytes on the wire");

// Per region in WELCOME: remote address u64, sizeBytes u64, rkey u32, persistMethod u32.
constexpr size_t kWelcomeFixedBytes = 32 + 16;
constexpr size_t kWelcomeRegionBytes = 24;
constexpr size_t kAuthBytes = 32 + 32 + 8;
constexpr size_t kPersistRequestBytes = 24;
// At most this many regions per server, so that WELCOME always fits a receive buffer.
constexpr size_t kMaxRegions = 64;
// Receive buffers always hold at least this much payload, whatever maxMessageBytes is.
constexpr size_t kMinPayloadCapacity = kWelcomeFixedBytes + kMaxRegions * kWelcomeRegionBytes;

// How a client makes writes to a region durable (see verbs_client.cc, "Remote persistence").
enum class PersistMethod : uint32_t {
  kReadAfterWrite = 0,  // the region's medium is reached by DMA (PM with ADR/eADR, or memory): a READ suffices
  kFlushRequest = 1,    // the node's CPU must flush (msync pools, the crash simulator): ask it over SEND
};

// Limits shared by both sides.
constexpr size_t kDefaultMaxMessageBytes = 64 * 1024;
constexpr size_t kMaxMaxMessageBytes = 16 * 1024 * 1024;
constexpr uint32_t kDefaultTimeoutMs = 5000;
constexpr uint32_t kMaxTimeoutMs = 10 * 60 * 1000;

inline void WriteHeader(uint8_t* out, MessageType type, uint8_t status, uint32_t requestId, uint32_t payloadBytes) {
  Header header{kMagic, static_cast<uint8_t>(type), status, 0, requestId, payloadBytes};
  std::memcpy(out, &header, sizeof header);
}

// The header of a received message of `byteCount` bytes, or false if it is not a well-formed one.
inline bool ReadHeader(const uint8_t* in, size_t byteCount, Header* out) {
  if (byteCount < kHeaderBytes) return false;
  std::memcpy(out, in, sizeof *out);
  return out->magic == kMagic && out->payloadBytes == byteCount - kHeaderBytes;
}

template <typename T>
void Put(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof value);
  std::memcpy(out.data() + at, &value, sizeof value);
}

template <typename T>
T Get(const uint8_t* in) {
  T value;
  std::memcpy(&value, in, sizeof value);
  return value;
}

// ---- Registered staging ring ----
//
// A registered buffer handed out in allocation order and released in the same order: on an RC queue
// pair the send queue completes in posting order, so a ring with a used-bytes count is a complete
// allocator. Allocations are 64-byte aligned (atomics need 8).
class StagingRing {
 public:
  StagingRing() = default;
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;
  ~StagingRing() { reset(); }

  // Allocate `capacity` bytes and register them in `pd` with `access`. False (errno set) on failure.
  bool init(ibv_pd* pd, size_t capacity, int access);
  void reset();

  // Reserve `size` bytes; returns the offset and sets *consumed (what release() must be given), or
  // returns SIZE_MAX when the ring has no contiguous room now.
  size_t allocate(size_t size, size_t* consumed);
  void release(size_t consumed) { used_ -= consumed; }

  uint8_t* at(size_t offset) const { return base_ + offset; }
  uint32_t lkey() const { return mr_->lkey; }
  size_t capacity() const { return capacity_; }

 private:
  uint8_t* base_ = nullptr;
  ibv_mr* mr_ = nullptr;
  size_t capacity_ = 0;
  size_t head_ = 0;
  size_t used_ = 0;
};

// ---- Receive buffers ----
// `count` receive buffers of `bytes` each in one registered allocation; wr_id = index * 2 + 1.
class ReceiveBuffers {
 public:
  ReceiveBuffers() = default;
  ReceiveBuffers(const ReceiveBuffers&) = delete;
  ReceiveBuffers& operator=(const ReceiveBuffers&) = delete;
  ~ReceiveBuffers() { reset(); }

  bool init(ibv_pd* pd, size_t count, size_t bytes);
  void reset();
  // Post buffer `index` on `qp`. False on failure.
  bool post(ibv_qp* qp, size_t index);
  bool postAll(ibv_qp* qp);
  uint8_t* buffer(size_t index) const { return base_ + index * bytes_; }
  size_t count() const { return count_; }
  size_t bytes() const { return bytes_; }

 private:
  uint8_t* base_ = nullptr;
  ibv_mr* mr_ = nullptr;
  size_t count_ = 0;
  size_t bytes_ = 0;
};

inline bool IsReceiveWrId(uint64_t wrId) { return (wrId & 1) != 0; }
inline size_t ReceiveIndex(uint64_t wrId) { return static_cast<size_t>(wrId >> 1); }

// ---- libuv handles ----
// A heap-allocated libuv handle owned by one object: close() stops callbacks at once (uv_close), and
// the memory is freed by the close callback, so the owner may be destroyed right after.
template <typename T>
class UvHandle {
 public:
  UvHandle() = default;
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;
  ~UvHandle() { close(); }

  T* create() {
    close();
    handle_ = new T();
    return handle_;
  }
  T* get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }
  void ref(bool on) {
    if (handle_ == nullptr) return;
    if (on) {
      uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    } else {
      uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    }
  }
  void close() {
    if (handle_ == nullptr) return;
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<T*>(h); });
    handle_ = nullptr;
  }

 private:
  T* handle_ = nullptr;
};

// Make a file descriptor non-blocking (the cm event channel, the completion channel, the async fd).
bool SetNonBlocking(int fd);

// ---- Environment checks and conversions ----

// OK when the machine has at least one RDMA device; otherwise fills `why` (DPMS_UNSUPPORTED).
bool RdmaDeviceAvailable(std::string* why);

// A sockaddr for host:port (numeric IPv4/IPv6 or a name). False with a message when it cannot be resolved.
bool ResolveHost(const std::string& host, uint16_t port, sockaddr_storage* out, std::string* why);
std::string AddressString(const sockaddr* address);

// The status a failed work completion maps to: remote refusals are DPMS_REMOTE_ACCESS, the rest
// (flushes after an earlier error, retries exhausted, local errors) DPMS_DISCONNECTED.
Status CompletionStatus(ibv_wc_status status);

// Argument helpers for the transport API: every malformed value is DPMS_INVALID_ARGUMENT.
size_t ArgIndex(const Napi::Value& value, const char* name);
uint32_t ArgU32(const Napi::Value& value, const char* name);
uint64_t ArgU64(const Napi::Value& value, const char* name, bool wrapping);
std::vector<uint8_t> ArgSecret(const Napi::Value& value);
size_t ArgMaxMessageBytes(const Napi::Value& value);
uint32_t ArgTimeoutMs(const Napi::Value& value, const char* name);

// Report an exception thrown by a JS callback as uncaught (the provider never swallows user errors).
void ReportUncaught(Napi::Env env, const Napi::Error& error);

}  // namespace dpms::verbs
