// The tcp provider's client connection (see tcp_client_core.h).
//
// Batching: operations append their frames to out_; the uv_prepare (before the loop blocks) and
// uv_check (after the poll phase) callbacks send whatever accumulated, so all the operations posted
// in one turn leave in one send. A WRITE or message payload of kSendDirectBytes or more is sent at
// once from the caller's buffer together with everything queued before it (no copy when the socket
// takes it; the unsent tail is copied), so the caller may reuse its buffer as soon as the call returns.
//
// Receiving: response headers are parsed out of a fixed input buffer; a payload that is not entirely
// buffered is received straight into the result Buffer, allocated at full size when its header
// arrives (no second copy for large reads; when a big READ result is due next, only its header is
// taken into the input buffer). A poll callback that has settled something returns after
// kYieldAfterBytes, so that the next operations its promises post leave before the rest is read.
//
// Failure: a response with an access-error status rejects its operation with DPMS_REMOTE_ACCESS and
// breaks the connection (the server closes it too); a malformed response rejects everything with
// DPMS_PROTOCOL; end of stream or a socket error rejects everything with DPMS_DISCONNECTED. Each calls
// the onClose listeners once. Operations after that reject with DPMS_DISCONNECTED.
#include "tcp_client_core.h"

#include "tcp_buffers.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace dpms::tcpclient {

namespace w = tcpwire;

namespace {

constexpr size_t kInputBufferBytes = 256 << 10;
// Queued output sent without waiting for the end of the turn.
constexpr size_t kFlushNowBytes = 256 << 10;
// Payloads at least this big are sent straight from the caller's buffer.
constexpr size_t kSendDirectBytes = 64 << 10;
// Bytes read per poll callback before other handles get a turn.
constexpr size_t kReadBudgetBytes = 32 << 20;
// Once this much was read in a poll callback and an operation was settled, the callback returns:
// closing its scope runs the settled promises' reactions (which typically post the next operations)
// and the loop's check phase sends those. Reading on until the socket is drained instead made a
// pipelined bulk reader stop and go: with 16 MiB of READ results in flight the client took all of
// them before asking for more, so the server sat idle while it did (1-MiB READ bandwidth at 16 in
// flight measured 0.4-0.6x raw TCP, p99 several times the mean). Small responses are unaffected:
// a whole input buffer of them is parsed and settled in one go.
constexpr size_t kYieldAfterBytes = 256 << 10;
constexpr size_t kMaxPendingOps = 1 << 20;

// A handle scope plus a callback scope, for uv callbacks that settle promises or call listeners:
// closing the callback scope runs the microtasks (promise reactions) those settlements queued.
class JsScope {
 public:
  JsScope(napi_env env, Statics* statics) : env_(env) {
    napi_open_handle_scope(env_, &handles_);
    napi_value resource = statics->asyncResource.Value();
    if (napi_open_callback_scope(env_, resource, statics->asyncContext, &callback_) != napi_ok) callback_ = nullptr;
  }
  ~JsScope() {
    if (callback_ != nullptr) napi_close_callback_scope(env_, callback_);
    napi_close_handle_scope(env_, handles_);
  }
  JsScope(const JsScope&) = delete;
  JsScope& operator=(const JsScope&) = delete;

 private:
  napi_env env_;
  napi_handle_scope handles_ = nullptr;
  napi_callback_scope callback_ = nullptr;
};

const char* AccessErrorText(uint8_t status) {
  switch (status) {
    case w::kBadRegion: return "no such region";
    case w::kBadRkey: return "wrong rkey";
    case w::kOutOfBounds: return "out of the region's bounds";
    case w::kMisaligned: return "misaligned atomic";
    default: return "access error";
  }
}

}  // namespace

// ---- set-up ----

Core::Core(napi_env env, Statics* statics, ConnectParams params)
    : env_(env), statics_(statics), params_(std::move(params)), in_(new uint8_t[kInputBufferBytes]) {}

Core::~Core() {
  if (hookRegistered_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
}

template <typename Handle>
static void CloseHandle(Handle*& handle) {
  if (handle == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* closed) {
    Core* core = static_cast<Core*>(closed->data);
    delete reinterpret_cast<Handle*>(closed);
    core->ReleaseRef();
  });
  handle = nullptr;
}

