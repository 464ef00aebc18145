// The JS mapping objects: argument checking and dispatch to the Region (see mapping.h).
#include "mapping.h"

#include <cerrno>
#include <cmath>
#include <string>

#include "args.h"
#include "errors.h"

namespace dpms {

namespace {

// Per-environment constructors, so that OpenRegionOf can recognise our objects (InstanceOf) before
// unwrapping them.
struct AddonData {
  Napi::FunctionReference poolClass;
  Napi::FunctionReference simClass;
};

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

// Region primitives return false with errno set only when msync fails.
void CheckIo(Napi::Env env, bool ok, const char* what) {
  if (!ok) ThrowIo(env, what, errno, true);
}

// The seed of a crash image: any integer Number (negative ones are taken modulo 2^64).
uint64_t ToSeed(const Napi::Value& value) {
  if (!value.IsNumber()) ThrowStatus(value.Env(), Status::kInvalidArgument, "seed must be a number");
  const double seed = value.As<Napi::Number>().DoubleValue();
  if (std::floor(seed) != seed || std::fabs(seed) > 9007199254740992.0) {
    ThrowStatus(value.Env(), Status::kInvalidArgument, "seed must be a safe integer");
  }
  return static_cast<uint64_t>(static_cast<int64_t>(seed));
}

// ObjectWrap::Unwrap throws a code-less error for an object that merely inherits our prototype
// (Object.create(proto)); ask N-API directly and treat that as "not a mapping".
template <typename Cls>
Cls* TryUnwrap(const Napi::Object& object) {
  void* wrapped = nullptr;
  if (napi_unwrap(object.Env(), object, &wrapped) != napi_ok) return nullptr;
  return static_cast<Cls*>(wrapped);
}

template <typename Cls>
Napi::Object NewMapping(Napi::Env env, Napi::FunctionReference& cls, std::shared_ptr<Region> region) {
  // The External only lives for the synchronous constructor call.
  return cls.New({Napi::External<std::shared_ptr<Region>>::New(env, &region)});
}

}  // namespace

template <typename Derived>
Mapping<Derived>::Mapping(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Derived>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    ThrowStatus(env, Status::kInvalidArgument, "mappings are made by openPool() or createSim()");
  }
  region_ = *info[0].As<Napi::External<std::shared_ptr<Region>>>().Data();

  // The ArrayBuffer's finalizer owns a second reference, so GC of either owner alone never unmaps
  // memory the other can still reach.
  auto hint = std::make_unique<std::shared_ptr<Region>>(region_);
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      env, region_->data(), region_->size(),
      [](Napi::Env, uint8_t*, std::shared_ptr<Region>* owner) { delete owner; }, hint.get());
  hint.release();
  arrayBuffer_ = Napi::Reference<Napi::ArrayBuffer>::New(buffer.ArrayBuffer(), 0);

  const auto readOnly = napi_enumerable;
  info.This().As<Napi::Object>().DefineProperties({
      Napi::PropertyDescriptor::Value("buffer", buffer, readOnly),
      Napi::PropertyDescriptor::Value("sizeBytes", Napi::Number::New(env, static_cast<double>(region_->size())),
                                      readOnly),
      Napi::PropertyDescriptor::Value("isPmem", Napi::Boolean::New(env, region_->isPmem()), readOnly),
      Napi::PropertyDescriptor::Value("flushMode", Napi::String::New(env, region_->flushMode()), readOnly),
  });
}

template <typename Derived>
std::vector<Napi::ClassPropertyDescriptor<Derived>> Mapping<Derived>::CommonMethods() {
  using Wrap = Napi::ObjectWrap<Derived>;
  return {
      Wrap::InstanceMethod("flush", &Mapping::Flush),
      Wrap::InstanceMethod("drain", &Mapping::Drain),
      Wrap::InstanceMethod("persist", &Mapping::Persist),
      Wrap::InstanceMethod("memcpyPersist", &Mapping::MemcpyPersist),
      Wrap::InstanceMethod("memcpyFlush", &Mapping::MemcpyFlush),
      Wrap::InstanceMethod("load64", &Mapping::Load64),
      Wrap::InstanceMethod("store64", &Mapping::Store64),
      Wrap::InstanceMethod("cas64", &Mapping::Cas64),
      Wrap::InstanceMethod("faa64", &Mapping::Faa64),
      Wrap::InstanceMethod("close", &Mapping::Close),
  };
}

template <typename Derived>
Region& Mapping<Derived>::Open(Napi::Env env) const {
  if (region_ == nullptr || region_->closed()) ThrowStatus(env, Status::kClosed, "the mapping is closed");
  return *region_;
}

