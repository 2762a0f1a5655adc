// Multiple-choice accuracy: the batched scorer picks what the plain per-choice log-likelihood
// picks, acc_norm divides by the choice's bytes, accuracy follows the labels, and the bootstrap
// interval brackets the estimate.
#include "common/compress/task_accuracy.h"

#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

std::vector<ChoiceQuestion> Questions(int n) {
  std::vector<ChoiceQuestion> out;
  for (int i = 0; i < n; ++i) {
    ChoiceQuestion q;
    q.context = {ByteTokenizer::kBos};
    for (int k = 0; k < 5 + i % 7; ++k) q.context.push_back('a' + (i * 3 + k) % 26);
    for (int c = 0; c < 4; ++c) {
      std::vector<int32_t> choice;
      for (int k = 0; k < 1 + (i + c) % 4; ++k) choice.push_back('a' + (i * 7 + c * 5 + k) % 26);
      q.choices.push_back(choice);
      q.choice_bytes.push_back(static_cast<int64_t>(choice.size()));
    }
    q.label = i % 4;
    q.category = i % 2 ? "odd" : "even";
    out.push_back(std::move(q));
  }
  return out;
}

TEST(TaskAccuracyTest, BatchedScoringPicksWhatThePlainLikelihoodPicks) {
  const LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32), 4);
  std::vector<ChoiceQuestion> questions = Questions(24);
  // Make the label the plain log-likelihood's choice for the first half, so acc is known.
  int64_t expected_right = 0, expected_norm = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    const std::vector<double> ll = ChoiceLogLikelihoods(model, questions[i]);
    size_t best = 0, best_norm = 0;
    for (size_t c = 1; c < ll.size(); ++c) {
      if (ll[c] > ll[best]) best = c;
      if (ll[c] / questions[i].choice_bytes[c] >
          ll[best_norm] / questions[i].choice_bytes[best_norm])
        best_norm = c;
    }
    if (i < 12) questions[i].label = static_cast<int64_t>(best);
    expected_right += static_cast<int64_t>(best) == questions[i].label;
    expected_norm += static_cast<int64_t>(best_norm) == questions[i].label;
  }
  AccuracyOptions options;
  options.batch_size = 5;  // batches that split questions
  auto result = EvaluateChoiceAccuracy(model, questions, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total.questions, 24);
  EXPECT_EQ(result->total.correct, expected_right);
  EXPECT_EQ(result->total.correct_norm, expected_norm);
  EXPECT_GE(result->total.correct, 12);
  EXPECT_EQ(result->by_category.at("odd").questions + result->by_category.at("even").questions, 24);
  EXPECT_LE(result->acc_low, result->total.acc());
  EXPECT_GE(result->acc_high, result->total.acc());
  EXPECT_LT(result->acc_low, result->acc_high);

  options.max_questions = 10;
  auto ten = EvaluateChoiceAccuracy(model, questions, options);
  ASSERT_TRUE(ten.ok());
  EXPECT_EQ(ten->total.questions, 10);
  EXPECT_EQ(ten->total.correct, 10) << "the first ten labels are the model's own choices";

  options.should_stop = [] { return true; };
  EXPECT_EQ(EvaluateChoiceAccuracy(model, questions, options).status().code(),
            absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace squeeze
