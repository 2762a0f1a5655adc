#include "services/coordinator/report_page.h"

#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

TEST(ReportPageTest, RendersStagesAndOnePointPerEvaluation) {
  const std::string report = R"({"job": "job-1", "model": "file:///s/<m>", "stages": [
    {"index": 0, "kind": "evaluate", "result": {"perplexity": 4.5, "size_bytes": 6291456}},
    {"index": 1, "kind": "quantize", "result": {"method": "gptq", "bits": 4, "group_size": 128,
                                                 "act_order": true}},
    {"index": 2, "kind": "evaluate", "result": {"perplexity": 4.6, "size_bytes": 1572864,
                                                 "retention_percent": 97.8}}]})";
  const std::string page = RenderReportPage(report);
  EXPECT_NE(page.find("<title>Squeeze report job-1</title>"), std::string::npos);
  EXPECT_NE(page.find("gptq, 4 bits, group 128, act_order"), std::string::npos);
  EXPECT_NE(page.find("97.80%"), std::string::npos);
  EXPECT_NE(page.find("6.000"), std::string::npos);  // MiB
  EXPECT_NE(page.find("file:///s/&lt;m&gt;"), std::string::npos) << "text is escaped";
  size_t circles = 0;
  for (size_t at = page.find("<circle"); at != std::string::npos; at = page.find("<circle", at + 1))
    ++circles;
  EXPECT_EQ(circles, 2u);
  EXPECT_NE(RenderReportPage("not json").find("does not parse"), std::string::npos);
}

TEST(ReportPageTest, ShowsEachPromptsSamplesBesideTheBaselines) {
  const std::string report = R"({"job": "job-2", "model": "m", "stages": [
    {"index": 0, "kind": "evaluate", "result": {"perplexity": 4.5, "samples": [
      {"prompt": "A fortune:", "completion": " you <will> win"},
      {"prompt": "Code:", "completion": " int main"}]}},
    {"index": 1, "kind": "quantize", "result": {}},
    {"index": 2, "kind": "evaluate", "result": {"perplexity": 4.9, "samples": [
      {"prompt": "A fortune:", "completion": " you will lose"}]}}]})";
  const std::string page = RenderReportPage(report);
  const size_t prompt = page.find("A fortune:");
  ASSERT_NE(prompt, std::string::npos) << page;
  const size_t baseline = page.find("you &lt;will&gt; win", prompt);
  const size_t later = page.find("you will lose", prompt);
  ASSERT_NE(baseline, std::string::npos) << "completions are escaped";
  ASSERT_NE(later, std::string::npos);
  EXPECT_LT(baseline, later) << "the baseline's sample comes first";
  EXPECT_NE(page.find("0 (baseline)"), std::string::npos);
  // The second prompt has the baseline's sample only.
  EXPECT_NE(page.find(" int main", page.find("Code:")), std::string::npos);
}

TEST(ReportPageTest, MixedPrecisionWidthsAreAHeatMapOfLayersByLinears) {
  const std::string report = R"({"job": "job-3", "model": "m", "stages": [
    {"index": 0, "kind": "quantize", "result": {"method": "gptq", "bits": 3, "group_size": 128,
      "average_bits": 3.5, "bits_by_module": {
        "model.layers.0.self_attn.q_proj": 3, "model.layers.0.mlp.down_proj": 8,
        "model.layers.1.self_attn.q_proj": 2, "model.layers.1.mlp.down_proj": 4,
        "not.a.layer": 9}}}]})";
  const std::string page = RenderReportPage(report);
  EXPECT_NE(page.find("gptq, mixed, 3.50 bits on average, group 128"), std::string::npos);
  EXPECT_NE(page.find("Bits per linear (stage 0, mixed precision)"), std::string::npos);
  EXPECT_NE(page.find("title='layer 0 mlp.down_proj: 8 bits'>8</td>"), std::string::npos);
  EXPECT_NE(page.find("title='layer 1 self_attn.q_proj: 2 bits'>2</td>"), std::string::npos);
  // Layer 1's row comes after layer 0's; linears it lacks show a dash.
  EXPECT_LT(page.find("layer 0 mlp.down_proj"), page.find("layer 1 self_attn.q_proj"));
  EXPECT_NE(page.find("<td>&ndash;</td>"), std::string::npos);
  EXPECT_EQ(page.find("not.a.layer"), std::string::npos);
  // A uniform quantization has no heat map.
  EXPECT_EQ(
      RenderReportPage(R"({"stages": [{"index": 0, "kind": "quantize", "result": {"bits": 4}}]})")
          .find("Bits per linear"),
      std::string::npos);
}

}  // namespace
}  // namespace squeeze::coordinator

namespace squeeze::coordinator {
namespace {

TEST(ReportPageTest, ShowsCategoriesMemoryAndAPlotZoomedToThePerplexities) {
  const std::string report = R"({"job": "job-4", "model": "m", "stages": [
    {"index": 0, "kind": "evaluate", "result": {"perplexity": 4.4797, "size_bytes": 6291456,
      "ms_per_token": 0.25, "peak_host_memory_bytes": 104857600, "bits_per_weight": 16,
      "categories": {"wisdom": {"perplexity": 4.1, "tokens": 10},
                     "humor": {"perplexity": 5.2, "tokens": 12}}}},
    {"index": 1, "kind": "quantize", "result": {"method": "rtn", "bits": 4, "group_size": 128}},
    {"index": 2, "kind": "evaluate", "result": {"perplexity": 4.4994, "size_bytes": 1572864,
      "compression_ratio": 4.0, "tasks": {"acc": 0.235},
      "categories": {"wisdom": {"perplexity": 4.2, "tokens": 10}}}}]})";
  const std::string page = RenderReportPage(report);
  EXPECT_NE(page.find("Perplexity by category"), std::string::npos);
  EXPECT_NE(page.find("<td style='text-align:left'>humor</td><td>5.2000</td><td>&ndash;</td>"),
            std::string::npos)
      << "a category missing from a stage is a dash";
  EXPECT_NE(page.find("<td>4.00x</td>"), std::string::npos);
  EXPECT_NE(page.find("<td>100.0</td>"), std::string::npos) << "peak host MiB";
  EXPECT_NE(page.find("task accuracy 0.235"), std::string::npos);
  // The y axis spans the perplexities, not 0 to them: the two points sit far apart.
  std::vector<double> ys;
  for (size_t at = page.find("<circle"); at != std::string::npos;
       at = page.find("<circle", at + 1)) {
    const size_t cy = page.find("cy='", at) + 4;
    ys.push_back(std::stod(page.substr(cy)));
  }
  ASSERT_EQ(ys.size(), 2u);
  EXPECT_GT(std::abs(ys[0] - ys[1]), 100.0) << "0.02 of perplexity is most of the plot's height";
  EXPECT_EQ(page.find("text-anchor='start'>stage 0"), std::string::npos)
      << "the rightmost point's label is drawn to its left, inside the plot";
  EXPECT_NE(page.find("text-anchor='end'>stage 0: 4.4797"), std::string::npos);
}

}  // namespace
}  // namespace squeeze::coordinator
