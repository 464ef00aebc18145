// The client side of the 'verbs' provider: one RC queue pair per connection, driven from the
// caller's libuv loop (uv_poll on the rdma_cm event channel and on the completion channel; no thread).
//
// Operations become work requests: READ, WRITE, WRITE_WITH_IMM, ATOMIC_CMP_AND_SWP,
// ATOMIC_FETCH_AND_ADD, and SEND for call(). Data goes through a registered staging ring (registered
// once per connection): outgoing bytes are copied in when the request is posted, incoming bytes are
// copied out into a fresh Buffer on completion. Transfers larger than kMaxChunkBytes are split into
// several work requests. Operations called during one turn of the loop are queued and posted together
// as one ibv_post_send chain from a uv_prepare callback; the send queue depth, the staging ring and the
// server's receive credits bound what is in flight, and the rest waits in order in the queue.
// Completions settle promises from the completion channel's uv_poll callback, in posting order (an RC
// send queue completes in order). The first completion with an error status rejects its operation
// (DPMS_REMOTE_ACCESS for a refusal by the remote side: bad rkey, out of bounds, misaligned atomic) and
// breaks the connection: the queue pair is in the error state, every other operation rejects with
// DPMS_DISCONNECTED and the onClose listeners run.
//
// Remote persistence (persist): for regions whose medium the device writes directly (pools flushed by
// CPU cache flushes: PM, or memory itself) it is read-after-write: an RDMA READ of the last bytes of
// the range, posted after the writes. On an RC queue pair the responder executes requests in order, so
// the READ's response leaves only after every earlier WRITE to that queue pair has been placed in the
// target's memory; with the PM-aware platform configuration (ADR with DDIO off for PM, or eADR) placed
// means durable. For regions that need the node's CPU (msync pools, the crash simulator) the client
// SENDs a PERSIST flush request instead: it too executes after the earlier WRITEs, the server runs the
// region's persist() on the range and answers. docs/VERBS.md discusses both.
#include "verbs_client.h"

#include <arpa/inet.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth.h"
#include "verbs_common.h"

namespace dpms::verbs {

namespace {

constexpr uint32_t kSendDepth = 256;
constexpr size_t kReceiveCount = 32;
constexpr size_t kMaxChunkBytes = 1024 * 1024;
constexpr size_t kMinStagingBytes = 8 * 1024 * 1024;
// One WRITE-with-immediate is one work request (the server reports its length), so it is bounded.
constexpr size_t kMaxImmediateWriteBytes = 4 * 1024 * 1024;
// Largest single read or write (the result of a read is one Buffer).
constexpr size_t kMaxTransferBytes = 1024ull * 1024 * 1024;
constexpr size_t kMaxCloseListeners = 1024;

struct Op {
  enum class Kind { kRead, kWrite, kWriteImmediate, kCompareAndSwap, kFetchAndAdd, kPersistRead, kCall, kPersistRequest };
  Kind kind;
  Napi::Promise::Deferred deferred;
  uint64_t remoteAddress = 0;
  uint32_t rkey = 0;
  size_t length = 0;
  std::vector<uint8_t> data;  // bytes to send (write, call, persist request), or the read result
  size_t postedBytes = 0;     // how much of the transfer has work requests
  size_t completedBytes = 0;
  uint32_t immediate = 0;
  uint64_t compareOrAdd = 0;
  uint64_t swap = 0;
  uint32_t requestId = 0;
  bool settled = false;
  bool holdsCredit = false;

  Op(Kind k, Napi::Env env) : kind(k), deferred(Napi::Promise::Deferred::New(env)) {}
  bool noSuchRegion = false;  // the server has no region with that index
  // Refused without posting; fails in order as the device would fail it (see flush()).
  const char* localRefusal() const {
    if (noSuchRegion) return "remote access error: no such region";
    if ((kind == Kind::kCompareAndSwap || kind == Kind::kFetchAndAdd) && (remoteAddress & 7) != 0) {
      return "remote access error: misaligned atomic";
    }
    return nullptr;
  }
  bool needsCredit() const { return kind == Kind::kCall || kind == Kind::kPersistRequest || kind == Kind::kWriteImmediate; }
};

// One posted work request: which op, which part of it, and the staging bytes it holds.
struct Posted {
  uint64_t sequence;
  std::shared_ptr<Op> op;  // null for handshake messages
  size_t chunkOffset;
  size_t chunkBytes;
  size_t stagingOffset;
  size_t stagingConsumed;
};

struct RemoteRegionInfo {
  uint64_t address;
  uint64_t sizeBytes;
  uint32_t rkey;
  PersistMethod method;
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  explicit ClientCore(Napi::Env env) : env_(env), asyncContext_(env, "dpms.verbsConnection") {}
  ~ClientCore() { destroyResources(); }

  Napi::Value start(const Napi::Object& options);

  // The TransportConnection methods.
  Napi::Value read(const Napi::CallbackInfo& info);
  Napi::Value write(const Napi::CallbackInfo& info, bool withImmediate);
  Napi::Value atomic(const Napi::CallbackInfo& info, bool compareAndSwap);
  Napi::Value persist(const Napi::CallbackInfo& info);
  Napi::Value call(const Napi::CallbackInfo& info);
  void onClose(const Napi::CallbackInfo& info);
  void close();

 private:
  enum class State { kResolvingAddress, kResolvingRoute, kConnecting, kHandshake, kOpen, kBroken, kClosed };

  static void OnCmReadable(uv_poll_t* handle, int status, int events);
  static void OnCqReadable(uv_poll_t* handle, int status, int events);
  static void OnPrepare(uv_prepare_t* handle);
  static void OnConnectTimeout(uv_timer_t* handle);
  static void CleanupHook(void* arg);

  void handleCmEvents();
  bool setUpQueuePair();
  void handleCompletions();
  bool handleSendCompletion(const ibv_wc& wc);
  bool handleReceive(const ibv_wc& wc);
  bool handleHandshakeMessage(const Header& header, const uint8_t* payload);
  bool postControl(MessageType type, const uint8_t* payload, size_t bytes);

