// The JavaScript side of the FUSE binding: fuseMount(mountpoint, options, config, dispatch) and the
// session handle native/fuse.ts drives.
//
// Each kernel request arrives from the loop thread (fuse_loop.cc) through a ThreadSafeFunction and is
// given a request id, kept in the session's table of pending requests, and passed to `dispatch`
// (op, id, uid, gid, pid, umask, ...arguments). JS answers later with one of the handle's reply*
// methods. A reply checks everything it is given before it answers (a bad value throws a TypeError with
// code DPMS_INVALID_ARGUMENT and the request stays pending, so the caller can still answer it with an
// errno), and it takes the request out of the table before calling fuse_reply_*, so no request is
// answered twice whatever JS does: a reply to an id that is no longer pending returns false.
//
// The ThreadSafeFunction keeps the event loop alive while mounted. The session ends when the loop thread
// ends (unmount(), an external fusermount -u, an abort): its last event runs Finish on the JS thread,
// which joins the thread, unmounts, frees every request JS still holds (fuse_reply_none: the kernel side
// is gone), destroys the libfuse session and releases the ThreadSafeFunction, so the process may exit.
// unmountSync() does the same at once (process exit), and so does the environment's cleanup hook.
#include "fuse.h"

#include <fuse_lowlevel.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "errors.h"
#include "fuse_loop.h"
#include "tcp_args.h"

namespace dpms {

namespace {

using fuse::Op;
using fuse::Request;

constexpr uint64_t kMaxSafeInteger = 1ull << 53;
constexpr size_t kMaxOptions = 64;
constexpr size_t kMaxOptionBytes = 1024;
constexpr double kMaxTimeoutS = 86400.0 * 365;
constexpr size_t kMaxNameBytes = 255;         // NAME_MAX, also the longest xattr name
constexpr size_t kMaxLinkBytes = PATH_MAX - 1;
constexpr size_t kMaxXattrBytes = 65536;      // XATTR_SIZE_MAX and XATTR_LIST_MAX
constexpr int kMaxErrno = 511;                // the kernel rejects replies with error <= -512

struct Pending {
  fuse_req_t req;
  Op op;
  uint64_t size;  // read, readdir, getxattr, listxattr: the most the kernel takes; write: the bytes sent
};

class Session;
void CallJs(Napi::Env env, Napi::Function dispatch, std::shared_ptr<Session>* context, Request* request);
using DispatchTsfn = Napi::TypedThreadSafeFunction<std::shared_ptr<Session>, Request, CallJs>;

// The JS-thread state of one mount. Owned jointly by the handle object and the ThreadSafeFunction (its
// context), so it outlives both the handle's collection and the last queued event.
class Session {
 public:
  ~Session() { Finish(); }

  // End the session now; see the file comment. JS thread only; idempotent.
  void Finish() {
    if (finished) return;
    finished = true;
    if (loop != nullptr) loop->StopAndUnmount();
    for (auto& entry : pending) fuse_reply_none(entry.second.req);
    pending.clear();
    loop.reset();
    if (hookRegistered) {
      napi_remove_env_cleanup_hook(env, CleanupHook, this);
      hookRegistered = false;
    }
    if (tsfnCreated) tsfn.Release();
  }

  static void CleanupHook(void* self) {
    auto* session = static_cast<Session*>(self);
    session->hookRegistered = false;  // consumed
    session->Finish();
  }

  // The loop thread's sink: queue for JS without waiting. The queue is unbounded because the kernel
  // bounds it: each synchronous request holds a calling thread, background ones are capped by
  // max_background.
  static void Sink(void* context, Request* request) {
    auto* session = static_cast<Session*>(context);
    if (session->tsfn.NonBlockingCall(request) != napi_ok) {  // the environment is shutting down
      if (request->req != nullptr) fuse_reply_err(request->req, EIO);
      delete request;
    }
  }

  void Deliver(Napi::Env env, Napi::Function dispatch, Request& request);