napi_value Core::Connect(napi_env env, Statics* statics, ConnectParams params) {
  auto* core = new Core(env, statics, std::move(params));
  napi_value promise;
  napi_create_promise(env, &core->connectDeferred_, &promise);
  napi_get_uv_event_loop(env, &core->loop_);
  napi_add_env_cleanup_hook(env, CleanupHook, core);
  core->hookRegistered_ = true;

  core->timer_ = new uv_timer_t;
  uv_timer_init(core->loop_, core->timer_);
  core->timer_->data = core;
  ++core->refs_;
  uv_timer_start(core->timer_, OnTimeout, core->params_.timeoutMs, 0);

  core->resolve_ = new uv_getaddrinfo_t;
  core->resolve_->data = core;
  ++core->refs_;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  const std::string service = std::to_string(core->params_.port);
  const int rc = uv_getaddrinfo(core->loop_, core->resolve_, OnResolved, core->params_.host.c_str(), service.c_str(), &hints);
  if (rc != 0) {
    delete core->resolve_;
    core->resolve_ = nullptr;
    --core->refs_;
    core->Fail({Status::kDisconnected, Status::kUnreachable, "cannot resolve " + core->params_.host + ": " + uv_strerror(rc)},
               false, true);
  }
  return promise;
}

void Core::OnResolved(uv_getaddrinfo_t* request, int status, addrinfo* result) {
  Core* core = static_cast<Core*>(request->data);
  delete request;
  core->resolve_ = nullptr;
  if (core->state_ != State::kClosed) {
    JsScope scope(core->env_, core->statics_);
    if (status != 0) {
      core->Fail({Status::kDisconnected, Status::kUnreachable,
                  "cannot resolve " + core->params_.host + ": " + uv_strerror(status)},
                 false, true);
    } else {
      for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
        tcpsock::Address address;
        std::memcpy(&address.storage, ai->ai_addr, ai->ai_addrlen);
        address.length = ai->ai_addrlen;
        core->addresses_.push_back(address);
      }
      core->state_ = State::kConnecting;
      core->TryNextAddress();
    }
  }
  if (result != nullptr) uv_freeaddrinfo(result);
  core->ReleaseRef();
}

// Start a non-blocking connect to the next resolved address; when none is left, fail UNREACHABLE.
void Core::TryNextAddress() {
  while (addressIndex_ < addresses_.size()) {
    const tcpsock::Address& address = addresses_[addressIndex_++];
    const sockaddr* sa = reinterpret_cast<const sockaddr*>(&address.storage);
    const int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      lastConnectError_ = "socket: " + tcpsock::ErrorText(errno);
      continue;
    }
    tcpsock::TuneConnection(fd);
    if (connect(fd, sa, address.length) != 0 && errno != EINPROGRESS) {
      lastConnectError_ = "cannot connect to " + tcpsock::AddressText(sa) + ": " + tcpsock::ErrorText(errno);
      close(fd);
      continue;
    }
    poll_ = new uv_poll_t;
    if (uv_poll_init_socket(loop_, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      lastConnectError_ = "uv_poll_init_socket failed";
      close(fd);
      continue;
    }
    poll_->data = this;
    ++refs_;
    fd_ = fd;
    pollEvents_ = UV_WRITABLE;
    uv_poll_start(poll_, UV_WRITABLE, OnPoll);
    return;
  }
  Fail({Status::kDisconnected, Status::kUnreachable,
        lastConnectError_.empty() ? "no address to connect to for " + params_.host : lastConnectError_},
       false, true);
}

// The non-blocking connect finished (writable or error): check how, then wait for HELLO.
void Core::OnConnected(int status) {
  int err = 0;
  socklen_t length = sizeof err;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
  if (err == 0 && status < 0) err = ECONNREFUSED;
  if (err != 0) {
    const tcpsock::Address& address = addresses_[addressIndex_ - 1];
    lastConnectError_ = "cannot connect to " + tcpsock::AddressText(reinterpret_cast<const sockaddr*>(&address.storage)) +
                        ": " + tcpsock::ErrorText(err);
    CloseHandle(poll_);
    close(fd_);
    fd_ = -1;
    TryNextAddress();
    return;
  }
  state_ = State::kHello;
  SetPollEvents();
}

