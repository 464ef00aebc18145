// The serving side of the 'verbs' provider. One-sided operations never reach this code: the RDMA
// device executes READ, WRITE and the atomics against the registered regions. What runs here, on the
// Node main loop (uv_poll on the rdma_cm event channel and on each connection's completion channel),
// is the control plane and the two-sided traffic:
//   - connection set-up: CONNECT_REQUEST -> a protection domain, completion queue and RC queue pair
//     per connection, receive buffers posted, rdma_accept; ESTABLISHED -> HELLO;
//   - authentication (auth.h) over SEND/RECV. Only after a valid AUTH are the regions registered, in
//     that connection's own protection domain, so no rkey exists for an unauthenticated queue pair and
//     no other connection's rkeys work on it;
//   - CALL messages -> {type:'message'} events, reply() -> REPLY; WRITE-with-immediate -> {type:'immediate'};
//     PERSIST flush requests for regions whose persistence needs the CPU (see verbs_client.cc);
//   - teardown: the connection's memory regions are deregistered at once (fencing: an rkey the client
//     still holds stops working), then the queue pair, CQ, PD and cm_id are destroyed.
// JS callbacks (onEvent) are only called at the end of a libuv callback, from a queue, so that a JS
// handler that closes a connection or the server never pulls state from under the code walking it.
#include "verbs_server.h"

#include <arpa/inet.h>

#include <algorithm>

#include <cerrno>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "auth.h"
#include "mapping.h"
#include "region.h"
#include "verbs_common.h"

namespace dpms::verbs {

namespace {

constexpr int kListenBacklog = 64;
constexpr size_t kMaxConnections = 256;
constexpr uint32_t kServerSendDepth = 64;
// Receive buffers per connection: about 4 MiB of them, between 8 and 64.
constexpr size_t kReceiveBudgetBytes = 4 * 1024 * 1024;
// Messages awaiting reply() per connection; a client exceeding it is misbehaving.
constexpr size_t kMaxPendingRequests = 4096;
constexpr uint32_t kMaxHandshakeTimeoutMs = 10 * 60 * 1000;
constexpr int kRegionAccess =
    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

struct Event {
  enum class Type { kOpen, kMessage, kImmediate, kClose };
  Event(Type t, uint32_t c) : type(t), connection(c) {}
  Type type;
  uint32_t connection;
  uint32_t requestId = 0;
  uint32_t immediate = 0;
  uint32_t length = 0;
  std::string text;  // peer for open, reason for close
  std::vector<uint8_t> payload;
};

struct Stats {
  double connectionsOpen = 0, connectionsAccepted = 0, authFailures = 0, badFrames = 0, accessErrors = 0;
  double reads = 0, writes = 0, atomics = 0, persists = 0, messages = 0, bytesIn = 0, bytesOut = 0;
};

class ServerCore;

struct Connection {
  enum class State { kAccepting, kHandshake, kOpen };

  ServerCore* server = nullptr;
  uint32_t id = 0;
  State state = State::kAccepting;
  bool opened = false;  // 'open' was emitted, so 'close' is owed
  rdma_cm_id* cmId = nullptr;
  ibv_pd* pd = nullptr;
  ibv_comp_channel* channel = nullptr;
  ibv_cq* cq = nullptr;
  ReceiveBuffers receives;
  StagingRing sendRing;
  std::vector<ibv_mr*> regionMrs;
  UvHandle<uv_poll_t> cqPoll;
  UvHandle<uv_timer_t> handshakeTimer;
  auth::Nonce serverNonce{};
  size_t peerMaxMessageBytes = 0;
  std::string peer;
  std::deque<std::vector<uint8_t>> queuedSends;  // whole messages waiting for ring or queue room
  std::deque<size_t> postedSends;                // ring bytes per posted SEND, in posting order
  uint64_t sendSequence = 0;
  std::unordered_set<uint32_t> pendingRequests;
  bool closeAfterSends = false;  // a refused PERSIST: disconnect once the refusal has been sent
  std::string closeAfterSendsReason;
};

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(Napi::Env env) : env_(env), asyncContext_(env, "dpms.verbsServer") {}
  ~ServerCore() {
    shutdown(false);
    finishLinger();
  }

  void start(const Napi::Object& options, Napi::Object self);
  Napi::Object makeObject();

  void reply(const Napi::CallbackInfo& info);
  void disconnect(uint32_t connectionId);
  Napi::Value stats(Napi::Env env) const;
  // Close everything; `emit` queues a 'close' event for each open connection (not from destructors).
  void shutdown(bool emit);

 private:
  static void OnCmReadable(uv_poll_t* handle, int status, int events);
  static void OnCqReadable(uv_poll_t* handle, int status, int events);
  static void OnHandshakeTimeout(uv_timer_t* handle);
  static void CleanupHook(void* arg);

