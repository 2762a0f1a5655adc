// A private PostgreSQL server (Debian's postgresql package) for the duration of a test: a fresh
// cluster in a temporary directory, listening on a Unix socket only, trust authentication for the
// user "squeeze". Run as root, the server runs as the postgres user (it refuses root).
#pragma once

#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/base/file_util.h"
#include "tests/common/free_port.h"

namespace squeeze::testing {

class PostgresServer {
 public:
  PostgresServer() : port_(FreeLoopbackPort()) {
    namespace fs = std::filesystem;
    char templ[] = "/tmp/squeeze-pg-XXXXXX";  // short: a socket path has a 107-byte limit
    dir_ = ::mkdtemp(templ);
    bindir_ = Trimmed(Output("pg_config --bindir"));
    std::string as_user;
    if (::geteuid() == 0) {
      if (const passwd* pw = ::getpwnam("postgres")) {
        ::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid);
        as_user = "runuser -u postgres -- ";
      }
    }
    const std::string data = dir_ + "/data";
    started_ = Run(as_user + bindir_ + "/initdb -D " + data + " -A trust -U squeeze --no-sync") &&
               Run(as_user + bindir_ + "/pg_ctl -D " + data + " -l " + dir_ + "/server.log -w " +
                   "-o '-k " + dir_ + " -p " + std::to_string(port_) +
                   " -c listen_addresses= -c fsync=off' start");
    stop_ = as_user + bindir_ + "/pg_ctl -D " + data + " -m immediate stop";
  }
  ~PostgresServer() {
    if (started_) Run(stop_);
    RemoveTree(dir_).IgnoreError();
  }
  bool started() const { return started_; }
  // libpq's connection string for database "postgres".
  std::string conninfo() const {
    return "host=" + dir_ + " port=" + std::to_string(port_) + " user=squeeze dbname=postgres";
  }
  const std::string& dir() const { return dir_; }

 private:
  static bool Run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
  }
  static std::string Output(const std::string& command) {
    std::string out;
    if (FILE* p = ::popen(command.c_str(), "r")) {
      char buf[512];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
      ::pclose(p);
    }
    return out;
  }
  static std::string Trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  int port_;
  std::string dir_;
  std::string bindir_;
  std::string stop_;
  bool started_ = false;
};

}  // namespace squeeze::testing