// HELLO -> send AUTH; WELCOME -> check the server's proof, learn the regions, open. False once closed.
bool Core::ParseHandshake() {
  while (state_ == State::kHello || state_ == State::kWelcome) {
    const size_t available = inEnd_ - inStart_;
    if (available < w::kResponseHeaderBytes) return true;
    const uint8_t* header = in_.get() + inStart_;
    w::Response r;
    if (!w::DecodeResponse(header, &r)) {
      Protocol("bad handshake frame");
      return false;
    }
    const uint8_t* payload = header + w::kResponseHeaderBytes;
    if (state_ == State::kHello) {
      if (r.opcode != w::kHello || r.status != w::kOk || r.length != w::kHelloPayloadBytes) {
        Protocol("bad HELLO");
        return false;
      }
      if (available < w::kResponseHeaderBytes + r.length) return true;
      std::memcpy(serverNonce_.data(), payload, serverNonce_.size());
      inStart_ += w::kResponseHeaderBytes + r.length;
      if (!auth::NewNonce(clientNonce_)) {
        Fail({Status::kDisconnected, Status::kIo, "no randomness for the handshake nonce"}, false, true);
        return false;
      }
      const auth::Mac proof = auth::ClientProof(params_.secret, serverNonce_, clientNonce_);
      w::Request request;
      request.opcode = w::kAuth;
      request.length = w::kAuthPayloadBytes;
      uint8_t* body = AppendRequest(request, w::kAuthPayloadBytes);
      std::memcpy(body, clientNonce_.data(), clientNonce_.size());
      std::memcpy(body + auth::kNonceBytes, proof.data(), proof.size());
      state_ = State::kWelcome;
      if (!Flush()) {
        Fail({Status::kDisconnected, Status::kAuth, "the server closed the connection during the handshake"}, false, true);
        return false;
      }
      continue;
    }
    const size_t maxWelcome = w::kWelcomeFixedBytes + w::kMaxRegions * w::kRegionEntryBytes;
    if (r.opcode != w::kWelcome || r.status != w::kOk || r.length < w::kWelcomeFixedBytes || r.length > maxWelcome ||
        (r.length - w::kWelcomeFixedBytes) % w::kRegionEntryBytes != 0) {
      Protocol("bad WELCOME");
      return false;
    }
    if (available < w::kResponseHeaderBytes + r.length) return true;
    const auth::Mac expected = auth::ServerProof(params_.secret, clientNonce_, serverNonce_);
    if (!auth::ProofMatches(expected, payload)) {
      Fail({Status::kDisconnected, Status::kAuth, "the server's proof is wrong: it does not hold the cluster secret"},
           false, true);
      return false;
    }
    const uint32_t count = w::Load32(payload + 36);
    if (count != (r.length - w::kWelcomeFixedBytes) / w::kRegionEntryBytes || w::Load32(payload + 44) != 0) {
      Protocol("bad WELCOME region count");
      return false;
    }
    nodeId_ = w::Load32(payload + 32);
    serverMaxMessageBytes_ = w::Load32(payload + 40);
    for (uint32_t i = 0; i < count; ++i) {
      const uint8_t* entry = payload + w::kWelcomeFixedBytes + i * w::kRegionEntryBytes;
      regions_.push_back(RemoteRegion{w::Load64(entry), w::Load32(entry + 8)});
    }
    inStart_ += w::kResponseHeaderBytes + r.length;
    Opened();
  }
  return state_ != State::kClosed;
}

void Core::Opened() {
  state_ = State::kOpen;
  CloseHandle(timer_);
  prepare_ = new uv_prepare_t;
  uv_prepare_init(loop_, prepare_);
  prepare_->data = this;
  ++refs_;
  uv_prepare_start(prepare_, OnTurn);
  uv_unref(reinterpret_cast<uv_handle_t*>(prepare_));
  check_ = new uv_check_t;
  uv_check_init(loop_, check_);
  check_->data = this;
  ++refs_;
  uv_check_start(check_, OnCheck);
  uv_unref(reinterpret_cast<uv_handle_t*>(check_));
  // Idle and open: the socket alone does not keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(poll_));

  napi_value external;
  napi_value connection = nullptr;
  napi_create_external(env_, this, nullptr, nullptr, &external);
  if (napi_new_instance(env_, statics_->connectionClass.Value(), 1, &external, &connection) != napi_ok) {
    napi_value error;
    napi_get_and_clear_last_exception(env_, &error);
    Fail({Status::kDisconnected, Status::kIo, "cannot create the connection object"}, false, true);
    return;
  }
  napi_deferred deferred = connectDeferred_;
  connectDeferred_ = nullptr;
  napi_resolve_deferred(env_, deferred, connection);
}

// ---- loop callbacks ----

void Core::OnPoll(uv_poll_t* handle, int status, int events) {
  Core* core = static_cast<Core*>(handle->data);
  if (core->state_ == State::kClosed) return;
  JsScope scope(core->env_, core->statics_);
  if (core->state_ == State::kConnecting) {
    core->OnConnected(status);
    return;
  }
  if (status < 0) {
    // libuv reports POLLERR as UV_EBADF. Read what arrived before the error first (an access-error
    // response, say, followed by the server's reset): recv then reports the real error and fails.
    core->ReadAvailable();
    if (core->state_ != State::kClosed) {
      int err = 0;
      socklen_t length = sizeof err;
      getsockopt(core->fd_, SOL_SOCKET, SO_ERROR, &err, &length);
      core->Fail({Status::kDisconnected, core->state_ == State::kOpen ? Status::kDisconnected : Status::kAuth,
                  "socket error: " + (err != 0 ? tcpsock::ErrorText(err) : std::string(uv_strerror(status)))},
                 true, true);
    }
    return;
  }
  if ((events & UV_WRITABLE) != 0 && !core->Flush()) {
    core->FailAfterSendError();
    return;
  }
  if ((events & UV_READABLE) != 0) core->ReadAvailable(true);
}

void Core::OnTurn(uv_prepare_t* handle) { static_cast<Core*>(handle->data)->FlushFromLoop(); }
void Core::OnCheck(uv_check_t* handle) { static_cast<Core*>(handle->data)->FlushFromLoop(); }

