#include <gtest/gtest.h>
#include <omp.h>

#include "core/threads.h"

namespace loratune {
namespace {

TEST(Threads, DefaultKeepsEveryCoreWhileBlasRunsOnOne) {
  omp_set_num_threads(omp_get_num_procs());  // the count a fresh process starts with
  set_num_threads(0);
  EXPECT_EQ(num_threads(), omp_get_num_procs());
}

TEST(Threads, ExplicitCountStaysForLaterDefaults) {
  set_num_threads(3);
  EXPECT_EQ(num_threads(), 3);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), 3);
}

}  // namespace
}  // namespace loratune
