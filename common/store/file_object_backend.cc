// file:// objects: plain files under a directory tree. Whole-object writes go to a temporary
// name, are fsynced and renamed into place, so a reader or a crash never sees half an object.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/parallel_for.h"
#include "common/store/artifact_store.h"
#include "common/store/object_backend.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

constexpr size_t kChunk = 8 << 20;

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".partial-", ::getpid(), "-", counter++, "-",
                      std::chrono::steady_clock::now().time_since_epoch().count());
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  const int e = errno;
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOENT || e == ENOTDIR) return absl::NotFoundError(message);
  // A full disk or quota is not transient: retrying the same write fails the same way, so it is
  // reported at once as what it is.
  if (e == ENOSPC || e == EDQUOT) {
    return absl::ResourceExhaustedError(
        absl::StrCat(message, " (the store's filesystem is full: free space or move the store)"));
  }
  return absl::UnavailableError(message);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Copies `size` bytes from `in` to `out` inside the kernel where it can, starting write-back of
// each piece as soon as it is copied so that the final fdatasync has little left to wait for.
absl::Status CopyContents(int in, int out, int64_t size, const std::string& path,
                          bool write_behind = false) {
  constexpr int64_t kPiece = 64ll << 20;
  int64_t left = size;
  while (left > 0) {
    const int64_t at = size - left;
    const ssize_t n = ::copy_file_range(in, nullptr, out, nullptr,
                                        static_cast<size_t>(std::min(left, kPiece)), 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) break;
    if (n < 0) return Errno("cannot copy into", path);
    if (n == 0) break;
    if (write_behind) ::sync_file_range(out, at, n, SYNC_FILE_RANGE_WRITE);
    left -= n;
  }
  if (left == 0) return absl::OkStatus();
  // Fallback: plain reads and writes from where the kernel copy stopped.
  std::string buf(kChunk, '\0');
  off_t offset = size - left;
  while (left > 0) {
    const ssize_t n = ::pread(in, buf.data(), std::min<int64_t>(left, kChunk), offset);
    if (n <= 0) return Errno("cannot read while copying into", path);
    if (auto s = WriteAll(out, buf.data(), static_cast<size_t>(n), path); !s.ok()) return s;
    offset += n;
    left -= n;
  }
  return absl::OkStatus();
}

// Creates the parent directories of `path`.
absl::Status MakeParents(const std::string& path) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot create the directory of ", path, ": ", ec.message()));
  return absl::OkStatus();
}

