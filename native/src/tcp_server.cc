// tcpServe and the TransportServer object (see tcp_server.h). The object holds a strong reference to
// itself while serving, so an unreferenced server keeps serving until close(), like a net.Server; the
// ThreadSafeFunction keeps the event loop alive for the same span. close() (or the environment's
// cleanup hook) stops and joins the thread first, then releases the ThreadSafeFunction, so the last
// 'close' events are still delivered, and only then unpins the regions.
#include "tcp_server.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "auth.h"
#include "errors.h"
#include "mapping.h"
#include "tcp_args.h"
#include "tcp_server_loop.h"
#include "tcp_socket.h"
#include "tcp_wire.h"

namespace dpms {

namespace {

using tcpserver::Event;

void CallEvent(Napi::Env env, Napi::Function callback, std::nullptr_t*, Event* raw);
using EventTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Event, CallEvent>;

void CallEvent(Napi::Env env, Napi::Function callback, std::nullptr_t*, Event* raw) {
  std::unique_ptr<Event> event(raw);
  if (env == nullptr || callback.IsEmpty()) return;  // the environment is going away
  Napi::Object object = Napi::Object::New(env);
  const double connection = event->connection;
  switch (event->kind) {
    case Event::Kind::kOpen:
      object.Set("type", "open");
      object.Set("connection", connection);
      object.Set("peer", event->text);
      break;
    case Event::Kind::kMessage: {
      object.Set("type", "message");
      object.Set("connection", connection);
      object.Set("requestId", static_cast<double>(event->requestId));
      Napi::Buffer<uint8_t> payload =
          event->length == 0 ? Napi::Buffer<uint8_t>::New(env, 0)
                             : Napi::Buffer<uint8_t>::New(env, event->payload.get(), event->length,
                                                          [](Napi::Env, uint8_t* bytes) { delete[] bytes; });
      if (event->length != 0) event->payload.release();  // the Buffer owns it now
      object.Set("payload", payload);
      break;
    }
    case Event::Kind::kImmediate:
      object.Set("type", "immediate");
      object.Set("connection", connection);
      object.Set("immediate", static_cast<double>(event->immediate));
      object.Set("length", static_cast<double>(event->length));
      break;
    case Event::Kind::kClose:
      object.Set("type", "close");
      object.Set("connection", connection);
      object.Set("reason", event->text);
      break;
  }
  callback.Call({object});
}

using CounterField = std::pair<const char*, std::atomic<uint64_t> tcpserver::Counters::*>;
// stats() keys, in ServerStats order.
constexpr std::array<CounterField, 12> kCounterFields = {{
    {"connectionsOpen", &tcpserver::Counters::connectionsOpen},
    {"connectionsAccepted", &tcpserver::Counters::connectionsAccepted},
    {"authFailures", &tcpserver::Counters::authFailures},
    {"badFrames", &tcpserver::Counters::badFrames},
    {"accessErrors", &tcpserver::Counters::accessErrors},
    {"reads", &tcpserver::Counters::reads},
    {"writes", &tcpserver::Counters::writes},
    {"atomics", &tcpserver::Counters::atomics},
    {"persists", &tcpserver::Counters::persists},
    {"messages", &tcpserver::Counters::messages},
    {"bytesIn", &tcpserver::Counters::bytesIn},
    {"bytesOut", &tcpserver::Counters::bytesOut},
}};

// Everything tcpServe set up, handed to the constructor through an External.
struct ServeState {
  std::unique_ptr<tcpserver::Server> server;
  EventTsfn tsfn;
  std::vector<std::shared_ptr<Region>> pinned;
  std::vector<tcpserver::ServedRegion> regions;
  uint16_t port = 0;
  uint32_t maxMessageBytes = 0;
};

class TcpServer : public Napi::ObjectWrap<TcpServer> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return ObjectWrap::DefineClass(env, "TcpServer",
                                   {InstanceMethod<&TcpServer::Reply>("reply"),
                                    InstanceMethod<&TcpServer::Disconnect>("disconnect"),
                                    InstanceMethod<&TcpServer::Stats>("stats"),
                                    InstanceMethod<&TcpServer::Close>("close")});
  }

