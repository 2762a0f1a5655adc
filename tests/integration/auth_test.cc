// Authentication and transport security with real processes: a coordinator with mutual TLS and
// bearer tokens, certificates made here with openssl, squeezectl and a worker as clients.
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

// A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and a second,
// unrelated CA with its own client certificate.
void MakeCertificates(const std::string& dir) {
  const std::string script = R"(set -e
cd ")" + dir + R"("
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=squeeze-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf "subjectAltName=IP:127.0.0.1\n" > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rogue-ca -keyout rogue-ca.key -out rogue-ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=rogue -keyout rogue.key -out rogue.csr 2>/dev/null
openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial -days 2 -out rogue.pem 2>/dev/null
)";
  auto [code, out] = RunCommand({"bash", "-c", script});
  ASSERT_EQ(code, 0) << out;
}

// The JSON document squeezectl printed last (progress lines on stderr come before it).
nlohmann::json LastJson(const std::string& out) {
  size_t at = out.rfind("\n{");
  at = at == std::string::npos ? 0 : at + 1;
  return nlohmann::json::parse(out.substr(at), nullptr, false);
}

std::string Digest(const std::string& token) {
  const std::string file = ::testing::TempDir() + "/digest-token";
  std::ofstream(file, std::ios::trunc) << token << "\n";
  auto [code, out] = RunCommand({Env("SQUEEZECTL_BIN"), "hash-token", "--token-file", file});
  EXPECT_EQ(code, 0) << out;
  return out.substr(0, out.find('\n'));
}