  std::unique_ptr<fuse::Loop> loop;
  DispatchTsfn tsfn;
  bool tsfnCreated = false;
  napi_env env = nullptr;
  double entryTimeoutS = 0;
  double attrTimeoutS = 0;
  std::unordered_map<uint64_t, Pending> pending;
  uint64_t nextId = 1;
  bool finished = false;
  bool hookRegistered = false;
};

Napi::Value Number(Napi::Env env, uint64_t value) { return Napi::Number::New(env, static_cast<double>(value)); }

Napi::Value Bytes(Napi::Env env, const std::string& bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// The Buffer takes over the request's data without a copy (1 MiB writes).
Napi::Value TakeData(Napi::Env env, Request& request) {
  if (request.dataLength == 0) return Napi::Buffer<uint8_t>::New(env, 0);
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::NewOrCopy(
      env, request.data.get(), request.dataLength, [](Napi::Env, uint8_t* bytes) { delete[] bytes; });
  request.data.release();
  return buffer;
}

// Nanoseconds since the epoch as a BigInt (a setattr time may lie outside the int64 nanosecond range).
Napi::Value TimeNs(Napi::Env env, const timespec& time) {
  const __int128 ns = static_cast<__int128>(time.tv_sec) * 1000000000 + time.tv_nsec;
  const bool negative = ns < 0;
  const unsigned __int128 magnitude = negative ? static_cast<unsigned __int128>(-ns) : static_cast<unsigned __int128>(ns);
  const uint64_t words[2] = {static_cast<uint64_t>(magnitude), static_cast<uint64_t>(magnitude >> 64)};
  return Napi::BigInt::New(env, negative ? 1 : 0, words[1] != 0 ? 2 : 1, words);
}

Napi::Object SetattrChanges(Napi::Env env, const Request& request) {
  Napi::Object changes = Napi::Object::New(env);
  const int toSet = request.toSet;
  // Only the permission bits can change; the type bits the kernel also sends cannot.
  if ((toSet & FUSE_SET_ATTR_MODE) != 0) changes.Set("mode", Number(env, request.attr.st_mode & 07777));
  if ((toSet & FUSE_SET_ATTR_UID) != 0) changes.Set("uid", Number(env, request.attr.st_uid));
  if ((toSet & FUSE_SET_ATTR_GID) != 0) changes.Set("gid", Number(env, request.attr.st_gid));
  if ((toSet & FUSE_SET_ATTR_SIZE) != 0) changes.Set("size", Number(env, static_cast<uint64_t>(request.attr.st_size)));
  // The kernel sets ATIME together with ATIME_NOW; NOW wins. FUSE_SET_ATTR_CTIME is ignored (the file
  // system sets ctime itself on every change).
  if ((toSet & FUSE_SET_ATTR_ATIME_NOW) != 0) {
    changes.Set("atimeNs", Napi::String::New(env, "now"));
  } else if ((toSet & FUSE_SET_ATTR_ATIME) != 0) {
    changes.Set("atimeNs", TimeNs(env, request.attr.st_atim));
  }
  if ((toSet & FUSE_SET_ATTR_MTIME_NOW) != 0) {
    changes.Set("mtimeNs", Napi::String::New(env, "now"));
  } else if ((toSet & FUSE_SET_ATTR_MTIME) != 0) {
    changes.Set("mtimeNs", TimeNs(env, request.attr.st_mtim));
  }
  if (request.hasFh) changes.Set("fh", Number(env, request.fh));
  return changes;
}

// dispatch's arguments after (op, id, uid, gid, pid, umask); native/fuse.ts reads them in this order.
void AppendArguments(Napi::Env env, Request& r, std::vector<napi_value>* args) {
  auto add = [args](Napi::Value value) { args->push_back(value); };
  const Napi::Value ino = Number(env, r.ino);
  switch (r.op) {
    case Op::kLookup: case Op::kUnlink: case Op::kRmdir:
      add(ino), add(Bytes(env, r.name));
      break;
    case Op::kGetattr:
      add(ino), add(r.hasFh ? Number(env, r.fh) : env.Undefined());
      break;
    case Op::kSetattr:
      add(ino), add(SetattrChanges(env, r));
      break;
    case Op::kReadlink: case Op::kStatfs:
      add(ino);
      break;
    case Op::kMknod:
      add(ino), add(Bytes(env, r.name)), add(Number(env, r.mode)), add(Number(env, r.rdev));
      break;
    case Op::kMkdir:
      add(ino), add(Bytes(env, r.name)), add(Number(env, r.mode));
      break;
    case Op::kSymlink:  // (target, parent, name)
      add(Bytes(env, r.newName)), add(ino), add(Bytes(env, r.name));
      break;
    case Op::kRename:
      add(ino), add(Bytes(env, r.name)), add(Number(env, r.newParent)), add(Bytes(env, r.newName)),
          add(Number(env, r.renameFlags));
      break;
    case Op::kLink:
      add(ino), add(Number(env, r.newParent)), add(Bytes(env, r.newName));
      break;
    case Op::kOpen: case Op::kOpendir:
      add(ino), add(Number(env, static_cast<uint32_t>(r.flags)));
      break;
    case Op::kRead:
      add(ino), add(Number(env, r.fh)), add(Number(env, r.size)), add(Number(env, r.offset));
      break;
    case Op::kWrite:
      add(ino), add(Number(env, r.fh)), add(TakeData(env, r)), add(Number(env, r.offset)),
          add(Number(env, static_cast<uint32_t>(r.flags)));
      break;
    case Op::kFlush: case Op::kReleasedir:
      add(ino), add(Number(env, r.fh));
      break;
    case Op::kRelease:
      add(ino), add(Number(env, r.fh)), add(Number(env, static_cast<uint32_t>(r.flags)));
      break;
    case Op::kFsync: case Op::kFsyncdir:
      add(ino), add(Number(env, r.fh)), add(Napi::Boolean::New(env, r.datasync));
      break;
    case Op::kReaddir:
      add(ino), add(Number(env, r.fh)), add(Number(env, r.offset));
      break;
    case Op::kSetxattr:
      add(ino), add(Napi::String::New(env, r.name)), add(TakeData(env, r)), add(Number(env, static_cast<uint32_t>(r.flags)));
      break;
    case Op::kGetxattr:
      add(ino), add(Napi::String::New(env, r.name)), add(Number(env, r.size));
      break;
    case Op::kListxattr:
      add(ino), add(Number(env, r.size));
      break;
    case Op::kRemovexattr:
      add(ino), add(Napi::String::New(env, r.name));
      break;
    case Op::kAccess:
      add(ino), add(Number(env, r.mask));
      break;
    case Op::kCreate:
      add(ino), add(Bytes(env, r.name)), add(Number(env, r.mode)), add(Number(env, static_cast<uint32_t>(r.flags)));
      break;
    case Op::kInit: case Op::kForget: case Op::kEnd:
      break;
  }
}

void CallQuietly(Napi::Function dispatch, const std::vector<napi_value>& args) {
  try {
    dispatch.Call(args);
  } catch (const Napi::Error&) {
    // native/fuse.ts never throws from dispatch; if it did, the exception is dropped here rather than
    // becoming an uncaught exception that kills the process under a live mount.
  }
}

void Session::Deliver(Napi::Env env, Napi::Function dispatch, Request& request) {
  const double op = static_cast<double>(request.op);
  switch (request.op) {
    case Op::kEnd:
      Finish();
      CallQuietly(dispatch, {Napi::Number::New(env, op), Napi::Number::New(env, 0), Napi::Number::New(env, request.error)});
      return;
    case Op::kInit:  // (maxWriteBytes, maxReadaheadBytes) as negotiated
      CallQuietly(dispatch, {Napi::Number::New(env, op), Napi::Number::New(env, 0), Number(env, request.size),
                             Number(env, request.offset)});
      return;
    case Op::kForget:  // (ino, nlookup) each
      for (const auto& forget : request.forgets) {
        CallQuietly(dispatch, {Napi::Number::New(env, op), Napi::Number::New(env, 0), Number(env, forget.first),
                               Number(env, forget.second)});
      }
      return;
    default:
      break;
  }

  const uint64_t id = nextId++;
  std::vector<napi_value> args;
  try {
    args = {Napi::Number::New(env, op), Number(env, id), Number(env, request.uid), Number(env, request.gid),
            Number(env, request.pid), Number(env, request.umask)};
    AppendArguments(env, request, &args);
  } catch (...) {
    fuse_reply_err(request.req, EIO);
    return;
  }
  pending.emplace(id, Pending{request.req, request.op, request.op == Op::kWrite ? request.dataLength : request.size});
  try {
    dispatch.Call(args);
  } catch (...) {
    // Answered already if JS replied before throwing; otherwise the request must not hang.
    auto it = pending.find(id);
    if (it != pending.end()) {
      fuse_reply_err(it->second.req, EIO);
      pending.erase(it);
    }
  }
}

void CallJs(Napi::Env env, Napi::Function dispatch, std::shared_ptr<Session>* context, Request* raw) {
  std::unique_ptr<Request> request(raw);
  // env is null only when Node empties the queue while tearing the function down, which it does after
  // the finalizer has finished the session and freed the context: neither may be touched then.
  if (env == nullptr || request == nullptr || context == nullptr) return;
  Session& session = **context;
  // After Finish the libfuse session is destroyed: the request's memory went with it (never touch it).
  if (session.finished) return;
  if (dispatch.IsEmpty()) {
    if (request->req != nullptr) fuse_reply_err(request->req, EIO);
    return;
  }
  try {
    session.Deliver(env, dispatch, *request);
  } catch (...) {
    // Deliver answers its own failures; nothing may escape into the event loop.
  }
}

// ---- JS values → libfuse structures (every check throws DPMS_INVALID_ARGUMENT) ----

[[noreturn]] void Invalid(Napi::Env env, const std::string& message) {
  ThrowStatus(env, Status::kInvalidArgument, message);
}

Napi::Object ToObject(const Napi::Value& value, const char* name) {
  if (!value.IsObject()) Invalid(value.Env(), std::string(name) + " must be an object");
  return value.As<Napi::Object>();
}

uint64_t Field(const Napi::Object& object, const char* key, uint64_t min, uint64_t max) {
  return tcpargs::ToInteger(object.Get(key), key, min, max);
}

bool OptionalFlag(const Napi::Object& object, const char* key) {
  Napi::Value value = object.Get(key);
  if (value.IsUndefined()) return false;
  if (!value.IsBoolean()) Invalid(object.Env(), std::string(key) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

// Signed nanoseconds since the epoch → timespec, flooring (-1 ns is 1969-12-31T23:59:59.999999999).
timespec ToTimespec(const Napi::Value& value, const char* name) {
  if (!value.IsBigInt()) Invalid(value.Env(), std::string(name) + " must be a BigInt (ns)");
  bool lossless = false;
  const int64_t ns = value.As<Napi::BigInt>().Int64Value(&lossless);
  if (!lossless) Invalid(value.Env(), std::string(name) + " must fit a signed 64-bit nanosecond count");
  int64_t seconds = ns / 1000000000;
  int64_t rest = ns % 1000000000;
  if (rest < 0) {
    rest += 1000000000;
    seconds -= 1;
  }
  timespec time;
  time.tv_sec = static_cast<time_t>(seconds);
  time.tv_nsec = static_cast<long>(rest);
  return time;
}

struct stat ToStat(const Napi::Value& value) {
  Napi::Object attr = ToObject(value, "attr");
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_ino = Field(attr, "ino", 1, kMaxSafeInteger);
  st.st_mode = static_cast<mode_t>(Field(attr, "mode", 0, UINT32_MAX));
  st.st_nlink = Field(attr, "nlink", 0, UINT32_MAX);
  st.st_uid = static_cast<uid_t>(Field(attr, "uid", 0, UINT32_MAX));
  st.st_gid = static_cast<gid_t>(Field(attr, "gid", 0, UINT32_MAX));
  st.st_rdev = Field(attr, "rdev", 0, UINT32_MAX);
  st.st_size = static_cast<off_t>(Field(attr, "size", 0, kMaxSafeInteger));
  st.st_blocks = static_cast<blkcnt_t>(Field(attr, "blocks", 0, kMaxSafeInteger));
  st.st_atim = ToTimespec(attr.Get("atimeNs"), "atimeNs");
  st.st_mtim = ToTimespec(attr.Get("mtimeNs"), "mtimeNs");
  st.st_ctim = ToTimespec(attr.Get("ctimeNs"), "ctimeNs");
  return st;
}

fuse_entry_param ToEntry(const Napi::Value& value, const Session& session) {
  Napi::Object entry = ToObject(value, "entry");
  fuse_entry_param param;
  std::memset(&param, 0, sizeof param);
  param.attr = ToStat(entry.Get("attr"));
  param.ino = param.attr.st_ino;
  param.generation = Field(entry, "generation", 0, kMaxSafeInteger);
  param.attr_timeout = session.attrTimeoutS;
  param.entry_timeout = session.entryTimeoutS;
  return param;
}

fuse_file_info ToOpen(const Napi::Value& value) {
  Napi::Object open = ToObject(value, "open reply");
  fuse_file_info fi;
  std::memset(&fi, 0, sizeof fi);
  fi.fh = Field(open, "fh", 0, kMaxSafeInteger);
  fi.direct_io = OptionalFlag(open, "directIo") ? 1 : 0;
  fi.keep_cache = OptionalFlag(open, "keepCache") ? 1 : 0;
  fi.nonseekable = OptionalFlag(open, "nonseekable") ? 1 : 0;
  return fi;
}

struct statvfs ToStatvfs(const Napi::Value& value) {
  Napi::Object object = ToObject(value, "statfs");
  struct statvfs st;
  std::memset(&st, 0, sizeof st);
  st.f_bsize = Field(object, "bsize", 0, UINT32_MAX);
  st.f_frsize = Field(object, "frsize", 0, UINT32_MAX);
  st.f_blocks = Field(object, "blocks", 0, kMaxSafeInteger);
  st.f_bfree = Field(object, "bfree", 0, kMaxSafeInteger);
  st.f_bavail = Field(object, "bavail", 0, kMaxSafeInteger);
  st.f_files = Field(object, "files", 0, kMaxSafeInteger);
  st.f_ffree = Field(object, "ffree", 0, kMaxSafeInteger);
  st.f_favail = Field(object, "favail", 0, kMaxSafeInteger);
  st.f_namemax = Field(object, "namemax", 0, UINT32_MAX);
  return st;
}

Napi::Uint8Array ToBytes(const Napi::Value& value, const char* name) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Invalid(value.Env(), std::string(name) + " must be a Uint8Array");
  }
  return value.As<Napi::Uint8Array>();
}

// A directory entry or xattr name: 1..255 bytes, no NUL (and no '/' for a file name).
std::string ToName(Napi::Env env, const uint8_t* bytes, size_t length, bool fileName, const char* what) {
  if (length == 0 || length > kMaxNameBytes) Invalid(env, std::string(what) + " must be 1 to 255 bytes");
  if (std::memchr(bytes, 0, length) != nullptr || (fileName && std::memchr(bytes, '/', length) != nullptr)) {
    Invalid(env, std::string(what) + (fileName ? " must not contain NUL or '/'" : " must not contain NUL"));
  }
  return std::string(reinterpret_cast<const char*>(bytes), length);
}

const char* OpName(Op op) {
  switch (op) {
    case Op::kLookup: return "lookup";
    case Op::kGetattr: return "getattr";
    case Op::kSetattr: return "setattr";
    case Op::kReadlink: return "readlink";
    case Op::kMknod: return "mknod";
    case Op::kMkdir: return "mkdir";
    case Op::kUnlink: return "unlink";
    case Op::kRmdir: return "rmdir";
    case Op::kSymlink: return "symlink";
    case Op::kRename: return "rename";
    case Op::kLink: return "link";
    case Op::kOpen: return "open";
    case Op::kRead: return "read";
    case Op::kWrite: return "write";
    case Op::kFlush: return "flush";
    case Op::kRelease: return "release";
    case Op::kFsync: return "fsync";
    case Op::kOpendir: return "opendir";
    case Op::kReaddir: return "readdir";
    case Op::kReleasedir: return "releasedir";
    case Op::kFsyncdir: return "fsyncdir";
    case Op::kStatfs: return "statfs";
    case Op::kSetxattr: return "setxattr";
    case Op::kGetxattr: return "getxattr";
    case Op::kListxattr: return "listxattr";
    case Op::kRemovexattr: return "removexattr";
    case Op::kAccess: return "access";
    case Op::kCreate: return "create";
    default: return "internal";
  }
}

// ---- The session handle ----

class FuseHandle : public Napi::ObjectWrap<FuseHandle> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return ObjectWrap::DefineClass(env, "FuseSessionHandle",
                                   {InstanceMethod<&FuseHandle::ReplyErr>("replyErr"),
                                    InstanceMethod<&FuseHandle::ReplyOk>("replyOk"),
                                    InstanceMethod<&FuseHandle::ReplyEntry>("replyEntry"),
                                    InstanceMethod<&FuseHandle::ReplyCreate>("replyCreate"),
                                    InstanceMethod<&FuseHandle::ReplyAttr>("replyAttr"),
                                    InstanceMethod<&FuseHandle::ReplyOpen>("replyOpen"),
                                    InstanceMethod<&FuseHandle::ReplyWrite>("replyWrite"),
                                    InstanceMethod<&FuseHandle::ReplyBuf>("replyBuf"),
                                    InstanceMethod<&FuseHandle::ReplyXattr>("replyXattr"),
                                    InstanceMethod<&FuseHandle::ReplyNames>("replyNames"),
                                    InstanceMethod<&FuseHandle::ReplyReaddir>("replyReaddir"),
                                    InstanceMethod<&FuseHandle::ReplyStatfs>("replyStatfs"),
                                    InstanceMethod<&FuseHandle::Unmount>("unmount"),
                                    InstanceMethod<&FuseHandle::UnmountSync>("unmountSync")});
  }

