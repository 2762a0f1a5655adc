// The /metrics endpoint: text exposition that promtool accepts, 404 elsewhere, bad addresses
// rejected, and scrapes racing with shutdown never crash.
#include "common/metrics/metrics_exporter.h"

#include <arpa/inet.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

// One HTTP GET over a fresh connection; "" when the connection is refused or drops.
std::string Get(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST(MetricsExporterTest, ServesTextExpositionAndNothingElse) {
  auto exporter = MetricsExporter::Start("127.0.0.1:0", "test");
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  prometheus::BuildCounter()
      .Name("squeeze_test_events_total")
      .Help("Events.")
      .Register((*exporter)->registry())
      .Add({{"kind", "a"}})
      .Increment(3);
  const std::string page = Get((*exporter)->address(), "/metrics");
  EXPECT_EQ(page.rfind("HTTP/1.1 200 OK", 0), 0u) << page;
  EXPECT_NE(page.find("squeeze_test_events_total{kind=\"a\"} 3"), std::string::npos) << page;
  EXPECT_NE(page.find("squeeze_build_info{component=\"test\""), std::string::npos);
  EXPECT_EQ(Get((*exporter)->address(), "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(MetricsExporter::Start("nonsense", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsExporter::Start("example.com:80", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsExporterTest, ScrapesDuringShutdownAreHarmless) {
  for (int round = 0; round < 20; ++round) {
    auto exporter = MetricsExporter::Start("127.0.0.1:0", "test");
    ASSERT_TRUE(exporter.ok());
    const std::string address = (*exporter)->address();
    std::atomic<bool> done{false};
    std::atomic<int> answered{0};
    std::thread scraper([&] {
      while (!done) {
        if (!Get(address, "/metrics").empty()) ++answered;
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    exporter->reset();  // while the scraper keeps going
    done = true;
    scraper.join();
    EXPECT_GE(answered.load(), 0);
    // After shutdown the port answers nothing.
    EXPECT_EQ(Get(address, "/metrics"), "");
  }
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

TEST(MetricsExporterTest, ProbesAnswerTheirChecksAndEveryScrapeHasProcessMetrics) {
  auto exporter = MetricsExporter::Start("127.0.0.1:0", "test");
  ASSERT_TRUE(exporter.ok()) << exporter.status();
  std::atomic<bool> healthy{true};
  (*exporter)->AddProbe("/healthz", [&]() -> absl::Status {
    return healthy ? absl::OkStatus() : absl::UnavailableError("loop stuck for 90 s");
  });
  const std::string address = (*exporter)->address();
  std::string ok = Get(address, "/healthz");
  EXPECT_NE(ok.find("HTTP/1.1 200 OK"), std::string::npos) << ok;
  healthy = false;
  std::string down = Get(address, "/healthz");
  EXPECT_NE(down.find("HTTP/1.1 503"), std::string::npos) << down;
  EXPECT_NE(down.find("loop stuck for 90 s"), std::string::npos) << down;
  EXPECT_NE(Get(address, "/readyz").find("404"), std::string::npos) << "only probes added";
  const std::string metrics = Get(address, "/metrics");
  EXPECT_NE(metrics.find("process_resident_memory_bytes "), std::string::npos);
  EXPECT_NE(metrics.find("process_cpu_seconds_total "), std::string::npos);
}

}  // namespace
}  // namespace squeeze