  // Argument checks shared by the one-sided operations; returns the region.
  const RemoteRegionInfo& regionArg(const Napi::Value& value);
  Napi::Value enqueue(std::shared_ptr<Op> op, const RemoteRegionInfo& region);
  Napi::Value rejected(Status status, const std::string& message);
  void schedule();
  void flush();
  void updateRef();

  void failConnect(Status status, const std::string& message);
  void finishConnect();
  // Break the connection: `culprit` (may be null) rejects with culpritStatus, the rest with DPMS_DISCONNECTED.
  void breakConnection(const std::string& reason, Op* culprit, Status culpritStatus, bool notify);
  void settle(Op& op, Status status, const std::string& message);
  void resolve(Op& op, Napi::Value value);
  // linger: after rdma_disconnect keep the cm_id (and its channel) until the peer's DISCONNECTED,
  // at most 2 s: destroying it at once can cancel the DREQ, and the server would not learn of the close.
  void destroyResources(bool linger = false);
  void finishLinger();
  static void OnLingerTimeout(uv_timer_t* handle);

  Napi::Env env_;
  Napi::AsyncContext asyncContext_;
  State state_ = State::kResolvingAddress;
  std::shared_ptr<ClientCore> keepAlive_;  // owns this core until the connection object exists
  Napi::ObjectReference self_;             // weak; strong while operations are outstanding
  bool selfHeld_ = false;
  Napi::Promise::Deferred connectDeferred_{Napi::Promise::Deferred::New(env_)};
  std::vector<uint8_t> secret_;
  size_t maxMessageBytes_ = kDefaultMaxMessageBytes;
  size_t peerMaxMessageBytes_ = 0;
  uint32_t timeoutMs_ = kDefaultTimeoutMs;
  sockaddr_storage destination_{};
  std::string target_;

  rdma_event_channel* eventChannel_ = nullptr;
  rdma_cm_id* cmId_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* channel_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ReceiveBuffers receives_;
  StagingRing staging_;
  UvHandle<uv_poll_t> cmPoll_;
  UvHandle<uv_poll_t> cqPoll_;
  UvHandle<uv_prepare_t> prepare_;
  UvHandle<uv_timer_t> timer_;
  bool hookAdded_ = false;
  bool lingering_ = false;
  bool peerGone_ = false;

  auth::Nonce serverNonce_{};
  auth::Nonce clientNonce_{};
  bool helloSeen_ = false;
  uint32_t nodeId_ = 0;
  std::vector<RemoteRegionInfo> regions_;
  uint32_t credits_ = 0;
  uint32_t creditsUsed_ = 0;
  uint32_t nextRequestId_ = 1;

