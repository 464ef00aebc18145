// Argument and option checking for the tcp provider's JS entry points (tcpServe, tcpConnect and the
// connection's operations). Every failure throws DPMS_INVALID_ARGUMENT synchronously, as the
// transport contract asks for local argument errors (args.h's ToIndex throws DPMS_OUT_OF_BOUNDS for
// negative numbers, which is right for a mapping but not here).
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dpms::tcpargs {

// An integer Number in [min, max].
uint64_t ToInteger(const Napi::Value& value, const char* name, uint64_t min, uint64_t max);

// options[key] as an integer in [min, max], or fallback when it is undefined.
uint64_t IntegerOption(const Napi::Object& options, const char* key, uint64_t min, uint64_t max, uint64_t fallback);

// options[key] as a string (required).
std::string StringOption(const Napi::Object& options, const char* key);

// options.secret: a Uint8Array of auth::kMinSecretBytes..kMaxSecretBytes bytes, copied.
std::vector<uint8_t> SecretOption(const Napi::Object& options);

// An options object (info[0]).
Napi::Object ToOptions(const Napi::Value& value);

}  // namespace dpms::tcpargs
