// Files are written to a temporary name beside the target, flushed to disk, then renamed:
// a killed run never leaves a half-written file under the final name.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace loratune {

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // removes the temporary file unless commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Flushes, fsyncs and renames onto the final path.
  void commit();

 private:
  std::string path_;
  std::string tmp_path_;
  FILE* file_ = nullptr;
};

// Writes a whole text file atomically.
void write_file_atomic(const std::string& path, std::string_view content);

}  // namespace loratune
