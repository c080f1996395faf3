// The TCP star: the torchrun/Slurm convention (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) without
// MPI. Rank 0 listens on MASTER_PORT; every other rank connects once and keeps its connection.
//
// It is the rendezvous that hands NCCL its unique id (a 128-byte broadcast), and a CPU all-reduce
// good enough for tests and small jobs: each rank sends its buffer to rank 0, which sums in rank
// order (rank 0 + rank 1 + ...) and sends the sum back, so every rank holds the same bits. It moves
// 2 (W-1) buffers through rank 0, so it is not what a large CPU job should use (mpirun is).
//
// Each message starts with a header (collective kind, sequence number, byte count) that rank 0
// checks against its own: ranks that issue different collectives fail at once, with both named. A
// rank that dies closes its socket, so its peers fail at once too, naming it.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "engine/dist/comm_thread.h"
#include "engine/dist/host_communicators.h"

namespace koff::dist {

namespace {

constexpr uint32_t kMagic = 0x6B6F6666;  // "koff"

struct Header {
  uint32_t magic = kMagic;
  uint32_t kind = 0;  // 1 hello, 2 all-reduce f32, 3 all-reduce f64, 4 broadcast
  uint64_t seq = 0;
  uint64_t bytes = 0;
  int32_t rank = 0, world_size = 0;  // of the sender
};

const char* kind_name(uint32_t kind) {
  switch (kind) {
    case 1:
      return "hello";
    case 2:
      return "all-reduce f32";
    case 3:
      return "all-reduce f64";
    case 4:
      return "broadcast";
    default:
      return "unknown";
  }
}

std::string errno_text() { return std::strerror(errno); }

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) reset(), fd_ = o.fd_, o.fd_ = -1;
    return *this;
  }
  ~Socket() { reset(); }
  int fd() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// `peer` names the other end in errors ("rank 1", "rank 0 at host:port").
void send_all(const Socket& s, const void* data, size_t bytes, const std::string& peer) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(s.fd(), p, bytes, MSG_NOSIGNAL);  // no SIGPIPE when the peer is gone
    if (n < 0 && errno == EINTR) continue;
    // A peer that died leaves a closed or reset connection: say so the same way recv_all does.
    KOFF_CHECK(n > 0 || (errno != EPIPE && errno != ECONNRESET), "the connection to {} closed (the process died?): {}",
               peer, errno_text());
    KOFF_CHECK(n > 0, "send to {} failed: {}", peer, errno_text());
    p += n, bytes -= static_cast<size_t>(n);
  }
}

void recv_all(const Socket& s, void* data, size_t bytes, const std::string& peer) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(s.fd(), p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    KOFF_CHECK(n != 0, "the connection to {} closed (the process died?)", peer);
    // A process killed with unread data in its receive buffer resets the connection instead of
    // closing it (RST, not FIN): the same event, so the same message.
    KOFF_CHECK(n > 0 || errno != ECONNRESET, "the connection to {} closed (the process died?): {}", peer,
               errno_text());
    KOFF_CHECK(n > 0, "recv from {} failed: {}", peer, errno_text());
    p += n, bytes -= static_cast<size_t>(n);
  }
}

void set_nodelay(const Socket& s) {
  int one = 1;
  KOFF_CHECK(::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "setsockopt(TCP_NODELAY): {}",
             errno_text());
}

class TcpCommunicator : public Communicator {
 public:
  TcpCommunicator(int rank, int world_size, int local_rank, std::string addr, int port)
      : Communicator(rank, world_size, local_rank),
        addr_(std::move(addr)),
        port_(port),
        thread_(where(), timeout_seconds()) {
    KOFF_CHECK(port > 0 && port < 65536, "MASTER_PORT {} is not a TCP port", port);
    peers_.resize(static_cast<size_t>(world_size));
    if (world_size > 1) thread_.run(fmt::format("rendezvous at {}:{}", addr_, port_), [this] { rendezvous(); });
  }

  // No shutdown() of the sockets here: after a timeout the communication thread is left blocked in a
  // recv (see CommThread); waking it would let it run on into members being destroyed.

  std::string backend() const override { return "tcp"; }

