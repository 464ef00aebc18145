// The handshake both network providers (tcp.cc, verbs.cc) run before any operation: mutual
// challenge-response over HMAC-SHA256 (OpenSSL libcrypto) keyed with the cluster secret.
//
//   server -> client  HELLO    serverNonce (32 B, random)
//   client -> server  AUTH     clientNonce (32 B, random), HMAC(secret, "dpms-client" | serverNonce | clientNonce)
//   server -> client  WELCOME  HMAC(secret, "dpms-server" | clientNonce | serverNonce), then provider data
//
// The secret never crosses the wire, each side proves knowledge of it over fresh nonces (no replay),
// and comparisons are constant-time. How the three messages are framed is up to each provider.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dpms::auth {

constexpr size_t kNonceBytes = 32;
constexpr size_t kMacBytes = 32;
constexpr size_t kMinSecretBytes = 16;
constexpr size_t kMaxSecretBytes = 1024;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

// A fresh random nonce (RAND_bytes; falls back to getrandom). Returns false if no randomness.
bool NewNonce(Nonce& out);

// The client's proof: HMAC(secret, "dpms-client" | serverNonce | clientNonce).
Mac ClientProof(const std::vector<uint8_t>& secret, const Nonce& serverNonce, const Nonce& clientNonce);

// The server's proof: HMAC(secret, "dpms-server" | clientNonce | serverNonce).
Mac ServerProof(const std::vector<uint8_t>& secret, const Nonce& clientNonce, const Nonce& serverNonce);

// Constant-time comparison of a received proof with the expected one.
bool ProofMatches(const Mac& expected, const uint8_t* received);

// A random 32-bit key for a registered region (tcp provider rkeys), never 0.
uint32_t RandomKey();

}  // namespace dpms::auth
