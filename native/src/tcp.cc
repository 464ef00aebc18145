// The 'tcp' transport provider: NOT BUILT YET (placeholder so the addon links).
#include "tcp.h"

#include "errors.h"

namespace dpms {

void InitTcp(Napi::Env, Napi::Object) {}

}  // namespace dpms
