// PoolRegion: a pool file mapped with libpmem's pmem_map_file. On real PM (is_pmem) or on tmpfs the
// persistence path is CPU cache flushes + fence (pmem_flush / pmem_drain); on an ordinary file system
// without DAX only msync makes stores durable.
#include "region.h"

#include <libpmem.h>
#include <linux/magic.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstring>

namespace dpms {

namespace {

// On tmpfs memory is the medium: CPU flushes are the right (and a real, measurable) persistence path.
bool OnTmpfs(const std::string& path) {
  struct statfs fs;
  if (statfs(path.c_str(), &fs) != 0) return false;
  return static_cast<unsigned long>(fs.f_type) == TMPFS_MAGIC;
}

}  // namespace

PoolRegion::OpenResult PoolRegion::Open(const std::string& path, size_t createSize) {
  OpenResult result;
  size_t mappedLen = 0;
  int isPmem = 0;
  const int flags = createSize > 0 ? (PMEM_FILE_CREATE | PMEM_FILE_EXCL) : 0;
  void* addr = pmem_map_file(path.c_str(), createSize, flags, 0600, &mappedLen, &isPmem);
  if (addr == nullptr) {
    const int err = errno;
    result.error = err == EEXIST ? OpenError::kExists : err == ENOENT ? OpenError::kNotFound : OpenError::kIo;
    result.message = std::string("pmem_map_file ") + path + ": " + std::strerror(err);
    const char* pmemMessage = pmem_errormsg();
    if (pmemMessage != nullptr && pmemMessage[0] != '\0') result.message += std::string(" (libpmem: ") + pmemMessage + ")";
    return result;
  }
  result.region = new PoolRegion(static_cast<uint8_t*>(addr), mappedLen, isPmem != 0, isPmem != 0 || OnTmpfs(path));
  return result;
}

bool PoolRegion::flush(size_t offset, size_t length) {
  if (length == 0) return true;
  if (cpuFlush_) {
    pmem_flush(data() + offset, length);
    return true;
  }
  return pmem_msync(data() + offset, length) == 0;
}

bool PoolRegion::drain() {
  // msync already waited for the write-back in flush.
  if (cpuFlush_) pmem_drain();
  return true;
}

bool PoolRegion::persist(size_t offset, size_t length) {
  if (length == 0) return true;
  if (cpuFlush_) {
    pmem_persist(data() + offset, length);
    return true;
  }
  return pmem_msync(data() + offset, length) == 0;
}

// The memmove variants: src may alias the mapping itself (a view of mapping.buffer), which memcpy
// would not allow. libpmem implements both with the same flushing copy.
bool PoolRegion::memcpyPersist(size_t dstOffset, const uint8_t* src, size_t length) {
  if (length == 0) return true;
  if (cpuFlush_) {
    pmem_memmove_persist(data() + dstOffset, src, length);
    return true;
  }
  std::memmove(data() + dstOffset, src, length);
  return pmem_msync(data() + dstOffset, length) == 0;
}

bool PoolRegion::memcpyFlush(size_t dstOffset, const uint8_t* src, size_t length) {
  if (length == 0) return true;
  if (cpuFlush_) {
    pmem_memmove(data() + dstOffset, src, length, PMEM_F_MEM_NODRAIN);
    return true;
  }
  std::memmove(data() + dstOffset, src, length);
  return pmem_msync(data() + dstOffset, length) == 0;
}

void PoolRegion::release() { pmem_unmap(data(), size()); }

}  // namespace dpms