  std::deque<std::shared_ptr<Op>> queue_;            // waiting to be posted, in call order
  std::deque<Posted> posted_;                        // posted work requests, in posting order
  std::unordered_map<uint32_t, std::shared_ptr<Op>> awaitingReply_;  // calls and persist requests
  uint64_t sequence_ = 0;
  std::vector<Napi::FunctionReference> closeListeners_;
};

Napi::Value ClientCore::start(const Napi::Object& options) {
  Napi::Env env = env_;
  if (!options.Get("host").IsString()) ThrowStatus(env, Status::kInvalidArgument, "host must be a string");
  const std::string host = options.Get("host").As<Napi::String>().Utf8Value();
  const size_t port = ArgIndex(options.Get("port"), "port");
  if (port < 1 || port > 65535) ThrowStatus(env, Status::kInvalidArgument, "port must be 1 to 65535");
  secret_ = ArgSecret(options.Get("secret"));
  timeoutMs_ = ArgTimeoutMs(options.Get("timeoutMs"), "timeoutMs");
  maxMessageBytes_ = ArgMaxMessageBytes(options.Get("maxMessageBytes"));
  target_ = host + ":" + std::to_string(port);

  Napi::Promise promise = connectDeferred_.Promise();
  std::string why;
  if (!RdmaDeviceAvailable(&why)) {
    connectDeferred_.Reject(MakeError(env, Status::kUnsupported, why).Value());
    state_ = State::kClosed;
    return promise;
  }
  if (!ResolveHost(host, static_cast<uint16_t>(port), &destination_, &why)) {
    connectDeferred_.Reject(MakeError(env, Status::kUnreachable, why).Value());
    state_ = State::kClosed;
    return promise;
  }
  eventChannel_ = rdma_create_event_channel();
  if (eventChannel_ == nullptr) {
    const Status status = (errno == ENODEV || errno == ENOENT) ? Status::kUnsupported : Status::kIo;
    connectDeferred_.Reject(MakeError(env, status, std::string("no RDMA connection manager (rdma_create_event_channel: ") + std::strerror(errno) + "; is rdma_ucm loaded?)").Value());
    state_ = State::kClosed;
    return promise;
  }
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  keepAlive_ = shared_from_this();
  napi_add_env_cleanup_hook(env, CleanupHook, this);
  hookAdded_ = true;
  uv_poll_t* poll = cmPoll_.create();
  poll->data = this;
  uv_timer_t* timer = timer_.create();
  timer->data = this;
  if (!SetNonBlocking(eventChannel_->fd) || uv_poll_init(loop, poll, eventChannel_->fd) != 0 ||
      uv_poll_start(poll, UV_READABLE, OnCmReadable) != 0 || uv_timer_init(loop, timer) != 0 ||
      uv_timer_start(timer, OnConnectTimeout, timeoutMs_, 0) != 0) {
    failConnect(Status::kIo, "cannot poll the rdma_cm channel");
    return promise;
  }
  if (rdma_create_id(eventChannel_, &cmId_, this, RDMA_PS_TCP) != 0) {
    failConnect(Status::kIo, std::string("rdma_create_id: ") + std::strerror(errno));
    return promise;
  }
  if (rdma_resolve_addr(cmId_, nullptr, reinterpret_cast<sockaddr*>(&destination_), static_cast<int>(timeoutMs_)) != 0) {
    failConnect(Status::kUnreachable, "cannot resolve " + target_ + " to an RDMA device: " + std::strerror(errno));
    return promise;
  }
  return promise;
}

void ClientCore::CleanupHook(void* arg) {
  auto* core = static_cast<ClientCore*>(arg);
  core->hookAdded_ = false;
  core->state_ = State::kClosed;
  core->destroyResources();
  core->keepAlive_.reset();  // the environment is going away: nothing will settle
}

void ClientCore::OnConnectTimeout(uv_timer_t* handle) {
  auto* core = static_cast<ClientCore*>(handle->data);
  if (core == nullptr) return;
  auto hold = core->shared_from_this();
  core->failConnect(Status::kTimeout, "connecting to " + core->target_ + " took longer than " + std::to_string(core->timeoutMs_) + " ms");
}

void ClientCore::OnCmReadable(uv_poll_t* handle, int, int) {
  auto* core = static_cast<ClientCore*>(handle->data);
  if (core == nullptr) return;
  auto hold = core->shared_from_this();
  core->handleCmEvents();
}

void ClientCore::handleCmEvents() {
  while (eventChannel_ != nullptr) {
    rdma_cm_event* event = nullptr;
    if (rdma_get_cm_event(eventChannel_, &event) != 0) return;
    const rdma_cm_event_type type = event->event;
    const int status = event->status;
    rdma_ack_cm_event(event);
    switch (type) {
      case RDMA_CM_EVENT_ADDR_RESOLVED:
        state_ = State::kResolvingRoute;
        if (rdma_resolve_route(cmId_, static_cast<int>(timeoutMs_)) != 0) {
          failConnect(Status::kUnreachable, std::string("rdma_resolve_route: ") + std::strerror(errno));
        }
        break;
      case RDMA_CM_EVENT_ROUTE_RESOLVED:
        state_ = State::kConnecting;
        if (!setUpQueuePair()) failConnect(Status::kIo, std::string("cannot set up the queue pair: ") + std::strerror(errno));
        break;
      case RDMA_CM_EVENT_ESTABLISHED:
        if (state_ == State::kConnecting) state_ = State::kHandshake;
        break;
      case RDMA_CM_EVENT_ADDR_ERROR:
      case RDMA_CM_EVENT_ROUTE_ERROR:
      case RDMA_CM_EVENT_UNREACHABLE:
      case RDMA_CM_EVENT_REJECTED:
      case RDMA_CM_EVENT_CONNECT_ERROR:
        failConnect(Status::kUnreachable, "cannot connect to " + target_ + ": " + rdma_event_str(type) + " (status " + std::to_string(status) + ")");
        break;
      case RDMA_CM_EVENT_DISCONNECTED:
      case RDMA_CM_EVENT_DEVICE_REMOVAL:
      case RDMA_CM_EVENT_TIMEWAIT_EXIT:
        if (state_ == State::kOpen) {
          // Completions already delivered (an error status that names the culprit) go first.
          handleCompletions();
          if (state_ == State::kOpen) {
            Napi::HandleScope scope(env_);
            Napi::CallbackScope callbackScope(env_, asyncContext_);
            peerGone_ = true;
            breakConnection("disconnected by the server", nullptr, Status::kDisconnected, true);
          }
          if (lingering_) finishLinger();  // broken by a completion just now: the peer has already gone
        } else if (lingering_) {
          finishLinger();
        } else if (state_ != State::kBroken && state_ != State::kClosed) {
          failConnect(Status::kAuth, "the server at " + target_ + " closed the connection during the handshake");
        }
        return;
      default:
        break;
    }
  }
}

bool ClientCore::setUpQueuePair() {
  ibv_device_attr device{};
  if (ibv_query_device(cmId_->verbs, &device) != 0) return false;
  pd_ = ibv_alloc_pd(cmId_->verbs);
  if (pd_ == nullptr) return false;
  channel_ = ibv_create_comp_channel(cmId_->verbs);
  if (channel_ == nullptr || !SetNonBlocking(channel_->fd)) return false;
  cq_ = ibv_create_cq(cmId_->verbs, static_cast<int>(kSendDepth + kReceiveCount), this, channel_, 0);
  if (cq_ == nullptr || ibv_req_notify_cq(cq_, 0) != 0) return false;
  ibv_qp_init_attr attributes{};
  attributes.send_cq = cq_;
  attributes.recv_cq = cq_;
  attributes.qp_type = IBV_QPT_RC;
  attributes.cap.max_send_wr = kSendDepth;
  attributes.cap.max_recv_wr = kReceiveCount;
  attributes.cap.max_send_sge = 1;
  attributes.cap.max_recv_sge = 1;
  if (rdma_create_qp(cmId_, pd_, &attributes) != 0) return false;
  const size_t capacity = std::max(maxMessageBytes_, kMinPayloadCapacity) + kHeaderBytes;
  if (!receives_.init(pd_, kReceiveCount, capacity) || !receives_.postAll(cmId_->qp)) return false;
  if (!staging_.init(pd_, std::max(kMinStagingBytes, 2 * capacity), IBV_ACCESS_LOCAL_WRITE)) return false;

  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env_, &loop);
  uv_poll_t* poll = cqPoll_.create();
  poll->data = this;
  if (uv_poll_init(loop, poll, channel_->fd) != 0 || uv_poll_start(poll, UV_READABLE, OnCqReadable) != 0) return false;
  uv_prepare_t* prepare = prepare_.create();
  prepare->data = this;
  if (uv_prepare_init(loop, prepare) != 0) return false;
  prepare_.ref(false);

