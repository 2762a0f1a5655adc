// squeezectl's service commands: submit, watch, get, list, cancel, artifacts.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file_util.h"
#include "common/base/flags.h"
#include "common/recipe/recipe.h"
#include "common/rpc/authenticator.h"
#include "common/rpc/client_channel.h"
#include "common/store/artifact_store.h"
#include "common/store/blob_digest.h"
#include "common/store/data_files.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/cli/commands.h"
#include "services/cli/job_client.h"

namespace squeeze::cli {
namespace {

namespace fs = std::filesystem;

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

absl::StatusOr<std::string> CoordinatorAddress(const Flags& flags) {
  if (flags.Has("coordinator")) return *flags.Get("coordinator");
  if (const char* env = std::getenv("SQUEEZE_COORDINATOR"); env != nullptr && *env)
    return std::string(env);
  return absl::FailedPreconditionError(
      "no coordinator: pass --coordinator HOST:PORT or set SQUEEZE_COORDINATOR (or use `squeezectl "
      "run`)");
}

// Parses the command's flags and connects to the configured coordinator.
absl::StatusOr<std::unique_ptr<JobClient>> ParseAndConnect(Flags& flags, const Args& args) {
  if (auto s = flags.Parse(args); !s.ok()) return s;
  auto address = CoordinatorAddress(flags);
  if (!address.ok()) return address.status();
  return Connect(flags, *address);
}

// Downloads an artifact of `job_id` into `dir` through the API (DownloadArtifact), so the
// client needs no access to the store. Each file is written beside its final name and renamed
// once all its bytes have arrived and match the digest the service announced.
absl::Status Download(JobClient& client, const std::string& job_id, const std::string& uri,
                      const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  grpc::ClientContext context;
  v1::DownloadArtifactRequest request;
  request.set_job_id(job_id);
  request.set_uri(uri);
  auto reader = client.stub().DownloadArtifact(&context, request);
  v1::DownloadArtifactResponse piece;
  v1::ArtifactFile current;
  std::ofstream out;
  fs::path partial;
  auto finish_file = [&]() -> absl::Status {
    if (current.name().empty()) return absl::OkStatus();
    out.close();
    if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", partial.string()));
    auto digest = DigestFileLike(partial.string(), current.digest(), 2);
    if (!digest.ok()) return digest.status();
    if (*digest != current.digest()) {
      fs::remove(partial, ec);
      return absl::DataLossError(absl::StrCat(
          uri, " file \"", current.name(), "\": downloaded bytes do not match ", current.digest()));
    }
    fs::rename(partial, fs::path(dir) / current.name(), ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", partial.string()));
    current.Clear();
    return absl::OkStatus();
  };
  while (reader->Read(&piece)) {
    if (piece.has_file()) {
      if (auto s = finish_file(); !s.ok()) return s;
      current = piece.file();
      // The name comes from the service: a path separator or a leading dot would write
      // outside `dir` or hide the file.
      if (current.name().empty() || current.name().find('/') != std::string::npos ||
          current.name()[0] == '.')
        return absl::DataLossError(
            absl::StrCat(uri, ": unsafe file name \"", current.name(), "\""));
      partial = fs::path(dir) / ("." + current.name() + ".partial");
      out.open(partial, std::ios::binary | std::ios::trunc);
      if (!out.good())
        return absl::UnavailableError(absl::StrCat("cannot write ", partial.string()));
    } else if (!current.name().empty()) {
      out.write(piece.data().data(), static_cast<std::streamsize>(piece.data().size()));
    }
  }
  if (auto s = reader->Finish(); !s.ok()) {
    out.close();
    if (!partial.empty()) fs::remove(partial, ec);
    return absl::Status(FromGrpc(s).code(),
                        absl::StrCat("downloading ", uri, ": ", s.error_message()));
  }
  return finish_file();
}

}  // namespace

Flags& ClientFlags(Flags& flags) {
  return flags.Value("coordinator")
      .Value("token")  // refused: see Connect
      .Value("token-file")
      .Value("tls-ca")
      .Value("tls-cert")
      .Value("tls-key")
      .Bool("json");
}

absl::StatusOr<std::string> TokenFromFileOrEnv(const Flags& flags) {
  if (flags.Has("token")) return absl::InvalidArgumentError(kTokenOnCommandLine);
  return ClientToken(flags.Has("token-file") ? *flags.Get("token-file") : "", "SQUEEZE_TOKEN");
}

// A flag's value, else the environment variable's, else "".
std::string FlagOrEnv(const Flags& flags, const std::string& flag, const char* env) {
  if (flags.Has(flag)) return *flags.Get(flag);
  const char* v = std::getenv(env);
  return v ? v : "";
}

namespace {

// A channel to `address` with the credentials of the client flags (or their environment).
absl::StatusOr<std::shared_ptr<grpc::Channel>> ChannelFromFlags(const Flags& flags,
                                                                const std::string& address) {
  ClientChannelOptions options;
  auto token = TokenFromFileOrEnv(flags);
  if (!token.ok()) return token.status();
  options.token = *token;
  options.tls_ca_file = FlagOrEnv(flags, "tls-ca", "SQUEEZE_TLS_CA");
  options.tls_cert_file = FlagOrEnv(flags, "tls-cert", "SQUEEZE_TLS_CERT");
  options.tls_key_file = FlagOrEnv(flags, "tls-key", "SQUEEZE_TLS_KEY");
  return MakeClientChannel(address, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobClient>> Connect(const Flags& flags, const std::string& address) {
  auto channel = ChannelFromFlags(flags, address);
  if (!channel.ok()) return channel.status();
  return std::make_unique<JobClient>(*std::move(channel));
}

absl::StatusOr<v1::Job> SubmitRecipe(JobClient& client, const std::string& recipe_path,
                                     const std::string& request_id, const std::string& tenant,
                                     int priority, bool* created, const std::string& data_store) {
  auto raw = ReadFileToString(recipe_path);
  if (!raw.ok()) return raw.status();
  // Relative paths in a recipe are relative to the recipe file, wherever the coordinator runs.
  auto text = ResolveRecipePaths(*raw, fs::path(recipe_path).parent_path().string());
  if (!text.ok())
    return absl::InvalidArgumentError(absl::StrCat(recipe_path, ": ", text.status().message()));
  if (!data_store.empty()) {
    // The local data files go to the job's store, and the recipe names them there: workers
    // fetch them verified, with no filesystem shared with this machine.
    auto store = OpenArtifactStore(data_store);
    if (!store.ok()) return store.status();
    text = RewriteRecipeData(
        *text,
        [&](const std::string& field, const std::string& value) -> absl::StatusOr<std::string> {
          if (value.rfind("s3://", 0) == 0) return value;  // already in a bucket
          if (field == "model") {
            // A local directory; an artifact already in a store (its manifest.json) is left as
            // it is.
            std::error_code ec;
            const fs::path dir = FilePathOfUri(value);
            if (!fs::is_directory(dir, ec) || fs::exists(dir / "manifest.json", ec)) return value;
            auto uri = UploadModelDirectory(**store, data_store, value, field);
            if (uri.ok()) std::cerr << "uploaded model to " << *uri << "\n";
            return uri;
          }
          auto uri = UploadDataFile(**store, data_store, value, field);
          if (uri.ok()) std::cerr << "uploaded " << field << " to " << *uri << "\n";
          return uri;
        });
    if (!text.ok())
      return absl::Status(text.status().code(),
                          absl::StrCat(recipe_path, ": ", text.status().message()));
  }
  v1::SubmitJobRequest request;
  request.set_recipe_yaml(*text);
  request.set_request_id(request_id);
  request.set_tenant(tenant);
  request.set_priority(priority);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::SubmitJobResponse response;
  if (auto s = client.stub().SubmitJob(&context, request, &response); !s.ok()) {
    return absl::Status(FromGrpc(s).code(), absl::StrCat(recipe_path, ": ", s.error_message()));
  }
  if (created) *created = response.created();
  return response.job();
}

absl::Status CopyJobOutputs(const v1::Job& job, JobClient& client, const std::string& dir) {
  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(job.id());
  v1::ListArtifactsResponse response;
  if (auto s = client.stub().ListArtifacts(&context, request, &response); !s.ok())
    return FromGrpc(s);
  std::string model_uri;
  for (const v1::Artifact& a : response.artifacts()) {
    if (a.name() == "model") model_uri = a.uri();  // the last model produced
    if (a.name() == "report" || a.name() == "report_html") {
      if (auto s = Download(client, job.id(), a.uri(), dir); !s.ok()) return s;
    }
  }
  if (!model_uri.empty())
    return Download(client, job.id(), model_uri, (fs::path(dir) / "model").string());
  return absl::OkStatus();
}

int FinishWithJob(const absl::StatusOr<v1::Job>& job, bool json) {
  if (!job.ok()) return Fail(job.status());
  if (json) std::cout << ToJson(*job) << "\n";
  if (job->state() == v1::SUCCEEDED) return 0;
  if (!json)
    std::cerr << "squeezectl: job " << job->id() << " " << JobStateName(job->state())
              << (job->error().empty() ? "" : ": " + job->error()) << "\n";
  return 1;
}

int RunSubmit(const Args& args) {
  Flags flags;
  ClientFlags(flags)
      .Value("request-id", "")
      .Value("tenant", "")
      .Value("priority", "0")
      .Value("store")
      .Bool("wait")
      .Positional(1, 1);
  auto connected = ParseAndConnect(flags, args);
  if (!connected.ok()) return Fail(connected.status());
  JobClient& client = **connected;
  auto priority = flags.GetInt("priority");
  if (!priority.ok()) return Fail(priority.status());
  bool created = false;
  auto job = SubmitRecipe(client, flags.positional()[0], *flags.Get("request-id"),
                          *flags.Get("tenant"), static_cast<int>(*priority), &created,
                          FlagOrEnv(flags, "store", "SQUEEZE_STORE"));
  if (!job.ok()) return Fail(job.status());
  if (!flags.GetBool("wait")) {
    if (flags.GetBool("json")) {
      std::cout << ToJson(*job) << "\n";
    } else {
      std::cout << job->id() << (created ? "" : " (existing job for this request id)") << "\n";
    }
    return 0;
  }
  std::cerr << "submitted " << job->id() << "\n";
  return FinishWithJob(client.Watch(job->id(), flags.GetBool("json") ? std::cerr : std::cout,
                                    ::isatty(STDOUT_FILENO), false),
                       flags.GetBool("json"));
}

int RunWatch(const Args& args) {
  Flags flags;
  ClientFlags(flags).Positional(1, 1);
  auto connected = ParseAndConnect(flags, args);
  if (!connected.ok()) return Fail(connected.status());
  JobClient& client = **connected;
  const bool json = flags.GetBool("json");
  auto job = client.Watch(flags.positional()[0], std::cout, !json && ::isatty(STDOUT_FILENO), json);
  if (!job.ok()) return Fail(job.status());
  return job->state() == v1::SUCCEEDED ? 0 : 1;
}

namespace {

// The commands that send one job id and print the job that comes back (get, cancel).
int RunJobCall(const Args& args,
               const std::function<grpc::Status(JobClient&, grpc::ClientContext*,
                                                const std::string&, v1::Job*)>& call,
               const std::function<std::string(const v1::Job&)>& describe) {
  Flags flags;
  ClientFlags(flags).Positional(1, 1);
  auto connected = ParseAndConnect(flags, args);
  if (!connected.ok()) return Fail(connected.status());
  grpc::ClientContext context;
  v1::Job job;
  if (auto s = call(**connected, &context, flags.positional()[0], &job); !s.ok())
    return Fail(FromGrpc(s));
  std::cout << (flags.GetBool("json") ? ToJson(job) + "\n" : describe(job));
  return 0;
}

}  // namespace

int RunGet(const Args& args) {
  return RunJobCall(
      args,
      [](JobClient& client, grpc::ClientContext* context, const std::string& id, v1::Job* job) {
        v1::GetJobRequest request;
        request.set_job_id(id);
        return client.stub().GetJob(context, request, job);
      },
      DescribeJob);
}

int RunList(const Args& args) {
  Flags flags;
  ClientFlags(flags)
      .Value("state", "")
      .Value("tenant", "")
      .Value("page-size", "50")
      .Value("page-token", "");
  auto connected = ParseAndConnect(flags, args);
  if (!connected.ok()) return Fail(connected.status());
  JobClient& client = **connected;
  v1::ListJobsRequest request;
  const std::string state = *flags.Get("state");
  if (!state.empty()) {
    v1::JobState parsed;
    if (!v1::JobState_Parse(state, &parsed) || parsed == v1::JOB_STATE_UNSPECIFIED) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--state: expected QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED, got \"",
                       state, "\"")));
    }
    request.set_state(parsed);
  }
  auto page_size = flags.GetInt("page-size");
  if (!page_size.ok()) return Fail(page_size.status());
  request.set_tenant(*flags.Get("tenant"));
  request.set_page_size(static_cast<int>(*page_size));
  request.set_page_token(*flags.Get("page-token"));
  grpc::ClientContext context;
  v1::ListJobsResponse response;
  if (auto s = client.stub().ListJobs(&context, request, &response); !s.ok())
    return Fail(FromGrpc(s));
  if (flags.GetBool("json")) {
    std::cout << ToJson(response) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("%-22s %-10s %-10s %s\n", "job", "state", "tenant", "stages");
  for (const v1::Job& j : response.jobs()) {
    std::string stages;
    for (const v1::Task& t : j.tasks())
      absl::StrAppend(&stages, stages.empty() ? "" : " -> ", t.kind());
    std::cout << absl::StrFormat("%-22s %-10s %-10s %s\n", j.id(), JobStateName(j.state()),
                                 j.tenant(), stages);
  }
  if (!response.next_page_token().empty())
    std::cout << "next page: --page-token " << response.next_page_token() << "\n";
  return 0;
}

int RunCancel(const Args& args) {
  return RunJobCall(
      args,
      [](JobClient& client, grpc::ClientContext* context, const std::string& id, v1::Job* job) {
        v1::CancelJobRequest request;
        request.set_job_id(id);
        return client.stub().CancelJob(context, request, job);
      },
      [](const v1::Job& job) {
        return absl::StrCat(job.id(), " ", JobStateName(job.state()),
                            job.cancel_requested() && job.state() == v1::RUNNING
                                ? " (stops at the next step boundary)"
                                : "",
                            "\n");
      });
}

int RunHealth(const Args& args) {
  Flags flags;
  ClientFlags(flags).Value("service", "").Value("timeout-ms", "5000");
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  auto address = CoordinatorAddress(flags);
  if (!address.ok()) return Fail(address.status());
  int64_t timeout_ms = 0;
  if (!absl::SimpleAtoi(*flags.Get("timeout-ms"), &timeout_ms) || timeout_ms <= 0)
    return Fail(absl::InvalidArgumentError("--timeout-ms: expected a positive integer"));
  auto channel = ChannelFromFlags(flags, *address);
  if (!channel.ok()) return Fail(channel.status());
  std::unique_ptr<grpc::health::v1::Health::Stub> health =
      grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(*flags.Get("service"));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status s = health->Check(&context, request, &response);
  if (!s.ok()) {
    std::cerr << "squeezectl: health: " << s.error_message() << "\n";
    return 1;
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (flags.GetBool("json")) {
    std::cout << ToJson(response) << "\n";
  } else {
    std::cout << (request.service().empty() ? "server" : request.service()) << ": " << status
              << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int RunArtifacts(const Args& args) {
  Flags flags;
  ClientFlags(flags).Value("download").Positional(1, 1);
  auto connected = ParseAndConnect(flags, args);
  if (!connected.ok()) return Fail(connected.status());
  JobClient& client = **connected;
  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(flags.positional()[0]);
  v1::ListArtifactsResponse response;
  if (auto s = client.stub().ListArtifacts(&context, request, &response); !s.ok())
    return Fail(FromGrpc(s));
  if (flags.Has("download")) {
    for (const v1::Artifact& a : response.artifacts()) {
      // Stage outputs go to STAGE-NAME/; job-level files (report.json) to the top.
      const fs::path root = *flags.Get("download");
      const std::string dir =
          (a.task_index() >= 0 ? root / absl::StrCat(a.task_index(), "-", a.name()) : root)
              .string();
      if (auto s = Download(client, request.job_id(), a.uri(), dir); !s.ok()) return Fail(s);
    }
  }
  if (flags.GetBool("json")) {
    std::cout << ToJson(response) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("%-6s %-12s %-10s %10s %s\n", "stage", "name", "kind", "MiB", "uri");
  for (const v1::Artifact& a : response.artifacts()) {
    std::cout << absl::StrFormat("%-6s %-12s %-10s %10.2f %s\n",
                                 a.task_index() >= 0 ? std::to_string(a.task_index()) : "-",
                                 a.name(), a.kind(), a.size_bytes() / 1048576.0, a.uri());
  }
  return 0;
}

namespace {

// The store an artifact command works in: --store (the coordinator's root, whose pool the blobs
// share), else the bucket's root, or the artifact itself for a file:// URI.
std::string StoreRootFor(const Flags& flags, const std::string& uri) {
  std::string root = *flags.Get("store");
  if (root.empty()) {
    const size_t bucket_end = uri.rfind("s3://", 0) == 0 ? uri.find('/', 5) : std::string::npos;
    root = uri.rfind("s3://", 0) == 0 ? uri.substr(0, bucket_end) : "file://";
  }
  return root;
}

}  // namespace

int RunStorePut(const Args& args) {
  Flags flags;
  flags.Value("store", "").Bool("json").Positional(2, 2);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  const std::string dir = flags.positional()[0], uri = flags.positional()[1];
  if (!fs::is_directory(dir))
    return Fail(absl::NotFoundError(absl::StrCat(dir, ": not a directory")));
  auto store = OpenArtifactStore(StoreRootFor(flags, uri));
  if (!store.ok()) return Fail(store.status());
  ArtifactProvenance provenance;
  provenance.stage = "upload";
  provenance.sources["directory"] = "file://" + fs::absolute(dir).lexically_normal().string();
  if (auto s = (*store)->PutDirectory(dir, uri, provenance); !s.ok()) return Fail(s);
  std::cout << (flags.GetBool("json") ? absl::StrCat("{\"uri\": \"", uri, "\"}\n")
                                      : absl::StrCat("stored ", uri, "\n"));
  return 0;
}

// Deletes an artifact (an uploaded data file's ROOT/data/sha256-..., an old job's output): its
// manifest and reference go now, its blobs at the next store-gc once nothing else names them.
// Uploaded data is kept until deleted this way: jobs pin it by digest and a later submit of the
// same file reuses it.
int RunStoreRm(const Args& args) {
  Flags flags;
  flags.Value("store", "").Bool("json").Positional(1, 1);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  const std::string uri = flags.positional()[0];
  auto store = OpenArtifactStore(StoreRootFor(flags, uri));
  if (!store.ok()) return Fail(store.status());
  auto exists = (*store)->Exists(uri);
  if (!exists.ok()) return Fail(exists.status());
  if (!*exists) return Fail(absl::NotFoundError(absl::StrCat(uri, ": no such artifact")));
  if (auto s = (*store)->Delete(uri); !s.ok()) return Fail(s);
  std::cout << (flags.GetBool("json")
                    ? absl::StrCat("{\"deleted\": \"", uri, "\"}\n")
                    : absl::StrCat("deleted ", uri, " (store-gc frees its blobs)\n"));
  return 0;
}

int RunHashToken(const Args& args) {
  Flags flags;
  flags.Value("token-file").Positional(0, 1);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  if (!flags.positional().empty()) return Fail(absl::InvalidArgumentError(kTokenOnCommandLine));
  std::string token;
  if (flags.Has("token-file")) {
    auto read = ReadTokenFile(*flags.Get("token-file"));
    if (!read.ok()) return Fail(read.status());
    token = *read;
  } else {
    std::getline(std::cin, token);  // from stdin: `squeezectl hash-token < token.txt`
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  }
  if (token.empty()) return Fail(absl::InvalidArgumentError("hash-token: the token is empty"));
  std::cout << TokenDigest(token) << "\n";
  return 0;
}

int RunStoreGc(const Args& args) {
  Flags flags;
  flags.Value("store").Value("grace-hours", "24").Bool("json").Positional(0, 0);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  auto root = flags.Get("store");
  if (!root.ok()) return Fail(root.status());
  auto grace = flags.GetDouble("grace-hours");
  if (!grace.ok() || *grace < 0) {
    return Fail(absl::InvalidArgumentError("--grace-hours: expected a non-negative number"));
  }
  auto store = OpenArtifactStore(*root);
  if (!store.ok()) return Fail(store.status());
  auto report = (*store)->CollectGarbage(static_cast<int64_t>(*grace * 3600));
  if (!report.ok()) return Fail(report.status());
  if (flags.GetBool("json")) {
    nlohmann::json out = {{"blobs_kept", report->blobs_kept},
                          {"blobs_deleted", report->blobs_deleted},
                          {"bytes_deleted", report->bytes_deleted},
                          {"uploads_aborted", report->uploads_aborted}};
    if (!report->uploads_not_listed.empty()) out["uploads_not_listed"] = report->uploads_not_listed;
    std::cout << out.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "deleted %d unreferenced blobs (%d bytes), kept %d; aborted %d abandoned uploads\n",
        report->blobs_deleted, report->bytes_deleted, report->blobs_kept, report->uploads_aborted);
    if (!report->uploads_not_listed.empty()) {
      std::cout << "note: the server cannot list multipart uploads, so abandoned ones were not "
                   "aborted: "
                << report->uploads_not_listed << "\n";
    }
  }
  return 0;
}

}  // namespace squeeze::cli
