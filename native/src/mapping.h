// The JS mapping objects (PmMapping / SimMapping in native/index.ts): N-API ObjectWraps around a
// shared Region. The mapping's bytes are exposed without copying as a Buffer over an external
// ArrayBuffer whose finalizer holds its own reference to the Region; close() detaches that
// ArrayBuffer and releases the memory at once, and whichever of the two owners is collected last
// releases it if close() was never called.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "region.h"

namespace dpms {

// Methods shared by both mapping classes; Derived is the concrete ObjectWrap (CRTP).
template <typename Derived>
class Mapping : public Napi::ObjectWrap<Derived> {
 public:
  // info[0] is an External<std::shared_ptr<Region>>; only NewPoolMapping / NewSimMapping make one.
  explicit Mapping(const Napi::CallbackInfo& info);

  static std::vector<Napi::ClassPropertyDescriptor<Derived>> CommonMethods();
  const std::shared_ptr<Region>& region() const { return region_; }

 protected:
  // The region, or throw DPMS_CLOSED.
  Region& Open(Napi::Env env) const;

 private:
  Napi::Value Flush(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  Napi::Value Persist(const Napi::CallbackInfo& info);
  Napi::Value MemcpyPersist(const Napi::CallbackInfo& info);
  Napi::Value MemcpyFlush(const Napi::CallbackInfo& info);
  Napi::Value Load64(const Napi::CallbackInfo& info);
  Napi::Value Store64(const Napi::CallbackInfo& info);
  Napi::Value Cas64(const Napi::CallbackInfo& info);
  Napi::Value Faa64(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // The aligned, in-bounds 8-byte word at info[0].
  uint64_t* Word(const Napi::CallbackInfo& info);
  // Shared body of memcpyPersist / memcpyFlush.
  void Copy(const Napi::CallbackInfo& info, bool drain);

  std::shared_ptr<Region> region_;
  Napi::Reference<Napi::ArrayBuffer> arrayBuffer_;  // weak: the JS object's `buffer` keeps it alive
};

class PoolMapping : public Mapping<PoolMapping> {
 public:
  using Mapping::Mapping;
  static Napi::Function DefineClass(Napi::Env env);
};

class SimMapping : public Mapping<SimMapping> {
 public:
  using Mapping::Mapping;
  static Napi::Function DefineClass(Napi::Env env);

 private:
  SimRegion& Sim(Napi::Env env) const;
  Napi::Value Crash(const Napi::CallbackInfo& info);
  Napi::Value CrashImage(const Napi::CallbackInfo& info);
  Napi::Value PersistentImage(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
};

// Register the two classes in the addon's instance data (call once from Init).
void InitMappings(Napi::Env env);
Napi::Object NewPoolMapping(Napi::Env env, std::shared_ptr<PoolRegion> region);
Napi::Object NewSimMapping(Napi::Env env, std::shared_ptr<SimRegion> region);
// The region behind a mapping object; DPMS_INVALID_ARGUMENT if value is not one, DPMS_CLOSED if closed.
std::shared_ptr<Region> OpenRegionOf(const Napi::Value& value);

}  // namespace dpms