  rdma_conn_param param{};
  param.initiator_depth = static_cast<uint8_t>(std::min(device.max_qp_init_rd_atom, 16));
  param.responder_resources = static_cast<uint8_t>(std::min(device.max_qp_rd_atom, 16));
  param.retry_count = 7;
  param.rnr_retry_count = 7;  // "infinite": a server briefly out of receive buffers delays, never breaks
  return rdma_connect(cmId_, &param) == 0;
}

void ClientCore::OnCqReadable(uv_poll_t* handle, int, int) {
  auto* core = static_cast<ClientCore*>(handle->data);
  if (core == nullptr) return;
  auto hold = core->shared_from_this();
  core->handleCompletions();
}

void ClientCore::handleCompletions() {
  if (cq_ == nullptr) return;
  Napi::HandleScope scope(env_);
  Napi::CallbackScope callbackScope(env_, asyncContext_);
  ibv_cq* eventCq = nullptr;
  void* context = nullptr;
  unsigned acknowledged = 0;
  while (ibv_get_cq_event(channel_, &eventCq, &context) == 0) acknowledged++;
  if (acknowledged > 0) ibv_ack_cq_events(cq_, acknowledged);
  ibv_req_notify_cq(cq_, 0);
  ibv_wc completions[32];
  while (cq_ != nullptr) {
    const int count = ibv_poll_cq(cq_, 32, completions);
    if (count <= 0) break;
    for (int i = 0; i < count && cq_ != nullptr; i++) {
      const bool ok = IsReceiveWrId(completions[i].wr_id) ? handleReceive(completions[i]) : handleSendCompletion(completions[i]);
      if (!ok) break;
    }
  }
  if (state_ == State::kOpen) flush();
  updateRef();
}

bool ClientCore::handleSendCompletion(const ibv_wc& wc) {
  if (posted_.empty() || posted_.front().sequence != (wc.wr_id >> 1)) {
    breakConnection("send completions out of order", nullptr, Status::kDisconnected, true);
    return false;
  }
  Posted done = std::move(posted_.front());
  posted_.pop_front();
  if (wc.status != IBV_WC_SUCCESS) {
    const Status status = CompletionStatus(wc.status);
    const std::string reason = std::string(status == Status::kRemoteAccess ? "remote access error: " : "work request failed: ") + ibv_wc_status_str(wc.status);
    if (state_ != State::kOpen) {
      failConnect(Status::kUnreachable, "handshake with " + target_ + " failed: " + ibv_wc_status_str(wc.status));
    } else {
      breakConnection(reason, done.op.get(), status, true);
    }
    return false;
  }
  const uint8_t* staged = staging_.at(done.stagingOffset);
  if (done.op != nullptr && !done.op->settled) {
    Op& op = *done.op;
    switch (op.kind) {
      case Op::Kind::kRead:
        std::memcpy(op.data.data() + done.chunkOffset, staged, done.chunkBytes);
        break;
      case Op::Kind::kCompareAndSwap:
      case Op::Kind::kFetchAndAdd:
        op.compareOrAdd = Get<uint64_t>(staged);  // the value found, in host order
        break;
      default:
        break;
    }
    op.completedBytes += done.chunkBytes;
    switch (op.kind) {
      case Op::Kind::kRead:
        if (op.completedBytes == op.length) {
          resolve(op, Napi::Buffer<uint8_t>::Copy(env_, op.data.data(), op.data.size()));
        }
        break;
      case Op::Kind::kWrite:
        if (op.completedBytes == op.length) resolve(op, env_.Undefined());
        break;
      case Op::Kind::kWriteImmediate:
        if (op.holdsCredit) creditsUsed_--;
        op.holdsCredit = false;
        resolve(op, env_.Undefined());
        break;
      case Op::Kind::kCompareAndSwap:
      case Op::Kind::kFetchAndAdd:
        resolve(op, Napi::BigInt::New(env_, op.compareOrAdd));
        break;
      case Op::Kind::kPersistRead:
        resolve(op, env_.Undefined());
        break;
      case Op::Kind::kCall:
      case Op::Kind::kPersistRequest:
        break;  // settled by the reply
    }
  }
  staging_.release(done.stagingConsumed);
  return true;
}

bool ClientCore::handleReceive(const ibv_wc& wc) {
  const size_t index = ReceiveIndex(wc.wr_id);
  if (wc.status != IBV_WC_SUCCESS || index >= receives_.count() || wc.opcode != IBV_WC_RECV) {
    if (state_ == State::kOpen) {
      breakConnection(std::string("receive failed: ") + ibv_wc_status_str(wc.status), nullptr, Status::kDisconnected, true);
    } else {
      failConnect(Status::kAuth, "handshake with " + target_ + " failed: " + ibv_wc_status_str(wc.status));
    }
    return false;
  }
  const uint8_t* data = receives_.buffer(index);
  Header header;
  if (!ReadHeader(data, wc.byte_len, &header)) {
    if (state_ == State::kOpen) {
      breakConnection("malformed message from the server", nullptr, Status::kDisconnected, true);
    } else {
      failConnect(Status::kAuth, "malformed handshake message from " + target_);
    }
    return false;
  }
  const uint8_t* payload = data + kHeaderBytes;
  if (state_ != State::kOpen) {
    if (!handleHandshakeMessage(header, payload)) return false;
  } else {
    const auto type = static_cast<MessageType>(header.type);
    auto it = awaitingReply_.find(header.requestId);
    const bool expected = it != awaitingReply_.end() &&
                          ((type == MessageType::kReply && it->second->kind == Op::Kind::kCall) ||
                           (type == MessageType::kPersistDone && it->second->kind == Op::Kind::kPersistRequest));
    if (!expected) {
      breakConnection("unexpected message from the server", nullptr, Status::kDisconnected, true);
      return false;
    }
    std::shared_ptr<Op> op = it->second;
    awaitingReply_.erase(it);
    if (op->holdsCredit) creditsUsed_--;
    op->holdsCredit = false;
    if (type == MessageType::kReply) {
      resolve(*op, Napi::Buffer<uint8_t>::Copy(env_, payload, header.payloadBytes));
    } else if (header.status == 0) {
      resolve(*op, env_.Undefined());
    } else if (header.status == 2) {
      settle(*op, Status::kIo, "the server could not persist the range");
    } else {
      breakConnection("remote access error (persist)", op.get(), Status::kRemoteAccess, true);
      return false;
    }
  }
  if (cq_ != nullptr && !receives_.post(cmId_->qp, index)) {
    breakConnection("cannot repost a receive buffer", nullptr, Status::kDisconnected, true);
    return false;
  }
  return true;
}

bool ClientCore::handleHandshakeMessage(const Header& header, const uint8_t* payload) {
  const auto type = static_cast<MessageType>(header.type);
  if (type == MessageType::kHello && !helloSeen_ && header.payloadBytes == auth::kNonceBytes) {
    helloSeen_ = true;
    std::memcpy(serverNonce_.data(), payload, serverNonce_.size());
    if (!auth::NewNonce(clientNonce_)) {
      failConnect(Status::kIo, "no randomness for the handshake nonce");
      return false;
    }
    const auth::Mac proof = auth::ClientProof(secret_, serverNonce_, clientNonce_);
    std::vector<uint8_t> message(clientNonce_.begin(), clientNonce_.end());
    message.insert(message.end(), proof.begin(), proof.end());
    Put<uint32_t>(message, static_cast<uint32_t>(maxMessageBytes_));
    Put<uint32_t>(message, 0);
    return postControl(MessageType::kAuth, message.data(), message.size());
  }
  if (type == MessageType::kWelcome && helloSeen_ && header.payloadBytes >= kWelcomeFixedBytes) {
    const auth::Mac expected = auth::ServerProof(secret_, clientNonce_, serverNonce_);
    if (!auth::ProofMatches(expected, payload)) {
      failConnect(Status::kAuth, "the server at " + target_ + " did not prove knowledge of the secret");
      return false;
    }
    nodeId_ = Get<uint32_t>(payload + 32);
    peerMaxMessageBytes_ = Get<uint32_t>(payload + 36);
    credits_ = std::min<uint32_t>(Get<uint32_t>(payload + 40), kReceiveCount);
    const uint32_t count = Get<uint32_t>(payload + 44);
    if (count > kMaxRegions || header.payloadBytes != kWelcomeFixedBytes + count * kWelcomeRegionBytes || credits_ == 0 ||
        peerMaxMessageBytes_ == 0) {
      failConnect(Status::kProtocol, "malformed WELCOME from " + target_);
      return false;
    }
    for (uint32_t i = 0; i < count; i++) {
      const uint8_t* at = payload + kWelcomeFixedBytes + i * kWelcomeRegionBytes;
      const uint32_t method = Get<uint32_t>(at + 20);
      regions_.push_back({Get<uint64_t>(at), Get<uint64_t>(at + 8), Get<uint32_t>(at + 16),
                          method == 0 ? PersistMethod::kReadAfterWrite : PersistMethod::kFlushRequest});
    }
    finishConnect();
    return state_ == State::kOpen;
  }
  failConnect(Status::kAuth, "unexpected handshake message from " + target_);
  return false;
}

bool ClientCore::postControl(MessageType type, const uint8_t* payload, size_t bytes) {
  size_t consumed = 0;
  const size_t at = staging_.allocate(kHeaderBytes + bytes, &consumed);
  if (at == SIZE_MAX) {
    failConnect(Status::kIo, "no staging room for a handshake message");
    return false;
  }
  WriteHeader(staging_.at(at), type, 0, 0, static_cast<uint32_t>(bytes));
  std::memcpy(staging_.at(at) + kHeaderBytes, payload, bytes);
  ibv_sge sge{reinterpret_cast<uintptr_t>(staging_.at(at)), static_cast<uint32_t>(kHeaderBytes + bytes), staging_.lkey()};
  ibv_send_wr wr{};
  wr.wr_id = sequence_ << 1;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  ibv_send_wr* bad = nullptr;
  if (ibv_post_send(cmId_->qp, &wr, &bad) != 0) {
    staging_.release(consumed);
    failConnect(Status::kIo, std::string("ibv_post_send: ") + std::strerror(errno));
    return false;
  }
  posted_.push_back({sequence_++, nullptr, 0, 0, at, consumed});
  return true;
}

void ClientCore::failConnect(Status status, const std::string& message) {
  if (state_ == State::kOpen || state_ == State::kBroken || state_ == State::kClosed) return;
  state_ = State::kClosed;
  auto hold = std::move(keepAlive_);
  destroyResources();
  Napi::HandleScope scope(env_);
  Napi::CallbackScope callbackScope(env_, asyncContext_);
  connectDeferred_.Reject(MakeError(env_, status, message).Value());
}

void ClientCore::finishConnect() {
  Napi::Env env = env_;
  state_ = State::kOpen;
  timer_.close();
  cmPoll_.ref(false);  // a later DISCONNECTED is news, not a reason to keep the process alive
  auto core = shared_from_this();
  Napi::Object object = Napi::Object::New(env);
  object.Set("nodeId", nodeId_);
  Napi::Array regions = Napi::Array::New(env, regions_.size());
  for (uint32_t i = 0; i < regions_.size(); i++) {
    Napi::Object region = Napi::Object::New(env);
    region.Set("sizeBytes", static_cast<double>(regions_[i].sizeBytes));
    region.Set("rkey", regions_[i].rkey);
    regions.Set(i, region);
  }
  object.Set("regions", regions);
  object.Set("read", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->read(info); }, "read"));
  object.Set("write", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->write(info, false); }, "write"));
  object.Set("writeWithImmediate", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->write(info, true); }, "writeWithImmediate"));
  object.Set("compareAndSwap", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->atomic(info, true); }, "compareAndSwap"));
  object.Set("fetchAndAdd", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->atomic(info, false); }, "fetchAndAdd"));
  object.Set("persist", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->persist(info); }, "persist"));
  object.Set("call", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { return core->call(info); }, "call"));
  object.Set("onClose", Napi::Function::New(env, [core](const Napi::CallbackInfo& info) { core->onClose(info); }, "onClose"));
  object.Set("close", Napi::Function::New(env, [core](const Napi::CallbackInfo&) { core->close(); }, "close"));
  self_ = Napi::Weak(object);
  keepAlive_.reset();  // the functions above own the core from now on
  updateRef();
  connectDeferred_.Resolve(object);
}

