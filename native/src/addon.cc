// Entry point of the dpms_native addon: the module's exports (native/index.ts is their typed face):
// openPool, createSim, crc32c, the native bench loops, the transport providers (tcp.cc, verbs.cc) and the
// libfuse3 binding (fuse.cc).
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <libpmem.h>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "crc32c.h"
#include "errors.h"
#include "filelock.h"
#include "fuse.h"
#include "mapping.h"
#include "region.h"
#include "sysinfo.h"
#include "tcp.h"
#include "verbs.h"

namespace dpms {

namespace {

// openPool(path, { createSizeBytes? })
Napi::Value OpenPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowStatus(env, Status::kInvalidArgument, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  size_t createSize = 0;
  if (info[1].IsObject()) {
    Napi::Value size = info[1].As<Napi::Object>().Get("createSizeBytes");
    if (!size.IsUndefined()) {
      createSize = ToIndex(size, "createSizeBytes");
      if (createSize == 0) ThrowStatus(env, Status::kInvalidArgument, "createSizeBytes must be at least 1");
    }
  } else if (!info[1].IsUndefined()) {
    ThrowStatus(env, Status::kInvalidArgument, "options must be an object");
  }

  PoolRegion::OpenResult opened = PoolRegion::Open(path, createSize);
  switch (opened.error) {
    case PoolRegion::OpenError::kNone: break;
    case PoolRegion::OpenError::kExists: ThrowStatus(env, Status::kExists, opened.message);
    case PoolRegion::OpenError::kNotFound: ThrowStatus(env, Status::kNotFound, opened.message);
    case PoolRegion::OpenError::kIo: ThrowStatus(env, Status::kIo, opened.message);
  }
  return NewPoolMapping(env, std::shared_ptr<PoolRegion>(opened.region));
}

// createSim(sizeOrImage)
Napi::Value CreateSim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SimRegion* region = nullptr;
  size_t size = 0;
  if (info[0].IsNumber()) {
    size = ToIndex(info[0], "size");
    if (size > 0) region = SimRegion::Create(size, nullptr);
  } else if (info[0].IsTypedArray()) {
    Napi::Uint8Array image = ToBytes(info[0], "image");
    size = image.ByteLength();
    if (size > 0) region = SimRegion::Create(size, image.Data());
  } else {
    ThrowStatus(env, Status::kInvalidArgument, "createSim needs a size or a Uint8Array image");
  }
  if (size == 0) ThrowStatus(env, Status::kInvalidArgument, "a simulated pool needs at least 1 byte");
  if (region == nullptr) ThrowIo(env, "cannot allocate the simulated pool", ENOMEM, false);
  return NewSimMapping(env, std::shared_ptr<SimRegion>(region));
}

// crc32c(data, offset, length, seed, forceSoftware?)
Napi::Value Crc32cExport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array data = ToBytes(info[0], "data");
  const size_t offset = ToIndex(info[1], "offset");
  const size_t length = ToIndex(info[2], "length");
  CheckRange(env, offset, length, data.ByteLength(), "data");
  const size_t seed = ToIndex(info[3], "seed");
  if (seed > 0xFFFFFFFFu) ThrowStatus(env, Status::kInvalidArgument, "seed must be an unsigned 32-bit integer");
  const bool software = info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
  const uint8_t* bytes = data.Data() + offset;
  const uint32_t crc = software ? Crc32cSoftware(bytes, length, static_cast<uint32_t>(seed))
                                : Crc32c(bytes, length, static_cast<uint32_t>(seed));
  return Napi::Number::New(env, crc);
}

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// benchStoreFlushFence(mapping, offset, storeBytes, iterations): ns for `iterations` rounds of
// store + flush + fence on one range, the latency bound of a persistent write.
Napi::Value BenchStoreFlushFence(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Region> region = OpenRegionOf(info[0]);
  const size_t offset = ToIndex(info[1], "offset");
  const size_t storeBytes = ToPositiveCount(info[2], "storeBytes");
  const size_t iterations = ToPositiveCount(info[3], "iterations");
  CheckRange(env, offset, storeBytes, region->size(), "the mapping");
  uint8_t* target = region->data() + offset;
  const bool cpu = region->cpuFlush();

  const uint64_t start = NowNs();
  for (size_t i = 0; i < iterations; ++i) {
    std::memset(target, static_cast<int>(i & 0xFF), storeBytes);  // a changing pattern each round
    if (cpu) {
      pmem_flush(target, storeBytes);
      pmem_drain();
    } else if (!region->persist(offset, storeBytes)) {
      ThrowIo(env, "msync", errno, true);
    }
  }
  return Napi::Number::New(env, static_cast<double>(NowNs() - start));
}

// benchMemcpyPersist(mapping, offset, chunkBytes, totalBytes): ns to copy-and-persist totalBytes
// in chunkBytes pieces, every piece to [offset, offset+chunkBytes).
Napi::Value BenchMemcpyPersist(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Region> region = OpenRegionOf(info[0]);
  const size_t offset = ToIndex(info[1], "offset");
  const size_t chunkBytes = ToPositiveCount(info[2], "chunkBytes");
  const size_t totalBytes = ToPositiveCount(info[3], "totalBytes");
  CheckRange(env, offset, chunkBytes, region->size(), "the mapping");
  std::vector<uint8_t> source(chunkBytes);
  for (size_t i = 0; i < chunkBytes; ++i) source[i] = static_cast<uint8_t>(i * 131 + 7);
  uint8_t* target = region->data() + offset;
  const bool cpu = region->cpuFlush();

  const uint64_t start = NowNs();
  for (size_t copied = 0; copied < totalBytes;) {
    const size_t n = std::min(chunkBytes, totalBytes - copied);
    if (cpu) {
      pmem_memcpy_persist(target, source.data(), n);
    } else if (!region->memcpyPersist(offset, source.data(), n)) {
      ThrowIo(env, "msync", errno, true);
    }
    copied += n;
  }
  return Napi::Number::New(env, static_cast<double>(NowNs() - start));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitMappings(env);
  exports.Set("openPool", Napi::Function::New(env, OpenPool, "openPool"));
  exports.Set("createSim", Napi::Function::New(env, CreateSim, "createSim"));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cExport, "crc32c"));
  exports.Set("benchStoreFlushFence", Napi::Function::New(env, BenchStoreFlushFence, "benchStoreFlushFence"));
  exports.Set("benchMemcpyPersist", Napi::Function::New(env, BenchMemcpyPersist, "benchMemcpyPersist"));
  InitTcp(env, exports);
  InitVerbs(env, exports);
  InitFuse(env, exports);
  InitFileLock(env, exports);
  InitSysInfo(env, exports);
  return exports;
}

}  // namespace

}  // namespace dpms

// NODE_API_MODULE pastes its argument into identifiers, so it needs an unqualified name.
static Napi::Object InitDpmsNative(Napi::Env env, Napi::Object exports) { return dpms::Init(env, exports); }

NODE_API_MODULE(dpms_native, InitDpmsNative)
