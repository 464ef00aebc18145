// The tcp provider's serving thread (see tcp_server_loop.h).
//
// One thread, one epoll set: the listening socket, an eventfd through which JS posts replies,
// disconnects and the stop request, and every connection (non-blocking, TCP_NODELAY, level-triggered).
// For a readable connection the thread reads and executes every complete frame it has, then sends all
// the responses with one sendmsg (a gather list), so a pipelining client gets its answers batched.
// Frames of one connection execute strictly in order, which is what makes PERSIST mean "every earlier
// write on this connection is durable": those writes were copied into the region before the flush.
//
// Memory safety against hostile input: every header is checked before its payload is looked at
// (tcp_wire.h RequestPayloadBytes: opcode, flags, length limits), every access is checked against the
// region (index, rkey, overflow-safe bounds, alignment) before a byte of it is touched, and payloads
// land either in the fixed input buffer or straight in their checked destination (a region range or
// a message buffer of exactly the claimed size), so no length field can make us read or write
// outside memory we own.
//
// Zero-copy READ responses: a READ of at least kZeroCopyMinBytes is queued as a reference to the
// region instead of a copy. Before this connection changes region memory (WRITE, atomics) any such
// reference still queued is copied out first, so a connection never sees its own later writes in an
// earlier read. Writes by other connections or by the server's CPU may land in a queued read, as they
// may in an RDMA READ that races with them.
#include "tcp_server_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <utility>

#include "auth.h"
#include "tcp_socket.h"
#include "tcp_wire.h"

namespace dpms::tcpserver {

namespace w = tcpwire;

namespace {

constexpr size_t kInputBufferBytes = 64 << 10;
// A client whose queued responses exceed this stops being read until they drain (back-pressure).
constexpr size_t kOutputCapBytes = 32 << 20;
// A client with this many messages (or message bytes) awaiting a JS reply stops being read until
// replies come.
constexpr size_t kMaxAwaitingReplies = 4096;
constexpr size_t kMaxAwaitingBytes = 64 << 20;
constexpr size_t kZeroCopyMinBytes = 8 << 10;
// Bytes read from one connection per wake-up before the others get a turn.
constexpr size_t kReadBudgetBytes = 8 << 20;
constexpr int kMaxIov = 256;
constexpr int kMaxEvents = 128;
constexpr uint64_t kListenTag = 0;
constexpr uint64_t kWakeTag = 1;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// One piece of queued output: bytes at `offset` in the connection's out buffer, or a reference to
// region memory (`ref`).
struct Segment {
  const uint8_t* ref = nullptr;
  size_t offset = 0;
  size_t length = 0;
};

struct Connection {
  uint32_t id = 0;
  int fd = -1;
  std::string peer;
  bool authed = false;
  bool closed = false;
  bool closeAfterFlush = false;  // an access error was answered: close once it is sent
  std::string closeReason;
  auth::Nonce serverNonce{};

  std::unique_ptr<uint8_t[]> in{new uint8_t[kInputBufferBytes]};
  size_t inStart = 0;
  size_t inEnd = 0;

  // A payload being received straight into its destination.
  uint8_t* directDst = nullptr;
  size_t directLeft = 0;
  w::Request pending;                      // the frame that payload belongs to
  std::unique_ptr<uint8_t[]> messageBody;  // destination of a MESSAGE payload

  std::vector<uint8_t> out;
  std::vector<Segment> segments;
  size_t segmentHead = 0;
  size_t outBytes = 0;     // bytes queued and not yet sent
  size_t refSegments = 0;  // queued segments that reference region memory

  std::unordered_map<uint32_t, uint32_t> awaitingReply;  // requestId -> message bytes
  size_t awaitingBytes = 0;
  uint32_t epollMask = 0;
};

enum class CommandKind { kReply, kDisconnect };

struct Command {
  CommandKind kind;
  uint32_t connection;
  uint32_t requestId;
  std::vector<uint8_t> payload;
};

}  // namespace

class Loop {
 public:
  Loop(Config config, int listenFd, int epollFd, int wakeFd, std::function<void(Event*)> emit)
      : config_(std::move(config)), listenFd_(listenFd), epollFd_(epollFd), wakeFd_(wakeFd), emit_(std::move(emit)) {}