void Core::FlushFromLoop() {
  if (state_ != State::kOpen) return;
  if (sendError_ == 0 && outHead_ < out_.size()) Flush();
  if (sendError_ != 0) {
    JsScope scope(env_, statics_);
    FailAfterSendError();
  }
}

// A send failed (the server reset or closed): first read what it sent before that (an access-error
// response explains the reset better than EPIPE does), then fail with what is left.
void Core::FailAfterSendError() {
  ReadAvailable();
  if (state_ != State::kClosed) {
    Fail({Status::kDisconnected, Status::kDisconnected, "send: " + tcpsock::ErrorText(sendError_)}, true, true);
  }
}

void Core::OnTimeout(uv_timer_t* handle) {
  Core* core = static_cast<Core*>(handle->data);
  JsScope scope(core->env_, core->statics_);
  core->Fail({Status::kDisconnected, Status::kTimeout,
              "connecting to " + core->params_.host + ":" + std::to_string(core->params_.port) + " took more than " +
                  std::to_string(core->params_.timeoutMs) + " ms"},
             false, true);
}

void Core::ReadAvailable(bool yieldToLoop) {
  size_t budget = kReadBudgetBytes;
  const uint64_t settledBefore = settled_;
  while (state_ != State::kClosed && budget > 0) {
    if (yieldToLoop && kReadBudgetBytes - budget >= kYieldAfterBytes && settled_ != settledBefore) break;
    uint8_t* dst;
    size_t room;
    if (direct_.active) {
      if (direct_.intoTarget && !direct_.discard) {
        direct_.buffer = TargetData(direct_.bufferRef, direct_.targetOffset, direct_.length);
        direct_.discard = direct_.buffer == nullptr;
      }
      room = direct_.length - direct_.received;
      if (direct_.discard) {
        // The rest of a payload nobody can take: receive it into in_, which is empty meanwhile.
        dst = in_.get();
        room = std::min(room, kInputBufferBytes);
      } else {
        dst = direct_.buffer + direct_.received;
      }
    } else {
      if (inStart_ == inEnd_) {
        inStart_ = inEnd_ = 0;
      } else if (inStart_ > kInputBufferBytes / 2) {
        std::memmove(in_.get(), in_.get() + inStart_, inEnd_ - inStart_);
        inEnd_ -= inStart_;
        inStart_ = 0;
      }
      dst = in_.get() + inEnd_;
      room = kInputBufferBytes - inEnd_;
      // Nothing buffered and the next response is most likely a big READ result: take only its
      // header, so that the payload is then received straight into the result Buffer instead of
      // partly into in_ and copied from there. (Only a guess at the size of a recv: any response
      // may come, a message reply say, and is parsed as usual.)
      if (inEnd_ == 0 && !oneSided_.empty() && oneSided_.front().opcode == w::kRead &&
          oneSided_.front().length >= tcpbuffers::kMinPooledBytes) {
        room = w::kResponseHeaderBytes;
      }
    }
    const ssize_t n = recv(fd_, dst, room, 0);
    if (n > 0) {
      budget -= std::min(budget, static_cast<size_t>(n));
      if (direct_.active) {
        direct_.received += static_cast<size_t>(n);
        if (direct_.received == direct_.length) CompleteDirect();
      } else {
        inEnd_ += static_cast<size_t>(n);
      }
      const bool open = (state_ == State::kHello || state_ == State::kWelcome) ? ParseHandshake() : true;
      if (!open || (state_ == State::kOpen && !ParseResponses())) return;
      continue;
    }
    if (n == 0) {
      if (state_ == State::kOpen) {
        Fail({Status::kDisconnected, Status::kDisconnected, "the server closed the connection"}, true, true);
      } else {
        Fail({Status::kDisconnected, Status::kAuth,
              "the server closed the connection during the handshake (wrong secret?)"},
             false, true);
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    const Status connectStatus = state_ == State::kOpen ? Status::kDisconnected : Status::kAuth;
    Fail({Status::kDisconnected, connectStatus, "recv: " + tcpsock::ErrorText(errno)}, true, true);
    return;
  }
  UpdateBusy();
}

// Settle every complete response in the input buffer. False once the connection is closed.
bool Core::ParseResponses() {
  while (state_ == State::kOpen && !direct_.active) {
    const size_t available = inEnd_ - inStart_;
    if (available < w::kResponseHeaderBytes) return true;
    const uint8_t* header = in_.get() + inStart_;
    w::Response r;
    if (!w::DecodeResponse(header, &r)) {
      Protocol("bad response header");
      return false;
    }
    napi_deferred deferred = nullptr;
    napi_ref target = nullptr;  // readInto
    size_t targetOffset = 0;
    if (r.opcode == w::kMessage) {
      auto it = calls_.find(r.requestId);
      if (it == calls_.end() || r.status != w::kOk || r.length > params_.maxMessageBytes) {
        Protocol("unexpected or oversized message reply");
        return false;
      }
      deferred = it->second;
      calls_.erase(it);
    } else {
      if (oneSided_.empty() || oneSided_.front().requestId != r.requestId || oneSided_.front().opcode != r.opcode) {
        Protocol("response does not match the oldest pending operation");
        return false;
      }
      const Op op = oneSided_.front();
      if (r.status != w::kOk) {
        if (r.length != 0) {
          Protocol("error response with a payload");
          return false;
        }
        if (r.status == w::kIoError && op.opcode == w::kPersist) {
          inStart_ += w::kResponseHeaderBytes;
          oneSided_.pop_front();
          Reject(op.deferred, Status::kIo, "the server could not make the range durable");
          continue;
        }
        if (r.status < w::kBadRegion || r.status > w::kMisaligned) {
          Protocol("unknown status");
          return false;
        }
        inStart_ += w::kResponseHeaderBytes;
        oneSided_.pop_front();
        if (op.target != nullptr) napi_delete_reference(env_, op.target);
        const std::string what = std::string("remote access error: ") + AccessErrorText(r.status);
        Reject(op.deferred, Status::kRemoteAccess, what);
        Fail({Status::kDisconnected, Status::kDisconnected, what}, true, true);
        return false;
      }
      const uint32_t expected = op.opcode == w::kRead ? op.length : (op.opcode == w::kCas || op.opcode == w::kFaa) ? 8 : 0;
      if (r.length != expected) {
        Protocol("response length does not match the operation");
        return false;
      }
      if (op.opcode == w::kCas || op.opcode == w::kFaa) {
        if (available < w::kResponseHeaderBytes + 8) return true;
        napi_value value;
        napi_create_bigint_uint64(env_, w::Load64(header + w::kResponseHeaderBytes), &value);
        inStart_ += w::kResponseHeaderBytes + 8;
        oneSided_.pop_front();
        Settle(op.deferred, value);
        continue;
      }
      oneSided_.pop_front();
      if (op.opcode != w::kRead) {
        inStart_ += w::kResponseHeaderBytes;
        napi_value undefined;
        napi_get_undefined(env_, &undefined);
        Settle(op.deferred, undefined);
        continue;
      }
      deferred = op.deferred;
      target = op.target;
      targetOffset = op.targetOffset;
    }
    // A READ's data or a message reply: copy it out when it is all here, else receive it directly.
    inStart_ += w::kResponseHeaderBytes;
    const size_t buffered = inEnd_ - inStart_;
    if (target != nullptr) {
      // readInto: straight into the caller's target, which stays referenced until the end.
      uint8_t* data = TargetData(target, targetOffset, r.length);
      if (buffered >= r.length) {
        if (data != nullptr && r.length > 0) std::memcpy(data, in_.get() + inStart_, r.length);
        inStart_ += r.length;
        napi_delete_reference(env_, target);
        if (data == nullptr) {
          RejectTargetGone(deferred);
        } else {
          napi_value undefined;
          napi_get_undefined(env_, &undefined);
          Settle(deferred, undefined);
        }
        continue;
      }
      if (data != nullptr) std::memcpy(data, in_.get() + inStart_, buffered);
      inStart_ = inEnd_;
      direct_.active = true;
      direct_.buffer = data;
      direct_.bufferRef = target;
      direct_.intoTarget = true;
      direct_.discard = data == nullptr;
      direct_.targetOffset = targetOffset;
      direct_.length = r.length;
      direct_.received = buffered;
      direct_.deferred = deferred;
      continue;
    }
    if (buffered >= r.length) {
      uint8_t* data = nullptr;
      napi_value buffer = tcpbuffers::NewBuffer(env_, r.length, &data);
      if (buffer == nullptr) {
        Reject(deferred, Status::kIo, "cannot allocate a response buffer of " + std::to_string(r.length) + " bytes");
        Fail({Status::kDisconnected, Status::kDisconnected, "out of memory"}, true, true);
        return false;
      }
      if (r.length > 0) std::memcpy(data, in_.get() + inStart_, r.length);
      inStart_ += r.length;
      Settle(deferred, buffer);
      continue;
    }
    // The result Buffer (a recycled block for big ones, see tcp_buffers.h), kept alive by a
    // reference until the rest of the payload has arrived.
    uint8_t* data = nullptr;
    napi_value buffer = tcpbuffers::NewBuffer(env_, r.length, &data);
    if (buffer == nullptr || napi_create_reference(env_, buffer, 1, &direct_.bufferRef) != napi_ok) {
      napi_value error;
      napi_get_and_clear_last_exception(env_, &error);
      Reject(deferred, Status::kIo, "cannot allocate a response buffer of " + std::to_string(r.length) + " bytes");
      Fail({Status::kDisconnected, Status::kDisconnected, "out of memory"}, true, true);
      return false;
    }
    direct_.active = true;
    direct_.buffer = data;
    std::memcpy(direct_.buffer, in_.get() + inStart_, buffered);
    inStart_ = inEnd_;
    direct_.length = r.length;
    direct_.received = buffered;
    direct_.deferred = deferred;
  }
  return state_ != State::kClosed;
}

void Core::CompleteDirect() {
  const Direct done = direct_;
  direct_ = Direct{};
  napi_value value = nullptr;
  if (done.intoTarget) {
    napi_get_undefined(env_, &value);
  } else {
    napi_get_reference_value(env_, done.bufferRef, &value);
  }
  napi_delete_reference(env_, done.bufferRef);
  if (done.discard) {
    RejectTargetGone(done.deferred);
  } else {
    Settle(done.deferred, value);
  }
}

uint8_t* Core::TargetData(napi_ref target, size_t targetOffset, size_t length) {
  napi_value array = nullptr;
  if (napi_get_reference_value(env_, target, &array) != napi_ok || array == nullptr) return nullptr;
  napi_typedarray_type type;
  size_t elements = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env_, array, &type, &elements, &data, nullptr, nullptr) != napi_ok) return nullptr;
  if (type != napi_uint8_array || targetOffset > elements || length > elements - targetOffset) return nullptr;
  // An empty range needs no memory (an empty ArrayBuffer may have none): nothing is written through this.
  static uint8_t nothing;
  if (length == 0) return &nothing;
  return data == nullptr ? nullptr : static_cast<uint8_t*>(data) + targetOffset;
}

