// The memory behind a mapping, independent of N-API: a libpmem pool (pool.cc) or the crash
// simulator (sim.cc). A Region is shared (std::shared_ptr) by the JS mapping object and by the
// finalizer of the external ArrayBuffer that exposes it, so the memory lives as long as either does;
// close() releases it at once and the destructor releases it only if close() never ran.
// Callers (mapping.cc, addon.cc) validate every offset/length before calling in.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace dpms {

class Region {
 public:
  virtual ~Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool closed() const { return data_ == nullptr; }
  virtual bool isPmem() const = 0;
  // "cpu", "msync" or "sim" (native/index.ts FlushMode).
  virtual const char* flushMode() const = 0;
  // True when persistence is CPU cache flushes + fence (libpmem's pmem_flush / pmem_drain apply).
  virtual bool cpuFlush() const { return false; }

  // The persistence primitives. They return false with errno set when the OS refuses (msync only).
  virtual bool flush(size_t offset, size_t length) = 0;
  virtual bool drain() = 0;
  virtual bool persist(size_t offset, size_t length) = 0;
  virtual bool memcpyPersist(size_t dstOffset, const uint8_t* src, size_t length) = 0;
  virtual bool memcpyFlush(size_t dstOffset, const uint8_t* src, size_t length) = 0;

  // Transport servers pin the regions they serve: a pinned region refuses close() (DPMS_BUSY), so a
  // serving thread never touches unmapped memory. Pin and unpin only from the JS thread.
  void pin() { pins_.fetch_add(1); }
  void unpin() { pins_.fetch_sub(1); }
  bool pinned() const { return pins_.load() > 0; }

  // Release the memory now (idempotent). JS must have detached its view first.
  void close() {
    if (data_ != nullptr) release();
    data_ = nullptr;
  }

 protected:
  Region(uint8_t* data, size_t size) : data_(data), size_(size) {}
  // Unmap / free data_. Called at most once, from close(); subclass destructors call close().
  virtual void release() = 0;

 private:
  uint8_t* data_;
  size_t size_;
  std::atomic<int> pins_{0};
};

// A file mapped with pmem_map_file.
class PoolRegion final : public Region {
 public:
  enum class OpenError { kNone, kExists, kNotFound, kIo };
  struct OpenResult {
    PoolRegion* region = nullptr;  // owned by the caller on success
    OpenError error = OpenError::kNone;
    std::string message;
  };
  // createSize > 0: create the file exclusively with mode 0600; 0: open an existing file whole.
  static OpenResult Open(const std::string& path, size_t createSize);
  ~PoolRegion() override { close(); }

  bool isPmem() const override { return isPmem_; }
  const char* flushMode() const override { return cpuFlush_ ? "cpu" : "msync"; }
  bool cpuFlush() const override { return cpuFlush_; }

  bool flush(size_t offset, size_t length) override;
  bool drain() override;
  bool persist(size_t offset, size_t length) override;
  bool memcpyPersist(size_t dstOffset, const uint8_t* src, size_t length) override;
  bool memcpyFlush(size_t dstOffset, const uint8_t* src, size_t length) override;

 protected:
  void release() override;

 private:
  PoolRegion(uint8_t* data, size_t size, bool isPmem, bool cpuFlush)
      : Region(data, size), isPmem_(isPmem), cpuFlush_(cpuFlush) {}
  bool isPmem_;
  bool cpuFlush_;
};

struct SimStats {
  uint64_t flushes = 0;
  uint64_t drains = 0;
  size_t pendingLines = 0;
};

// The crash simulator: a volatile cache image (data(), what JS sees) and a persistent image, with
// 64-byte lines. flush snapshots lines into a pending set; drain copies the snapshots to the
// persistent image; a crash image is the persistent image plus a seeded random choice, per in-flight
// line, of what reached the media (never splitting an aligned 8-byte word).
class SimRegion final : public Region {
 public:
  static constexpr size_t kLine = 64;
  static constexpr size_t kWord = 8;
  using Line = std::array<uint8_t, kLine>;

  // initial == nullptr: both images zeroed; otherwise both start as copies of initial[0, size).
  // Returns nullptr when the allocation fails.
  static SimRegion* Create(size_t size, const uint8_t* initial);
  ~SimRegion() override { close(); }

  bool isPmem() const override { return false; }
  const char* flushMode() const override { return "sim"; }

  bool flush(size_t offset, size_t length) override;
  bool drain() override;
  bool persist(size_t offset, size_t length) override;
  bool memcpyPersist(size_t dstOffset, const uint8_t* src, size_t length) override;
  bool memcpyFlush(size_t dstOffset, const uint8_t* src, size_t length) override;

  // Write the crash image for `seed` to out[0, size()).
  void crashImage(uint64_t seed, uint8_t* out) const;
  // Cache and persistent images both become the crash image; pending snapshots are dropped.
  void crash(uint64_t seed);
  const uint8_t* persistent() const { return persistent_; }
  SimStats stats() const { return {flushes_, drains_, pending_.size()}; }

 protected:
  void release() override;

 private:
  SimRegion(uint8_t* cache, uint8_t* persistent, size_t size, size_t paddedSize)
      : Region(cache, size), persistent_(persistent), paddedSize_(paddedSize) {}

  uint8_t* persistent_;
  size_t paddedSize_;  // size rounded up to whole lines; the padding is never written
  std::unordered_map<size_t, Line> pending_;  // line index -> snapshot taken at flush
  uint64_t flushes_ = 0;
  uint64_t drains_ = 0;
};

}  // namespace dpms
