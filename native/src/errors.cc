// The one mapping from native Status to the JS error codes, and the helpers that throw them.
#include "errors.h"

#include <libpmem.h>

#include <cstring>

namespace dpms {

const char* StatusCode(Status status) {
  switch (status) {
    case Status::kInvalidArgument: return "DPMS_INVALID_ARGUMENT";
    case Status::kOutOfBounds: return "DPMS_OUT_OF_BOUNDS";
    case Status::kMisaligned: return "DPMS_MISALIGNED";
    case Status::kClosed: return "DPMS_CLOSED";
    case Status::kExists: return "DPMS_EXISTS";
    case Status::kNotFound: return "DPMS_NOT_FOUND";
    case Status::kIo: return "DPMS_IO";
    case Status::kBusy: return "DPMS_BUSY";
    case Status::kAuth: return "DPMS_AUTH";
    case Status::kRemoteAccess: return "DPMS_REMOTE_ACCESS";
    case Status::kDisconnected: return "DPMS_DISCONNECTED";
    case Status::kTimeout: return "DPMS_TIMEOUT";
    case Status::kProtocol: return "DPMS_PROTOCOL";
    case Status::kUnreachable: return "DPMS_UNREACHABLE";
    case Status::kUnsupported: return "DPMS_UNSUPPORTED";
  }
  return "DPMS_IO";
}

Napi::Error MakeError(Napi::Env env, Status status, const std::string& message) {
  Napi::Error error = status == Status::kInvalidArgument ? Napi::TypeError::New(env, message)
                                                         : Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, StatusCode(status)));
  return error;
}

void ThrowStatus(Napi::Env env, Status status, const std::string& message) {
  throw MakeError(env, status, message);
}

void ThrowIo(Napi::Env env, const std::string& what, int err, bool withPmemMessage) {
  std::string message = what + ": " + std::strerror(err);
  if (withPmemMessage) {
    const char* pmemMessage = pmem_errormsg();
    if (pmemMessage != nullptr && pmemMessage[0] != '\0') message += std::string(" (libpmem: ") + pmemMessage + ")";
  }
  ThrowStatus(env, Status::kIo, message);
}

}  // namespace dpms