const RemoteRegionInfo& ClientCore::regionArg(const Napi::Value& value) {
  // An index the server does not have is not checked here (the node refuses remote targets): it
  // maps to an empty region that enqueue() turns into an in-order DPMS_REMOTE_ACCESS.
  static const RemoteRegionInfo kNoRegion{0, 0, 0, PersistMethod::kReadAfterWrite};
  const size_t index = ArgIndex(value, "region");
  return index < regions_.size() ? regions_[index] : kNoRegion;
}

Napi::Value ClientCore::rejected(Status status, const std::string& message) {
  auto deferred = Napi::Promise::Deferred::New(env_);
  deferred.Reject(MakeError(env_, status, message).Value());
  return deferred.Promise();
}

Napi::Value ClientCore::read(const Napi::CallbackInfo& info) {
  const RemoteRegionInfo& region = regionArg(info[0]);
  const size_t offset = ArgIndex(info[1], "offset");
  const size_t length = ArgIndex(info[2], "length");
  const uint32_t rkey = ArgU32(info[3], "rkey");
  if (length > kMaxTransferBytes) ThrowStatus(env_, Status::kInvalidArgument, "length must be at most 1 GiB");
  auto op = std::make_shared<Op>(Op::Kind::kRead, env_);
  op->remoteAddress = region.address + offset;
  op->rkey = rkey;
  op->length = length;
  op->data.resize(length);
  return enqueue(std::move(op), region);
}