void Core::RejectTargetGone(napi_deferred deferred) {
  Reject(deferred, Status::kOutOfBounds,
         "the readInto target no longer holds the range (its ArrayBuffer was detached or shrunk while the read was "
         "in flight); the data was dropped");
}

// ---- output ----

uint8_t* Core::AppendRequest(const w::Request& request, size_t payloadBytes) {
  if (outHead_ == out_.size()) {
    out_.clear();
    outHead_ = 0;
  } else if (outHead_ > (1u << 20) && outHead_ > out_.size() / 2) {
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(outHead_));
    outHead_ = 0;
  }
  const size_t at = out_.size();
  out_.resize(at + w::kRequestHeaderBytes + payloadBytes);
  w::EncodeRequest(out_.data() + at, request);
  return out_.data() + at + w::kRequestHeaderBytes;
}

bool Core::Flush() {
  if (sendError_ != 0) return false;
  while (outHead_ < out_.size()) {
    const ssize_t n = send(fd_, out_.data() + outHead_, out_.size() - outHead_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      outHead_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    sendError_ = n < 0 ? errno : EPIPE;
    return false;
  }
  if (outHead_ == out_.size()) {
    out_.clear();
    outHead_ = 0;
    if (out_.capacity() > (16u << 20)) out_.shrink_to_fit();
  }
  SetPollEvents();
  return true;
}

// The header is already queued; send the queue and then data, copying only what the socket refused.
void Core::SendLarge(const uint8_t* data, size_t length) {
  size_t dataSent = 0;
  while (sendError_ == 0 && dataSent < length) {
    iovec iov[2];
    int count = 0;
    const size_t queued = out_.size() - outHead_;
    if (queued > 0) iov[count++] = {out_.data() + outHead_, queued};
    iov[count++] = {const_cast<uint8_t*>(data + dataSent), length - dataSent};
    msghdr message{};
    message.msg_iov = iov;
    message.msg_iovlen = static_cast<size_t>(count);
    const ssize_t n = sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) sendError_ = errno;
      break;
    }
    size_t sent = static_cast<size_t>(n);
    const size_t fromQueue = std::min(sent, queued);
    outHead_ += fromQueue;
    dataSent += sent - fromQueue;
  }
  if (outHead_ == out_.size()) {
    out_.clear();
    outHead_ = 0;
  }
  if (dataSent < length) out_.insert(out_.end(), data + dataSent, data + length);
  SetPollEvents();
}

