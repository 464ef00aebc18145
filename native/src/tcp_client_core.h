// The tcp provider's client connection, driven by the caller's libuv loop (no thread of its own):
// a non-blocking socket watched by uv_poll, requests encoded into one output buffer that a
// uv_prepare / uv_check pair flushes once per loop turn (so the operations posted during one turn
// leave in one send), and responses parsed in the poll callback, which settles each operation's
// promise directly. tcp_client.cc is its JS face (tcpConnect, TransportConnection).
//
// Lifetime: a ClientCore is freed once it is closed and nothing refers to it any more: its uv handles
// (each closed asynchronously), a getaddrinfo in flight, and the JS wrapper object. The wrapper is
// held strongly while operations are pending, so a promise can always settle.
#pragma once

#include <napi.h>
#include <uv.h>

#include <cstdint>
#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth.h"
#include "errors.h"
#include "tcp_socket.h"
#include "tcp_wire.h"

namespace dpms::tcpclient {

// Per-environment things every connection needs (made once in InitTcpClient).
struct Statics {
  Napi::FunctionReference connectionClass;
  napi_async_context asyncContext = nullptr;
  Napi::ObjectReference asyncResource;
};

struct RemoteRegion {
  uint64_t sizeBytes = 0;
  uint32_t rkey = 0;
};

struct ConnectParams {
  std::string host;
  uint16_t port = 0;
  std::vector<uint8_t> secret;
  uint32_t maxMessageBytes = 0;
  uint64_t timeoutMs = 0;
};

class Core;

// The JS wrapper's view of a core: what the wrapper calls, and how the core reaches the wrapper.
class WrapperLink {
 public:
  virtual ~WrapperLink() = default;
  virtual void HoldStrongly(bool strong) = 0;
};

class Core {
 public:
  // Starts resolving and connecting; the returned promise settles with the connection object
  // (made through statics->connectionClass with an External<Core>) or a DPMS_* error.
  static napi_value Connect(napi_env env, Statics* statics, ConnectParams params);

  // Operation entry points (JS thread, arguments already checked). Each returns a promise.
  napi_value Read(uint16_t region, uint64_t offset, uint32_t length, uint32_t rkey);
  // A READ whose payload lands in target[targetOffset, +length) (a Uint8Array the caller checked
  // holds that range) instead of a new Buffer; the promise resolves with undefined. The target is
  // referenced until the operation settles.
  napi_value ReadInto(uint16_t region, uint64_t offset, napi_value target, size_t targetOffset, uint32_t length,
                      uint32_t rkey);
  napi_value Write(uint8_t opcode, uint16_t region, uint64_t offset, const uint8_t* data, uint32_t length,
                   uint32_t immediate, uint32_t rkey);
  napi_value CompareAndSwap(uint16_t region, uint64_t offset, uint64_t expected, uint64_t desired, uint32_t rkey);
  napi_value FetchAndAdd(uint16_t region, uint64_t offset, uint64_t delta, uint32_t rkey);
  napi_value Persist(uint16_t region, uint64_t offset, uint64_t length, uint32_t rkey);
  napi_value Call(const uint8_t* payload, uint32_t length);
  void AddCloseListener(napi_value listener);
  // User close: pending operations reject with DPMS_DISCONNECTED; listeners are not called.
  void Close();

  uint32_t nodeId() const { return nodeId_; }
  const std::vector<RemoteRegion>& regions() const { return regions_; }
  // The largest message call() may send: the smaller of both sides' limits.
  uint32_t maxCallBytes() const { return std::min(params_.maxMessageBytes, serverMaxMessageBytes_); }

  // The wrapper was made (link) or finalized (nullptr). After finalization the core closes silently.
  void AttachWrapper(WrapperLink* link);
  void DetachWrapper();

  // Drop one of the references that keep the core alive (handles, requests, wrapper); frees it at 0.
  void ReleaseRef();

 private:
  enum class State { kResolving, kConnecting, kHello, kWelcome, kOpen, kClosed };
  // How a failure is reported to pending operations.
  struct Failure {
    Status opStatus;       // for pending operations (and later ones)
    Status connectStatus;  // for the connect promise, when still connecting
    std::string reason;
  };
  struct Op {
    uint32_t requestId;
    uint8_t opcode;
    uint32_t length;  // READ: bytes expected
    napi_deferred deferred;
    napi_ref target = nullptr;  // readInto: the caller's Uint8Array (a strong reference)
    size_t targetOffset = 0;
  };
  // A response payload being received straight into memory of its own: a new result Buffer, or the
  // caller's target of a readInto.
  struct Direct {
    bool active = false;
    uint8_t* buffer = nullptr;      // where the rest goes (nullptr: discarding, see discard)
    napi_ref bufferRef = nullptr;   // keeps the result Buffer / the target alive meanwhile
    bool intoTarget = false;        // readInto: bufferRef is the caller's Uint8Array
    bool discard = false;           // readInto whose target lost the range (detached, shrunk)
    size_t targetOffset = 0;
    size_t length = 0;
    size_t received = 0;
    napi_deferred deferred = nullptr;
  };