Napi::Value ClientCore::write(const Napi::CallbackInfo& info, bool withImmediate) {
  const RemoteRegionInfo& region = regionArg(info[0]);
  const size_t offset = ArgIndex(info[1], "offset");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(env_, Status::kInvalidArgument, "data must be a Uint8Array");
  }
  Napi::Uint8Array data = info[2].As<Napi::Uint8Array>();
  uint32_t immediate = 0;
  if (withImmediate) {
    immediate = ArgU32(info[3], "immediate");
    if (data.ByteLength() > kMaxImmediateWriteBytes) ThrowStatus(env_, Status::kInvalidArgument, "a write with immediate carries at most 4 MiB");
  } else if (data.ByteLength() > kMaxTransferBytes) {
    ThrowStatus(env_, Status::kInvalidArgument, "data must be at most 1 GiB");
  }
  const uint32_t rkey = ArgU32(info[withImmediate ? 4 : 3], "rkey");
  auto op = std::make_shared<Op>(withImmediate ? Op::Kind::kWriteImmediate : Op::Kind::kWrite, env_);
  op->remoteAddress = region.address + offset;
  op->rkey = rkey;
  op->length = data.ByteLength();
  op->immediate = immediate;
  op->data.assign(data.Data(), data.Data() + data.ByteLength());  // the caller may reuse its buffer at once
  return enqueue(std::move(op), region);
}

Napi::Value ClientCore::atomic(const Napi::CallbackInfo& info, bool compareAndSwap) {
  const RemoteRegionInfo& region = regionArg(info[0]);
  const size_t offset = ArgIndex(info[1], "offset");
  auto op = std::make_shared<Op>(compareAndSwap ? Op::Kind::kCompareAndSwap : Op::Kind::kFetchAndAdd, env_);
  if (compareAndSwap) {
    op->compareOrAdd = ArgU64(info[2], "expected", false);
    op->swap = ArgU64(info[3], "desired", false);
  } else {
    op->compareOrAdd = ArgU64(info[2], "delta", true);
  }
  op->rkey = ArgU32(info[compareAndSwap ? 4 : 3], "rkey");
  op->remoteAddress = region.address + offset;
  op->length = 8;
  return enqueue(std::move(op), region);
}

Napi::Value ClientCore::persist(const Napi::CallbackInfo& info) {
  const size_t index = ArgIndex(info[0], "region");
  const RemoteRegionInfo& region = regionArg(info[0]);
  const bool flushRequest = index < regions_.size() && region.method == PersistMethod::kFlushRequest;
  const size_t offset = ArgIndex(info[1], "offset");
  const size_t length = ArgIndex(info[2], "length");
  const uint32_t rkey = ArgU32(info[3], "rkey");
  std::shared_ptr<Op> op;
  if (!flushRequest) {
    // READ the last (up to 8) bytes of the range: ordered after every earlier WRITE, and it checks
    // that the end of the range lies inside the region.
    op = std::make_shared<Op>(Op::Kind::kPersistRead, env_);
    op->length = std::min<size_t>(length, 8);
    op->remoteAddress = region.address + offset + length - op->length;
  } else {
    op = std::make_shared<Op>(Op::Kind::kPersistRequest, env_);
    Put<uint32_t>(op->data, static_cast<uint32_t>(index));
    Put<uint32_t>(op->data, rkey);
    Put<uint64_t>(op->data, offset);
    Put<uint64_t>(op->data, length);
  }
  op->rkey = rkey;
  return enqueue(std::move(op), region);
}

Napi::Value ClientCore::call(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowStatus(env_, Status::kInvalidArgument, "payload must be a Uint8Array");
  }
  Napi::Uint8Array payload = info[0].As<Napi::Uint8Array>();
  const size_t limit = std::min(maxMessageBytes_, peerMaxMessageBytes_);
  if (payload.ByteLength() > limit) {
    ThrowStatus(env_, Status::kInvalidArgument, "payload exceeds maxMessageBytes (" + std::to_string(limit) + ")");
  }
  auto op = std::make_shared<Op>(Op::Kind::kCall, env_);
  op->data.assign(payload.Data(), payload.Data() + payload.ByteLength());
  static const RemoteRegionInfo kNotRemote{1, 1, 0, PersistMethod::kReadAfterWrite};
  return enqueue(std::move(op), kNotRemote);
}

