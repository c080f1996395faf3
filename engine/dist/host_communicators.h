// Factories of the host (CPU buffer) communicators; from_environment() picks one.
#pragma once

#include <memory>
#include <string>

#include "engine/dist/communicator.h"

namespace koff::dist {

// MPI_COMM_WORLD of a job started by mpirun. MPI is initialised (on the communicator's thread) by
// the first call and finalised when the last MPI communicator goes away.
std::unique_ptr<Communicator> make_mpi();

// The TCP star: rank 0 listens on master_port, the others connect to master_addr:master_port.
// Collectives go through rank 0, which sums in rank order (so every rank gets the same bits).
std::unique_ptr<Communicator> make_tcp(int rank, int world_size, int local_rank, const std::string& master_addr,
                                       int master_port);

}  // namespace koff::dist
