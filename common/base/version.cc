#include "common/base/version.h"

#ifndef SQUEEZE_CODE_VERSION
#define SQUEEZE_CODE_VERSION "unknown"
#endif

namespace squeeze {

const char* CodeVersion() { return SQUEEZE_CODE_VERSION; }

}  // namespace squeeze