  void handleCmEvents();
  void handleConnectRequest(rdma_cm_id* id, const rdma_conn_param& request);
  bool setUpConnection(Connection& connection, const rdma_conn_param& request);
  void handleCompletions(Connection& connection);
  // Returns false when the connection was closed while handling the completion.
  bool handleCompletion(Connection& connection, const ibv_wc& wc);
  bool handleMessage(Connection& connection, const uint8_t* data, size_t byteCount);
  bool handleAuth(Connection& connection, const Header& header, const uint8_t* payload);
  bool handlePersist(Connection& connection, const Header& header, const uint8_t* payload);
  void queueSend(Connection& connection, MessageType type, uint8_t status, uint32_t requestId, const uint8_t* payload, size_t bytes);
  bool flushSends(Connection& connection);
  Connection* find(uint32_t id);
  Connection* findByCmId(rdma_cm_id* id);
  // Tear one connection down now; queues its 'close' event if it was open.
  void closeConnection(Connection& connection, const std::string& reason, bool peerGone = false);
  // peerGone: the peer already disconnected (no DREQ to wait for), so the cm_id can go at once.
  void destroyResources(Connection& connection, bool peerGone);
  // After rdma_disconnect a cm_id lingers until its DISCONNECTED event: destroying it at once can
  // cancel the DREQ, and a client with nothing in flight would then never learn it was dropped.
  void finishLinger();
  static void OnLingerTimeout(uv_timer_t* handle);
  void emit(Event event) { events_.push_back(std::move(event)); }
  void deliverEvents();

