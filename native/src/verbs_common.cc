// Shared helpers of the 'verbs' provider (see verbs_common.h): the staging ring and receive buffers,
// device detection, address conversion, completion-status mapping and argument checks.
#include "verbs_common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "auth.h"

namespace dpms::verbs {

namespace {

constexpr size_t kAlign = 64;

size_t AlignUp(size_t value) { return (value + kAlign - 1) & ~(kAlign - 1); }

uint8_t* AllocateAligned(size_t bytes) {
  void* memory = nullptr;
  // Page-aligned so that registration pins whole pages that hold nothing else.
  if (posix_memalign(&memory, 4096, bytes) != 0) return nullptr;
  std::memset(memory, 0, bytes);
  return static_cast<uint8_t*>(memory);
}

// Allocate `bytes` (page-aligned, zeroed) and register them with `pd`. On failure nothing stays
// allocated, *base and *mr are null, and errno says why.
bool AllocateRegistered(ibv_pd* pd, size_t bytes, int access, uint8_t** base, ibv_mr** mr) {
  *mr = nullptr;
  *base = AllocateAligned(bytes);
  if (*base == nullptr) {
    errno = ENOMEM;
    return false;
  }
  *mr = ibv_reg_mr(pd, *base, bytes, access);
  if (*mr == nullptr) {
    const int saved = errno;
    std::free(*base);
    *base = nullptr;
    errno = saved;
    return false;
  }
  return true;
}

}  // namespace

bool StagingRing::init(ibv_pd* pd, size_t capacity, int access) {
  reset();
  capacity_ = AlignUp(capacity);
  if (AllocateRegistered(pd, capacity_, access, &base_, &mr_)) return true;
  capacity_ = 0;
  return false;
}

void StagingRing::reset() {
  if (mr_ != nullptr) ibv_dereg_mr(mr_);
  mr_ = nullptr;
  std::free(base_);
  base_ = nullptr;
  capacity_ = head_ = used_ = 0;
}

size_t StagingRing::allocate(size_t size, size_t* consumed) {
  size = AlignUp(size == 0 ? 1 : size);
  if (size > capacity_) return SIZE_MAX;
  if (used_ == 0) head_ = 0;
  const size_t tail = (head_ + capacity_ - used_) % capacity_;
  if (used_ == capacity_) return SIZE_MAX;
  if (used_ > 0 && head_ <= tail) {
    // In use: [tail, capacity) and [0, head); free: [head, tail).
    if (tail - head_ < size) return SIZE_MAX;
    const size_t at = head_;
    head_ += size;
    used_ += size;
    *consumed = size;
    return at;
  }
  // In use: [tail, head); free: [head, capacity) and [0, tail).
  if (capacity_ - head_ >= size) {
    const size_t at = head_;
    head_ = (head_ + size) % capacity_;
    used_ += size;
    *consumed = size;
    return at;
  }
  if (tail >= size) {
    *consumed = (capacity_ - head_) + size;  // the unused end is released together with this allocation
    head_ = size;
    used_ += *consumed;
    return 0;
  }
  return SIZE_MAX;
}

bool ReceiveBuffers::init(ibv_pd* pd, size_t count, size_t bytes) {
  reset();
  count_ = count;
  bytes_ = AlignUp(bytes);
  if (AllocateRegistered(pd, count_ * bytes_, IBV_ACCESS_LOCAL_WRITE, &base_, &mr_)) return true;
  count_ = bytes_ = 0;
  return false;
}

void ReceiveBuffers::reset() {
  if (mr_ != nullptr) ibv_dereg_mr(mr_);
  mr_ = nullptr;
  std::free(base_);
  base_ = nullptr;
  count_ = bytes_ = 0;
}

bool ReceiveBuffers::post(ibv_qp* qp, size_t index) {
  ibv_sge sge{};
  sge.addr = reinterpret_cast<uintptr_t>(buffer(index));
  sge.length = static_cast<uint32_t>(bytes_);
  sge.lkey = mr_->lkey;
  ibv_recv_wr wr{};
  wr.wr_id = (static_cast<uint64_t>(index) << 1) | 1;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ibv_post_recv(qp, &wr, &bad) == 0;
}

bool ReceiveBuffers::postAll(ibv_qp* qp) {
  for (size_t i = 0; i < count_; i++) {
    if (!post(qp, i)) return false;
  }
  return true;
}

bool SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool RdmaDeviceAvailable(std::string* why) {
  int count = 0;
  errno = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  if (devices == nullptr) {
    // No kernel support at all gives ENOSYS here (the host machines of this project).
    *why = std::string("no RDMA device (libibverbs: ") + std::strerror(errno == 0 ? ENODEV : errno) + ")";
    return false;
  }
  ibv_free_device_list(devices);
  if (count == 0) {
    *why = "no RDMA device (libibverbs found none; load a driver or add a soft-RoCE link)";
    return false;
  }
  return true;
}

bool ResolveHost(const std::string& host, uint16_t port, sockaddr_storage* out, std::string* why) {
  std::memset(out, 0, sizeof *out);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    *why = "cannot resolve host '" + host + "': " + gai_strerror(rc);
    return false;
  }
  std::memcpy(out, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  return true;
}

std::string AddressString(const sockaddr* address) {
  if (address == nullptr) return "?";
  char text[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (address->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    port = ntohs(in->sin_port);
    return std::string(text) + ":" + std::to_string(port);
  }
  if (address->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    port = ntohs(in6->sin6_port);
    return "[" + std::string(text) + "]:" + std::to_string(port);
  }
  return "?";
}

Status CompletionStatus(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
    case IBV_WC_REM_OP_ERR:
      return Status::kRemoteAccess;
    default:
      return Status::kDisconnected;
  }
}

size_t ArgIndex(const Napi::Value& value, const char* name) {
  if (!value.IsNumber()) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= 0) || std::floor(number) != number || number > 9007199254740991.0) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a non-negative safe integer");
  }
  return static_cast<size_t>(number);
}

