// koff: knowledge offloading engine. Entry point: parses the command line and dispatches to the
// subcommands that tools/cmd_*.cpp register (see cli.h).
#include "tools/cli.h"

#include "engine/cpu/runtime.h"
#include "engine/tensor/interrupt.h"

#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <map>
#include <memory>

namespace koff::cli {

static std::vector<Command>& registry() {
  static std::vector<Command> all;
  return all;
}

bool add_command(Command command) {
  registry().push_back(std::move(command));
  return true;
}

const std::vector<Command>& commands() { return registry(); }

}  // namespace koff::cli

int main(int argc, char** argv) {
  // OpenBLAS's kernels and OpenMP's idle threads are set from the environment at load time: set what
  // the user did not and restart once (engine/cpu/runtime.h).
  koff::cpu::settle_environment(argv);
  CLI::App app{"koff: knowledge offloading. Learns a structured pruning mask of a frozen LLM jointly\n"
               "with per-domain memories (LoRA + KV), splitting it into a sparse shared backbone and\n"
               "swappable domain memories."};
  app.set_version_flag("-V,--version", fmt::format("koff {}", KOFF_VERSION));
  app.require_subcommand(0, 1);
  app.footer("Run `koff COMMAND --help` for a command's options.");

  std::map<CLI::App*, koff::cli::RunFn> runs;
  for (const auto& command : koff::cli::commands()) {
    CLI::App* sub = app.add_subcommand(command.name, command.description);
    runs[sub] = command.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  try {
    for (auto& [sub, run] : runs) {
      if (sub->parsed()) return run();
    }
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const koff::Interrupted& e) {
    // Ctrl-C or SIGTERM (tools/progress.h): not an error; 130 as a shell reports SIGINT.
    std::fflush(stdout);
    fmt::print(stderr, "koff: {}\n", e.what());
    return 130;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "koff: error: {}\n", e.what());
    return 2;
  }
}
