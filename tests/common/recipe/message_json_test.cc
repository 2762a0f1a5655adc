#include "common/recipe/message_json.h"

#include <gtest/gtest.h>

#include <limits>

#include "squeeze/v1/stages.pb.h"

namespace squeeze {
namespace {

using nlohmann::json;

TEST(MessageJsonTest, IntegersAreNumbersAndNamesAreTheProtos) {
  v1::StageResult result;
  v1::EvaluateResult& e = *result.mutable_evaluate();
  e.set_perplexity(12.5);
  e.set_size_bytes(int64_t{1} << 40);  // beyond 2^32: protobuf's JSON would write a string
  (*e.mutable_files())["eval.jsonl"].set_tokens(7);
  const json j = MessageToJsonValue(result);
  ASSERT_TRUE(j.contains("evaluate")) << j.dump();
  const json& ev = j["evaluate"];
  EXPECT_TRUE(ev["size_bytes"].is_number_integer());
  EXPECT_EQ(ev["size_bytes"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(ev["perplexity"].get<double>(), 12.5);
  EXPECT_EQ(ev["files"]["eval.jsonl"]["tokens"].get<int64_t>(), 7);
  // Singular fields without presence are written even at zero; unset optional fields and
  // sub-messages are not.
  EXPECT_EQ(ev["tokens"].get<int64_t>(), 0);
  EXPECT_FALSE(ev.contains("baseline_perplexity"));
  EXPECT_FALSE(ev.contains("peak_device_memory_bytes"));
  EXPECT_FALSE(ev.contains("tasks"));
  EXPECT_FALSE(ev.contains("gate"));
  // The oneof writes only the member that is set.
  EXPECT_FALSE(j.contains("quantize"));
}

TEST(MessageJsonTest, OptionalRepeatedMapsAndEnums) {
  v1::EvaluateResult e;
  e.set_retention(0.0);  // set to zero: still written, because it has presence
  e.mutable_tasks()->add_acc_ci95(0.25);
  e.mutable_tasks()->add_acc_ci95(0.5);
  e.mutable_gate()->mutable_limits()->set_max_size_bytes(9);
  e.mutable_gate()->set_passed(true);
  const json j = MessageToJsonValue(e);
  EXPECT_TRUE(j.contains("retention"));
  EXPECT_EQ(j["tasks"]["acc_ci95"], json::array({0.25, 0.5}));
  EXPECT_EQ(j["gate"]["limits"], json({{"max_size_bytes", 9}}));
  EXPECT_TRUE(j["gate"]["passed"].get<bool>());

  v1::QuantizeStage q;
  q.set_method(v1::QuantizeStage::GPTQ);
  EXPECT_EQ(MessageToJsonValue(q)["method"], "GPTQ");

  v1::QuantizeResult r;
  (*r.mutable_phase_seconds())["solve"] = 1.5;
  r.add_linears()->set_linear("q_proj");
  const json jr = MessageToJsonValue(r);
  EXPECT_DOUBLE_EQ(jr["phase_seconds"]["solve"].get<double>(), 1.5);
  EXPECT_EQ(jr["linears"][0]["linear"], "q_proj");
}

TEST(MessageJsonTest, NonFiniteNumbersBecomeNull) {
  v1::PruneRoundResult round;
  round.set_perplexity_after_pruning(std::numeric_limits<double>::quiet_NaN());
  const json j = MessageToJsonValue(round);
  EXPECT_TRUE(j["perplexity_after_pruning"].is_null());
  // ... and the document still serializes to valid JSON.
  EXPECT_NO_THROW(json::parse(j.dump()));
}

}  // namespace
}  // namespace squeeze
