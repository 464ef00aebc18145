// Socket helpers shared by the tcp provider's server, client and raw baseline: address resolution,
// the listening socket, per-connection options and peer names. Plain POSIX, no N-API, no libuv.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dpms::tcpsock {

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

// Resolve host:port with getaddrinfo (blocking; control plane only). `passive` is for bind().
// Returns false with a message when nothing resolves.
bool Resolve(const std::string& host, uint16_t port, bool passive, std::vector<Address>* out, std::string* error);

// A non-blocking, close-on-exec listening socket bound to the first address of host:port that
// works, with SO_REUSEADDR. On success *boundPort is the port actually bound (port 0 picks one).
// Returns -1 with a message on failure.
int Listen(const std::string& host, uint16_t port, int backlog, uint16_t* boundPort, std::string* error);

// Options every data connection gets: TCP_NODELAY (latency: frames are already batched by us).
void TuneConnection(int fd);

// "ip:port" of an address (IPv6 in brackets).
std::string AddressText(const sockaddr* address);

// "ip:port" of the peer of a connected socket, or "unknown".
std::string PeerText(int fd);

// strerror(err) as a std::string.
std::string ErrorText(int err);

}  // namespace dpms::tcpsock