uint32_t ArgU32(const Napi::Value& value, const char* name) {
  const size_t number = ArgIndex(value, name);
  if (number > 0xffffffffu) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must fit in 32 bits");
  return static_cast<uint32_t>(number);
}

uint64_t ArgU64(const Napi::Value& value, const char* name, bool wrapping) {
  if (!value.IsBigInt()) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a BigInt");
  Napi::BigInt big = value.As<Napi::BigInt>();
  int sign = 0;
  size_t count = big.WordCount();
  if (count > 1) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be below 2^64");
  uint64_t word = 0;
  count = 1;
  big.ToWords(&sign, &count, &word);
  if (sign != 0 && word != 0) {
    if (!wrapping) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must not be negative");
    word = ~word + 1;  // -x modulo 2^64
  }
  return word;
}

std::vector<uint8_t> ArgSecret(const Napi::Value& value) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, "secret must be a Uint8Array");
  }
  Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
  if (bytes.ByteLength() < auth::kMinSecretBytes || bytes.ByteLength() > auth::kMaxSecretBytes) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, "secret must be 16 to 1024 bytes");
  }
  return std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength());
}

size_t ArgMaxMessageBytes(const Napi::Value& value) {
  if (value.IsUndefined()) return kDefaultMaxMessageBytes;
  const size_t bytes = ArgIndex(value, "maxMessageBytes");
  if (bytes < 1 || bytes > kMaxMaxMessageBytes) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, "maxMessageBytes must be 1 to 16 MiB");
  }
  return bytes;
}

uint32_t ArgTimeoutMs(const Napi::Value& value, const char* name) {
  if (value.IsUndefined()) return kDefaultTimeoutMs;
  const size_t ms = ArgIndex(value, name);
  if (ms < 1 || ms > kMaxTimeoutMs) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be 1 ms to 10 minutes");
  return static_cast<uint32_t>(ms);
}

void ReportUncaught(Napi::Env env, const Napi::Error& error) {
  napi_fatal_exception(env, error.Value());
}

}  // namespace dpms::verbs
