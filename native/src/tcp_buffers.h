// A process-wide cache of large receive blocks for the tcp client's READ results and message
// replies. A fresh 1 MiB allocation costs ~256 page faults on first touch (and glibc returns freed
// heap tops to the kernel), which measured at about half the time of a 1 MiB loopback READ; blocks
// that come back from collected Buffers are reused instead. Power-of-two size classes from 64 KiB to
// 16 MiB, at most kMaxCachedBytes kept; thread-safe (finalizers of different environments).
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace dpms::tcpbuffers {

// Results smaller than this use Node's own Buffer allocation.
constexpr size_t kMinPooledBytes = 64 << 10;

// A Buffer of `length` bytes over a pooled block (its memory returns to the cache when the Buffer is
// collected). *data receives the block. Returns nullptr when allocation fails.
napi_value NewBuffer(napi_env env, size_t length, uint8_t** data);

}  // namespace dpms::tcpbuffers