  Napi::Env env_;
  Napi::AsyncContext asyncContext_;
  Napi::FunctionReference onEvent_;
  Napi::ObjectReference self_;  // keeps the JS object (and so this core) alive while serving
  std::vector<uint8_t> secret_;
  uint32_t nodeId_ = 0;
  size_t maxMessageBytes_ = kDefaultMaxMessageBytes;
  uint32_t handshakeTimeoutMs_ = 5000;
  std::vector<std::shared_ptr<Region>> regions_;
  rdma_event_channel* eventChannel_ = nullptr;
  rdma_cm_id* listenId_ = nullptr;
  UvHandle<uv_poll_t> cmPoll_;
  std::vector<rdma_cm_id*> lingering_;
  UvHandle<uv_timer_t> lingerTimer_;
  std::shared_ptr<ServerCore> lingerHold_;  // keeps this core alive after close() while ids linger
  uint16_t port_ = 0;
  std::map<uint32_t, std::unique_ptr<Connection>> connections_;
  uint32_t nextConnectionId_ = 1;
  Stats stats_;
  std::deque<Event> events_;
  bool delivering_ = false;
  bool closed_ = false;
  bool hookAdded_ = false;
};

void ServerCore::start(const Napi::Object& options, Napi::Object self) {
  Napi::Env env = env_;
  if (!options.Get("host").IsString()) ThrowStatus(env, Status::kInvalidArgument, "host must be a string");
  const std::string host = options.Get("host").As<Napi::String>().Utf8Value();
  const size_t port = ArgIndex(options.Get("port"), "port");
  if (port > 65535) ThrowStatus(env, Status::kInvalidArgument, "port must be 0 to 65535");
  secret_ = ArgSecret(options.Get("secret"));
  nodeId_ = ArgU32(options.Get("nodeId"), "nodeId");
  maxMessageBytes_ = ArgMaxMessageBytes(options.Get("maxMessageBytes"));
  const Napi::Value timeout = options.Get("handshakeTimeoutMs");
  if (!timeout.IsUndefined()) {
    const size_t ms = ArgIndex(timeout, "handshakeTimeoutMs");
    if (ms < 1 || ms > kMaxHandshakeTimeoutMs) ThrowStatus(env, Status::kInvalidArgument, "handshakeTimeoutMs must be 1 ms to 10 minutes");
    handshakeTimeoutMs_ = static_cast<uint32_t>(ms);
  }
  if (!options.Get("onEvent").IsFunction()) ThrowStatus(env, Status::kInvalidArgument, "onEvent must be a function");
  const Napi::Value regions = options.Get("regions");
  if (!regions.IsArray()) ThrowStatus(env, Status::kInvalidArgument, "regions must be an array of mappings");
  const Napi::Array regionArray = regions.As<Napi::Array>();
  if (regionArray.Length() > kMaxRegions) ThrowStatus(env, Status::kInvalidArgument, "at most 64 regions per server");
  std::vector<std::shared_ptr<Region>> found;
  for (uint32_t i = 0; i < regionArray.Length(); i++) found.push_back(OpenRegionOf(regionArray.Get(i)));

  std::string why;
  if (!RdmaDeviceAvailable(&why)) ThrowStatus(env, Status::kUnsupported, why);
  sockaddr_storage address;
  if (!ResolveHost(host, static_cast<uint16_t>(port), &address, &why)) ThrowStatus(env, Status::kUnreachable, why);

  eventChannel_ = rdma_create_event_channel();
  if (eventChannel_ == nullptr) {
    ThrowStatus(env, (errno == ENODEV || errno == ENOENT) ? Status::kUnsupported : Status::kIo,
                std::string("no RDMA connection manager (rdma_create_event_channel: ") + std::strerror(errno) + "; is rdma_ucm loaded?)");
  }
  auto fail = [&](Status status, const std::string& message) {
    const int saved = errno;
    if (listenId_ != nullptr) rdma_destroy_id(listenId_);
    listenId_ = nullptr;
    rdma_destroy_event_channel(eventChannel_);
    eventChannel_ = nullptr;
    ThrowStatus(env, status, message + ": " + std::strerror(saved));
  };
  if (!SetNonBlocking(eventChannel_->fd)) fail(Status::kIo, "cannot make the rdma_cm channel non-blocking");
  if (rdma_create_id(eventChannel_, &listenId_, this, RDMA_PS_TCP) != 0) fail(Status::kIo, "rdma_create_id");
  if (rdma_bind_addr(listenId_, reinterpret_cast<sockaddr*>(&address)) != 0) {
    const Status status = errno == EADDRINUSE ? Status::kBusy : (errno == EADDRNOTAVAIL || errno == ENODEV) ? Status::kUnsupported : Status::kIo;
    fail(status, "cannot bind " + host + ":" + std::to_string(port) + " to an RDMA device");
  }
  if (rdma_listen(listenId_, kListenBacklog) != 0) fail(Status::kIo, "rdma_listen");
  port_ = ntohs(rdma_get_src_port(listenId_));

  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_t* poll = cmPoll_.create();
  poll->data = this;
  if (uv_poll_init(loop, poll, eventChannel_->fd) != 0 || uv_poll_start(poll, UV_READABLE, OnCmReadable) != 0) {
    cmPoll_.close();
    errno = EIO;
    fail(Status::kIo, "cannot poll the rdma_cm channel");
  }

  regions_ = std::move(found);
  for (auto& region : regions_) region->pin();
  onEvent_ = Napi::Persistent(options.Get("onEvent").As<Napi::Function>());
  self_ = Napi::Persistent(self);
  napi_add_env_cleanup_hook(env, CleanupHook, this);
  hookAdded_ = true;
}

void ServerCore::CleanupHook(void* arg) {
  auto* core = static_cast<ServerCore*>(arg);
  core->hookAdded_ = false;  // being run, so already removed
  core->shutdown(false);
}

void ServerCore::OnCmReadable(uv_poll_t* handle, int, int) {
  auto* core = static_cast<ServerCore*>(handle->data);
  if (core == nullptr) return;
  auto hold = core->shared_from_this();  // finishLinger() may drop the last other owner
  core->handleCmEvents();
  core->deliverEvents();
}

void ServerCore::handleCmEvents() {
  // Each event is copied and acknowledged before it is acted on: rdma_destroy_id waits for the
  // acknowledgement of every event it was given, so acting first could deadlock on our own id.
  while (eventChannel_ != nullptr) {
    rdma_cm_event* event = nullptr;
    if (rdma_get_cm_event(eventChannel_, &event) != 0) break;  // EAGAIN: drained
    const rdma_cm_event_type type = event->event;
    rdma_cm_id* id = event->id;
    rdma_conn_param request{};
    if (type == RDMA_CM_EVENT_CONNECT_REQUEST) request = event->param.conn;
    rdma_ack_cm_event(event);

    auto lingering = std::find(lingering_.begin(), lingering_.end(), id);
    if (lingering != lingering_.end()) {
      if (type != RDMA_CM_EVENT_ESTABLISHED) {
        rdma_destroy_id(id);
        lingering_.erase(lingering);
      }
      continue;
    }
    if (closed_) {
      if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
        rdma_reject(id, nullptr, 0);
        rdma_destroy_id(id);
      }
      continue;
    }

    switch (type) {
      case RDMA_CM_EVENT_CONNECT_REQUEST:
        handleConnectRequest(id, request);
        break;
      case RDMA_CM_EVENT_ESTABLISHED:
        if (Connection* connection = findByCmId(id)) {
          connection->state = Connection::State::kHandshake;
          stats_.connectionsAccepted++;
          queueSend(*connection, MessageType::kHello, 0, 0, connection->serverNonce.data(), connection->serverNonce.size());
          flushSends(*connection);
        }
        break;
      case RDMA_CM_EVENT_DISCONNECTED:
      case RDMA_CM_EVENT_TIMEWAIT_EXIT:
      case RDMA_CM_EVENT_CONNECT_ERROR:
      case RDMA_CM_EVENT_UNREACHABLE:
      case RDMA_CM_EVENT_REJECTED:
      case RDMA_CM_EVENT_DEVICE_REMOVAL:
        if (Connection* connection = findByCmId(id)) {
          // Completions already in the CQ (a last message, an immediate) are handled first.
          handleCompletions(*connection);
          if ((connection = findByCmId(id)) != nullptr) closeConnection(*connection, "disconnected by peer", true);
        }
        break;
      default:
        break;
    }
  }
  if (closed_ && lingering_.empty()) finishLinger();
}

