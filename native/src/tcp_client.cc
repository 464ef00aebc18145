// tcpConnect and the TransportConnection object (native/index.ts): argument checking in front of the
// client core (tcp_client_core.h), which does the networking on the caller's event loop.
#include "tcp_client.h"

#include "args.h"
#include "errors.h"
#include "tcp_args.h"
#include "tcp_client_core.h"
#include "tcp_wire.h"

namespace dpms {

namespace {

using tcpclient::Core;
namespace w = tcpwire;

constexpr uint64_t kMaxSafeInteger = 9007199254740992ull;  // 2^53: offsets and lengths come as Numbers

class TcpConnection : public Napi::ObjectWrap<TcpConnection>, public tcpclient::WrapperLink {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return ObjectWrap::DefineClass(env, "TcpConnection",
                                   {InstanceMethod<&TcpConnection::Read>("read"),
                                    InstanceMethod<&TcpConnection::ReadInto>("readInto"),
                                    InstanceMethod<&TcpConnection::Write>("write"),
                                    InstanceMethod<&TcpConnection::WriteWithImmediate>("writeWithImmediate"),
                                    InstanceMethod<&TcpConnection::CompareAndSwap>("compareAndSwap"),
                                    InstanceMethod<&TcpConnection::FetchAndAdd>("fetchAndAdd"),
                                    InstanceMethod<&TcpConnection::Persist>("persist"),
                                    InstanceMethod<&TcpConnection::Call>("call"),
                                    InstanceMethod<&TcpConnection::OnClose>("onClose"),
                                    InstanceMethod<&TcpConnection::Close>("close")});
  }

  explicit TcpConnection(const Napi::CallbackInfo& info) : ObjectWrap(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsExternal()) {
      ThrowStatus(env, Status::kInvalidArgument, "connections are made by tcpConnect()");
    }
    core_ = info[0].As<Napi::External<Core>>().Data();
    core_->AttachWrapper(this);
    Napi::Array regions = Napi::Array::New(env, core_->regions().size());
    for (size_t i = 0; i < core_->regions().size(); ++i) {
      Napi::Object region = Napi::Object::New(env);
      region.DefineProperties({
          Napi::PropertyDescriptor::Value(
              "sizeBytes", Napi::Number::New(env, static_cast<double>(core_->regions()[i].sizeBytes)), napi_enumerable),
          Napi::PropertyDescriptor::Value("rkey", Napi::Number::New(env, core_->regions()[i].rkey), napi_enumerable),
      });
      regions.Set(static_cast<uint32_t>(i), region);
    }
    info.This().As<Napi::Object>().DefineProperties({
        Napi::PropertyDescriptor::Value("nodeId", Napi::Number::New(env, core_->nodeId()), napi_enumerable),
        Napi::PropertyDescriptor::Value("regions", regions, napi_enumerable),
    });
  }

  ~TcpConnection() override {
    if (core_ != nullptr) core_->DetachWrapper();
  }

  void HoldStrongly(bool strong) override {
    if (strong) Ref();
    else Unref();
  }