template <typename Derived>
Napi::Value Mapping<Derived>::Flush(const Napi::CallbackInfo& info) {
  Region& region = Open(info.Env());
  const size_t offset = ToIndex(info[0], "offset");
  const size_t length = ToIndex(info[1], "length");
  CheckRange(info.Env(), offset, length, region.size(), "the mapping");
  CheckIo(info.Env(), region.flush(offset, length), "msync");
  return info.Env().Undefined();
}

template <typename Derived>
Napi::Value Mapping<Derived>::Drain(const Napi::CallbackInfo& info) {
  CheckIo(info.Env(), Open(info.Env()).drain(), "drain");
  return info.Env().Undefined();
}

template <typename Derived>
Napi::Value Mapping<Derived>::Persist(const Napi::CallbackInfo& info) {
  Region& region = Open(info.Env());
  const size_t offset = ToIndex(info[0], "offset");
  const size_t length = ToIndex(info[1], "length");
  CheckRange(info.Env(), offset, length, region.size(), "the mapping");
  CheckIo(info.Env(), region.persist(offset, length), "msync");
  return info.Env().Undefined();
}

template <typename Derived>
void Mapping<Derived>::Copy(const Napi::CallbackInfo& info, bool drain) {
  Napi::Env env = info.Env();
  Region& region = Open(env);
  const size_t dstOffset = ToIndex(info[0], "dstOffset");
  Napi::Uint8Array src = ToBytes(info[1], "src");
  const size_t srcLength = src.ByteLength();
  const size_t srcOffset = ToIndexOr(info[2], "srcOffset", 0);
  if (srcOffset > srcLength) CheckRange(env, srcOffset, 0, srcLength, "the source");
  const size_t length = ToIndexOr(info[3], "length", srcLength - srcOffset);
  CheckRange(env, srcOffset, length, srcLength, "the source");
  CheckRange(env, dstOffset, length, region.size(), "the mapping");
  const uint8_t* from = src.Data() + srcOffset;
  CheckIo(env, drain ? region.memcpyPersist(dstOffset, from, length) : region.memcpyFlush(dstOffset, from, length),
          "msync");
}

template <typename Derived>
Napi::Value Mapping<Derived>::MemcpyPersist(const Napi::CallbackInfo& info) {
  Copy(info, true);
  return info.Env().Undefined();
}

template <typename Derived>
Napi::Value Mapping<Derived>::MemcpyFlush(const Napi::CallbackInfo& info) {
  Copy(info, false);
  return info.Env().Undefined();
}

template <typename Derived>
uint64_t* Mapping<Derived>::Word(const Napi::CallbackInfo& info) {
  Region& region = Open(info.Env());
  const size_t offset = ToIndex(info[0], "offset");
  CheckRange(info.Env(), offset, 8, region.size(), "the mapping");
  // Mappings start page- (pool) or line-aligned (sim), so an aligned offset is an aligned address.
  if (offset % 8 != 0) ThrowStatus(info.Env(), Status::kMisaligned, "atomics need an 8-byte-aligned offset");
  return reinterpret_cast<uint64_t*>(region.data() + offset);
}

template <typename Derived>
Napi::Value Mapping<Derived>::Load64(const Napi::CallbackInfo& info) {
  return Napi::BigInt::New(info.Env(), __atomic_load_n(Word(info), __ATOMIC_SEQ_CST));
}

template <typename Derived>
Napi::Value Mapping<Derived>::Store64(const Napi::CallbackInfo& info) {
  uint64_t* word = Word(info);
  __atomic_store_n(word, ToU64(info[1], "value"), __ATOMIC_SEQ_CST);
  return info.Env().Undefined();
}

template <typename Derived>
Napi::Value Mapping<Derived>::Cas64(const Napi::CallbackInfo& info) {
  uint64_t* word = Word(info);
  uint64_t expected = ToU64(info[1], "expected");
  const uint64_t desired = ToU64(info[2], "desired");
  // On failure `expected` is overwritten with the value found; on success it already equals it.
  __atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return Napi::BigInt::New(info.Env(), expected);
}

template <typename Derived>
Napi::Value Mapping<Derived>::Faa64(const Napi::CallbackInfo& info) {
  uint64_t* word = Word(info);
  const uint64_t delta = ToWrappingU64(info[1], "delta");
  return Napi::BigInt::New(info.Env(), __atomic_fetch_add(word, delta, __ATOMIC_SEQ_CST));
}