  WorkHandle all_reduce_sum_async(void* data, int64_t count, ReduceType type) override {
    const uint64_t seq = next_seq_++;
    return thread_.submit(fmt::format("all-reduce of {} {} values", count, type == ReduceType::f32 ? "f32" : "f64"),
                          [this, data, count, type, seq] {
                            if (world_size_ == 1) return;
                            Header h;
                            h.kind = type == ReduceType::f32 ? 2 : 3;
                            h.seq = seq;
                            h.bytes = static_cast<uint64_t>(count) * reduce_type_size(type);
                            if (rank_ == 0)
                              reduce_at_root(h, data, count, type);
                            else
                              exchange_with_root(h, data, data);
                          });
  }

  void broadcast(void* data, size_t bytes, int root) override {
    KOFF_CHECK(root >= 0 && root < world_size_, "{}: broadcast from rank {}", where(), root);
    const uint64_t seq = next_seq_++;
    thread_.run(fmt::format("broadcast of {} bytes from rank {}", bytes, root), [this, data, bytes, root, seq] {
      if (world_size_ == 1) return;
      Header h;
      h.kind = 4, h.seq = seq, h.bytes = bytes;
      if (rank_ == 0) {
        // Every peer sends its header (checked); the root's data goes out, or comes in first from `root`.
        for (int r = 1; r < world_size_; ++r) {
          check_header(r, receive_header(r), h);
          if (r == root) recv_all(peers_[static_cast<size_t>(r)], data, bytes, peer_name(r));
        }
        for (int r = 1; r < world_size_; ++r)
          if (r != root) send_all(peers_[static_cast<size_t>(r)], data, bytes, peer_name(r));
      } else {
        send_header(h);
        if (rank_ == root)
          send_all(peers_[0], data, bytes, peer_name(0));
        else
          recv_all(peers_[0], data, bytes, peer_name(0));
      }
    });
  }

  void barrier() override {
    double one = 1;
    all_reduce_sum(&one, 1, ReduceType::f64);
  }

 private:
  std::string peer_name(int r) const {
    return r == 0 ? fmt::format("rank 0 at {}:{}", addr_, port_) : fmt::format("rank {}", r);
  }