 private:
  static uint16_t RegionArg(const Napi::Value& value) {
    return static_cast<uint16_t>(tcpargs::ToInteger(value, "region", 0, 0xFFFF));
  }
  static uint64_t OffsetArg(const Napi::Value& value) { return tcpargs::ToInteger(value, "offset", 0, kMaxSafeInteger); }
  static uint32_t RkeyArg(const Napi::Value& value) {
    return static_cast<uint32_t>(tcpargs::ToInteger(value, "rkey", 0, UINT32_MAX));
  }
  static Napi::Uint8Array DataArg(const Napi::Value& value, const char* name, uint64_t limit) {
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      ThrowStatus(value.Env(), Status::kInvalidArgument, std::string(name) + " must be a Uint8Array");
    }
    Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
    if (bytes.ByteLength() > limit) {
      ThrowStatus(value.Env(), Status::kInvalidArgument,
                  std::string(name) + " of " + std::to_string(bytes.ByteLength()) + " bytes exceeds the limit of " +
                      std::to_string(limit) + " bytes");
    }
    return bytes;
  }

  Napi::Value Read(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    const uint32_t length = static_cast<uint32_t>(tcpargs::ToInteger(info[2], "length", 0, w::kMaxDataBytes));
    const uint32_t rkey = RkeyArg(info[3]);
    return Napi::Value(info.Env(), core_->Read(region, offset, length, rkey));
  }

  // The READ lands in target[targetOffset, +length): the range is checked here (DPMS_OUT_OF_BOUNDS),
  // and again by the core before each receive into it, since the target's ArrayBuffer may be
  // detached or shrunk by JS while the READ is in flight.
  Napi::Value ReadInto(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    Napi::Uint8Array target = DataArg(info[2], "target", UINT64_MAX);
    const uint64_t targetOffset = tcpargs::ToInteger(info[3], "targetOffset", 0, kMaxSafeInteger);
    const uint32_t length = static_cast<uint32_t>(tcpargs::ToInteger(info[4], "length", 0, w::kMaxDataBytes));
    const uint32_t rkey = RkeyArg(info[5]);
    if (targetOffset > target.ByteLength() || length > target.ByteLength() - targetOffset) {
      ThrowStatus(info.Env(), Status::kOutOfBounds,
                  "[" + std::to_string(targetOffset) + ", " + std::to_string(targetOffset + length) +
                      ") is outside the " + std::to_string(target.ByteLength()) + "-byte target");
    }
    return Napi::Value(info.Env(), core_->ReadInto(region, offset, target, static_cast<size_t>(targetOffset), length, rkey));
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    Napi::Uint8Array data = DataArg(info[2], "data", w::kMaxDataBytes);
    const uint32_t rkey = RkeyArg(info[3]);
    return Napi::Value(info.Env(), core_->Write(w::kWrite, region, offset, data.Data(),
                                                static_cast<uint32_t>(data.ByteLength()), 0, rkey));
  }

  Napi::Value WriteWithImmediate(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    Napi::Uint8Array data = DataArg(info[2], "data", w::kMaxDataBytes);
    const uint32_t immediate = static_cast<uint32_t>(tcpargs::ToInteger(info[3], "immediate", 0, UINT32_MAX));
    const uint32_t rkey = RkeyArg(info[4]);
    return Napi::Value(info.Env(), core_->Write(w::kWriteImm, region, offset, data.Data(),
                                                static_cast<uint32_t>(data.ByteLength()), immediate, rkey));
  }

  Napi::Value CompareAndSwap(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    const uint64_t expected = ToU64(info[2], "expected");
    const uint64_t desired = ToU64(info[3], "desired");
    const uint32_t rkey = RkeyArg(info[4]);
    return Napi::Value(info.Env(), core_->CompareAndSwap(region, offset, expected, desired, rkey));
  }

  Napi::Value FetchAndAdd(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    const uint64_t delta = ToWrappingU64(info[2], "delta");
    const uint32_t rkey = RkeyArg(info[3]);
    return Napi::Value(info.Env(), core_->FetchAndAdd(region, offset, delta, rkey));
  }

  Napi::Value Persist(const Napi::CallbackInfo& info) {
    const uint16_t region = RegionArg(info[0]);
    const uint64_t offset = OffsetArg(info[1]);
    const uint64_t length = tcpargs::ToInteger(info[2], "length", 0, kMaxSafeInteger);
    const uint32_t rkey = RkeyArg(info[3]);
    return Napi::Value(info.Env(), core_->Persist(region, offset, length, rkey));
  }

  Napi::Value Call(const Napi::CallbackInfo& info) {
    Napi::Uint8Array payload = DataArg(info[0], "payload", core_->maxCallBytes());
    return Napi::Value(info.Env(), core_->Call(payload.Data(), static_cast<uint32_t>(payload.ByteLength())));
  }

  Napi::Value OnClose(const Napi::CallbackInfo& info) {
    if (!info[0].IsFunction()) ThrowStatus(info.Env(), Status::kInvalidArgument, "listener must be a function");
    core_->AddCloseListener(info[0]);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    core_->Close();
    return info.Env().Undefined();
  }

  Core* core_ = nullptr;
};

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = tcpargs::ToOptions(info[0]);
  tcpclient::ConnectParams params;
  params.host = tcpargs::StringOption(options, "host");
  params.port = static_cast<uint16_t>(tcpargs::ToInteger(options.Get("port"), "port", 1, 65535));
  params.secret = tcpargs::SecretOption(options);
  params.timeoutMs = tcpargs::IntegerOption(options, "timeoutMs", 1, 3600000, 5000);
  params.maxMessageBytes = static_cast<uint32_t>(
      tcpargs::IntegerOption(options, "maxMessageBytes", 0, w::kMaxMessageLimit, w::kDefaultMaxMessageBytes));
  auto* statics = static_cast<tcpclient::Statics*>(info.Data());
  return Napi::Value(env, Core::Connect(env, statics, std::move(params)));
}

}  // namespace

void InitTcpClient(Napi::Env env, Napi::Object exports) {
  auto* statics = new tcpclient::Statics();
  statics->connectionClass = Napi::Persistent(TcpConnection::DefineClass(env));
  Napi::Object resource = Napi::Object::New(env);
  statics->asyncResource = Napi::Persistent(resource);
  napi_async_init(env, resource, Napi::String::New(env, "dpms-tcp-client"), &statics->asyncContext);
  env.AddCleanupHook([env, statics] {
    napi_async_destroy(env, statics->asyncContext);
    delete statics;
  });
  exports.Set("tcpConnect", Napi::Function::New(env, Connect, "tcpConnect", statics));
}

}  // namespace dpms