void ServerCore::handleConnectRequest(rdma_cm_id* id, const rdma_conn_param& request) {
  if (connections_.size() >= kMaxConnections) {
    rdma_reject(id, nullptr, 0);
    rdma_destroy_id(id);
    return;
  }
  auto owned = std::make_unique<Connection>();
  Connection& connection = *owned;
  connection.server = this;
  connection.id = nextConnectionId_++;
  connection.cmId = id;
  connection.peer = AddressString(rdma_get_peer_addr(id));
  connections_[connection.id] = std::move(owned);
  if (!setUpConnection(connection, request)) {
    rdma_reject(id, nullptr, 0);
    destroyResources(connection, true);
    connections_.erase(connection.id);
  }
}

bool ServerCore::setUpConnection(Connection& connection, const rdma_conn_param& request) {
  rdma_cm_id* id = connection.cmId;
  if (!auth::NewNonce(connection.serverNonce)) return false;
  ibv_device_attr device{};
  if (ibv_query_device(id->verbs, &device) != 0) return false;
  connection.pd = ibv_alloc_pd(id->verbs);
  if (connection.pd == nullptr) return false;
  connection.channel = ibv_create_comp_channel(id->verbs);
  if (connection.channel == nullptr || !SetNonBlocking(connection.channel->fd)) return false;

  const size_t capacity = std::max(maxMessageBytes_, kMinPayloadCapacity) + kHeaderBytes;
  const size_t receiveCount = std::min<size_t>(64, std::max<size_t>(8, kReceiveBudgetBytes / capacity));
  connection.cq = ibv_create_cq(id->verbs, static_cast<int>(kServerSendDepth + receiveCount), &connection, connection.channel, 0);
  if (connection.cq == nullptr || ibv_req_notify_cq(connection.cq, 0) != 0) return false;

  ibv_qp_init_attr attributes{};
  attributes.send_cq = connection.cq;
  attributes.recv_cq = connection.cq;
  attributes.qp_type = IBV_QPT_RC;
  attributes.cap.max_send_wr = kServerSendDepth;
  attributes.cap.max_recv_wr = static_cast<uint32_t>(receiveCount);
  attributes.cap.max_send_sge = 1;
  attributes.cap.max_recv_sge = 1;
  if (rdma_create_qp(id, connection.pd, &attributes) != 0) return false;
  if (!connection.receives.init(connection.pd, receiveCount, capacity)) return false;
  if (!connection.receives.postAll(id->qp)) return false;
  if (!connection.sendRing.init(connection.pd, std::max<size_t>(256 * 1024, 2 * capacity), IBV_ACCESS_LOCAL_WRITE)) return false;

  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env_, &loop);
  uv_poll_t* poll = connection.cqPoll.create();
  poll->data = &connection;
  if (uv_poll_init(loop, poll, connection.channel->fd) != 0 || uv_poll_start(poll, UV_READABLE, OnCqReadable) != 0) return false;
  uv_timer_t* timer = connection.handshakeTimer.create();
  timer->data = &connection;
  if (uv_timer_init(loop, timer) != 0 || uv_timer_start(timer, OnHandshakeTimeout, handshakeTimeoutMs_, 0) != 0) return false;
  // Neither handle keeps the process alive on its own: the listening poll does while serving.
  connection.cqPoll.ref(false);
  connection.handshakeTimer.ref(false);

  rdma_conn_param accept{};
  accept.responder_resources = static_cast<uint8_t>(std::min<int>({request.initiator_depth, device.max_qp_rd_atom, 16}));
  accept.initiator_depth = static_cast<uint8_t>(std::min<int>({request.responder_resources, device.max_qp_init_rd_atom, 16}));
  accept.rnr_retry_count = 7;
  accept.retry_count = 7;
  return rdma_accept(id, &accept) == 0;
}

void ServerCore::OnHandshakeTimeout(uv_timer_t* handle) {
  auto* connection = static_cast<Connection*>(handle->data);
  if (connection == nullptr) return;
  ServerCore* core = connection->server;
  if (connection->state != Connection::State::kOpen) {
    core->stats_.authFailures++;
    core->closeConnection(*connection, "handshake timeout");
  }
  core->deliverEvents();
}

void ServerCore::OnCqReadable(uv_poll_t* handle, int, int) {
  auto* connection = static_cast<Connection*>(handle->data);
  if (connection == nullptr) return;
  ServerCore* core = connection->server;
  core->handleCompletions(*connection);
  core->deliverEvents();
}