  explicit TcpServer(const Napi::CallbackInfo& info) : ObjectWrap(info), env_(info.Env()) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowStatus(info.Env(), Status::kInvalidArgument, "servers are made by tcpServe()");
    }
    ServeState& state = *info[0].As<Napi::External<ServeState>>().Data();
    server_ = std::move(state.server);
    tsfn_ = state.tsfn;
    pinned_ = std::move(state.pinned);
    maxMessageBytes_ = state.maxMessageBytes;
    for (auto& region : pinned_) region->pin();
    open_ = true;

    Napi::Env env = info.Env();
    Napi::Array regions = Napi::Array::New(env, state.regions.size());
    for (size_t i = 0; i < state.regions.size(); ++i) {
      Napi::Object region = Napi::Object::New(env);
      region.DefineProperties({
          Napi::PropertyDescriptor::Value("sizeBytes", Napi::Number::New(env, static_cast<double>(state.regions[i].sizeBytes)), napi_enumerable),
          Napi::PropertyDescriptor::Value("rkey", Napi::Number::New(env, state.regions[i].rkey), napi_enumerable),
      });
      regions.Set(static_cast<uint32_t>(i), region);
    }
    info.This().As<Napi::Object>().DefineProperties({
        Napi::PropertyDescriptor::Value("port", Napi::Number::New(env, state.port), napi_enumerable),
        Napi::PropertyDescriptor::Value("regions", regions, napi_enumerable),
    });
    Ref();  // serving: not collectable until close()
    napi_add_env_cleanup_hook(env_, CleanupHook, this);
  }

  ~TcpServer() override {
    if (open_) napi_remove_env_cleanup_hook(env_, CleanupHook, this);
    Shutdown();
  }

 private:
  static void CleanupHook(void* self) {
    auto* server = static_cast<TcpServer*>(self);
    server->open_ = false;  // the hook is consumed
    server->Shutdown();
  }

  // Stop the thread (its last events are queued), release the events channel, unpin.
  void Shutdown() {
    if (server_ == nullptr) return;
    server_->Stop();
    Snapshot();  // final counters, connectionsOpen 0
    server_.reset();
    tsfn_.Release();
    for (auto& region : pinned_) region->unpin();
    pinned_.clear();
  }

  Napi::Value Reply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const uint32_t connection = static_cast<uint32_t>(tcpargs::ToInteger(info[0], "connection", 0, UINT32_MAX));
    const uint32_t requestId = static_cast<uint32_t>(tcpargs::ToInteger(info[1], "requestId", 0, UINT32_MAX));
    if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowStatus(env, Status::kInvalidArgument, "payload must be a Uint8Array");
    }
    Napi::Uint8Array payload = info[2].As<Napi::Uint8Array>();
    if (payload.ByteLength() > maxMessageBytes_) {
      ThrowStatus(env, Status::kInvalidArgument,
                  "reply of " + std::to_string(payload.ByteLength()) + " bytes exceeds maxMessageBytes " +
                      std::to_string(maxMessageBytes_));
    }
    if (server_ != nullptr) server_->Reply(connection, requestId, payload.Data(), payload.ByteLength());
    return env.Undefined();
  }

  Napi::Value Disconnect(const Napi::CallbackInfo& info) {
    const uint32_t connection = static_cast<uint32_t>(tcpargs::ToInteger(info[0], "connection", 0, UINT32_MAX));
    if (server_ != nullptr) server_->Disconnect(connection);
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (server_ != nullptr) Snapshot();
    Napi::Object stats = Napi::Object::New(env);
    for (size_t i = 0; i < kCounterFields.size(); ++i) {
      stats.Set(kCounterFields[i].first, Napi::Number::New(env, static_cast<double>(lastCounters_[i])));
    }
    return stats;
  }

  // Copy the counters (relaxed loads) into lastCounters_, which stats() reports after close() too.
  void Snapshot() {
    const tcpserver::Counters& counters = server_->counters();
    for (size_t i = 0; i < kCounterFields.size(); ++i) {
      lastCounters_[i] = (counters.*(kCounterFields[i].second)).load(std::memory_order_relaxed);
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (server_ != nullptr) {
      Shutdown();
      if (open_) {
        napi_remove_env_cleanup_hook(env_, CleanupHook, this);
        open_ = false;
      }
      Unref();
    }
    return info.Env().Undefined();
  }

  napi_env env_;
  std::unique_ptr<tcpserver::Server> server_;
  EventTsfn tsfn_;
  std::vector<std::shared_ptr<Region>> pinned_;
  uint32_t maxMessageBytes_ = 0;
  bool open_ = false;  // the cleanup hook is registered
  std::array<uint64_t, kCounterFields.size()> lastCounters_{};
};

