#!/usr/bin/env bash
# Builds the torch-free libraries with clang (-Wthread-safety -Werror: the lock annotations are
# checked), ASan and UBSan, runs their unit tests that way, then
# runs every libFuzzer target for FUZZ_SECONDS (default 20) on its committed seed corpus and prints
# executions and coverage per target. Any crash, leak or sanitizer report fails the run; the input
# that caused it is left in build-fuzz/crashes/ (turn it into a regression test).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SQUEEZE_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-20}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$root} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSQUEEZE_WITH_TORCH=OFF -DSQUEEZE_FUZZ=ON -DSQUEEZE_WERROR=ON
fi
targets=(recipe llama_config safetensors_header jsonl manifest s3_list)
sanitized_tests=(recipe_test llama_config_test safetensors_test text_dataset_test file_util_test
                 sha256_test sigv4_test file_artifact_store_test input_policy_test tokenizer_test
                 job_scheduler_test state_transitions_test blob_digest_test prune_schedule_test data_files_test
                 choice_tasks_test job_table_test lease_table_test job_finalizer_test)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/%/_fuzz}" "${sanitized_tests[@]}" \
  squeezectl squeeze-coordinator
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The unit tests of the torch-free libraries, under the sanitizers.
(cd "$build" && ctest --output-on-failure -j"$(nproc)" \
  -R "^(RecipeTest|LlamaConfigTest|SafetensorsTest|TextDatasetTest|FileUtilTest|Sha256Test|SigV4Test|FileArtifactStoreTest|InputPolicyTest|ByteTokenizerTest|JobSchedulerTest|StateTransitionsTest|BlobDigestTest|PruneScheduleTest|DataFilesTest|ChoiceTasksTest|JobTableTest|LeaseTableTest|JobFinalizerTest)\.")
# The client-only squeezectl (no libtorch) against a coordinator of the same build.
bash "$root/tests/services/cli/client_only_test.sh" "$build" "$root"
mkdir -p "$build/crashes"
summary=()
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  cp "$root/tests/fuzz/corpus/$t"/* "$corpus/"
  log="$build/$t.fuzz.log"
  if ! "$build/tests/fuzz/${t}_fuzz" "$corpus" -max_total_time="$seconds" -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t failed; the input is in $build/crashes/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  summary+=("$(printf '%-20s %10s runs %8s edges' "$t" "$runs" "$cov")")
  rm -rf "$corpus"
done
printf 'fuzz (%ss each, ASan+UBSan, zero crashes):\n' "$seconds"
printf '  %s\n' "${summary[@]}"