Napi::Value ClientCore::enqueue(std::shared_ptr<Op> op, const RemoteRegionInfo& region) {
  if (state_ != State::kOpen) return rejected(Status::kDisconnected, "the connection to " + target_ + " is closed");
  if (region.sizeBytes == 0 && region.address == 0) op->noSuchRegion = true;
  Napi::Promise promise = op->deferred.Promise();
  const bool empty = !op->noSuchRegion && op->length == 0 && (op->kind == Op::Kind::kRead || op->kind == Op::Kind::kWrite || op->kind == Op::Kind::kPersistRead);
  if (empty) {
    // Nothing to transfer: no work request, nothing the remote side could refuse.
    op->settled = true;
    if (op->kind == Op::Kind::kRead) {
      op->deferred.Resolve(Napi::Buffer<uint8_t>::New(env_, 0));
    } else {
      op->deferred.Resolve(env_.Undefined());
    }
    return promise;
  }
  queue_.push_back(std::move(op));
  schedule();
  return promise;
}

void ClientCore::schedule() {
  if (prepare_) uv_prepare_start(prepare_.get(), OnPrepare);
  updateRef();
}

void ClientCore::OnPrepare(uv_prepare_t* handle) {
  auto* core = static_cast<ClientCore*>(handle->data);
  if (core == nullptr) return;
  auto hold = core->shared_from_this();
  uv_prepare_stop(handle);
  Napi::HandleScope scope(core->env_);
  Napi::CallbackScope callbackScope(core->env_, core->asyncContext_);
  core->flush();
}

void ClientCore::flush() {
  if (state_ != State::kOpen) return;
  // Build one chain of work requests from the head of the queue, in order, until a bound is hit.
  std::vector<ibv_send_wr> wrs;
  std::vector<ibv_sge> sges;
  wrs.reserve(64);
  sges.reserve(64);
  const size_t room = kSendDepth - posted_.size();
  const size_t firstNew = posted_.size();
  while (!queue_.empty() && wrs.size() < room) {
    Op& op = *queue_.front();
    if (const char* refusal = op.localRefusal()) {
      // Devices refuse atomics off 8-byte alignment (rxe already at posting), and a region index the
      // server does not have has no address or key. Like a refusal by the remote side, these fail in
      // order: once everything posted before them has completed, breaking the connection.
      if (posted_.empty() && wrs.empty()) {
        std::shared_ptr<Op> culprit = queue_.front();
        breakConnection(refusal, culprit.get(), Status::kRemoteAccess, true);
        return;
      }
      break;
    }
    if (op.needsCredit() && !op.holdsCredit) {
      if (creditsUsed_ >= credits_) break;
    }
    size_t chunk = 0;
    size_t stageBytes = 0;
    switch (op.kind) {
      case Op::Kind::kRead:
      case Op::Kind::kWrite:
        chunk = std::min(kMaxChunkBytes, op.length - op.postedBytes);
        stageBytes = chunk;
        break;
      case Op::Kind::kWriteImmediate:
      case Op::Kind::kPersistRead:
        chunk = op.length;
        stageBytes = std::max<size_t>(chunk, 1);
        break;
      case Op::Kind::kCompareAndSwap:
      case Op::Kind::kFetchAndAdd:
        chunk = 8;
        stageBytes = 8;
        break;
      case Op::Kind::kCall:
      case Op::Kind::kPersistRequest:
        chunk = 0;
        stageBytes = kHeaderBytes + op.data.size();
        break;
    }
    size_t consumed = 0;
    const size_t at = staging_.allocate(stageBytes, &consumed);
    if (at == SIZE_MAX) break;  // room comes back with completions
    uint8_t* staged = staging_.at(at);
    ibv_send_wr wr{};
    wr.wr_id = sequence_ << 1;
    wr.send_flags = IBV_SEND_SIGNALED;
    ibv_sge sge{reinterpret_cast<uintptr_t>(staged), static_cast<uint32_t>(chunk), staging_.lkey()};
    const uint64_t remote = op.remoteAddress + op.postedBytes;
    switch (op.kind) {
      case Op::Kind::kRead:
      case Op::Kind::kPersistRead:
        wr.opcode = IBV_WR_RDMA_READ;
        wr.wr.rdma.remote_addr = remote;
        wr.wr.rdma.rkey = op.rkey;
        break;
      case Op::Kind::kWrite:
      case Op::Kind::kWriteImmediate:
        std::memcpy(staged, op.data.data() + op.postedBytes, chunk);
        wr.opcode = op.kind == Op::Kind::kWrite ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_WRITE_WITH_IMM;
        wr.imm_data = htonl(op.immediate);
        wr.wr.rdma.remote_addr = remote;
        wr.wr.rdma.rkey = op.rkey;
        break;
      case Op::Kind::kCompareAndSwap:
      case Op::Kind::kFetchAndAdd:
        wr.opcode = op.kind == Op::Kind::kCompareAndSwap ? IBV_WR_ATOMIC_CMP_AND_SWP : IBV_WR_ATOMIC_FETCH_AND_ADD;
        wr.wr.atomic.remote_addr = op.remoteAddress;
        wr.wr.atomic.rkey = op.rkey;
        wr.wr.atomic.compare_add = op.compareOrAdd;
        wr.wr.atomic.swap = op.swap;
        break;
      case Op::Kind::kCall:
      case Op::Kind::kPersistRequest:
        op.requestId = nextRequestId_++;
        WriteHeader(staged, op.kind == Op::Kind::kCall ? MessageType::kCall : MessageType::kPersist, 0, op.requestId,
                    static_cast<uint32_t>(op.data.size()));
        std::memcpy(staged + kHeaderBytes, op.data.data(), op.data.size());
        sge.length = static_cast<uint32_t>(stageBytes);
        wr.opcode = IBV_WR_SEND;
        break;
    }
    sges.push_back(sge);
    wrs.push_back(wr);
    std::shared_ptr<Op> shared = queue_.front();
    posted_.push_back({sequence_++, shared, op.postedBytes, chunk, at, consumed});
    op.postedBytes += chunk;
    if (op.needsCredit() && !op.holdsCredit) {
      op.holdsCredit = true;
      creditsUsed_++;
    }
    if (op.kind == Op::Kind::kCall || op.kind == Op::Kind::kPersistRequest) awaitingReply_[op.requestId] = shared;
    const bool fullyPosted = (op.kind != Op::Kind::kRead && op.kind != Op::Kind::kWrite) || op.postedBytes == op.length;
    if (fullyPosted) queue_.pop_front();
  }
  if (wrs.empty()) return;
  for (size_t i = 0; i < wrs.size(); i++) {
    wrs[i].sg_list = &sges[i];
    wrs[i].num_sge = sges[i].length == 0 ? 0 : 1;
    wrs[i].next = i + 1 < wrs.size() ? &wrs[i + 1] : nullptr;
  }
  ibv_send_wr* bad = nullptr;
  if (ibv_post_send(cmId_->qp, wrs.data(), &bad) != 0) {
    // Only a broken queue pair refuses a well-formed chain within its depth.
    (void)firstNew;
    breakConnection(std::string("ibv_post_send: ") + std::strerror(errno), nullptr, Status::kDisconnected, true);
    return;
  }
  updateRef();
}