  explicit FuseHandle(const Napi::CallbackInfo& info) : ObjectWrap(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) Invalid(info.Env(), "FUSE sessions are made by fuseMount()");
    session_ = *info[0].As<Napi::External<std::shared_ptr<Session>>>().Data();
  }

 private:
  // The pending request `id` (info[0]) of one of `ops`, or nothing when it is no longer pending (answered,
  // or its session ended). Peeking does not take it: the reply's value is checked first.
  std::optional<Pending> Peek(const Napi::CallbackInfo& info, const char* reply, std::initializer_list<Op> ops) {
    const uint64_t id = tcpargs::ToInteger(info[0], "id", 1, kMaxSafeInteger);
    auto it = session_->pending.find(id);
    if (it == session_->pending.end()) return std::nullopt;
    for (Op op : ops) {
      if (it->second.op == op) return it->second;
    }
    Invalid(info.Env(), std::string(reply) + " cannot answer a " + OpName(it->second.op) + " request");
  }

  // Take request `id` out of the table for answering; null if it went meanwhile (the checks above may run
  // JS getters, which could have answered it).
  fuse_req_t Take(const Napi::CallbackInfo& info) {
    const uint64_t id = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
    auto it = session_->pending.find(id);
    if (it == session_->pending.end()) return nullptr;
    fuse_req_t req = it->second.req;
    session_->pending.erase(it);
    return req;
  }