void ServerCore::handleCompletions(Connection& connection) {
  const uint32_t id = connection.id;
  if (connection.cq == nullptr) return;
  ibv_cq* eventCq = nullptr;
  void* context = nullptr;
  unsigned acknowledged = 0;
  while (ibv_get_cq_event(connection.channel, &eventCq, &context) == 0) acknowledged++;
  if (acknowledged > 0) ibv_ack_cq_events(connection.cq, acknowledged);
  ibv_req_notify_cq(connection.cq, 0);
  ibv_wc completions[32];
  for (;;) {
    const int count = ibv_poll_cq(connection.cq, 32, completions);
    if (count <= 0) return;
    for (int i = 0; i < count; i++) {
      if (!handleCompletion(connection, completions[i])) return;  // the connection is gone
    }
    if (find(id) == nullptr) return;
  }
}

bool ServerCore::handleCompletion(Connection& connection, const ibv_wc& wc) {
  if (!IsReceiveWrId(wc.wr_id)) {
    if (connection.postedSends.empty()) {
      closeConnection(connection, "unexpected send completion");
      return false;
    }
    connection.sendRing.release(connection.postedSends.front());
    connection.postedSends.pop_front();
    if (wc.status != IBV_WC_SUCCESS) {
      closeConnection(connection, std::string("send failed: ") + ibv_wc_status_str(wc.status));
      return false;
    }
    if (connection.closeAfterSends && connection.postedSends.empty() && connection.queuedSends.empty()) {
      closeConnection(connection, connection.closeAfterSendsReason);
      return false;
    }
    return flushSends(connection);
  }

  const size_t index = ReceiveIndex(wc.wr_id);
  if (wc.status != IBV_WC_SUCCESS || index >= connection.receives.count()) {
    // A message longer than the posted buffer breaks the queue pair (local length error): a bad
    // frame. Flushes mean the queue pair is in the error state, which a remote access error by the
    // client (bad rkey, out of bounds, misaligned atomic) also causes on this side.
    if (wc.status == IBV_WC_LOC_LEN_ERR) stats_.badFrames++;
    if (wc.status == IBV_WC_WR_FLUSH_ERR && connection.state == Connection::State::kOpen) stats_.accessErrors++;
    closeConnection(connection, std::string("queue pair error: ") + ibv_wc_status_str(wc.status));
    return false;
  }
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    if (connection.state != Connection::State::kOpen) {
      stats_.authFailures++;
      closeConnection(connection, "write before authentication");
      return false;
    }
    stats_.writes++;
    stats_.bytesIn += wc.byte_len;
    if (!connection.receives.post(connection.cmId->qp, index)) {
      closeConnection(connection, "cannot repost a receive buffer");
      return false;
    }
    Event event{Event::Type::kImmediate, connection.id};
    event.immediate = ntohl(wc.imm_data);
    event.length = wc.byte_len;
    emit(std::move(event));
    return true;
  }
  if (!handleMessage(connection, connection.receives.buffer(index), wc.byte_len)) return false;
  if (!connection.receives.post(connection.cmId->qp, index)) {
    closeConnection(connection, "cannot repost a receive buffer");
    return false;
  }
  return true;
}

bool ServerCore::handleMessage(Connection& connection, const uint8_t* data, size_t byteCount) {
  Header header;
  const bool wellFormed = ReadHeader(data, byteCount, &header);
  const uint8_t* payload = data + kHeaderBytes;
  if (connection.state != Connection::State::kOpen) {
    // Before authentication only one AUTH is acceptable; anything else is a failed handshake.
    if (connection.state != Connection::State::kHandshake || !wellFormed ||
        header.type != static_cast<uint8_t>(MessageType::kAuth) || header.payloadBytes != kAuthBytes) {
      stats_.authFailures++;
      closeConnection(connection, "bad handshake message");
      return false;
    }
    return handleAuth(connection, header, payload);
  }
  if (!wellFormed) {
    stats_.badFrames++;
    closeConnection(connection, "malformed message");
    return false;
  }
  switch (static_cast<MessageType>(header.type)) {
    case MessageType::kCall: {
      if (header.payloadBytes > maxMessageBytes_ || connection.pendingRequests.size() >= kMaxPendingRequests ||
          !connection.pendingRequests.insert(header.requestId).second) {
        stats_.badFrames++;
        closeConnection(connection, "oversized or duplicate message");
        return false;
      }
      stats_.messages++;
      stats_.bytesIn += header.payloadBytes;
      Event event{Event::Type::kMessage, connection.id};
      event.requestId = header.requestId;
      event.payload.assign(payload, payload + header.payloadBytes);
      emit(std::move(event));
      return true;
    }
    case MessageType::kPersist:
      return handlePersist(connection, header, payload);
    default:
      stats_.badFrames++;
      closeConnection(connection, "unknown message type");
      return false;
  }
}

