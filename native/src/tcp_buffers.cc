// The receive block cache (see tcp_buffers.h).
#include "tcp_buffers.h"

#include <cstdlib>
#include <mutex>
#include <vector>

namespace dpms::tcpbuffers {

namespace {

constexpr size_t kMinClassShift = 16;  // 64 KiB
constexpr size_t kMaxClassShift = 24;  // 16 MiB
constexpr size_t kClasses = kMaxClassShift - kMinClassShift + 1;
// Blocks only enter the cache when their Buffer is collected, so it never holds more than the
// process once had in results at the same time. V8 collects them in batches (a full GC per ~64 MiB
// of new ArrayBuffer memory, more arriving while it marks): a pipelined 1-MiB reader had about 80
// MiB of them outstanding, and with a 64 MiB cap 5% of its reads got a fresh block, whose first
// touch cost more than the whole transfer (~400 us per MiB of page faults on the test VM).
constexpr size_t kMaxCachedBytes = 128 << 20;

struct Cache {
  std::mutex mutex;
  std::vector<void*> free[kClasses];
  size_t cachedBytes = 0;
};

Cache& TheCache() {
  static Cache* cache = new Cache();  // never destroyed: finalizers may run during exit
  return *cache;
}

size_t ClassOf(size_t length) {
  size_t shift = kMinClassShift;
  while ((size_t{1} << shift) < length) ++shift;
  return shift - kMinClassShift;
}

void* Take(size_t klass) {
  Cache& cache = TheCache();
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (!cache.free[klass].empty()) {
      void* block = cache.free[klass].back();
      cache.free[klass].pop_back();
      cache.cachedBytes -= size_t{1} << (klass + kMinClassShift);
      return block;
    }
  }
  return std::malloc(size_t{1} << (klass + kMinClassShift));
}

void Give(void* block, size_t klass) {
  Cache& cache = TheCache();
  const size_t bytes = size_t{1} << (klass + kMinClassShift);
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (cache.cachedBytes + bytes <= kMaxCachedBytes) {
      cache.free[klass].push_back(block);
      cache.cachedBytes += bytes;
      return;
    }
  }
  std::free(block);
}

}  // namespace

napi_value NewBuffer(napi_env env, size_t length, uint8_t** data) {
  if (length < kMinPooledBytes || length > (size_t{1} << kMaxClassShift)) {
    void* bytes = nullptr;
    napi_value buffer = nullptr;
    if (napi_create_buffer(env, length, &bytes, &buffer) != napi_ok) return nullptr;
    *data = static_cast<uint8_t*>(bytes);
    return buffer;
  }
  const size_t klass = ClassOf(length);
  void* block = Take(klass);
  if (block == nullptr) return nullptr;
  napi_value buffer = nullptr;
  const napi_status status = napi_create_external_buffer(
      env, length, block,
      [](napi_env, void* bytes, void* hint) {
        Give(bytes, reinterpret_cast<uintptr_t>(hint));
      },
      reinterpret_cast<void*>(static_cast<uintptr_t>(klass)), &buffer);
  if (status != napi_ok) {
    Give(block, klass);
    return nullptr;
  }
  // No napi_adjust_external_memory: V8 already counts every ArrayBuffer's byte length (external
  // ones included) towards its GC heuristics; reporting it again doubled the collections.
  *data = static_cast<uint8_t*>(block);
  return buffer;
}

}  // namespace dpms::tcpbuffers