void Core::SetPollEvents() {
  if (poll_ == nullptr || state_ == State::kClosed || state_ == State::kConnecting) return;
  const int events = UV_READABLE | (outHead_ < out_.size() ? UV_WRITABLE : 0);
  if (events == pollEvents_) return;
  uv_poll_start(poll_, events, OnPoll);
  pollEvents_ = events;
}

// ---- operations ----

napi_value Core::Rejected(Status status, const std::string& message) {
  napi_deferred deferred;
  napi_value promise;
  napi_create_promise(env_, &deferred, &promise);
  Reject(deferred, status, message);
  return promise;
}

void Core::Settle(napi_deferred deferred, napi_value value) {
  ++settled_;
  napi_resolve_deferred(env_, deferred, value);
}

void Core::Reject(napi_deferred deferred, Status status, const std::string& message) {
  napi_reject_deferred(env_, deferred, MakeError(Napi::Env(env_), status, message).Value());
}

napi_value Core::NewOp(uint8_t opcode, uint32_t length, uint32_t* requestId) {
  if (state_ != State::kOpen) return Rejected(Status::kDisconnected, "the connection is closed");
  if (oneSided_.size() + calls_.size() >= kMaxPendingOps) {
    return Rejected(Status::kBusy, "too many operations in flight on this connection");
  }
  napi_deferred deferred;
  napi_value promise;
  napi_create_promise(env_, &deferred, &promise);
  uint32_t id = NextRequestId();
  if (opcode == w::kMessage) {
    while (calls_.count(id) != 0) id = NextRequestId();  // a call pending across 2^32 requests
    calls_.emplace(id, deferred);
  } else {
    oneSided_.push_back(Op{id, opcode, length, deferred});
  }
  *requestId = id;
  UpdateBusy();
  return promise;
}