bool ServerCore::handleAuth(Connection& connection, const Header&, const uint8_t* payload) {
  auth::Nonce clientNonce;
  std::memcpy(clientNonce.data(), payload, clientNonce.size());
  const auth::Mac expected = auth::ClientProof(secret_, connection.serverNonce, clientNonce);
  if (!auth::ProofMatches(expected, payload + auth::kNonceBytes)) {
    stats_.authFailures++;
    closeConnection(connection, "wrong proof");
    return false;
  }
  const uint32_t peerMax = Get<uint32_t>(payload + 64);
  if (peerMax < 1 || peerMax > kMaxMaxMessageBytes) {
    stats_.authFailures++;
    closeConnection(connection, "bad maxMessageBytes in AUTH");
    return false;
  }
  connection.peerMaxMessageBytes = peerMax;
  // Registration happens only now, in this connection's own protection domain.
  for (auto& region : regions_) {
    ibv_mr* mr = ibv_reg_mr(connection.pd, region->data(), region->size(), kRegionAccess);
    if (mr == nullptr) {
      closeConnection(connection, std::string("cannot register a region: ") + std::strerror(errno));
      return false;
    }
    connection.regionMrs.push_back(mr);
  }
  const auth::Mac proof = auth::ServerProof(secret_, clientNonce, connection.serverNonce);
  std::vector<uint8_t> welcome(proof.begin(), proof.end());
  Put<uint32_t>(welcome, nodeId_);
  Put<uint32_t>(welcome, static_cast<uint32_t>(maxMessageBytes_));
  Put<uint32_t>(welcome, static_cast<uint32_t>(connection.receives.count() / 2));  // credits, see verbs_client.cc
  Put<uint32_t>(welcome, static_cast<uint32_t>(regions_.size()));
  for (size_t i = 0; i < regions_.size(); i++) {
    Put<uint64_t>(welcome, reinterpret_cast<uintptr_t>(regions_[i]->data()));
    Put<uint64_t>(welcome, regions_[i]->size());
    Put<uint32_t>(welcome, connection.regionMrs[i]->rkey);
    const PersistMethod method = regions_[i]->cpuFlush() ? PersistMethod::kReadAfterWrite : PersistMethod::kFlushRequest;
    Put<uint32_t>(welcome, static_cast<uint32_t>(method));
  }
  connection.state = Connection::State::kOpen;
  connection.opened = true;
  connection.handshakeTimer.close();
  stats_.connectionsOpen++;
  queueSend(connection, MessageType::kWelcome, 0, 0, welcome.data(), welcome.size());
  Event event{Event::Type::kOpen, connection.id};
  event.text = connection.peer;
  emit(std::move(event));
  return flushSends(connection);
}

bool ServerCore::handlePersist(Connection& connection, const Header& header, const uint8_t* payload) {
  if (header.payloadBytes != kPersistRequestBytes) {
    stats_.badFrames++;
    closeConnection(connection, "malformed persist request");
    return false;
  }
  const uint32_t index = Get<uint32_t>(payload);
  const uint32_t rkey = Get<uint32_t>(payload + 4);
  const uint64_t offset = Get<uint64_t>(payload + 8);
  const uint64_t length = Get<uint64_t>(payload + 16);
  stats_.persists++;
  uint8_t status = 0;
  if (index >= regions_.size() || rkey != connection.regionMrs[index]->rkey || offset > regions_[index]->size() ||
      length > regions_[index]->size() - offset) {
    // The same answer the device gives a bad one-sided access: refused, and the connection breaks.
    stats_.accessErrors++;
    status = 1;
    connection.closeAfterSends = true;
    connection.closeAfterSendsReason = "remote access error (persist)";
  } else if (length > 0 && !regions_[index]->persist(offset, length)) {
    status = 2;
  }
  queueSend(connection, MessageType::kPersistDone, status, header.requestId, nullptr, 0);
  return flushSends(connection);
}

void ServerCore::queueSend(Connection& connection, MessageType type, uint8_t status, uint32_t requestId, const uint8_t* payload, size_t bytes) {
  std::vector<uint8_t> message(kHeaderBytes + bytes);
  WriteHeader(message.data(), type, status, requestId, static_cast<uint32_t>(bytes));
  if (bytes > 0) std::memcpy(message.data() + kHeaderBytes, payload, bytes);
  connection.queuedSends.push_back(std::move(message));
}

bool ServerCore::flushSends(Connection& connection) {
  while (!connection.queuedSends.empty() && connection.postedSends.size() < kServerSendDepth &&
         connection.state != Connection::State::kAccepting) {
    const std::vector<uint8_t>& message = connection.queuedSends.front();
    size_t consumed = 0;
    const size_t at = connection.sendRing.allocate(message.size(), &consumed);
    if (at == SIZE_MAX) break;  // room comes back with the next send completion
    std::memcpy(connection.sendRing.at(at), message.data(), message.size());
    ibv_sge sge{reinterpret_cast<uintptr_t>(connection.sendRing.at(at)), static_cast<uint32_t>(message.size()), connection.sendRing.lkey()};
    ibv_send_wr wr{};
    wr.wr_id = connection.sendSequence++ << 1;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    ibv_send_wr* bad = nullptr;
    if (ibv_post_send(connection.cmId->qp, &wr, &bad) != 0) {
      connection.sendRing.release(consumed);
      closeConnection(connection, std::string("ibv_post_send: ") + std::strerror(errno));
      return false;
    }
    connection.postedSends.push_back(consumed);
    connection.queuedSends.pop_front();
  }
  return true;
}

