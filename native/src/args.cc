// Argument validation shared by every entry point (see args.h).
#include "args.h"

#include <cmath>
#include <string>

#include "errors.h"

namespace dpms {

namespace {

constexpr double kMaxSafeInteger = 9007199254740992.0;  // 2^53

// The words of a BigInt with at most one 64-bit word; false when it needs more.
bool BigIntWord(const Napi::Value& value, const char* name, int* signBit, uint64_t* word) {
  if (!value.IsBigInt()) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a BigInt");
  uint64_t words[2] = {0, 0};
  size_t count = 2;
  value.As<Napi::BigInt>().ToWords(signBit, &count, words);
  *word = words[0];
  return count <= 1;
}

}  // namespace

size_t ToIndex(const Napi::Value& value, const char* name) {
  if (!value.IsNumber()) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= 0) || number > kMaxSafeInteger || std::floor(number) != number) {
    ThrowStatus(value.Env(), Status::kOutOfBounds, std::string(name) + " must be a non-negative integer");
  }
  return static_cast<size_t>(number);
}

size_t ToIndexOr(const Napi::Value& value, const char* name, size_t fallback) {
  return value.IsUndefined() ? fallback : ToIndex(value, name);
}

size_t ToPositiveCount(const Napi::Value& value, const char* name) {
  const size_t count = ToIndex(value, name);
  if (count == 0) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be at least 1");
  return count;
}

void CheckRange(Napi::Env env, size_t offset, size_t length, size_t size, const char* what) {
  // offset and length are at most 2^53 each, so the sum cannot overflow size_t.
  if (offset > size || length > size - offset) {
    ThrowStatus(env, Status::kOutOfBounds,
                "range [" + std::to_string(offset) + ", " + std::to_string(offset + length) + ") is outside " + what +
                    " of " + std::to_string(size) + " bytes");
  }
}

uint64_t ToU64(const Napi::Value& value, const char* name) {
  int signBit = 0;
  uint64_t word = 0;
  if (!BigIntWord(value, name, &signBit, &word) || (signBit != 0 && word != 0)) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a BigInt in [0, 2^64)");
  }
  return word;
}

uint64_t ToWrappingU64(const Napi::Value& value, const char* name) {
  int signBit = 0;
  uint64_t word = 0;
  if (!BigIntWord(value, name, &signBit, &word)) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a BigInt in (-2^64, 2^64)");
  }
  return signBit != 0 ? 0 - word : word;  // two's complement: -x mod 2^64
}

Napi::Uint8Array ToBytes(const Napi::Value& value, const char* name) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a Uint8Array");
  }
  return value.As<Napi::Uint8Array>();
}

}  // namespace dpms