Napi::Value Serve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = tcpargs::ToOptions(info[0]);
  const std::string host = tcpargs::StringOption(options, "host");
  const uint16_t port = static_cast<uint16_t>(tcpargs::ToInteger(options.Get("port"), "port", 0, 65535));
  tcpserver::Config config;
  config.secret = tcpargs::SecretOption(options);
  config.nodeId = static_cast<uint32_t>(tcpargs::ToInteger(options.Get("nodeId"), "nodeId", 0, UINT32_MAX));
  config.maxMessageBytes = static_cast<uint32_t>(tcpargs::IntegerOption(
      options, "maxMessageBytes", 0, tcpwire::kMaxMessageLimit, tcpwire::kDefaultMaxMessageBytes));
  config.handshakeTimeoutMs =
      static_cast<uint32_t>(tcpargs::IntegerOption(options, "handshakeTimeoutMs", 1, 3600000, 5000));
  Napi::Value onEvent = options.Get("onEvent");
  if (!onEvent.IsFunction()) ThrowStatus(env, Status::kInvalidArgument, "onEvent must be a function");
  Napi::Value regionsValue = options.Get("regions");
  if (!regionsValue.IsArray()) ThrowStatus(env, Status::kInvalidArgument, "regions must be an array of mappings");
  Napi::Array regions = regionsValue.As<Napi::Array>();
  if (regions.Length() > tcpwire::kMaxRegions) {
    ThrowStatus(env, Status::kInvalidArgument, "at most " + std::to_string(tcpwire::kMaxRegions) + " regions");
  }
  ServeState state;
  for (uint32_t i = 0; i < regions.Length(); ++i) {
    std::shared_ptr<Region> region = OpenRegionOf(regions.Get(i));
    tcpserver::ServedRegion served;
    served.region = region;
    served.data = region->data();
    served.sizeBytes = region->size();
    served.rkey = auth::RandomKey();
    config.regions.push_back(served);
    state.pinned.push_back(region);
  }
  state.regions = config.regions;
  state.maxMessageBytes = config.maxMessageBytes;

  std::string error;
  const int listenFd = tcpsock::Listen(host, port, 512, &state.port, &error);
  if (listenFd < 0) ThrowStatus(env, Status::kIo, error);

  state.tsfn = EventTsfn::New(env, onEvent.As<Napi::Function>(), "dpms-tcp-server", 0, 1);
  EventTsfn tsfn = state.tsfn;
  state.server = tcpserver::Server::Start(
      std::move(config), listenFd,
      [tsfn](Event* event) {
        if (tsfn.NonBlockingCall(event) != napi_ok) delete event;
      },
      &error);
  if (state.server == nullptr) {
    state.tsfn.Release();
    ThrowStatus(env, Status::kIo, error);
  }

  auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
  return constructor->New({Napi::External<ServeState>::New(env, &state)});
}

}  // namespace

void InitTcpServer(Napi::Env env, Napi::Object exports) {
  auto* constructor = new Napi::FunctionReference(Napi::Persistent(TcpServer::DefineClass(env)));
  env.AddCleanupHook([constructor] { delete constructor; });
  exports.Set("tcpServe", Napi::Function::New(env, Serve, "tcpServe", constructor));
}

}  // namespace dpms