Connection* ServerCore::find(uint32_t id) {
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second.get();
}

Connection* ServerCore::findByCmId(rdma_cm_id* id) {
  for (auto& entry : connections_) {
    if (entry.second->cmId == id) return entry.second.get();
  }
  return nullptr;
}

void ServerCore::closeConnection(Connection& connection, const std::string& reason, bool peerGone) {
  const uint32_t id = connection.id;
  const bool opened = connection.opened;
  if (opened) stats_.connectionsOpen--;
  destroyResources(connection, peerGone);
  connections_.erase(id);
  if (opened) {
    Event event{Event::Type::kClose, id};
    event.text = reason;
    emit(std::move(event));
  }
}

void ServerCore::destroyResources(Connection& connection, bool peerGone) {
  connection.cqPoll.close();
  connection.handshakeTimer.close();
  bool linger = false;
  if (connection.cmId != nullptr) {
    // Moves the queue pair to the error state and tells the peer (DREQ).
    linger = rdma_disconnect(connection.cmId) == 0 && !peerGone && connection.state != Connection::State::kAccepting;
  }
  // Fencing: once the regions are deregistered, the rkeys this client holds are dead.
  for (ibv_mr* mr : connection.regionMrs) ibv_dereg_mr(mr);
  connection.regionMrs.clear();
  if (connection.cmId != nullptr && connection.cmId->qp != nullptr) rdma_destroy_qp(connection.cmId);
  connection.receives.reset();
  connection.sendRing.reset();
  if (connection.cq != nullptr) ibv_destroy_cq(connection.cq);
  connection.cq = nullptr;
  if (connection.channel != nullptr) ibv_destroy_comp_channel(connection.channel);
  connection.channel = nullptr;
  if (connection.pd != nullptr) ibv_dealloc_pd(connection.pd);
  connection.pd = nullptr;
  if (connection.cmId != nullptr) {
    if (linger) {
      connection.cmId->context = nullptr;
      lingering_.push_back(connection.cmId);
    } else {
      rdma_destroy_id(connection.cmId);
    }
  }
  connection.cmId = nullptr;
}

void ServerCore::OnLingerTimeout(uv_timer_t* handle) {
  auto* core = static_cast<ServerCore*>(handle->data);
  if (core != nullptr) core->finishLinger();
}

void ServerCore::finishLinger() {
  auto hold = std::move(lingerHold_);  // released when this function returns
  for (rdma_cm_id* id : lingering_) rdma_destroy_id(id);
  lingering_.clear();
  if (!closed_) return;  // a serving core keeps its channel
  cmPoll_.close();
  lingerTimer_.close();
  if (eventChannel_ != nullptr) rdma_destroy_event_channel(eventChannel_);
  eventChannel_ = nullptr;
}

void ServerCore::reply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint32_t connectionId = ArgU32(info[0], "connection");
  const uint32_t requestId = ArgU32(info[1], "requestId");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(env, Status::kInvalidArgument, "payload must be a Uint8Array");
  }
  Napi::Uint8Array payload = info[2].As<Napi::Uint8Array>();
  Connection* connection = find(connectionId);
  if (connection == nullptr || connection->state != Connection::State::kOpen) return;  // gone: ignored
  if (payload.ByteLength() > std::min(maxMessageBytes_, connection->peerMaxMessageBytes)) {
    ThrowStatus(env, Status::kInvalidArgument, "reply payload exceeds maxMessageBytes (" +
                                                   std::to_string(std::min(maxMessageBytes_, connection->peerMaxMessageBytes)) + ")");
  }
  if (connection->pendingRequests.erase(requestId) == 0) {
    ThrowStatus(env, Status::kInvalidArgument, "no message awaits a reply with this requestId");
  }
  stats_.bytesOut += payload.ByteLength();
  queueSend(*connection, MessageType::kReply, 0, requestId, payload.Data(), payload.ByteLength());
  flushSends(*connection);
  deliverEvents();
}

void ServerCore::disconnect(uint32_t connectionId) {
  if (Connection* connection = find(connectionId)) closeConnection(*connection, "disconnected by server");
  deliverEvents();
}

