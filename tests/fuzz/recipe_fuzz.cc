// libFuzzer target: the recipe parser takes any bytes and returns a recipe or an error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/recipe/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto recipe = squeeze::ParseRecipe(text);
  if (recipe.ok() && recipe->stages.empty()) __builtin_trap();  // a recipe always has stages
  return 0;
}
