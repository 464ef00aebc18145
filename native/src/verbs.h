// The 'verbs' transport provider (see native/index.ts, "Transport providers"): serveVerbs / connectVerbs.
#pragma once

#include <napi.h>

namespace dpms {

// Adds the provider's exports (verbsServe, verbsConnect, ...) to the addon's exports.
void InitVerbs(Napi::Env env, Napi::Object exports);

}  // namespace dpms