  static Napi::Value Answered(const Napi::CallbackInfo& info, bool answered) {
    return Napi::Boolean::New(info.Env(), answered);
  }

  Napi::Value ReplyErr(const Napi::CallbackInfo& info) {
    const uint64_t id = tcpargs::ToInteger(info[0], "id", 1, kMaxSafeInteger);
    const int err = static_cast<int>(tcpargs::ToInteger(info[1], "errno", 1, kMaxErrno));
    auto it = session_->pending.find(id);
    if (it == session_->pending.end()) return Answered(info, false);
    fuse_req_t req = it->second.req;
    session_->pending.erase(it);
    fuse_reply_err(req, err);
    return Answered(info, true);
  }

  Napi::Value ReplyOk(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyOk",
              {Op::kUnlink, Op::kRmdir, Op::kRename, Op::kFlush, Op::kRelease, Op::kFsync, Op::kReleasedir,
               Op::kFsyncdir, Op::kSetxattr, Op::kRemovexattr, Op::kAccess})) {
      return Answered(info, false);
    }
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_err(req, 0);
    return Answered(info, req != nullptr);
  }

  Napi::Value ReplyEntry(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyEntry", {Op::kLookup, Op::kMknod, Op::kMkdir, Op::kSymlink, Op::kLink})) {
      return Answered(info, false);
    }
    const fuse_entry_param entry = ToEntry(info[1], *session_);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_entry(req, &entry);
    return Answered(info, req != nullptr);
  }

  Napi::Value ReplyCreate(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyCreate", {Op::kCreate})) return Answered(info, false);
    const fuse_entry_param entry = ToEntry(info[1], *session_);
    const fuse_file_info fi = ToOpen(info[2]);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_create(req, &entry, &fi);
    return Answered(info, req != nullptr);
  }

  Napi::Value ReplyAttr(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyAttr", {Op::kGetattr, Op::kSetattr})) return Answered(info, false);
    const struct stat st = ToStat(info[1]);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_attr(req, &st, session_->attrTimeoutS);
    return Answered(info, req != nullptr);
  }

  Napi::Value ReplyOpen(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyOpen", {Op::kOpen, Op::kOpendir})) return Answered(info, false);
    const fuse_file_info fi = ToOpen(info[1]);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_open(req, &fi);
    return Answered(info, req != nullptr);
  }

  Napi::Value ReplyWrite(const Napi::CallbackInfo& info) {
    const std::optional<Pending> pending = Peek(info, "replyWrite", {Op::kWrite});
    if (!pending) return Answered(info, false);
    const uint64_t count = tcpargs::ToInteger(info[1], "count", 0, pending->size);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_write(req, count);
    return Answered(info, req != nullptr);
  }

  // read: at most the size asked for (shorter means end of file); readlink: the target, 1..PATH_MAX-1
  // bytes without NUL.
  Napi::Value ReplyBuf(const Napi::CallbackInfo& info) {
    const std::optional<Pending> pending = Peek(info, "replyBuf", {Op::kRead, Op::kReadlink});
    if (!pending) return Answered(info, false);
    Napi::Uint8Array data = ToBytes(info[1], "data");
    const size_t length = data.ByteLength();
    if (pending->op == Op::kRead && length > pending->size) {
      Invalid(info.Env(), "read returned " + std::to_string(length) + " bytes for a read of " +
                              std::to_string(pending->size));
    }
    if (pending->op == Op::kReadlink &&
        (length == 0 || length > kMaxLinkBytes || std::memchr(data.Data(), 0, length) != nullptr)) {
      Invalid(info.Env(), "a symlink target must be 1 to 4095 bytes without NUL");
    }
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_buf(req, reinterpret_cast<const char*>(data.Data()), length);
    return Answered(info, req != nullptr);
  }

  // The getxattr/listxattr size rule: size 0 asks for the length only; a value longer than size is ERANGE.
  static void ReplySized(fuse_req_t req, uint64_t size, const char* bytes, size_t length) {
    if (length > kMaxXattrBytes) {
      fuse_reply_err(req, E2BIG);
    } else if (size == 0) {
      fuse_reply_xattr(req, length);
    } else if (length > size) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, bytes, length);
    }
  }

  Napi::Value ReplyXattr(const Napi::CallbackInfo& info) {
    const std::optional<Pending> pending = Peek(info, "replyXattr", {Op::kGetxattr});
    if (!pending) return Answered(info, false);
    Napi::Uint8Array value = ToBytes(info[1], "value");
    fuse_req_t req = Take(info);
    if (req != nullptr) ReplySized(req, pending->size, reinterpret_cast<const char*>(value.Data()), value.ByteLength());
    return Answered(info, req != nullptr);
  }

  // listxattr: names, each sent NUL-terminated.
  Napi::Value ReplyNames(const Napi::CallbackInfo& info) {
    const std::optional<Pending> pending = Peek(info, "replyNames", {Op::kListxattr});
    if (!pending) return Answered(info, false);
    if (!info[1].IsArray()) Invalid(info.Env(), "names must be an array of strings");
    Napi::Array names = info[1].As<Napi::Array>();
    std::string list;
    for (uint32_t i = 0; i < names.Length(); ++i) {
      Napi::Value name = names.Get(i);
      if (!name.IsString()) Invalid(info.Env(), "names must be an array of strings");
      const std::string utf8 = name.As<Napi::String>().Utf8Value();
      list += ToName(info.Env(), reinterpret_cast<const uint8_t*>(utf8.data()), utf8.size(), false, "an xattr name");
      list += '\0';
      if (list.size() > kMaxXattrBytes) break;  // E2BIG below; no need to look further
    }
    fuse_req_t req = Take(info);
    if (req != nullptr) ReplySized(req, pending->size, list.data(), list.size());
    return Answered(info, req != nullptr);
  }

  // readdir: pack entries in order until the kernel's buffer is full; the kernel asks again from the last
  // packed entry's nextOffset. An empty array is the end of the directory.
  Napi::Value ReplyReaddir(const Napi::CallbackInfo& info) {
    const std::optional<Pending> pending = Peek(info, "replyReaddir", {Op::kReaddir});
    if (!pending) return Answered(info, false);
    Napi::Env env = info.Env();
    if (!info[1].IsArray()) Invalid(env, "entries must be an array");
    Napi::Array entries = info[1].As<Napi::Array>();
    const size_t capacity = static_cast<size_t>(pending->size);
    std::vector<char> buffer(capacity);
    size_t used = 0;
    uint32_t packed = 0;
    for (; packed < entries.Length(); ++packed) {
      Napi::Object entry = ToObject(entries.Get(packed), "a directory entry");
      Napi::Uint8Array nameBytes = ToBytes(entry.Get("name"), "name");
      const std::string name = ToName(env, nameBytes.Data(), nameBytes.ByteLength(), true, "an entry name");
      struct stat st;
      std::memset(&st, 0, sizeof st);
      st.st_ino = Field(entry, "ino", 1, kMaxSafeInteger);
      st.st_mode = static_cast<mode_t>(Field(entry, "mode", 0, UINT32_MAX));
      // 0 would send the reader back to the start of the directory, forever.
      const off_t next = static_cast<off_t>(Field(entry, "nextOffset", 1, kMaxSafeInteger));
      const size_t size = fuse_add_direntry(nullptr, buffer.data() + used, capacity - used, name.c_str(), &st, next);
      if (size > capacity - used) break;
      used += size;
    }
    fuse_req_t req = Take(info);
    if (req == nullptr) return Answered(info, false);
    if (packed == 0 && entries.Length() > 0) {
      fuse_reply_err(req, EINVAL);  // not even one entry fits the caller's buffer, as getdents says
    } else {
      fuse_reply_buf(req, buffer.data(), used);
    }
    return Answered(info, true);
  }

  Napi::Value ReplyStatfs(const Napi::CallbackInfo& info) {
    if (!Peek(info, "replyStatfs", {Op::kStatfs})) return Answered(info, false);
    const struct statvfs st = ToStatvfs(info[1]);
    fuse_req_t req = Take(info);
    if (req != nullptr) fuse_reply_statfs(req, &st);
    return Answered(info, req != nullptr);
  }

  // Ask the loop to end; the session finishes when its end event arrives (dispatch op END).
  Napi::Value Unmount(const Napi::CallbackInfo& info) {
    if (!session_->finished && session_->loop != nullptr) session_->loop->RequestStop();
    return info.Env().Undefined();
  }

  // Finish now, without waiting for the end event (process exit). No END is dispatched afterwards.
  Napi::Value UnmountSync(const Napi::CallbackInfo& info) {
    session_->Finish();
    return info.Env().Undefined();
  }

  std::shared_ptr<Session> session_;
};