  Core(napi_env env, Statics* statics, ConnectParams params);
  ~Core();

  // Connection set-up.
  static void OnResolved(uv_getaddrinfo_t* request, int status, addrinfo* result);
  void TryNextAddress();
  void OnConnected(int status);
  bool ParseHandshake();
  void Opened();

  // I/O.
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnTurn(uv_prepare_t* handle);
  static void OnCheck(uv_check_t* handle);
  static void OnTimeout(uv_timer_t* handle);
  // Receive and settle what the socket has. yieldToLoop: return once kYieldAfterBytes were read and
  // something was settled (the poll callback; the error paths read all they can).
  void ReadAvailable(bool yieldToLoop = false);
  bool ParseResponses();
  void CompleteDirect();
  // The memory of target[targetOffset, +length) now, or nullptr when the target no longer holds that
  // range (its ArrayBuffer was detached or shrunk while the READ was in flight). Checked again before
  // every receive into it, since JS runs between poll callbacks.
  uint8_t* TargetData(napi_ref target, size_t targetOffset, size_t length);
  // Rejection of a readInto whose target lost its range; the connection stays usable.
  void RejectTargetGone(napi_deferred deferred);
  void SetPollEvents();
  // Send what is queued. False on a hard error (the socket is then broken; see sendError_).
  bool Flush();
  void FlushFromLoop();
  void FailAfterSendError();
  void SendLarge(const uint8_t* data, size_t length);
  void MaybeFlushNow();
  uint8_t* AppendRequest(const tcpwire::Request& request, size_t payloadBytes);
  // A request followed by `length` bytes of data: copied into the output buffer, or sent straight from
  // `data` when large (SendLarge).
  void AppendWithData(const tcpwire::Request& request, const uint8_t* data, uint32_t length);

  // Operations.
  // A pending operation and its promise; *requestId stays 0 (and the promise is already rejected)
  // when the operation cannot start.
  napi_value NewOp(uint8_t opcode, uint32_t length, uint32_t* requestId);
  uint32_t NextRequestId();
  napi_value Rejected(Status status, const std::string& message);
  void Settle(napi_deferred deferred, napi_value value);
  void Reject(napi_deferred deferred, Status status, const std::string& message);
  void UpdateBusy();

  // Teardown. callJs=false when JS must not run (finalizer, environment cleanup).
  void Fail(const Failure& failure, bool notify, bool callJs);
  void Protocol(const std::string& what) { Fail({Status::kProtocol, Status::kProtocol, "protocol error: " + what}, true, true); }
  void CloseHandles();
  static void CleanupHook(void* self);

  napi_env env_;
  Statics* statics_;
  uv_loop_t* loop_ = nullptr;
  ConnectParams params_;
  State state_ = State::kResolving;
  int fd_ = -1;
  int refs_ = 1;  // the creation reference, dropped when closed
  bool hookRegistered_ = false;

  uv_getaddrinfo_t* resolve_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  uv_prepare_t* prepare_ = nullptr;
  uv_check_t* check_ = nullptr;
  int pollEvents_ = 0;
  bool busy_ = false;  // ops pending: poll handle and wrapper held

  std::vector<tcpsock::Address> addresses_;
  size_t addressIndex_ = 0;
  std::string lastConnectError_;
  napi_deferred connectDeferred_ = nullptr;
  auth::Nonce serverNonce_{};
  auth::Nonce clientNonce_{};

  uint32_t nodeId_ = 0;
  uint32_t serverMaxMessageBytes_ = 0;
  std::vector<RemoteRegion> regions_;

  std::vector<uint8_t> out_;
  size_t outHead_ = 0;
  int sendError_ = 0;  // errno of a failed send; the loop tears down on its next turn

  std::unique_ptr<uint8_t[]> in_;
  size_t inStart_ = 0;
  size_t inEnd_ = 0;
  Direct direct_;
  uint64_t settled_ = 0;  // operations resolved so far (ReadAvailable's yield rule)

  std::deque<Op> oneSided_;
  std::unordered_map<uint32_t, napi_deferred> calls_;
  uint32_t nextRequestId_ = 1;

  WrapperLink* wrapper_ = nullptr;
  std::vector<napi_ref> closeListeners_;
};

}  // namespace dpms::tcpclient