Napi::Value ServerCore::stats(Napi::Env env) const {
  Napi::Object out = Napi::Object::New(env);
  out.Set("connectionsOpen", stats_.connectionsOpen);
  out.Set("connectionsAccepted", stats_.connectionsAccepted);
  out.Set("authFailures", stats_.authFailures);
  out.Set("badFrames", stats_.badFrames);
  out.Set("accessErrors", stats_.accessErrors);
  out.Set("reads", stats_.reads);
  out.Set("writes", stats_.writes);
  out.Set("atomics", stats_.atomics);
  out.Set("persists", stats_.persists);
  out.Set("messages", stats_.messages);
  out.Set("bytesIn", stats_.bytesIn);
  out.Set("bytesOut", stats_.bytesOut);
  return out;
}

void ServerCore::shutdown(bool emit) {
  if (closed_) return;
  closed_ = true;
  while (!connections_.empty()) {
    Connection& connection = *connections_.begin()->second;
    if (emit) {
      closeConnection(connection, "server closed");
    } else {
      if (connection.opened) stats_.connectionsOpen--;
      destroyResources(connection, true);
      connections_.erase(connections_.begin());
    }
  }
  if (listenId_ != nullptr) rdma_destroy_id(listenId_);
  listenId_ = nullptr;
  if (emit && !lingering_.empty() && cmPoll_) {
    // Wait (without keeping the process alive) for the peers to acknowledge the disconnects, at most 2 s.
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    uv_timer_t* timer = lingerTimer_.create();
    timer->data = this;
    uv_timer_init(loop, timer);
    uv_timer_start(timer, OnLingerTimeout, 2000, 0);
    lingerTimer_.ref(false);
    cmPoll_.ref(false);
    lingerHold_ = shared_from_this();
  } else {
    finishLinger();
  }
  for (auto& region : regions_) region->unpin();
  regions_.clear();
  if (hookAdded_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
  hookAdded_ = false;
  if (!emit) {
    events_.clear();
    return;
  }
  deliverEvents();  // also drops the references once delivered (or the outer delivery loop does)
}

void ServerCore::deliverEvents() {
  if (delivering_ || onEvent_.IsEmpty()) return;
  delivering_ = true;
  Napi::Env env = env_;
  Napi::HandleScope scope(env);
  Napi::CallbackScope callbackScope(env, asyncContext_);
  while (!events_.empty()) {
    Event event = std::move(events_.front());
    events_.pop_front();
    Napi::Object object = Napi::Object::New(env);
    object.Set("connection", event.connection);
    switch (event.type) {
      case Event::Type::kOpen:
        object.Set("type", "open");
        object.Set("peer", event.text);
        break;
      case Event::Type::kMessage:
        object.Set("type", "message");
        object.Set("requestId", event.requestId);
        object.Set("payload", Napi::Buffer<uint8_t>::Copy(env, event.payload.data(), event.payload.size()));
        break;
      case Event::Type::kImmediate:
        object.Set("type", "immediate");
        object.Set("immediate", event.immediate);
        object.Set("length", event.length);
        break;
      case Event::Type::kClose:
        object.Set("type", "close");
        object.Set("reason", event.text);
        break;
    }
    try {
      onEvent_.Call({object});
    } catch (const Napi::Error& error) {
      ReportUncaught(env, error);
    }
  }
  delivering_ = false;
  if (closed_) {
    // The last events of a closed server are out: let the JS object (and this core) be collected.
    onEvent_.Reset();
    if (!self_.IsEmpty()) self_.Reset();
  }
}

Napi::Object ServerCore::makeObject() {
  Napi::Env env = env_;
  Napi::Object object = Napi::Object::New(env);
  object.Set("port", port_);
  Napi::Array regions = Napi::Array::New(env, regions_.size());
  for (uint32_t i = 0; i < regions_.size(); i++) {
    Napi::Object region = Napi::Object::New(env);
    region.Set("sizeBytes", static_cast<double>(regions_[i]->size()));
    // Keys are per connection (each has its own protection domain): see connection.regions.
    region.Set("rkey", 0);
    regions.Set(i, region);
  }
  object.Set("regions", regions);
  return object;
}

}  // namespace

Napi::Value Serve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowStatus(env, Status::kInvalidArgument, "options must be an object");
  auto core = std::make_shared<ServerCore>(env);
  Napi::Object object = Napi::Object::New(env);
  core->start(info[0].As<Napi::Object>(), object);
  Napi::Object described = core->makeObject();
  object.Set("port", described.Get("port"));
  object.Set("regions", described.Get("regions"));
  object.Set("reply", Napi::Function::New(env, [core](const Napi::CallbackInfo& call) { core->reply(call); }, "reply"));
  object.Set("disconnect", Napi::Function::New(env, [core](const Napi::CallbackInfo& call) {
    core->disconnect(ArgU32(call[0], "connection"));
  }, "disconnect"));
  object.Set("stats", Napi::Function::New(env, [core](const Napi::CallbackInfo& call) { return core->stats(call.Env()); }, "stats"));
  object.Set("close", Napi::Function::New(env, [core](const Napi::CallbackInfo&) { core->shutdown(true); }, "close"));
  return object;
}

}  // namespace dpms::verbs