// fuseMount(mountpoint, options, { entryTimeoutS, attrTimeoutS, implemented }, dispatch)
Napi::Value FuseMount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) Invalid(env, "mountpoint must be a string");
  fuse::MountConfig config;
  config.mountpoint = info[0].As<Napi::String>().Utf8Value();
  if (config.mountpoint.empty() || config.mountpoint.size() >= PATH_MAX ||
      config.mountpoint.find('\0') != std::string::npos) {
    Invalid(env, "mountpoint must be a path of 1 to 4095 bytes without NUL");
  }
  if (!info[1].IsArray()) Invalid(env, "options must be an array of strings");
  Napi::Array options = info[1].As<Napi::Array>();
  if (options.Length() > kMaxOptions) Invalid(env, "at most " + std::to_string(kMaxOptions) + " mount options");
  for (uint32_t i = 0; i < options.Length(); ++i) {
    Napi::Value option = options.Get(i);
    if (!option.IsString()) Invalid(env, "options must be an array of strings");
    std::string text = option.As<Napi::String>().Utf8Value();
    if (text.empty() || text.size() > kMaxOptionBytes || text.find('\0') != std::string::npos) {
      Invalid(env, "a mount option must be 1 to 1024 bytes without NUL");
    }
    config.options.push_back(std::move(text));
  }
  Napi::Object settings = tcpargs::ToOptions(info[2]);
  auto timeout = [&](const char* key) {
    Napi::Value value = settings.Get(key);
    const double seconds = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
    if (!(seconds >= 0 && seconds <= kMaxTimeoutS)) Invalid(env, std::string(key) + " must be a number of seconds >= 0");
    return seconds;
  };
  const double entryTimeoutS = timeout("entryTimeoutS");
  const double attrTimeoutS = timeout("attrTimeoutS");
  config.implemented = static_cast<uint32_t>(tcpargs::ToInteger(settings.Get("implemented"), "implemented", 0, UINT32_MAX));
  if (!info[3].IsFunction()) Invalid(env, "dispatch must be a function");

  auto session = std::make_shared<Session>();
  session->env = env;
  session->entryTimeoutS = entryTimeoutS;
  session->attrTimeoutS = attrTimeoutS;
  fuse::Loop::MountError kind = fuse::Loop::MountError::kNone;
  std::string error;
  session->loop = fuse::Loop::Mount(config, &Session::Sink, session.get(), &kind, &error);
  if (session->loop == nullptr) {
    ThrowStatus(env, kind == fuse::Loop::MountError::kBadOption ? Status::kInvalidArgument : Status::kIo, error);
  }

  auto* holder = new std::shared_ptr<Session>(session);
  try {
    // The finalizer runs before Node empties what is left in the queue (environment teardown): the
    // session is finished there, so the leftovers are dropped without touching libfuse (see CallJs).
    session->tsfn = DispatchTsfn::New(env, info[3].As<Napi::Function>(), "dpms-fuse", 0, 1, holder,
                                      [](Napi::Env, void*, std::shared_ptr<Session>* context) {
                                        (*context)->tsfnCreated = false;  // being finalized: no Release
                                        (*context)->Finish();
                                        delete context;
                                      });
  } catch (...) {
    delete holder;
    throw;
  }
  session->tsfnCreated = true;
  // Registered after the ThreadSafeFunction so that it runs before the function's own teardown.
  napi_add_env_cleanup_hook(env, Session::CleanupHook, session.get());
  session->hookRegistered = true;
  if (!session->loop->Start(&error)) {
    session->Finish();
    ThrowStatus(env, Status::kIo, error);
  }
  auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
  return constructor->New({Napi::External<std::shared_ptr<Session>>::New(env, &session)});
}

}  // namespace

void InitFuse(Napi::Env env, Napi::Object exports) {
  fuse::InstallLogger();
  auto* constructor = new Napi::FunctionReference(Napi::Persistent(FuseHandle::DefineClass(env)));
  env.AddCleanupHook([constructor] { delete constructor; });
  exports.Set("fuseMount", Napi::Function::New(env, FuseMount, "fuseMount", constructor));
}

}  // namespace dpms
