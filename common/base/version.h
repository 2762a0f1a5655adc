// The version of this build, recorded in artifact provenance and build-info metrics.
#pragma once

namespace squeeze {

// "0.1.0+<git describe>" when built from a git checkout, "0.1.0" otherwise.
const char* CodeVersion();

}  // namespace squeeze