template <typename Derived>
Napi::Value Mapping<Derived>::Close(const Napi::CallbackInfo& info) {
  if (region_ == nullptr || region_->closed()) return info.Env().Undefined();
  if (region_->pinned()) {
    ThrowStatus(info.Env(), Status::kBusy, "the mapping is being served by a transport server; close the server first");
  }
  // Detach first, so no JS view can reach the memory once it is unmapped.
  if (!arrayBuffer_.IsEmpty()) {
    Napi::ArrayBuffer arrayBuffer = arrayBuffer_.Value();
    if (!arrayBuffer.IsEmpty() && !arrayBuffer.IsDetached()) arrayBuffer.Detach();
  }
  region_->close();
  return info.Env().Undefined();
}

template class Mapping<PoolMapping>;
template class Mapping<SimMapping>;

Napi::Function PoolMapping::DefineClass(Napi::Env env) {
  return ObjectWrap::DefineClass(env, "PmMapping", CommonMethods());
}

Napi::Function SimMapping::DefineClass(Napi::Env env) {
  auto properties = CommonMethods();
  properties.push_back(InstanceMethod("crash", &SimMapping::Crash));
  properties.push_back(InstanceMethod("crashImage", &SimMapping::CrashImage));
  properties.push_back(InstanceMethod("persistentImage", &SimMapping::PersistentImage));
  properties.push_back(InstanceAccessor("stats", &SimMapping::Stats, nullptr));
  return ObjectWrap::DefineClass(env, "SimMapping", properties);
}

// SimMappings are only ever constructed around a SimRegion (NewSimMapping).
SimRegion& SimMapping::Sim(Napi::Env env) const { return static_cast<SimRegion&>(Open(env)); }

Napi::Value SimMapping::Crash(const Napi::CallbackInfo& info) {
  SimRegion& sim = Sim(info.Env());
  sim.crash(ToSeed(info[0]));
  return info.Env().Undefined();
}

Napi::Value SimMapping::CrashImage(const Napi::CallbackInfo& info) {
  SimRegion& sim = Sim(info.Env());
  const uint64_t seed = ToSeed(info[0]);
  Napi::Buffer<uint8_t> image = Napi::Buffer<uint8_t>::New(info.Env(), sim.size());
  sim.crashImage(seed, image.Data());
  return image;
}

Napi::Value SimMapping::PersistentImage(const Napi::CallbackInfo& info) {
  SimRegion& sim = Sim(info.Env());
  return Napi::Buffer<uint8_t>::Copy(info.Env(), sim.persistent(), sim.size());
}

// A getter, so it stays readable after close() (the counters outlive the images).
Napi::Value SimMapping::Stats(const Napi::CallbackInfo& info) {
  const SimStats stats = static_cast<const SimRegion&>(*region()).stats();
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("flushes", Napi::Number::New(info.Env(), static_cast<double>(stats.flushes)));
  result.Set("drains", Napi::Number::New(info.Env(), static_cast<double>(stats.drains)));
  result.Set("pendingLines", Napi::Number::New(info.Env(), static_cast<double>(stats.pendingLines)));
  return result;
}

void InitMappings(Napi::Env env) {
  auto* data = new AddonData();
  data->poolClass = Napi::Persistent(PoolMapping::DefineClass(env));
  data->simClass = Napi::Persistent(SimMapping::DefineClass(env));
  env.SetInstanceData(data);  // deleted by N-API when the environment goes away
}

Napi::Object NewPoolMapping(Napi::Env env, std::shared_ptr<PoolRegion> region) {
  return NewMapping<PoolMapping>(env, Data(env).poolClass, std::move(region));
}

Napi::Object NewSimMapping(Napi::Env env, std::shared_ptr<SimRegion> region) {
  return NewMapping<SimMapping>(env, Data(env).simClass, std::move(region));
}

std::shared_ptr<Region> OpenRegionOf(const Napi::Value& value) {
  Napi::Env env = value.Env();
  std::shared_ptr<Region> region;
  if (value.IsObject()) {
    Napi::Object object = value.As<Napi::Object>();
    AddonData& data = Data(env);
    if (object.InstanceOf(data.poolClass.Value())) {
      if (PoolMapping* pool = TryUnwrap<PoolMapping>(object)) region = pool->region();
    } else if (object.InstanceOf(data.simClass.Value())) {
      if (SimMapping* sim = TryUnwrap<SimMapping>(object)) region = sim->region();
    }
  }
  if (region == nullptr) ThrowStatus(env, Status::kInvalidArgument, "mapping must come from openPool() or createSim()");
  if (region->closed()) ThrowStatus(env, Status::kClosed, "the mapping is closed");
  return region;
}

}  // namespace dpms
