#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/threads.h"

namespace loratune {
namespace {

// OpenBLAS's OpenMP build sets OpenMP's thread count along with its own: keeping BLAS on one
// thread must not take the count that n <= 0 keeps (all cores at start) down with it.
TEST(Threads, ZeroKeepsTheCountWhileBlasRunsOnOne) {
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), 3);
  EXPECT_EQ(openblas_get_num_threads(), 1);
}

// Every index once, in contiguous ranges: across the team from min_parallel on, else one range
// on the calling thread (also inside a parallel region, where it must not nest).
TEST(Threads, ParallelRangesCoverEachIndexOnce) {
  set_num_threads(3);
  for (const long n : {0L, 1L, 2L, 5L, 1000L})
    for (const long min_parallel : {2L, 6L}) {
      std::vector<int> hits(n, 0);
      int calls = 0;
      parallel_ranges(n, min_parallel, [&](long begin, long end) {
        EXPECT_LT(begin, end);
#pragma omp atomic
        ++calls;
        for (long i = begin; i < end; ++i) ++hits[i];
      });
      EXPECT_EQ(hits, std::vector<int>(n, 1)) << n << " " << min_parallel;
      EXPECT_EQ(calls, n == 0 ? 0 : n < min_parallel ? 1 : std::min(n, 3L));
    }
  int nested = 0;
#pragma omp parallel num_threads(2) reduction(+ : nested)
  parallel_ranges(100, 2, [&](long begin, long end) {
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 100);
    ++nested;
  });
  EXPECT_EQ(nested, 2) << "one whole range per thread of the outer team";
}

}  // namespace
}  // namespace loratune
