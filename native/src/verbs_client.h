// The client side of the 'verbs' provider: verbsConnect(options) -> Promise<TransportConnection>.
#pragma once

#include <napi.h>

namespace dpms::verbs {

// verbsConnect(options): resolve, connect an RC queue pair, authenticate (see verbs_client.cc).
// Rejects with DPMS_UNSUPPORTED when the machine has no RDMA device.
Napi::Value Connect(const Napi::CallbackInfo& info);

}  // namespace dpms::verbs