// Renames `tmp` to `path`. With `sync`, fsyncs the contents first and the directory after, so
// that the object survives a power loss once this returns.
absl::Status Commit(int fd, const std::string& tmp, const std::string& path, bool sync) {
  if (sync && ::fdatasync(fd) != 0) return Errno("cannot sync", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("cannot commit", path);
  if (!sync) return absl::OkStatus();
  Fd dir(::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.ok()) ::fsync(dir.get());
  return absl::OkStatus();
}

class FileObjectBackend : public ObjectBackend {
 public:
  explicit FileObjectBackend(bool sync) : sync_(sync) {}

  absl::Status Put(const std::string& uri, absl::string_view bytes) override {
    const std::string path = FilePathOfUri(uri);
    if (auto s = MakeParents(path); !s.ok()) return s;
    const std::string tmp = path + UniqueSuffix();
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.ok()) return Errno("cannot create", tmp);
    absl::Status s = WriteAll(fd.get(), bytes.data(), bytes.size(), tmp);
    if (s.ok()) s = Commit(fd.get(), tmp, path, sync_);
    if (!s.ok()) ::unlink(tmp.c_str());
    return s;
  }

  absl::StatusOr<BlobDigest> PutBlob(const std::string& blob_root,
                                     const std::string& path) override {
    Fd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.ok()) return Errno("cannot open", path);
    struct stat st;
    if (::fstat(in.get(), &st) != 0) return Errno("cannot stat", path);
    const int64_t size = st.st_size;
    const std::string root = FilePathOfUri(blob_root);
    const std::string tmp = absl::StrCat(root, "/tmp/blob", UniqueSuffix());
    // The digest and the copy are independent passes over the source: the kernel copies on one
    // core while the chunks hash on the others, so hashing costs little wall time over a copy.
    absl::StatusOr<BlobDigest> digest = absl::UnknownError("not hashed");
    std::thread hasher([&] { digest = DigestFile(path, TransferThreads()); });
    absl::Status copied = MakeParents(tmp);
    std::optional<Fd> out;
    if (copied.ok()) {
      out.emplace(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
      if (!out->ok()) copied = Errno("cannot create", tmp);
    }
    if (copied.ok()) copied = CopyContents(in.get(), out->get(), size, tmp, sync_);
    hasher.join();
    absl::StatusOr<std::string> name =
        digest.ok() ? BlobName(digest->text) : absl::StatusOr<std::string>(digest.status());
    if (!name.ok()) {
      ::unlink(tmp.c_str());
      return name.status();
    }
    const std::string target = FilePathOfUri(BlobUri(blob_root, *name));
    struct stat existing;
    if (::stat(target.c_str(), &existing) == 0 && existing.st_size == size) {
      // Content addressing: this blob is already stored, so storing it again costs no space (it
      // succeeds on a full disk). Its time is refreshed so that garbage collection's grace
      // period protects it until the manifest that now names it is written.
      ::unlink(tmp.c_str());
      ::utimensat(AT_FDCWD, target.c_str(), nullptr, 0);
      return digest;
    }
    if (copied.ok()) copied = MakeParents(target);
    if (copied.ok()) copied = Commit(out->get(), tmp, target, sync_);
    if (!copied.ok()) {
      ::unlink(tmp.c_str());
      return copied;
    }
    return digest;
  }

  absl::StatusOr<BlobDigest> MoveBlob(const std::string& blob_root,
                                      const std::string& path) override {
    auto digest = DigestFile(path, TransferThreads());
    if (!digest.ok()) return digest.status();
    auto name = BlobName(digest->text);
    if (!name.ok()) return name.status();
    const std::string target = FilePathOfUri(BlobUri(blob_root, *name));
    struct stat existing;
    if (::stat(target.c_str(), &existing) == 0) {
      ::unlink(path.c_str());
      ::utimensat(AT_FDCWD, target.c_str(), nullptr, 0);  // see PutBlob
      return digest;
    }
    if (auto s = MakeParents(target); !s.ok()) return s;
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return Errno("cannot open", path);
    ::fchmod(fd.get(), 0444);
    if (::rename(path.c_str(), target.c_str()) != 0) {
      if (errno == EXDEV) return PutBlob(blob_root, path);  // another filesystem: copy
      return Errno("cannot move into the store", path);
    }
    if (sync_) {
      if (::fdatasync(fd.get()) != 0) return Errno("cannot sync", target);
      Fd dir(::open(fs::path(target).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (dir.ok()) ::fsync(dir.get());
    }
    return digest;
  }

  absl::StatusOr<std::string> Get(const std::string& uri, int64_t offset, int64_t length) override {
    const std::string path = FilePathOfUri(uri);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return Errno("cannot open", path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
      return absl::NotFoundError(absl::StrCat(path, ": not a file"));
    if (offset < 0 || offset > st.st_size)
      return absl::OutOfRangeError(
          absl::StrCat(path, ": offset ", offset, " is past its size ", st.st_size));
    const int64_t n = length < 0 ? st.st_size - offset : std::min(length, st.st_size - offset);
    std::string out(static_cast<size_t>(n), '\0');
    int64_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd.get(), out.data() + done, n - done, offset + done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return Errno("cannot read", path);
      done += r;
    }
    return out;
  }

  absl::Status GetTo(const std::string& uri,
                     const std::function<absl::Status(absl::string_view)>& sink) override {
    const std::string path = FilePathOfUri(uri);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) return Errno("cannot open", path);
    std::string buf(kChunk, '\0');
    while (true) {
      const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Errno("cannot read", path);
      if (n == 0) return absl::OkStatus();
      if (auto s = sink(absl::string_view(buf.data(), static_cast<size_t>(n))); !s.ok()) return s;
    }
  }

  absl::StatusOr<ObjectInfo> Head(const std::string& uri) override {
    const std::string path = FilePathOfUri(uri);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      return absl::NotFoundError(absl::StrCat(path, ": no such object"));
    return Info(uri, st);
  }

  absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix_uri) override {
    const std::string prefix = FilePathOfUri(prefix_uri);
    // The prefix's directory, walked recursively; entries are then filtered by the full prefix.
    fs::path dir = prefix;
    if (!prefix.empty() && prefix.back() != '/') dir = dir.parent_path();
    std::vector<ObjectInfo> out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return out;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      const std::string p = it->path().string();
      if (p.rfind(prefix, 0) != 0) continue;
      struct stat st;
      if (::lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      out.push_back(Info("file://" + p, st));
    }
    if (ec)
      return absl::UnavailableError(absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
    return out;
  }

  absl::Status Delete(const std::string& uri) override {
    return RemoveTree(FilePathOfUri(uri));  // an object, or a directory of them
  }

  absl::Status Link(const std::string& uri, const std::string& local_path) override {
    const std::string path = FilePathOfUri(uri);
    ::unlink(local_path.c_str());
    if (::link(path.c_str(), local_path.c_str()) == 0) return absl::OkStatus();
    if (errno == ENOENT) return Errno("cannot open", path);
    // Another filesystem (or links not allowed): copy.
    Fd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.ok()) return Errno("cannot open", path);
    struct stat st;
    if (::fstat(in.get(), &st) != 0) return Errno("cannot stat", path);
    Fd out(::open(local_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444));
    if (!out.ok()) return Errno("cannot create", local_path);
    return CopyContents(in.get(), out.get(), st.st_size, local_path);
  }

 private:
  static ObjectInfo Info(const std::string& uri, const struct stat& st) {
    ObjectInfo info;
    info.uri = uri;
    info.size = st.st_size;
    info.age_seconds = static_cast<int64_t>(::time(nullptr) - st.st_mtime);
    return info;
  }

  const bool sync_;
};

}  // namespace

std::string FilePathOfUri(absl::string_view uri) {
  if (uri.substr(0, 7) == "file://") return std::string(uri.substr(7));
  return std::string(uri);
}

std::string BlobUri(const std::string& blob_root, const std::string& name) {
  return absl::StrCat(blob_root, "/", name.substr(0, 2), "/", name);
}

std::unique_ptr<ObjectBackend> NewFileObjectBackend(bool sync) {
  return std::make_unique<FileObjectBackend>(sync);
}

}  // namespace squeeze