TEST(AuthTest, TokensTenantsAndMutualTls) {
  ServiceHarness h("auth");
  const std::string d = h.dir();
  MakeCertificates(d);
  std::ofstream(d + "/tokens") << "# digests of bearer tokens\n"
                               << Digest("alice-secret") << " team-a user\n"
                               << Digest("bob-secret") << " team-b user\n"
                               << Digest("root-secret") << " ops admin\n"
                               << Digest("node-secret") << " pool worker\n"
                               << Digest("stale-secret") << " team-a user 1000\n";
  // team-a may read the example model's directory; team-b only its own (empty) one.
  std::filesystem::create_directories(d + "/team-b");
  h.StartCoordinator({"--auth-tokens", d + "/tokens", "--tls-cert", d + "/server.pem", "--tls-key",
                      d + "/server.key", "--tls-client-ca", d + "/ca.pem", "--tenant-roots",
                      "team-a=" + SourceDir() + "/deploy,team-b=" + d + "/team-b"},
                     /*wait_ready=*/false);
  const std::vector<std::string> tls = {"--tls-ca",        d + "/ca.pem", "--tls-cert",
                                        d + "/client.pem", "--tls-key",   d + "/client.key"};
  auto TokenFile = [&](const std::string& token) {
    const std::string path = d + "/token-" + token;
    std::ofstream(path) << token << "\n";
    return path;
  };
  auto ctl = [&](std::vector<std::string> args, const std::string& token,
                 const std::vector<std::string>& transport) {
    std::vector<std::string> argv = {Env("SQUEEZECTL_BIN")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--coordinator", h.address()});
    if (!token.empty()) argv.insert(argv.end(), {"--token-file", TokenFile(token)});
    argv.insert(argv.end(), transport.begin(), transport.end());
    return RunCommand(argv);
  };
  // Ready once an authenticated client gets an answer.
  std::pair<int, std::string> ready;
  for (int i = 0; i < 100; ++i) {
    ready = ctl({"list", "--json"}, "root-secret", tls);
    if (ready.first == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(ready.first, 0) << ready.second;

  // A worker with its own credential runs jobs; a user token cannot act as a worker.
  std::vector<std::string> worker_flags = {"--token-file", TokenFile("node-secret")};
  worker_flags.insert(worker_flags.end(), tls.begin(), tls.end());
  h.StartWorker("w", worker_flags);
  {
    std::vector<std::string> impostor = {Env("SQUEEZE_WORKER_BIN"),
                                         "--coordinator",
                                         h.address(),
                                         "--node",
                                         "impostor",
                                         "--token-file",
                                         TokenFile("alice-secret")};
    impostor.insert(impostor.end(), tls.begin(), tls.end());
    auto [code, out] = RunCommand(impostor);
    EXPECT_NE(code, 0);
    EXPECT_NE(out.find("worker credentials"), std::string::npos) << out;
    // Roles are exclusive: not even an admin's token registers a worker.
    impostor[impostor.size() - tls.size() - 1] = TokenFile("root-secret");
    std::tie(code, out) = RunCommand(impostor);
    EXPECT_NE(code, 0);
    EXPECT_NE(out.find("worker credentials"), std::string::npos) << out;
  }
  {
    // Secrets never go on the command line, where `ps` shows them.
    auto [code, out] = RunCommand(
        {Env("SQUEEZECTL_BIN"), "list", "--coordinator", h.address(), "--token", "root-secret"});
    EXPECT_EQ(code, 2);
    EXPECT_NE(out.find("--token-file"), std::string::npos) << out;
    std::tie(code, out) = RunCommand({Env("SQUEEZE_WORKER_BIN"), "--coordinator", h.address(),
                                      "--node", "x", "--token", "node-secret"});
    EXPECT_EQ(code, 2);
    EXPECT_NE(out.find("--token-file"), std::string::npos) << out;
  }

  const std::string recipe =
      h.WriteRecipe("r.yaml", "model: " + SourceDir() +
                                  "/deploy/models/fortunes-teacher\nstages:\n"
                                  "  - quantize: {method: rtn, bits: 8}\n");
  auto [submit_code, submitted] = ctl({"submit", recipe, "--wait", "--json"}, "alice-secret", tls);
  ASSERT_EQ(submit_code, 0) << submitted;
  const auto job = LastJson(submitted);
  ASSERT_TRUE(job.is_object()) << submitted;
  const std::string id = job["id"];
  EXPECT_EQ(job["tenant"], "team-a") << "the tenant comes from the token";
  EXPECT_EQ(job["state"], "SUCCEEDED");

  // Another tenant cannot see or cancel it: the answer is the one for a job that does not exist.
  for (const char* verb : {"get", "cancel", "artifacts"}) {
    auto [code, out] = ctl({verb, id}, "bob-secret", tls);
    EXPECT_NE(code, 0) << verb;
    EXPECT_NE(out.find("not found"), std::string::npos) << verb << ": " << out;
  }
  auto [bob_list_code, bob_list] = ctl({"list", "--json"}, "bob-secret", tls);
  ASSERT_EQ(bob_list_code, 0) << bob_list;
  EXPECT_TRUE(LastJson(bob_list).value("jobs", nlohmann::json::array()).empty()) << bob_list;
  // Its owner and an admin can.
  EXPECT_EQ(ctl({"get", id}, "alice-secret", tls).first, 0);
  auto [admin_code, admin_list] = ctl({"list", "--json"}, "root-secret", tls);
  ASSERT_EQ(admin_code, 0);
  EXPECT_EQ(LastJson(admin_list)["jobs"].size(), 1u) << admin_list;
  // One tenant cannot read another's files: team-b names team-a's model directory.
  auto [bob_submit_code, bob_submit] = ctl({"submit", recipe}, "bob-secret", tls);
  EXPECT_NE(bob_submit_code, 0);
  EXPECT_NE(bob_submit.find("is outside what tenant \"team-b\" may read"), std::string::npos)
      << bob_submit;
  // A user cannot submit for another tenant.
  auto [spoof_code, spoof] = ctl({"submit", recipe, "--tenant", "team-b"}, "alice-secret", tls);
  EXPECT_NE(spoof_code, 0);
  EXPECT_NE(spoof.find("tenant"), std::string::npos) << spoof;

  // No token, an unknown one, an expired one, a worker's: refused, with the reason.
  for (const auto& [token, reason] :
       std::vector<std::pair<std::string, std::string>>{{"", "no credentials"},
                                                        {"guess", "unknown token"},
                                                        {"stale-secret", "token expired"},
                                                        {"node-secret", "worker credentials"}}) {
    auto [code, out] = ctl({"list"}, token, tls);
    EXPECT_NE(code, 0) << token;
    EXPECT_NE(out.find(reason), std::string::npos) << token << ": " << out;
  }
  // Transport: no client certificate, one from another CA, or plaintext: no connection at all.
  const std::vector<std::string> no_cert = {"--tls-ca", d + "/ca.pem"};
  const std::vector<std::string> rogue = {"--tls-ca",       d + "/ca.pem", "--tls-cert",
                                          d + "/rogue.pem", "--tls-key",   d + "/rogue.key"};
  for (const auto& transport : {no_cert, rogue, std::vector<std::string>{}}) {
    auto [code, out] = ctl({"list"}, "root-secret", transport);
    EXPECT_NE(code, 0) << out;
  }
  // The refusals are logged by the coordinator.
  std::ifstream log(d + "/coordinator-0.log");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("auth: GetJob"), std::string::npos) << text;
  EXPECT_NE(text.find("token expired"), std::string::npos);
  // gRPC logs the refused TLS handshakes (no client certificate, or one from another CA).
  EXPECT_NE(text.find("Handshake failed"), std::string::npos) << text;
}

}  // namespace
}  // namespace squeeze::testing
