// Validation of JS arguments: offsets and lengths (non-negative integers inside the target),
// BigInts for the 64-bit atomics, Uint8Arrays. Each helper throws the right DPMS_* error itself.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace dpms {

// A non-negative integer Number (at most 2^53). Non-numbers throw DPMS_INVALID_ARGUMENT; negative or
// fractional numbers throw DPMS_OUT_OF_BOUNDS.
size_t ToIndex(const Napi::Value& value, const char* name);

// ToIndex, or `fallback` when value is undefined.
size_t ToIndexOr(const Napi::Value& value, const char* name, size_t fallback);

// A count that must be at least 1 (iterations, chunk sizes): else DPMS_INVALID_ARGUMENT.
size_t ToPositiveCount(const Napi::Value& value, const char* name);

// Throw DPMS_OUT_OF_BOUNDS unless [offset, offset+length) lies within [0, size).
void CheckRange(Napi::Env env, size_t offset, size_t length, size_t size, const char* what);

// An unsigned 64-bit BigInt in [0, 2^64).
uint64_t ToU64(const Napi::Value& value, const char* name);

// A BigInt in (-2^64, 2^64), reduced modulo 2^64 (for faa64's delta).
uint64_t ToWrappingU64(const Napi::Value& value, const char* name);

// A Uint8Array (Buffers included).
Napi::Uint8Array ToBytes(const Napi::Value& value, const char* name);

}  // namespace dpms