  ~Loop() {
    for (auto& entry : connections_) close(entry.second->fd);
    close(listenFd_);
    close(epollFd_);
    close(wakeFd_);
  }

  void Run();
  void Post(Command command) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands_.push_back(std::move(command));
    }
    Wake();
  }
  void RequestStop() {
    stop_.store(true);
    Wake();
  }
  const Counters& counters() const { return counters_; }

 private:
  void Wake() {
    const uint64_t one = 1;
    ssize_t rc;
    do rc = write(wakeFd_, &one, sizeof one);
    while (rc < 0 && errno == EINTR);
  }

  void AcceptAll();
  void RunCommands();
  void ExpireHandshakes(uint64_t now);
  int TimeoutMs(uint64_t now) const;

  void Pump(Connection& c);
  bool ParseFrames(Connection& c);
  bool ParseAuth(Connection& c);
  void BeginPayload(Connection& c, const w::Request& r, uint8_t* dst);
  void FinishPayload(Connection& c);
  void Execute(Connection& c, const w::Request& r, const uint8_t* payload);
  uint8_t CheckAccess(const w::Request& r) const;

  bool Paused(const Connection& c) const {
    return c.outBytes >= kOutputCapBytes || c.awaitingReply.size() >= kMaxAwaitingReplies ||
           c.awaitingBytes >= kMaxAwaitingBytes;
  }
  void AppendResponse(Connection& c, uint8_t opcode, uint32_t requestId, uint32_t length, uint8_t status);
  void AppendBytes(Connection& c, const uint8_t* bytes, size_t length);
  void AppendRef(Connection& c, const uint8_t* bytes, size_t length);
  void Materialize(Connection& c);
  void Flush(Connection& c);
  void UpdateInterest(Connection& c);

  void BadFrame(Connection& c, const char* what);
  void AuthFailure(Connection& c, const char* what);
  void Close(Connection& c, const std::string& reason);
  void Emit(Event::Kind kind, const Connection& c, std::string text) {
    auto* event = new Event();
    event->kind = kind;
    event->connection = c.id;
    event->text = std::move(text);
    emit_(event);
  }

  Config config_;
  int listenFd_;
  int epollFd_;
  int wakeFd_;
  std::function<void(Event*)> emit_;
  Counters counters_;
  std::atomic<bool> stop_{false};

  std::mutex mutex_;
  std::vector<Command> commands_;  // guarded by mutex_

  std::unordered_map<uint32_t, std::unique_ptr<Connection>> connections_;
  std::vector<std::unique_ptr<Connection>> graveyard_;  // closed during this epoll batch
  std::deque<std::pair<uint64_t, uint32_t>> handshakeDeadlines_;  // in accept order = deadline order
  uint32_t nextId_ = 1;
  uint64_t acceptPausedUntil_ = 0;  // after EMFILE: stop accepting for a moment instead of spinning
};

// ---- event loop ----

void Loop::Run() {
  epoll_event events[kMaxEvents];
  while (!stop_.load()) {
    const int n = epoll_wait(epollFd_, events, kMaxEvents, TimeoutMs(NowNs()));
    if (n < 0 && errno != EINTR) break;  // cannot happen with valid fds; do not spin
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      const uint32_t flags = events[i].events;
      if (tag == kListenTag) {
        AcceptAll();
      } else if (tag == kWakeTag) {
        uint64_t count;
        while (read(wakeFd_, &count, sizeof count) > 0) {
        }
        RunCommands();
      } else {
        Connection& c = *reinterpret_cast<Connection*>(tag);
        if (c.closed) continue;
        if ((flags & (EPOLLERR | EPOLLHUP)) != 0 && (flags & EPOLLIN) == 0) {
          Close(c, "connection reset");
          continue;
        }
        if ((flags & EPOLLOUT) != 0) Flush(c);
        if (!c.closed) Pump(c);
      }
    }
    const uint64_t now = NowNs();
    ExpireHandshakes(now);
    if (acceptPausedUntil_ != 0 && now >= acceptPausedUntil_) {
      acceptPausedUntil_ = 0;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kListenTag;
      epoll_ctl(epollFd_, EPOLL_CTL_ADD, listenFd_, &ev);
    }
    graveyard_.clear();
  }
  // Stop: every connection goes, each opened one with its 'close' event.
  std::vector<uint32_t> ids;
  for (auto& entry : connections_) ids.push_back(entry.first);
  for (uint32_t id : ids) Close(*connections_.at(id), "server closed");
  graveyard_.clear();
}