  void rendezvous() {
    const double timeout = timeout_seconds();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    if (rank_ == 0) {
      listener_ = Socket(::socket(AF_INET, SOCK_STREAM, 0));
      KOFF_CHECK(listener_.fd() >= 0, "socket(): {}", errno_text());
      int one = 1;
      ::setsockopt(listener_.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(port_));
      KOFF_CHECK(::bind(listener_.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0,
                 "bind to MASTER_PORT {} failed: {} (another job on this port?)", port_, errno_text());
      KOFF_CHECK(::listen(listener_.fd(), world_size_) == 0, "listen on port {}: {}", port_, errno_text());
      for (int joined = 1; joined < world_size_;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p{listener_.fd(), POLLIN, 0};
        const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) continue;
        KOFF_CHECK(ready > 0, "only {} of {} ranks connected to port {} within {:g} s (KOFF_DIST_TIMEOUT)", joined,
                   world_size_, port_, timeout);
        Socket s(::accept(listener_.fd(), nullptr, nullptr));
        KOFF_CHECK(s.fd() >= 0, "accept on port {}: {}", port_, errno_text());
        set_nodelay(s);
        Header h;
        recv_all(s, &h, sizeof h, "a connecting rank");
        KOFF_CHECK(h.magic == kMagic && h.kind == 1, "port {}: a connection that is not a koff rank", port_);
        KOFF_CHECK(h.world_size == world_size_, "rank {} says WORLD_SIZE={}, rank 0 has {}", h.rank, h.world_size,
                   world_size_);
        KOFF_CHECK(h.rank > 0 && h.rank < world_size_ && peers_[static_cast<size_t>(h.rank)].fd() < 0,
                   "two processes connected as rank {} (check RANK)", h.rank);
        peers_[static_cast<size_t>(h.rank)] = std::move(s);
        ++joined;
      }
      listener_.reset();  // every rank is in; nobody else may join
      Header ack;
      ack.kind = 1, ack.world_size = world_size_;
      for (int r = 1; r < world_size_; ++r) send_all(peers_[static_cast<size_t>(r)], &ack, sizeof ack, peer_name(r));
    } else {
      addrinfo hints{}, *res = nullptr;
      hints.ai_family = AF_INET;
      hints.ai_socktype = SOCK_STREAM;
      const int rc = ::getaddrinfo(addr_.c_str(), std::to_string(port_).c_str(), &hints, &res);
      KOFF_CHECK(rc == 0 && res, "MASTER_ADDR '{}' does not resolve: {}", addr_, ::gai_strerror(rc));
      std::string last_error;
      for (;;) {  // rank 0 may not be listening yet
        Socket s(::socket(AF_INET, SOCK_STREAM, 0));
        KOFF_CHECK(s.fd() >= 0, "socket(): {}", errno_text());
        if (::connect(s.fd(), res->ai_addr, res->ai_addrlen) == 0) {
          peers_[0] = std::move(s);
          break;
        }
        last_error = errno_text();
        if (std::chrono::steady_clock::now() > deadline) {
          ::freeaddrinfo(res);
          throw Error(fmt::format("could not connect to rank 0 at {}:{} within {:g} s (KOFF_DIST_TIMEOUT): {}", addr_,
                                  port_, timeout, last_error));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ::freeaddrinfo(res);
      set_nodelay(peers_[0]);
      Header hello;
      hello.kind = 1, hello.rank = rank_, hello.world_size = world_size_;
      send_all(peers_[0], &hello, sizeof hello, peer_name(0));
      Header ack;
      recv_all(peers_[0], &ack, sizeof ack, peer_name(0));
      KOFF_CHECK(ack.magic == kMagic && ack.kind == 1, "rank 0 at {}:{} answered with something else", addr_, port_);
    }
  }

  Header receive_header(int r) {
    Header h;
    recv_all(peers_[static_cast<size_t>(r)], &h, sizeof h, peer_name(r));
    KOFF_CHECK(h.magic == kMagic, "garbage from {}", peer_name(r));
    return h;
  }

  void send_header(const Header& h) {
    Header out = h;
    out.rank = rank_, out.world_size = world_size_;
    send_all(peers_[0], &out, sizeof out, peer_name(0));
  }

  // The ranks must issue the same collectives in the same order; name both sides when they do not.
  void check_header(int r, const Header& got, const Header& want) const {
    KOFF_CHECK(got.kind == want.kind && got.seq == want.seq && got.bytes == want.bytes,
               "rank {} issued collective #{} ({} of {} bytes) where rank 0 issued #{} ({} of {} bytes)", r, got.seq,
               kind_name(got.kind), got.bytes, want.seq, kind_name(want.kind), want.bytes);
  }

  void reduce_at_root(const Header& h, void* data, int64_t count, ReduceType type) {
    std::vector<char> incoming(h.bytes);
    for (int r = 1; r < world_size_; ++r) {  // in rank order: the same sum on every rank, every run
      check_header(r, receive_header(r), h);
      recv_all(peers_[static_cast<size_t>(r)], incoming.data(), h.bytes, peer_name(r));
      if (type == ReduceType::f32) {
        float* acc = static_cast<float*>(data);
        const float* in = reinterpret_cast<const float*>(incoming.data());
        for (int64_t i = 0; i < count; ++i) acc[i] += in[i];
      } else {
        double* acc = static_cast<double*>(data);
        const double* in = reinterpret_cast<const double*>(incoming.data());
        for (int64_t i = 0; i < count; ++i) acc[i] += in[i];
      }
    }
    for (int r = 1; r < world_size_; ++r) send_all(peers_[static_cast<size_t>(r)], data, h.bytes, peer_name(r));
  }

  void exchange_with_root(const Header& h, const void* out, void* in) {
    send_header(h);
    send_all(peers_[0], out, h.bytes, peer_name(0));
    recv_all(peers_[0], in, h.bytes, peer_name(0));
  }

  std::string addr_;
  int port_;
  std::vector<Socket> peers_;  // rank 0: one per other rank; others: peers_[0] is rank 0
  Socket listener_;
  uint64_t next_seq_ = 0;  // issued from the caller's thread, in order
  CommThread thread_;      // last: stopped (joined) before the sockets close
};

}  // namespace

std::unique_ptr<Communicator> make_tcp(int rank, int world_size, int local_rank, const std::string& master_addr,
                                       int master_port) {
  return std::make_unique<TcpCommunicator>(rank, world_size, local_rank, master_addr, master_port);
}

}  // namespace koff::dist
