#include "common/metrics/metrics_exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/version.h"
#include "common/metrics/process_metrics.h"

namespace squeeze {
namespace {

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the scraper went away
    sent += static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    const std::string& listen_address, const std::string& component) {
  const size_t colon = listen_address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen_address.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen_address, "\": expected host:port"));
  }
  std::string host = listen_address.substr(0, colon);
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address \"", listen_address, "\": expected an IPv4 address"));
  }
  std::unique_ptr<MetricsExporter> m(new MetricsExporter());
  m->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(m->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(m->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(m->listen_fd_, 16) != 0) {
    const std::string why = std::strerror(errno);
    ::close(m->listen_fd_);
    m->listen_fd_ = -1;
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen_address, ": ", why));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(m->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  m->address_ = absl::StrCat(host == "0.0.0.0" ? "127.0.0.1" : host, ":", ntohs(addr.sin_port));
  m->registry_ = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("squeeze_build_info")
      .Help("Always 1; the labels say which build of which component this is.")
      .Register(*m->registry_)
      .Add({{"version", CodeVersion()}, {"component", component}})
      .Set(1);
  m->process_ = std::make_shared<ProcessMetrics>();
  m->RegisterCollectable(m->process_);
  m->server_ = std::thread([raw = m.get()] { raw->Serve(); });
  return m;
}

MetricsExporter::~MetricsExporter() {
  // Stop serving before anything goes: a scrape during shutdown sees a closed port, never a
  // half-destroyed registry.
  stopping_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (server_.joinable()) server_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void MetricsExporter::RegisterCollectable(
    const std::weak_ptr<prometheus::Collectable>& collectable) {
  absl::MutexLock lock(&mu_);
  collectables_.push_back(collectable);
}

std::string MetricsExporter::Scrape() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& weak : collectables_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (const auto& c : live) {
    auto more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void MetricsExporter::AddProbe(const std::string& path, std::function<absl::Status()> check) {
  absl::MutexLock lock(&mu_);
  probes_[path] = std::move(check);
}

void MetricsExporter::Serve() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    Answer(connection);
    ::close(connection);
  }
}

void MetricsExporter::Answer(int connection) {
  // One request per connection; a slow or silent client gets two seconds.
  timeval timeout{2, 0};
  ::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buf[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
    const ssize_t n = ::recv(connection, buf, sizeof(buf), 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const size_t line_end = request.find("\r\n");
  const std::string line = request.substr(0, line_end);
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (line.rfind("GET ", 0) != 0 && line.rfind("HEAD ", 0) != 0) {
    status = "405 Method Not Allowed";
    body = "only GET /metrics\n";
  } else {
    const size_t a = line.find(' ') + 1, b = line.find(' ', a);
    std::string path = line.substr(a, b == std::string::npos ? std::string::npos : b - a);
    path = path.substr(0, path.find('?'));
    std::function<absl::Status()> probe;
    {
      absl::MutexLock lock(&mu_);
      auto it = probes_.find(path);
      if (it != probes_.end()) probe = it->second;
    }
    if (path == "/metrics") {
      body = Scrape();
    } else if (probe) {
      const absl::Status s = probe();
      status = s.ok() ? "200 OK" : "503 Service Unavailable";
      type = "text/plain; charset=utf-8";
      body = s.ok() ? "ok\n" : absl::StrCat(s.message(), "\n");
    } else {
      status = "404 Not Found";
      body = "metrics are at /metrics\n";
    }
  }
  SendAll(connection,
          absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                       "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
                       line.rfind("HEAD ", 0) == 0 ? "" : body));
}

}  // namespace squeeze
