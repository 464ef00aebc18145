// Error reporting for the addon: every failure the addon reports to JS is a Status, and ThrowStatus is
// the single place that turns a Status into a JS Error with a stable DPMS_* `code` (pdsm/errors.ts
// relies on those codes).
#pragma once

#include <napi.h>

#include <string>

namespace dpms {

enum class Status {
  kInvalidArgument,  // wrong argument type or value
  kOutOfBounds,      // an offset/length outside the mapping or the source array
  kMisaligned,       // an 8-byte atomic at an offset that is not 8-byte aligned
  kClosed,           // a call on a mapping after close()
  kExists,           // openPool with createSizeBytes on a path that exists
  kNotFound,         // openPool without createSizeBytes on a missing path
  kIo,               // any other OS / libpmem failure
  kBusy,             // the resource is in use (a mapping a server still serves)
  kAuth,             // the peer did not prove knowledge of the cluster secret
  kRemoteAccess,     // the remote side refused an access (bounds, rkey, alignment): the connection is broken
  kDisconnected,     // the connection is gone (closed, reset, or broken by an earlier error)
  kTimeout,          // connect / handshake / operation did not finish in time
  kProtocol,         // a malformed, truncated, oversized or unexpected frame
  kUnreachable,      // connection refused / no route / address resolution failed
  kUnsupported,      // no such provider or device on this machine (e.g. no RDMA device)
};

// The JS `code` string for a status.
const char* StatusCode(Status status);

// The JS Error for a status (to reject a promise with); ThrowStatus throws the same.
Napi::Error MakeError(Napi::Env env, Status status, const std::string& message);

// Throw a JS Error (a TypeError for kInvalidArgument) carrying `code`. Never returns.
[[noreturn]] void ThrowStatus(Napi::Env env, Status status, const std::string& message);

// kIo with the text of `err` (an errno value) appended, plus libpmem's last message if it has one.
[[noreturn]] void ThrowIo(Napi::Env env, const std::string& what, int err, bool withPmemMessage);

}  // namespace dpms