uint32_t Core::NextRequestId() {
  const uint32_t id = nextRequestId_++;
  if (nextRequestId_ == 0) nextRequestId_ = 1;  // 0 means "no operation" to the callers of NewOp
  return id;
}

void Core::MaybeFlushNow() {
  if (out_.size() - outHead_ >= kFlushNowBytes) Flush();
}

namespace {

// The header of a one-sided request: every operation fills the same fields.
w::Request OneSided(uint8_t opcode, uint32_t id, uint16_t region, uint64_t offset, uint32_t length, uint32_t rkey) {
  w::Request r;
  r.opcode = opcode;
  r.requestId = id;
  r.offset = offset;
  r.length = length;
  r.rkey = rkey;
  r.region = region;
  return r;
}

}  // namespace

void Core::AppendWithData(const w::Request& request, const uint8_t* data, uint32_t length) {
  if (length >= kSendDirectBytes) {
    AppendRequest(request, 0);
    SendLarge(data, length);
    return;
  }
  if (length > 0) std::memcpy(AppendRequest(request, length), data, length);
  else AppendRequest(request, 0);
  MaybeFlushNow();
}

napi_value Core::Read(uint16_t region, uint64_t offset, uint32_t length, uint32_t rkey) {
  uint32_t id = 0;
  napi_value promise = NewOp(w::kRead, length, &id);
  if (id == 0) return promise;
  AppendRequest(OneSided(w::kRead, id, region, offset, length, rkey), 0);
  MaybeFlushNow();
  return promise;
}

napi_value Core::ReadInto(uint16_t region, uint64_t offset, napi_value target, size_t targetOffset, uint32_t length,
                          uint32_t rkey) {
  napi_ref ref = nullptr;
  if (napi_create_reference(env_, target, 1, &ref) != napi_ok) {
    return Rejected(Status::kInvalidArgument, "cannot reference the readInto target");
  }
  uint32_t id = 0;
  napi_value promise = NewOp(w::kRead, length, &id);
  if (id == 0) {
    napi_delete_reference(env_, ref);
    return promise;
  }
  oneSided_.back().target = ref;
  oneSided_.back().targetOffset = targetOffset;
  AppendRequest(OneSided(w::kRead, id, region, offset, length, rkey), 0);
  MaybeFlushNow();
  return promise;
}

napi_value Core::Write(uint8_t opcode, uint16_t region, uint64_t offset, const uint8_t* data, uint32_t length,
                       uint32_t immediate, uint32_t rkey) {
  uint32_t id = 0;
  napi_value promise = NewOp(opcode, 0, &id);
  if (id == 0) return promise;
  w::Request r = OneSided(opcode, id, region, offset, length, rkey);
  r.aux = opcode == w::kWriteImm ? immediate : 0;
  AppendWithData(r, data, length);
  return promise;
}

napi_value Core::CompareAndSwap(uint16_t region, uint64_t offset, uint64_t expected, uint64_t desired, uint32_t rkey) {
  uint32_t id = 0;
  napi_value promise = NewOp(w::kCas, 8, &id);
  if (id == 0) return promise;
  uint8_t* payload = AppendRequest(OneSided(w::kCas, id, region, offset, 8, rkey), 16);
  w::Store64(payload, expected);
  w::Store64(payload + 8, desired);
  MaybeFlushNow();
  return promise;
}

napi_value Core::FetchAndAdd(uint16_t region, uint64_t offset, uint64_t delta, uint32_t rkey) {
  uint32_t id = 0;
  napi_value promise = NewOp(w::kFaa, 8, &id);
  if (id == 0) return promise;
  w::Store64(AppendRequest(OneSided(w::kFaa, id, region, offset, 8, rkey), 8), delta);
  MaybeFlushNow();
  return promise;
}