void ClientCore::updateRef() {
  const bool busy = state_ == State::kOpen && (!queue_.empty() || !posted_.empty() || !awaitingReply_.empty());
  cqPoll_.ref(busy || (state_ != State::kOpen && state_ != State::kBroken && state_ != State::kClosed));
  if (state_ == State::kOpen && !self_.IsEmpty() && busy != selfHeld_) {
    // Outstanding promises keep the connection object (and so this core) alive.
    if (busy) {
      self_.Ref();
    } else {
      self_.Unref();
    }
    selfHeld_ = busy;
  }
}

void ClientCore::settle(Op& op, Status status, const std::string& message) {
  if (op.settled) return;
  op.settled = true;
  op.deferred.Reject(MakeError(env_, status, message).Value());
}

void ClientCore::resolve(Op& op, Napi::Value value) {
  if (op.settled) return;
  op.settled = true;
  op.deferred.Resolve(value);
}

void ClientCore::breakConnection(const std::string& reason, Op* culprit, Status culpritStatus, bool notify) {
  if (state_ != State::kOpen) return;
  state_ = notify ? State::kBroken : State::kClosed;
  auto hold = shared_from_this();
  // Gather every unsettled operation before the resources (and the posted list) go away.
  std::vector<std::shared_ptr<Op>> pending;
  for (auto& p : posted_) {
    if (p.op != nullptr) pending.push_back(p.op);
  }
  for (auto& op : queue_) pending.push_back(op);
  for (auto& entry : awaitingReply_) pending.push_back(entry.second);
  posted_.clear();
  queue_.clear();
  awaitingReply_.clear();
  destroyResources(/*linger=*/!peerGone_);
  if (culprit != nullptr) settle(*culprit, culpritStatus, reason + " (" + target_ + ")");
  for (auto& op : pending) settle(*op, Status::kDisconnected, "connection to " + target_ + " broken: " + reason);
  if (selfHeld_ && !self_.IsEmpty()) self_.Unref();
  selfHeld_ = false;
  if (notify) {
    std::vector<Napi::FunctionReference> listeners = std::move(closeListeners_);
    closeListeners_.clear();
    for (auto& listener : listeners) {
      try {
        listener.Call({Napi::String::New(env_, reason)});
      } catch (const Napi::Error& error) {
        ReportUncaught(env_, error);
      }
    }
  }
  closeListeners_.clear();
}

void ClientCore::onClose(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) ThrowStatus(env_, Status::kInvalidArgument, "listener must be a function");
  if (state_ != State::kOpen) return;  // already ended: it would never be called
  if (closeListeners_.size() >= kMaxCloseListeners) ThrowStatus(env_, Status::kInvalidArgument, "too many close listeners");
  closeListeners_.push_back(Napi::Persistent(info[0].As<Napi::Function>()));
}

void ClientCore::close() {
  if (state_ != State::kOpen) return;
  breakConnection("closed", nullptr, Status::kDisconnected, false);
}

void ClientCore::destroyResources(bool linger) {
  cqPoll_.close();
  prepare_.close();
  timer_.close();
  if (cmId_ != nullptr) {
    linger = rdma_disconnect(cmId_) == 0 && linger && cmPoll_;
    if (cmId_->qp != nullptr) rdma_destroy_qp(cmId_);
  } else {
    linger = false;
  }
  receives_.reset();
  staging_.reset();
  if (cq_ != nullptr) ibv_destroy_cq(cq_);
  cq_ = nullptr;
  if (channel_ != nullptr) ibv_destroy_comp_channel(channel_);
  channel_ = nullptr;
  if (pd_ != nullptr) ibv_dealloc_pd(pd_);
  pd_ = nullptr;
  if (linger) {
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env_, &loop);
    uv_timer_t* timer = timer_.create();
    timer->data = this;
    uv_timer_init(loop, timer);
    uv_timer_start(timer, OnLingerTimeout, 2000, 0);
    timer_.ref(false);
    cmPoll_.ref(false);
    lingering_ = true;
    keepAlive_ = shared_from_this();
    return;
  }
  finishLinger();
}

void ClientCore::OnLingerTimeout(uv_timer_t* handle) {
  auto* core = static_cast<ClientCore*>(handle->data);
  if (core != nullptr) core->finishLinger();
}

void ClientCore::finishLinger() {
  auto hold = std::move(keepAlive_);  // released when this function returns
  lingering_ = false;
  cmPoll_.close();
  timer_.close();
  if (cmId_ != nullptr) rdma_destroy_id(cmId_);
  cmId_ = nullptr;
  if (eventChannel_ != nullptr) rdma_destroy_event_channel(eventChannel_);
  eventChannel_ = nullptr;
  if (hookAdded_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
  hookAdded_ = false;
}

}  // namespace

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowStatus(env, Status::kInvalidArgument, "options must be an object");
  auto core = std::make_shared<ClientCore>(env);
  return core->start(info[0].As<Napi::Object>());
}

}  // namespace dpms::verbs