int Loop::TimeoutMs(uint64_t now) const {
  uint64_t next = UINT64_MAX;
  if (!handshakeDeadlines_.empty()) next = handshakeDeadlines_.front().first;
  if (acceptPausedUntil_ != 0 && acceptPausedUntil_ < next) next = acceptPausedUntil_;
  if (next == UINT64_MAX) return -1;
  if (next <= now) return 0;
  return static_cast<int>((next - now) / 1000000 + 1);
}

void Loop::ExpireHandshakes(uint64_t now) {
  while (!handshakeDeadlines_.empty() && handshakeDeadlines_.front().first <= now) {
    const uint32_t id = handshakeDeadlines_.front().second;
    handshakeDeadlines_.pop_front();
    auto it = connections_.find(id);
    if (it != connections_.end() && !it->second->authed) AuthFailure(*it->second, "handshake timeout");
  }
}

void Loop::AcceptAll() {
  for (;;) {
    const int fd = accept4(listenFd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        epoll_ctl(epollFd_, EPOLL_CTL_DEL, listenFd_, nullptr);
        acceptPausedUntil_ = NowNs() + 100000000ull;
      }
      return;
    }
    if (connections_.size() >= config_.maxConnections) {
      close(fd);  // over the limit: refuse rather than grow without bound
      continue;
    }
    tcpsock::TuneConnection(fd);
    auto owned = std::make_unique<Connection>();
    Connection& c = *owned;
    c.id = nextId_++;
    if (nextId_ == 0) nextId_ = 1;
    c.fd = fd;
    c.peer = tcpsock::PeerText(fd);
    if (!auth::NewNonce(c.serverNonce)) {
      close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = reinterpret_cast<uint64_t>(&c);
    if (epoll_ctl(epollFd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    c.epollMask = EPOLLIN;
    connections_.emplace(c.id, std::move(owned));
    counters_.connectionsAccepted.fetch_add(1, std::memory_order_relaxed);
    counters_.connectionsOpen.fetch_add(1, std::memory_order_relaxed);
    handshakeDeadlines_.emplace_back(NowNs() + static_cast<uint64_t>(config_.handshakeTimeoutMs) * 1000000ull, c.id);

    AppendResponse(c, w::kHello, 0, w::kHelloPayloadBytes, w::kOk);
    AppendBytes(c, c.serverNonce.data(), c.serverNonce.size());
    Flush(c);
    if (!c.closed) UpdateInterest(c);
  }
}

void Loop::RunCommands() {
  std::vector<Command> commands;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    commands.swap(commands_);
  }
  std::vector<Connection*> touched;
  for (Command& command : commands) {
    auto it = connections_.find(command.connection);
    if (it == connections_.end() || it->second->closed) continue;  // gone: replies are dropped
    Connection& c = *it->second;
    if (command.kind == CommandKind::kDisconnect) {
      Close(c, "disconnected by the server");
      continue;
    }
    auto awaiting = c.awaitingReply.find(command.requestId);
    if (awaiting == c.awaitingReply.end()) continue;  // not a message we delivered
    c.awaitingBytes -= awaiting->second;
    c.awaitingReply.erase(awaiting);
    AppendResponse(c, w::kMessage, command.requestId, static_cast<uint32_t>(command.payload.size()), w::kOk);
    AppendBytes(c, command.payload.data(), command.payload.size());
    touched.push_back(&c);
  }
  for (Connection* c : touched) {
    if (c->closed) continue;
    Flush(*c);
    if (!c->closed) Pump(*c);  // replies may have un-paused it
  }
}

// ---- reading and executing frames ----

void Loop::Pump(Connection& c) {
  size_t budget = kReadBudgetBytes;
  for (;;) {
    if (!ParseFrames(c) || c.closed) return;
    if (c.closeAfterFlush) break;
    if (c.directLeft == 0 && Paused(c)) {
      // Send what we can first: if that drains the output below the cap, the frames already in the
      // input buffer must be executed now. The client may have sent everything, so no EPOLLIN would
      // ever come for them (this stall hung a client with hundreds of reads in flight).
      Flush(c);
      if (c.closed) return;
      if (Paused(c)) break;
      continue;
    }
    if (budget == 0) break;

    uint8_t* dst;
    size_t room;
    if (c.directLeft > 0) {
      dst = c.directDst;
      room = c.directLeft;
    } else {
      if (c.inStart == c.inEnd) {
        c.inStart = c.inEnd = 0;
      } else if (c.inStart > kInputBufferBytes / 2) {
        std::memmove(c.in.get(), c.in.get() + c.inStart, c.inEnd - c.inStart);
        c.inEnd -= c.inStart;
        c.inStart = 0;
      }
      dst = c.in.get() + c.inEnd;
      room = kInputBufferBytes - c.inEnd;
    }
    if (room > budget) room = budget;
    const ssize_t n = recv(c.fd, dst, room, 0);
    if (n > 0) {
      counters_.bytesIn.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      budget -= static_cast<size_t>(n);
      if (c.directLeft > 0) {
        c.directDst += n;
        c.directLeft -= static_cast<size_t>(n);
        if (c.directLeft == 0) FinishPayload(c);
      } else {
        c.inEnd += static_cast<size_t>(n);
      }
      continue;
    }
    if (n == 0) {
      const bool truncated = c.directLeft > 0 || c.inEnd > c.inStart;
      if (!c.authed) {
        AuthFailure(c, "peer closed during the handshake");
      } else if (truncated) {
        BadFrame(c, "truncated frame");
      } else {
        Close(c, "peer closed");
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    Close(c, "recv: " + tcpsock::ErrorText(errno));
    return;
  }
  Flush(c);
  if (!c.closed) UpdateInterest(c);
}

// Execute every complete frame in the input buffer. False when the connection was closed.
bool Loop::ParseFrames(Connection& c) {
  while (!c.closed && !c.closeAfterFlush && c.directLeft == 0) {
    if (!c.authed) {
      if (!ParseAuth(c)) return !c.closed;
      continue;
    }
    if (Paused(c)) return true;
    const size_t available = c.inEnd - c.inStart;
    if (available < w::kRequestHeaderBytes) return true;
    const uint8_t* header = c.in.get() + c.inStart;
    w::Request r;
    if (!w::DecodeRequest(header, &r)) {
      BadFrame(c, "bad magic or version");
      return false;
    }
    const int64_t payloadBytes = w::RequestPayloadBytes(r, config_.maxMessageBytes);
    if (payloadBytes < 0) {
      BadFrame(c, "malformed header");
      return false;
    }
    if (r.opcode == w::kMessage) {
      if (c.awaitingReply.count(r.requestId) != 0) {
        BadFrame(c, "duplicate message request id");
        return false;
      }
      c.inStart += w::kRequestHeaderBytes;
      c.messageBody.reset(new uint8_t[r.length > 0 ? r.length : 1]);
      BeginPayload(c, r, c.messageBody.get());
      continue;
    }
    const uint8_t status = CheckAccess(r);
    if (status != w::kOk) {
      counters_.accessErrors.fetch_add(1, std::memory_order_relaxed);
      AppendResponse(c, r.opcode, r.requestId, 0, status);
      c.closeAfterFlush = true;
      static const char* const kWhat[] = {"", "bad region", "bad rkey", "out of bounds", "misaligned atomic"};
      c.closeReason = std::string("remote access error: ") + kWhat[status];
      return true;
    }
    if (r.opcode == w::kWrite || r.opcode == w::kWriteImm) {
      Materialize(c);
      c.inStart += w::kRequestHeaderBytes;
      BeginPayload(c, r, config_.regions[r.region].data + r.offset);
      continue;
    }
    // READ, PERSIST (no payload) and the atomics (a small payload, wait for all of it).
    if (available < w::kRequestHeaderBytes + static_cast<size_t>(payloadBytes)) return true;
    c.inStart += w::kRequestHeaderBytes + static_cast<size_t>(payloadBytes);
    Execute(c, r, header + w::kRequestHeaderBytes);
  }
  return !c.closed;
}

// Pre-authentication input: exactly one AUTH frame. Returns false when more bytes are needed or the
// connection was closed.
bool Loop::ParseAuth(Connection& c) {
  const size_t available = c.inEnd - c.inStart;
  if (available < w::kRequestHeaderBytes) return false;
  const uint8_t* header = c.in.get() + c.inStart;
  w::Request r;
  if (!w::DecodeRequest(header, &r) || r.opcode != w::kAuth || r.length != w::kAuthPayloadBytes || r.offset != 0 ||
      r.rkey != 0 || r.region != 0 || r.flags != 0 || r.aux != 0) {
    AuthFailure(c, "a frame other than AUTH before authentication");
    return false;
  }
  if (available < w::kRequestHeaderBytes + w::kAuthPayloadBytes) return false;
  const uint8_t* payload = header + w::kRequestHeaderBytes;
  auth::Nonce clientNonce;
  std::memcpy(clientNonce.data(), payload, clientNonce.size());
  const auth::Mac expected = auth::ClientProof(config_.secret, c.serverNonce, clientNonce);
  if (!auth::ProofMatches(expected, payload + auth::kNonceBytes)) {
    AuthFailure(c, "wrong proof");
    return false;
  }
  c.inStart += w::kRequestHeaderBytes + w::kAuthPayloadBytes;
  c.authed = true;

  const auth::Mac proof = auth::ServerProof(config_.secret, clientNonce, c.serverNonce);
  const size_t regionCount = config_.regions.size();
  std::vector<uint8_t> welcome(w::kWelcomeFixedBytes + regionCount * w::kRegionEntryBytes, 0);
  std::memcpy(welcome.data(), proof.data(), proof.size());
  w::Store32(welcome.data() + 32, config_.nodeId);
  w::Store32(welcome.data() + 36, static_cast<uint32_t>(regionCount));
  w::Store32(welcome.data() + 40, config_.maxMessageBytes);
  for (size_t i = 0; i < regionCount; ++i) {
    uint8_t* entry = welcome.data() + w::kWelcomeFixedBytes + i * w::kRegionEntryBytes;
    w::Store64(entry, config_.regions[i].sizeBytes);
    w::Store32(entry + 8, config_.regions[i].rkey);
  }
  AppendResponse(c, w::kWelcome, r.requestId, static_cast<uint32_t>(welcome.size()), w::kOk);
  AppendBytes(c, welcome.data(), welcome.size());
  Emit(Event::Kind::kOpen, c, c.peer);
  return true;
}

uint8_t Loop::CheckAccess(const w::Request& r) const {
  if (r.region >= config_.regions.size()) return w::kBadRegion;
  const ServedRegion& region = config_.regions[r.region];
  if (r.rkey != region.rkey) return w::kBadRkey;
  if (!w::InBounds(r.offset, w::AccessBytes(r), region.sizeBytes)) return w::kOutOfBounds;
  if (r.opcode == w::kCas || r.opcode == w::kFaa) {
    if ((reinterpret_cast<uintptr_t>(region.data) + r.offset) % 8 != 0) return w::kMisaligned;
  }
  return w::kOk;
}

// Take the part of the payload already buffered, and receive the rest straight into dst.
void Loop::BeginPayload(Connection& c, const w::Request& r, uint8_t* dst) {
  c.pending = r;
  const size_t buffered = std::min<size_t>(c.inEnd - c.inStart, r.length);
  if (buffered > 0) std::memcpy(dst, c.in.get() + c.inStart, buffered);
  c.inStart += buffered;
  c.directDst = dst + buffered;
  c.directLeft = r.length - buffered;
  if (c.directLeft == 0) FinishPayload(c);
}

void Loop::FinishPayload(Connection& c) {
  const w::Request& r = c.pending;
  c.directDst = nullptr;
  c.directLeft = 0;
  if (r.opcode == w::kMessage) {
    c.awaitingReply.emplace(r.requestId, r.length);
    c.awaitingBytes += r.length;
    counters_.messages.fetch_add(1, std::memory_order_relaxed);
    auto* event = new Event();
    event->kind = Event::Kind::kMessage;
    event->connection = c.id;
    event->requestId = r.requestId;
    event->length = r.length;
    event->payload = std::move(c.messageBody);
    emit_(event);
    return;
  }
  counters_.writes.fetch_add(1, std::memory_order_relaxed);
  AppendResponse(c, r.opcode, r.requestId, 0, w::kOk);
  if (r.opcode == w::kWriteImm) {
    auto* event = new Event();
    event->kind = Event::Kind::kImmediate;
    event->connection = c.id;
    event->immediate = r.aux;
    event->length = r.length;
    emit_(event);
  }
}

void Loop::Execute(Connection& c, const w::Request& r, const uint8_t* payload) {
  const ServedRegion& region = config_.regions[r.region];
  uint8_t* target = region.data + r.offset;
  switch (r.opcode) {
    case w::kRead:
      counters_.reads.fetch_add(1, std::memory_order_relaxed);
      AppendResponse(c, w::kRead, r.requestId, r.length, w::kOk);
      if (r.length >= kZeroCopyMinBytes) {
        AppendRef(c, target, r.length);
      } else {
        AppendBytes(c, target, r.length);
      }
      return;
    case w::kCas: {
      Materialize(c);
      counters_.atomics.fetch_add(1, std::memory_order_relaxed);
      uint64_t expected = w::Load64(payload);
      const uint64_t desired = w::Load64(payload + 8);
      // On failure `expected` receives the value found; on success it already holds it.
      __atomic_compare_exchange_n(reinterpret_cast<uint64_t*>(target), &expected, desired, false, __ATOMIC_SEQ_CST,
                                  __ATOMIC_SEQ_CST);
      uint8_t value[8];
      w::Store64(value, expected);
      AppendResponse(c, w::kCas, r.requestId, 8, w::kOk);
      AppendBytes(c, value, 8);
      return;
    }
    case w::kFaa: {
      Materialize(c);
      counters_.atomics.fetch_add(1, std::memory_order_relaxed);
      const uint64_t before = __atomic_fetch_add(reinterpret_cast<uint64_t*>(target), w::Load64(payload), __ATOMIC_SEQ_CST);
      uint8_t value[8];
      w::Store64(value, before);
      AppendResponse(c, w::kFaa, r.requestId, 8, w::kOk);
      AppendBytes(c, value, 8);
      return;
    }
    case w::kPersist: {
      counters_.persists.fetch_add(1, std::memory_order_relaxed);
      const bool ok = region.region->persist(r.offset, w::AccessBytes(r));
      AppendResponse(c, w::kPersist, r.requestId, 0, ok ? w::kOk : w::kIoError);
      return;
    }
    default:
      BadFrame(c, "unexpected opcode");  // unreachable: RequestPayloadBytes admitted only the above
      return;
  }
}

// ---- output ----

void Loop::AppendResponse(Connection& c, uint8_t opcode, uint32_t requestId, uint32_t length, uint8_t status) {
  uint8_t header[w::kResponseHeaderBytes];
  w::EncodeResponse(header, opcode, requestId, length, status);
  AppendBytes(c, header, sizeof header);
}

void Loop::AppendBytes(Connection& c, const uint8_t* bytes, size_t length) {
  if (length == 0) return;
  const size_t offset = c.out.size();
  c.out.insert(c.out.end(), bytes, bytes + length);
  c.outBytes += length;
  if (c.segments.size() > c.segmentHead) {
    Segment& last = c.segments.back();
    if (last.ref == nullptr && last.offset + last.length == offset) {
      last.length += length;
      return;
    }
  }
  c.segments.push_back(Segment{nullptr, offset, length});
}

void Loop::AppendRef(Connection& c, const uint8_t* bytes, size_t length) {
  c.segments.push_back(Segment{bytes, 0, length});
  c.outBytes += length;
  ++c.refSegments;
}

void Loop::Materialize(Connection& c) {
  if (c.refSegments == 0) return;
  for (size_t i = c.segmentHead; i < c.segments.size(); ++i) {
    Segment& s = c.segments[i];
    if (s.ref == nullptr) continue;
    const size_t offset = c.out.size();
    c.out.insert(c.out.end(), s.ref, s.ref + s.length);
    s = Segment{nullptr, offset, s.length};
  }
  c.refSegments = 0;
}

void Loop::Flush(Connection& c) {
  while (c.segmentHead < c.segments.size()) {
    iovec iov[kMaxIov];
    int count = 0;
    for (size_t i = c.segmentHead; i < c.segments.size() && count < kMaxIov; ++i, ++count) {
      const Segment& s = c.segments[i];
      iov[count].iov_base = const_cast<uint8_t*>(s.ref != nullptr ? s.ref : c.out.data() + s.offset);
      iov[count].iov_len = s.length;
    }
    msghdr message{};
    message.msg_iov = iov;
    message.msg_iovlen = static_cast<size_t>(count);
    const ssize_t n = sendmsg(c.fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      Close(c, "send: " + tcpsock::ErrorText(errno));
      return;
    }
    counters_.bytesOut.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    size_t sent = static_cast<size_t>(n);
    c.outBytes -= sent;
    while (sent > 0) {
      Segment& s = c.segments[c.segmentHead];
      if (sent < s.length) {
        if (s.ref != nullptr) s.ref += sent; else s.offset += sent;
        s.length -= sent;
        break;
      }
      sent -= s.length;
      if (s.ref != nullptr) --c.refSegments;
      ++c.segmentHead;
    }
  }
  if (c.segmentHead == c.segments.size()) {
    c.segments.clear();
    c.segmentHead = 0;
    c.out.clear();
    if (c.out.capacity() > (8u << 20)) c.out.shrink_to_fit();
    if (c.closeAfterFlush) Close(c, c.closeReason);
  }
}

void Loop::UpdateInterest(Connection& c) {
  const bool wantRead = !c.closeAfterFlush && (c.directLeft > 0 || !Paused(c));
  const uint32_t mask = (wantRead ? EPOLLIN : 0u) | (c.segmentHead < c.segments.size() ? EPOLLOUT : 0u);
  if (mask == c.epollMask) return;
  epoll_event ev{};
  ev.events = mask;
  ev.data.u64 = reinterpret_cast<uint64_t>(&c);
  if (epoll_ctl(epollFd_, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.epollMask = mask;
}

// ---- closing ----

void Loop::BadFrame(Connection& c, const char* what) {
  counters_.badFrames.fetch_add(1, std::memory_order_relaxed);
  Close(c, std::string("bad frame: ") + what);
}

void Loop::AuthFailure(Connection& c, const char* what) {
  counters_.authFailures.fetch_add(1, std::memory_order_relaxed);
  Close(c, std::string("authentication failed: ") + what);
}

void Loop::Close(Connection& c, const std::string& reason) {
  if (c.closed) return;
  c.closed = true;
  epoll_ctl(epollFd_, EPOLL_CTL_DEL, c.fd, nullptr);
  close(c.fd);
  c.fd = -1;
  counters_.connectionsOpen.fetch_sub(1, std::memory_order_relaxed);
  if (c.authed) Emit(Event::Kind::kClose, c, reason);
  auto it = connections_.find(c.id);
  if (it != connections_.end()) {
    graveyard_.push_back(std::move(it->second));
    connections_.erase(it);
  }
}

// ---- Server ----

std::unique_ptr<Server> Server::Start(Config config, int listenFd, std::function<void(Event*)> emit,
                                      std::string* error) {
  const int epollFd = epoll_create1(EPOLL_CLOEXEC);
  const int wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epollFd < 0 || wakeFd < 0) {
    *error = "epoll/eventfd: " + tcpsock::ErrorText(errno);
    if (epollFd >= 0) close(epollFd);
    if (wakeFd >= 0) close(wakeFd);
    close(listenFd);
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenTag;
  epoll_ctl(epollFd, EPOLL_CTL_ADD, listenFd, &ev);
  ev.data.u64 = kWakeTag;
  epoll_ctl(epollFd, EPOLL_CTL_ADD, wakeFd, &ev);
  std::unique_ptr<Server> server(
      new Server(std::make_unique<Loop>(std::move(config), listenFd, epollFd, wakeFd, std::move(emit))));
  Loop* loop = server->loop_.get();
  server->thread_ = std::thread([loop] { loop->Run(); });
  return server;
}

Server::Server(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

Server::~Server() { Stop(); }

void Server::Reply(uint32_t connection, uint32_t requestId, const uint8_t* payload, size_t length) {
  if (stopped_) return;
  loop_->Post(Command{CommandKind::kReply, connection, requestId, std::vector<uint8_t>(payload, payload + length)});
}

void Server::Disconnect(uint32_t connection) {
  if (stopped_) return;
  loop_->Post(Command{CommandKind::kDisconnect, connection, 0, {}});
}

void Server::Stop() {
  if (stopped_) return;
  stopped_ = true;
  loop_->RequestStop();
  if (thread_.joinable()) thread_.join();
}

const Counters& Server::counters() const { return loop_->counters(); }

}  // namespace dpms::tcpserver
