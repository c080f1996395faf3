#include "engine/dist/staged_communicator.h"

#include <vector>

#include "engine/tensor/storage.h"

namespace koff::dist {

namespace {

// The host collective in flight on a host copy of the device buffer; wait() copies the result back.
class StagedWork : public Work {
 public:
  StagedWork(WorkHandle host_work, std::vector<char> host, void* device_data, Device device)
      : host_work_(std::move(host_work)), host_(std::move(host)), device_data_(device_data), device_(device) {}
  void wait() override {
    if (done_) return;
    host_work_->wait();  // throws (naming the collective and the rank) when the host collective failed
    copy_bytes(device_data_, device_, host_.data(), Device::cpu(), host_.size());
    done_ = true;
  }

 private:
  WorkHandle host_work_;
  std::vector<char> host_;  // the host copy: alive until the host collective is over
  void* device_data_;
  Device device_;
  bool done_ = false;
};

class StagedCommunicator : public Communicator {
 public:
  StagedCommunicator(Communicator& host, Device device)
      : Communicator(host.rank(), host.world_size(), host.local_rank()), host_(host), device_(device) {
    KOFF_CHECK(!device.is_cpu(), "{}: a host-staged communicator is for device buffers, not {}", host.where(),
               device.str());
  }
  std::string backend() const override { return host_.backend() + "+staged"; }
  Device device() const override { return device_; }

  WorkHandle all_reduce_sum_async(void* data, int64_t count, ReduceType type) override {
    std::vector<char> host(static_cast<size_t>(count) * reduce_type_size(type));
    copy_bytes(host.data(), Device::cpu(), data, device_, host.size());
    WorkHandle w = host_.all_reduce_sum_async(host.data(), count, type);  // the vector's buffer does not move
    return std::make_shared<StagedWork>(std::move(w), std::move(host), data, device_);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    std::vector<char> host(bytes);
    if (rank_ == root) copy_bytes(host.data(), Device::cpu(), data, device_, bytes);
    host_.broadcast(host.data(), bytes, root);
    copy_bytes(data, device_, host.data(), Device::cpu(), bytes);
  }

  void barrier() override { host_.barrier(); }
  // abandon(): the host communicator is abandoned by its owner (tools/cmd_offload.cpp); nothing here.

 private:
  Communicator& host_;
  Device device_;
};

}  // namespace

std::unique_ptr<Communicator> make_host_staged(Communicator& host, Device device) {
  return std::make_unique<StagedCommunicator>(host, device);
}

}  // namespace koff::dist
