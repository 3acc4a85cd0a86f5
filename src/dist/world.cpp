#include "dist/world.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "core/error.h"

#ifdef LORATUNE_HAVE_MPI
#include <mpi.h>
#endif

namespace loratune::dist {

namespace {

World g_world;

#ifdef LORATUNE_HAVE_MPI
bool g_mpi = false;  // MPI initialised (the process runs under mpirun)

// mpirun (Open MPI's, or a PMI/PMIx launcher's) tells its processes their place in the job.
bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw Error(std::string("MPI: ") + what + " failed");
}

// Counts of more than INT_MAX values would not fit MPI's int counts.
int count_of(size_t n) {
  if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error("MPI: a message of more than 2^31 values");
  return static_cast<int>(n);
}

template <typename T>
void sum_ordered(T* values, size_t n, MPI_Datatype type) {
  if (!g_mpi || g_world.size == 1 || n == 0) return;
  std::vector<T> all(n * static_cast<size_t>(g_world.size));
  check(MPI_Allgather(values, count_of(n), type, all.data(), count_of(n), type, MPI_COMM_WORLD),
        "allgather");
  for (size_t i = 0; i < n; ++i) {
    T s = all[i];
    for (int r = 1; r < g_world.size; ++r) s += all[static_cast<size_t>(r) * n + i];
    values[i] = s;
  }
}
#endif

}  // namespace

bool built_with_mpi() {
#ifdef LORATUNE_HAVE_MPI
  return true;
#else
  return false;
#endif
}

const World& init() {
#ifdef LORATUNE_HAVE_MPI
  if (g_mpi || !launched_by_mpirun()) return g_world;
  check(MPI_Init(nullptr, nullptr), "init");
  g_mpi = true;
  std::atexit([] { MPI_Finalize(); });
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
  MPI_Comm local;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local),
        "split by host");
  MPI_Comm_size(local, &g_world.local_size);
  MPI_Comm_free(&local);
#endif
  return g_world;
}

const World& world() {
  return g_world;
}

int default_threads() {
  if (g_world.size == 1) return 0;
  cpu_set_t set;
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < online)
    return CPU_COUNT(&set);
  return std::max(1, static_cast<int>(online) / g_world.local_size);
}

void sum_in_rank_order(float* values, size_t n) {
#ifdef LORATUNE_HAVE_MPI
  sum_ordered(values, n, MPI_FLOAT);
#endif
}

void sum_in_rank_order(double* values, size_t n) {
#ifdef LORATUNE_HAVE_MPI
  sum_ordered(values, n, MPI_DOUBLE);
#endif
}

bool any(bool flag) {
#ifdef LORATUNE_HAVE_MPI
  if (!g_mpi || g_world.size == 1) return flag;
  int local = flag ? 1 : 0, global = 0;
  check(MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "allreduce");
  return global != 0;
#else
  return flag;
#endif
}

void broadcast(float* values, size_t n) {
#ifdef LORATUNE_HAVE_MPI
  if (!g_mpi || g_world.size == 1 || n == 0) return;
  check(MPI_Bcast(values, count_of(n), MPI_FLOAT, 0, MPI_COMM_WORLD), "broadcast");
#endif
}

void broadcast(std::string& s) {
#ifdef LORATUNE_HAVE_MPI
  if (!g_mpi || g_world.size == 1) return;
  unsigned long long size = s.size();
  check(MPI_Bcast(&size, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD), "broadcast");
  s.resize(size);
  if (size > 0)
    check(MPI_Bcast(s.data(), count_of(size), MPI_CHAR, 0, MPI_COMM_WORLD), "broadcast");
#endif
}

void abort_job(int code) {
#ifdef LORATUNE_HAVE_MPI
  if (g_mpi && g_world.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace loratune::dist
