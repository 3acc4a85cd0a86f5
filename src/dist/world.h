// Data-parallel training across processes and machines (MPI): the ranks of one job and the
// few collectives the trainer needs. A build without MPI (LORATUNE_MPI off), or a process not
// started by mpirun, is one rank of one, where every collective leaves its values as they are.
#pragma once

#include <cstddef>
#include <string>

namespace loratune::dist {

struct World {
  int rank = 0;
  int size = 1;
  int local_size = 1;  // ranks on this host
};

// Joins the job when the process was started by mpirun (MPI is initialised once, and finalised
// at exit); otherwise the single-process world. Safe to call more than once.
const World& init();
// The world of init() (one rank of one before it).
const World& world();
// Whether this build can run under mpirun.
bool built_with_mpi();
// Threads for this rank when none were asked for: the cores the launcher bound it to, or an
// equal share of the host's cores among its ranks; 0 (the default count) for a single rank.
int default_threads();

// Every rank ends with the sum over ranks of values[n], added in rank order (0, 1, ...), so
// that the result is the same on every rank and from run to run.
void sum_in_rank_order(float* values, size_t n);
void sum_in_rank_order(double* values, size_t n);
// True on every rank when `flag` is true on any.
bool any(bool flag);
// Rank 0's values (or string) on every rank.
void broadcast(float* values, size_t n);
void broadcast(std::string& s);
// Ends the whole job at once with `code` (after an error on one rank: the others would wait
// for it in their next collective).
[[noreturn]] void abort_job(int code);

}  // namespace loratune::dist
