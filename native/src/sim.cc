// SimRegion: the crash simulator (in the spirit of PMDK's pmreorder). Two 64-byte-aligned heap images:
// the cache image, where every store lands, and the persistent image, which only drain() updates. A
// crash image adds to the persistent image a seeded random outcome for every line still in flight.
#include "region.h"

#include <cstdlib>
#include <cstring>

namespace dpms {

namespace {

// splitmix64: expands the JS seed into xoshiro256**'s state.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256**: a small, well-mixed PRNG whose output depends only on the seed (crash images must be
// reproducible from the seed a failing test prints).
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    for (uint64_t& word : s_) word = SplitMix64(seed);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n) for small n (the modulo bias is negligible at 64 bits).
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(Next() % n); }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

uint8_t* AllocLines(size_t paddedSize) {
  return static_cast<uint8_t*>(std::aligned_alloc(SimRegion::kLine, paddedSize));
}

}  // namespace

SimRegion* SimRegion::Create(size_t size, const uint8_t* initial) {
  const size_t paddedSize = (size + kLine - 1) / kLine * kLine;
  uint8_t* cache = AllocLines(paddedSize);
  uint8_t* persistent = AllocLines(paddedSize);
  if (cache == nullptr || persistent == nullptr) {
    std::free(cache);
    std::free(persistent);
    return nullptr;
  }
  // The padding past `size` is zero in both images and JS can never write it, so it is never dirty.
  std::memset(cache, 0, paddedSize);
  if (initial != nullptr) std::memcpy(cache, initial, size);
  std::memcpy(persistent, cache, paddedSize);
  return new SimRegion(cache, persistent, size, paddedSize);
}

bool SimRegion::flush(size_t offset, size_t length) {
  ++flushes_;
  if (length == 0) return true;
  for (size_t line = offset / kLine; line <= (offset + length - 1) / kLine; ++line) {
    // A later flush of the same line before a drain replaces the earlier snapshot.
    std::memcpy(pending_[line].data(), data() + line * kLine, kLine);
  }
  return true;
}

bool SimRegion::drain() {
  ++drains_;
  for (const auto& [line, snapshot] : pending_) std::memcpy(persistent_ + line * kLine, snapshot.data(), kLine);
  pending_.clear();
  return true;
}

bool SimRegion::persist(size_t offset, size_t length) { return flush(offset, length) && drain(); }

bool SimRegion::memcpyPersist(size_t dstOffset, const uint8_t* src, size_t length) {
  return memcpyFlush(dstOffset, src, length) && drain();
}

bool SimRegion::memcpyFlush(size_t dstOffset, const uint8_t* src, size_t length) {
  if (length > 0) std::memmove(data() + dstOffset, src, length);  // src may be null when length is 0
  return flush(dstOffset, length);
}

void SimRegion::crashImage(uint64_t seed, uint8_t* out) const {
  Xoshiro256 rng(seed);
  const uint8_t* cache = data();
  Line line;
  // Lines are visited in address order so that the same seed always yields the same image.
  for (size_t index = 0; index < paddedSize_ / kLine; ++index) {
    const size_t base = index * kLine;
    const auto found = pending_.find(index);
    const uint8_t* snapshot = found == pending_.end() ? nullptr : found->second.data();
    const bool dirty = std::memcmp(cache + base, persistent_ + base, kLine) != 0;
    const uint8_t* chosen = persistent_ + base;
    if (snapshot != nullptr || dirty) {
      // Versions that may have reached the media: persistent, snapshot (if flushed), cache.
      const uint8_t* versions[3] = {persistent_ + base, cache + base, snapshot};
      const uint32_t count = snapshot != nullptr ? 3 : 2;
      // Whole-line outcomes get 80%, split evenly among the versions; 20% tear the line.
      const uint32_t roll = rng.Below(100);
      if (roll < 80) {
        chosen = versions[roll * count / 80];
      } else {
        // Torn write-back: each aligned 8-byte word (the unit of atomicity) from any version.
        for (size_t word = 0; word < kLine; word += kWord) {
          std::memcpy(line.data() + word, versions[rng.Below(count)] + word, kWord);
        }
        chosen = line.data();
      }
    }
    // The last line may extend past size(): copy only what the caller's buffer holds.
    const size_t n = base + kLine <= size() ? kLine : size() - base;
    std::memcpy(out + base, chosen, n);
  }
}

void SimRegion::crash(uint64_t seed) {
  // Build the image aside first: crashImage reads both images it is about to overwrite.
  std::vector<uint8_t> image(size());
  crashImage(seed, image.data());
  std::memcpy(data(), image.data(), size());
  std::memcpy(persistent_, image.data(), size());
  pending_.clear();
}

void SimRegion::release() {
  std::free(data());
  std::free(persistent_);
  persistent_ = nullptr;
  pending_.clear();
}

}  // namespace dpms
