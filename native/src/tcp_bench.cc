// rawTcpBench: the plain-TCP limit the tcp provider is measured against (`dpms bench transport`).
// A loopback echo pair with nothing of ours in between: a server thread answers every requestBytes
// request with responseBytes, a client keeps `inFlight` requests outstanding and times each round
// trip. Both sides use TCP_NODELAY and the kernel's default (auto-tuned) socket buffers, as the
// provider does. Synchronous: it blocks the calling (JS) thread for the run, as the other native
// bench loops do.
#include "tcp_bench.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "errors.h"
#include "tcp_args.h"
#include "tcp_socket.h"

namespace dpms {

namespace {

constexpr uint64_t kMaxMessageBytes = 64ull << 20;
constexpr uint64_t kMaxIterations = 10000000;
constexpr uint64_t kMaxInFlight = 1024;
constexpr int kIoTimeoutMs = 10000;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void SetTimeouts(int fd) {
  timeval tv{kIoTimeoutMs / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool SendAll(int fd, const uint8_t* data, size_t length) {
  while (length > 0) {
    const ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

bool RecvAll(int fd, uint8_t* data, size_t length) {
  while (length > 0) {
    const ssize_t n = recv(fd, data, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

// The echo side: accept one client, answer `iterations` requests.
void Serve(int listenFd, size_t requestBytes, size_t responseBytes, uint64_t iterations) {
  pollfd pfd{listenFd, POLLIN, 0};
  if (poll(&pfd, 1, kIoTimeoutMs) != 1) return;
  const int fd = accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  tcpsock::TuneConnection(fd);
  SetTimeouts(fd);
  std::vector<uint8_t> request(requestBytes);
  std::vector<uint8_t> response(responseBytes, 0x5a);
  for (uint64_t i = 0; i < iterations; ++i) {
    if (!RecvAll(fd, request.data(), requestBytes) || !SendAll(fd, response.data(), responseBytes)) break;
  }
  close(fd);
}

// The client side with several requests outstanding: non-blocking, poll() for both directions.
bool Pipelined(int fd, size_t requestBytes, size_t responseBytes, uint64_t iterations, uint64_t inFlight,
               std::vector<uint64_t>& starts, double* latencies) {
  std::vector<uint8_t> request(requestBytes, 0xa5);
  std::vector<uint8_t> scratch(std::min<size_t>(responseBytes * 4, 4u << 20) + 1);
  uint64_t sent = 0, received = 0;
  size_t sendOffset = 0, responseOffset = 0;
  while (received < iterations) {
    const bool wantSend = sent < iterations && sent - received < inFlight;
    if (wantSend) {
      if (sendOffset == 0) starts[sent] = NowNs();
      const ssize_t n = send(fd, request.data() + sendOffset, requestBytes - sendOffset, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sendOffset += static_cast<size_t>(n);
        if (sendOffset == requestBytes) {
          ++sent;
          sendOffset = 0;
        }
        continue;  // keep the pipe full before reading
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    }
    const ssize_t n = recv(fd, scratch.data(), scratch.size(), MSG_DONTWAIT);
    if (n > 0) {
      const uint64_t now = NowNs();
      size_t bytes = static_cast<size_t>(n);
      while (bytes > 0) {
        const size_t take = std::min(bytes, responseBytes - responseOffset);
        responseOffset += take;
        bytes -= take;
        if (responseOffset == responseBytes) {
          latencies[received] = static_cast<double>(now - starts[received]);
          ++received;
          responseOffset = 0;
        }
      }
      continue;
    }
    if (n == 0) return false;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    pollfd pfd{fd, static_cast<short>(POLLIN | (wantSend ? POLLOUT : 0)), 0};
    if (poll(&pfd, 1, kIoTimeoutMs) <= 0) return false;
  }
  return true;
}

// rawTcpBench({ requestBytes, responseBytes, iterations, inFlight })
Napi::Value RawTcpBench(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = tcpargs::ToOptions(info[0]);
  const size_t requestBytes = tcpargs::ToInteger(options.Get("requestBytes"), "requestBytes", 1, kMaxMessageBytes);
  const size_t responseBytes = tcpargs::ToInteger(options.Get("responseBytes"), "responseBytes", 1, kMaxMessageBytes);
  const uint64_t iterations = tcpargs::ToInteger(options.Get("iterations"), "iterations", 1, kMaxIterations);
  const uint64_t inFlight = tcpargs::IntegerOption(options, "inFlight", 1, kMaxInFlight, 1);

  std::string error;
  uint16_t port = 0;
  const int listenFd = tcpsock::Listen("127.0.0.1", 0, 1, &port, &error);
  if (listenFd < 0) ThrowStatus(env, Status::kIo, error);
  std::thread server(Serve, listenFd, requestBytes, responseBytes, iterations);

  Napi::Float64Array latencies = Napi::Float64Array::New(env, iterations);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  uint64_t totalNs = 0;
  if (ok) {
    tcpsock::TuneConnection(fd);
    SetTimeouts(fd);
    std::vector<uint64_t> starts(iterations);
    const uint64_t begin = NowNs();
    if (inFlight == 1) {
      // Plain ping-pong with blocking calls: the lowest-overhead loop there is.
      std::vector<uint8_t> request(requestBytes, 0xa5);
      std::vector<uint8_t> response(responseBytes);
      for (uint64_t i = 0; ok && i < iterations; ++i) {
        const uint64_t start = NowNs();
        ok = SendAll(fd, request.data(), requestBytes) && RecvAll(fd, response.data(), responseBytes);
        latencies[i] = static_cast<double>(NowNs() - start);
      }
    } else {
      ok = Pipelined(fd, requestBytes, responseBytes, iterations, inFlight, starts, latencies.Data());
    }
    totalNs = NowNs() - begin;
  }
  const int err = errno;
  if (fd >= 0) close(fd);
  server.join();
  close(listenFd);
  if (!ok) ThrowStatus(env, Status::kIo, "raw TCP bench failed: " + tcpsock::ErrorText(err));

  Napi::Object result = Napi::Object::New(env);
  result.Set("totalNs", Napi::Number::New(env, static_cast<double>(totalNs)));
  result.Set("latenciesNs", latencies);
  return result;
}

}  // namespace

void InitTcpBench(Napi::Env env, Napi::Object exports) {
  exports.Set("rawTcpBench", Napi::Function::New(env, RawTcpBench, "rawTcpBench"));
}

}  // namespace dpms
