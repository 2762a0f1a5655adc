// Protobuf messages as JSON values for the files people and scripts read (report.json,
// evaluation.json). Unlike protobuf's own JSON printer, 64-bit integers are JSON numbers (a
// script reading `size_bytes` gets a number, not a string); field names are the .proto's; a
// singular field without presence is always written, an optional field or a sub-message only
// when set; enums by name; maps as objects keyed by their keys.
#pragma once

#include <nlohmann/json.hpp>

namespace google::protobuf {
class Message;
}

namespace squeeze {

nlohmann::json MessageToJsonValue(const google::protobuf::Message& message);

}  // namespace squeeze
