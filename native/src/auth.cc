// HMAC-SHA256 challenge-response for the transport handshake (see auth.h).
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <cstring>
#include <string>

namespace dpms::auth {

namespace {

Mac Proof(const std::vector<uint8_t>& secret, const char* label, const Nonce& first, const Nonce& second) {
  std::vector<uint8_t> message(std::strlen(label));
  std::memcpy(message.data(), label, message.size());
  message.insert(message.end(), first.begin(), first.end());
  message.insert(message.end(), second.begin(), second.end());
  Mac mac{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message.data(), message.size(), mac.data(), &length);
  return mac;
}

}  // namespace

bool NewNonce(Nonce& out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) == 1) return true;
  return getrandom(out.data(), out.size(), 0) == static_cast<ssize_t>(out.size());
}

Mac ClientProof(const std::vector<uint8_t>& secret, const Nonce& serverNonce, const Nonce& clientNonce) {
  return Proof(secret, "dpms-client", serverNonce, clientNonce);
}

Mac ServerProof(const std::vector<uint8_t>& secret, const Nonce& clientNonce, const Nonce& serverNonce) {
  return Proof(secret, "dpms-server", clientNonce, serverNonce);
}

bool ProofMatches(const Mac& expected, const uint8_t* received) {
  return CRYPTO_memcmp(expected.data(), received, expected.size()) == 0;
}

uint32_t RandomKey() {
  uint32_t key = 0;
  while (key == 0) {
    if (RAND_bytes(reinterpret_cast<uint8_t*>(&key), sizeof key) != 1 && getrandom(&key, sizeof key, 0) != sizeof key) key = 0x9e3779b9u;
  }
  return key;
}

}  // namespace dpms::auth
