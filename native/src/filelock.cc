// Advisory whole-file locks (flock) that guard a pool or a `dpms up` state directory against a second
// process: lockFile(path) opens (creating if needed) and locks the file without waiting and returns
// the descriptor, or -1 when another open file description holds the lock; unlockFile(fd) releases it.
// The kernel drops the lock when the process dies, so a crash never leaves a stale lock behind.
#include "filelock.h"

#include <cerrno>
#include <fcntl.h>
#include <string>
#include <sys/file.h>
#include <unistd.h>

#include "args.h"
#include "errors.h"

namespace dpms {

namespace {

Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowStatus(env, Status::kInvalidArgument, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) ThrowIo(env, "cannot open lock file " + path, errno, false);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowIo(env, "cannot lock " + path, err, false);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value UnlockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowStatus(env, Status::kInvalidArgument, "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowStatus(env, Status::kInvalidArgument, "fd must not be negative");
  flock(fd, LOCK_UN);
  close(fd);
  return env.Undefined();
}

}  // namespace

void InitFileLock(Napi::Env env, Napi::Object exports) {
  exports.Set("lockFile", Napi::Function::New(env, LockFile, "lockFile"));
  exports.Set("unlockFile", Napi::Function::New(env, UnlockFile, "unlockFile"));
}

}  // namespace dpms
