// Argument checking for the tcp provider (see tcp_args.h).
#include "tcp_args.h"

#include <cmath>

#include "auth.h"
#include "errors.h"

namespace dpms::tcpargs {

uint64_t ToInteger(const Napi::Value& value, const char* name, uint64_t min, uint64_t max) {
  if (!value.IsNumber()) ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  // Compare as doubles first so that NaN, infinities and huge values never reach the integer cast.
  if (!(number >= static_cast<double>(min)) || !(number <= static_cast<double>(max)) || std::floor(number) != number) {
    ThrowStatus(value.Env(), Status::kInvalidArgument,
                std::string(name) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  const uint64_t integer = static_cast<uint64_t>(number);
  if (integer > max) {  // max not exactly representable as a double (2^64-1): clamp check once more
    ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " is too large");
  }
  return integer;
}

uint64_t IntegerOption(const Napi::Object& options, const char* key, uint64_t min, uint64_t max, uint64_t fallback) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return fallback;
  return ToInteger(value, key, min, max);
}

std::string StringOption(const Napi::Object& options, const char* key) {
  Napi::Value value = options.Get(key);
  if (!value.IsString()) ThrowStatus(options.Env(), Status::kInvalidArgument, std::string(key) + " must be a string");
  return value.As<Napi::String>().Utf8Value();
}

std::vector<uint8_t> SecretOption(const Napi::Object& options) {
  Napi::Value value = options.Get("secret");
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(options.Env(), Status::kInvalidArgument, "secret must be a Uint8Array");
  }
  Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
  if (bytes.ByteLength() < auth::kMinSecretBytes || bytes.ByteLength() > auth::kMaxSecretBytes) {
    ThrowStatus(options.Env(), Status::kInvalidArgument,
                "secret must be " + std::to_string(auth::kMinSecretBytes) + " to " +
                    std::to_string(auth::kMaxSecretBytes) + " bytes");
  }
  return std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ByteLength());
}

Napi::Object ToOptions(const Napi::Value& value) {
  if (!value.IsObject()) ThrowStatus(value.Env(), Status::kInvalidArgument, "options must be an object");
  return value.As<Napi::Object>();
}

}  // namespace dpms::tcpargs
