// The 'verbs' transport provider: NOT BUILT YET (placeholder so the addon links).
#include "verbs.h"

#include "errors.h"

namespace dpms {

void InitVerbs(Napi::Env, Napi::Object) {}

}  // namespace dpms