napi_value Core::Persist(uint16_t region, uint64_t offset, uint64_t length, uint32_t rkey) {
  uint32_t id = 0;
  napi_value promise = NewOp(w::kPersist, 0, &id);
  if (id == 0) return promise;
  w::Request r = OneSided(w::kPersist, id, region, offset, static_cast<uint32_t>(length), rkey);
  r.aux = static_cast<uint32_t>(length >> 32);
  AppendRequest(r, 0);
  MaybeFlushNow();
  return promise;
}

napi_value Core::Call(const uint8_t* payload, uint32_t length) {
  uint32_t id = 0;
  napi_value promise = NewOp(w::kMessage, 0, &id);
  if (id == 0) return promise;
  AppendWithData(OneSided(w::kMessage, id, 0, 0, length, 0), payload, length);
  return promise;
}

void Core::AddCloseListener(napi_value listener) {
  if (state_ == State::kClosed) return;  // it can never fire
  napi_ref ref;
  napi_create_reference(env_, listener, 1, &ref);
  closeListeners_.push_back(ref);
}

void Core::Close() { Fail({Status::kDisconnected, Status::kDisconnected, "the connection was closed"}, false, true); }

void Core::UpdateBusy() {
  const bool busy = state_ == State::kOpen && (!oneSided_.empty() || !calls_.empty());
  if (busy == busy_) return;
  busy_ = busy;
  if (poll_ != nullptr) {
    if (busy) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    else uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  }
  if (wrapper_ != nullptr) wrapper_->HoldStrongly(busy);
}

// ---- teardown ----

void Core::AttachWrapper(WrapperLink* link) {
  wrapper_ = link;
  ++refs_;
}

void Core::DetachWrapper() {
  wrapper_ = nullptr;
  busy_ = false;  // the wrapper's strong hold went with it
  Fail({Status::kDisconnected, Status::kDisconnected, "the connection object was collected"}, false, false);
  ReleaseRef();
}

void Core::Fail(const Failure& failure, bool notify, bool callJs) {
  if (state_ == State::kClosed) return;
  const bool wasOpen = state_ == State::kOpen;
  state_ = State::kClosed;
  if (resolve_ != nullptr) uv_cancel(reinterpret_cast<uv_req_t*>(resolve_));
  CloseHandles();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  out_.clear();
  out_.shrink_to_fit();
  outHead_ = 0;

  napi_deferred connectDeferred = connectDeferred_;
  connectDeferred_ = nullptr;
  napi_deferred directDeferred = direct_.deferred;
  if (direct_.bufferRef != nullptr) napi_delete_reference(env_, direct_.bufferRef);
  direct_ = Direct{};
  std::deque<Op> ops;
  ops.swap(oneSided_);
  std::unordered_map<uint32_t, napi_deferred> calls;
  calls.swap(calls_);
  std::vector<napi_ref> listeners;
  listeners.swap(closeListeners_);
  if (busy_) {
    busy_ = false;
    if (wrapper_ != nullptr) wrapper_->HoldStrongly(false);
  }
  if (hookRegistered_) {
    napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    hookRegistered_ = false;
  }

  if (callJs) {
    if (connectDeferred != nullptr) Reject(connectDeferred, failure.connectStatus, failure.reason);
    if (directDeferred != nullptr) Reject(directDeferred, failure.opStatus, failure.reason);
    for (const Op& op : ops) Reject(op.deferred, failure.opStatus, failure.reason);
    for (const auto& entry : calls) Reject(entry.second, failure.opStatus, failure.reason);
    if (notify && wasOpen) {
      napi_value reason;
      napi_create_string_utf8(env_, failure.reason.c_str(), failure.reason.size(), &reason);
      napi_value undefined;
      napi_get_undefined(env_, &undefined);
      for (napi_ref ref : listeners) {
        napi_value listener;
        if (napi_get_reference_value(env_, ref, &listener) != napi_ok || listener == nullptr) continue;
        if (napi_call_function(env_, undefined, listener, 1, &reason, nullptr) == napi_pending_exception) {
          // A throwing listener is the application's uncaught exception, not ours.
          napi_value error;
          napi_get_and_clear_last_exception(env_, &error);
          napi_fatal_exception(env_, error);
        }
      }
    }
  }
  for (napi_ref ref : listeners) napi_delete_reference(env_, ref);
  for (const Op& op : ops) {
    if (op.target != nullptr) napi_delete_reference(env_, op.target);
  }
  ReleaseRef();  // the creation reference
}

void Core::CloseHandles() {
  CloseHandle(poll_);
  CloseHandle(timer_);
  CloseHandle(prepare_);
  CloseHandle(check_);
}

void Core::ReleaseRef() {
  if (--refs_ == 0) delete this;
}

void Core::CleanupHook(void* self) {
  Core* core = static_cast<Core*>(self);
  core->hookRegistered_ = false;  // consumed: do not remove it from inside itself
  core->Fail({Status::kDisconnected, Status::kDisconnected, "the environment is shutting down"}, false, false);
}

}  // namespace dpms::tcpclient
