// The tcp provider's serving thread, without N-API: an epoll loop that accepts connections, runs the
// handshake (auth.h), and executes one-sided operations on the registered regions itself. Two-sided
// messages, WRITE-with-immediate notifications and connection events leave through `emit` (the JS
// wrapper in tcp_server.cc forwards them to a ThreadSafeFunction); JS answers through Reply(). The
// frame format is in tcp_wire.h and docs/TCP-WIRE.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "region.h"

namespace dpms::tcpserver {

struct ServedRegion {
  std::shared_ptr<Region> region;  // pinned by the JS wrapper while served
  uint8_t* data = nullptr;
  uint64_t sizeBytes = 0;
  uint32_t rkey = 0;
};

struct Config {
  std::vector<uint8_t> secret;
  uint32_t nodeId = 0;
  std::vector<ServedRegion> regions;
  uint32_t maxMessageBytes = 0;
  uint32_t handshakeTimeoutMs = 5000;
  size_t maxConnections = 1024;
};

struct Event {
  enum class Kind { kOpen, kMessage, kImmediate, kClose };
  Kind kind = Kind::kOpen;
  uint32_t connection = 0;
  uint32_t requestId = 0;  // kMessage
  uint32_t immediate = 0;  // kImmediate
  uint64_t length = 0;     // kImmediate: data bytes; kMessage: payload bytes
  std::string text;        // kOpen: peer; kClose: reason
  std::unique_ptr<uint8_t[]> payload;  // kMessage
};

// Counters the serving thread bumps and stats() reads (relaxed: they are statistics).
struct Counters {
  std::atomic<uint64_t> connectionsOpen{0};
  std::atomic<uint64_t> connectionsAccepted{0};
  std::atomic<uint64_t> authFailures{0};
  std::atomic<uint64_t> badFrames{0};
  std::atomic<uint64_t> accessErrors{0};
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> atomics{0};
  std::atomic<uint64_t> persists{0};
  std::atomic<uint64_t> messages{0};
  std::atomic<uint64_t> bytesIn{0};
  std::atomic<uint64_t> bytesOut{0};
};

class Loop;

// The JS-facing handle of a serving thread. Reply/Disconnect may be called from any thread; Stop joins.
class Server {
 public:
  // Takes ownership of listenFd (non-blocking, listening). Returns nullptr with a message when the
  // epoll/eventfd set-up fails (listenFd is closed then).
  static std::unique_ptr<Server> Start(Config config, int listenFd, std::function<void(Event*)> emit,
                                       std::string* error);
  ~Server();

  void Reply(uint32_t connection, uint32_t requestId, const uint8_t* payload, size_t length);
  void Disconnect(uint32_t connection);
  // Close every connection (each opened one emits 'close'), stop and join the thread. Idempotent.
  void Stop();
  const Counters& counters() const;

 private:
  explicit Server(std::unique_ptr<Loop> loop);
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace dpms::tcpserver
