// `koff report`: the section-8 table, the cross-memory matrix, the LAPE analysis, and plots.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "engine/koff/experiment.h"

namespace koff::offload {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Run {
  fs::path dir;
  json eval, run;
};

json read_json(const fs::path& p) {
  std::ifstream in(p);
  KOFF_CHECK(in.good(), "cannot open {}", p.string());
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
}

std::string pct(double x) { return fmt::format("{:.0f}%", 100 * x); }

bool have_gnuplot() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

void gnuplot(const fs::path& script) {
  const std::string cmd = fmt::format("gnuplot '{}' > /dev/null 2>&1", script.string());
  if (std::system(cmd.c_str()) != 0) fail("gnuplot failed on {}", script.string());
}

}  // namespace

std::string write_report(const std::string& dir_str) {
  const fs::path dir(dir_str);
  KOFF_CHECK(fs::is_directory(dir), "{} is not a directory", dir_str);
  std::vector<Run> runs;
  auto add = [&](const fs::path& d) {
    if (fs::exists(d / "eval.json")) runs.push_back({d, read_json(d / "eval.json"), read_json(d / "run.json")});
  };
  add(dir);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) add(e.path());
  KOFF_CHECK(!runs.empty(), "{}: no finished run (a run directory has eval.json; run koff offload first)", dir_str);
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.dir < b.dir; });
  const std::vector<std::string> domains = runs[0].eval.at("domains").get<std::vector<std::string>>();

  std::ostringstream md, table;
  md << "# Knowledge offloading report\n\nRuns under `" << dir_str << "`. Held-out perplexity per domain (lower is "
     << "better), evaluated through the exported backbone with each domain's exported memory attached.\n\n";
  // --- section 8 table ---
  table << "| row | target | achieved |";
  for (const auto& d : domains) table << " " << d << " |";
  table << " mean |\n|---|---|---|";
  for (size_t i = 0; i <= domains.size(); ++i) table << "---|";
  table << "\n";
  auto row = [&](const std::string& name, const std::string& target, const std::string& achieved,
                 const std::function<double(const std::string&)>& value) {
    table << "| " << name << " | " << target << " | " << achieved << " |";
    double sum = 0;
    for (const auto& d : domains) {
      double v = value(d);
      sum += v;
      table << fmt::format(" {:.2f} |", v);
    }
    table << fmt::format(" {:.2f} |\n", sum / static_cast<double>(domains.size()));
  };
  row("dense", "0%", "0%", [&](const std::string& d) { return runs[0].eval["ppl"][d]["dense"].get<double>(); });
  std::map<double, std::map<std::string, const Run*>> by_target;
  for (const Run& r : runs) by_target[r.eval.at("target").get<double>()][r.eval.at("variant").get<std::string>()] = &r;
  for (const auto& [target, variants] : by_target)
    for (const char* v : {"prune-only", "KOFF-LoRA", "KOFF-KV", "KOFF"}) {
      auto it = variants.find(v);
      if (it == variants.end()) continue;
      const json& e = it->second->eval;
      row(v, pct(target), fmt::format("{:.1f}%", 100 * e.at("achieved").get<double>()), [&](const std::string& d) {
        return e["ppl"][d].contains("memory") ? e["ppl"][d]["memory"].get<double>() : e["ppl"][d]["backbone"].get<double>();
      });
    }
  md << "## Perplexity (KOFF_METHOD.md section 8)\n\n" << table.str() << "\n";
  md << "Every row at a target had the same step budget. prune-only: mask learned without memories. KOFF-LoRA / "
        "KOFF-KV / KOFF: mask learned jointly with LoRA, KV memories, or both; each domain evaluated with its own "
        "memory.\n\n";

  // --- details per run ---
  md << "## Runs\n\n| run | variant | target | achieved | removed of all parameters | backbone parameters |\n|---|---|---|---|---|---|\n";
  for (const Run& r : runs)
    md << fmt::format("| `{}` | {} | {} | {:.2f}% | {:.2f}% | {} of {} |\n", fs::relative(r.dir, dir).string(),
                      r.eval["variant"].get<std::string>(), pct(r.eval["target"].get<double>()),
                      100 * r.eval["achieved"].get<double>(), 100 * r.eval["removed_fraction_of_all"].get<double>(),
                      r.eval["parameters"]["backbone"].get<int64_t>(), r.eval["parameters"]["base"].get<int64_t>());
  md << "\n";

  const bool plots = have_gnuplot();
  const fs::path pdir = dir / "plots";
  if (plots) fs::create_directories(pdir);

  // --- cross matrix and LAPE of each KOFF run ---
  for (const auto& [target, variants] : by_target) {
    auto it = variants.find("KOFF");
    if (it == variants.end() || !it->second->eval.contains("cross")) continue;
    const json& e = it->second->eval;
    md << "## Cross-memory matrix, KOFF at " << pct(target) << "\n\nRow: the domain evaluated; column: the memory "
       << "attached. The diagonal is each domain with its own memory.\n\n| valid \\ memory |";
    for (const auto& d : domains) md << " " << d << " |";
    md << "\n|---|";
    for (size_t i = 0; i < domains.size(); ++i) md << "---|";
    md << "\n";
    int diagonal_best = 0;
    for (size_t a = 0; a < domains.size(); ++a) {
      md << "| " << domains[a] << " |";
      double best = 1e300;
      size_t arg = 0;
      for (size_t b = 0; b < domains.size(); ++b) {
        double v = e["cross"][a][b].get<double>();
        if (v < best) best = v, arg = b;
        md << (a == b ? fmt::format(" **{:.2f}** |", v) : fmt::format(" {:.2f} |", v));
      }
      diagonal_best += arg == a;
      md << "\n";
    }
    md << fmt::format("\nThe own memory is the best one for {} of {} domains.\n\n", diagonal_best, domains.size());
    if (plots) {
      const fs::path dat = pdir / fmt::format("cross_{:.0f}.dat", 100 * target);
      std::ofstream f(dat);
      for (size_t a = 0; a < domains.size(); ++a)
        for (size_t b = 0; b < domains.size(); ++b) f << b << " " << a << " " << e["cross"][a][b].get<double>() << "\n";
      f.close();
      const fs::path gp = pdir / fmt::format("cross_{:.0f}.gp", 100 * target);
      std::ofstream g(gp);
      std::string tics;
      for (size_t i = 0; i < domains.size(); ++i) tics += fmt::format("{}\"{}\" {}", i ? ", " : "", domains[i], i);
      g << "set terminal pngcairo size 640,560\nset output '" << (pdir / fmt::format("cross_{:.0f}.png", 100 * target)).string()
        << "'\nset title 'valid perplexity: domain (row) with memory (column), KOFF " << pct(target)
        << "'\nset xtics (" << tics << ")\nset ytics (" << tics << ")\nset yrange [] reverse\nset view map\n"
        << "plot '" << dat.string() << "' using 1:2:3 with image notitle, '' using 1:2:(sprintf('%.1f',$3)) with labels notitle\n";
      g.close();
      gnuplot(gp);
      md << fmt::format("![cross matrix](plots/cross_{:.0f}.png)\n\n", 100 * target);
    }
    if (e.contains("lape")) {
      const json& l = e["lape"];
      md << "## Language-specific neurons (LAPE, KOFF_METHOD.md section 9), KOFF at " << pct(target) << "\n\n"
         << fmt::format("{} language-specific neurons (lowest entropy among those above the 95th percentile of "
                        "activation probability {:.3f}); the mask removed **{:.1f}%** of them, against **{:.1f}%** of "
                        "the {} other neurons.\n\n| layer | specific | specific removed | other | other removed |\n|---|---|---|---|---|\n",
                        l["specific"].get<int64_t>(), l["p95"].get<double>(), 100 * l["specific_removed_fraction"].get<double>(),
                        100 * l["other_removed_fraction"].get<double>(), l["other"].get<int64_t>());
      for (size_t i = 0; i < l["layers"].size(); ++i) {
        const json& x = l["layers"][i];
        md << fmt::format("| {} | {} | {} | {} | {} |\n", i, x["specific"].get<int64_t>(), x["specific_removed"].get<int64_t>(),
                          x["other"].get<int64_t>(), x["other_removed"].get<int64_t>());
      }
      md << "\n";
    }
  }

  // --- curves and per-layer widths ---
  if (plots) {
    const fs::path gp = pdir / "curves.gp";
    std::ofstream g(gp);
    g << "set terminal pngcairo size 1000,420\nset output '" << (pdir / "curves.png").string() << "'\n"
      << "set multiplot layout 1,2\nset xlabel 'step'\nset key outside bottom center horizontal font ',8'\n"
      << "set title 'expected sparsity (dashed: target ramp)'\nplot ";
    std::string loss_plot = "set title 'training loss'\nplot ";
    for (size_t i = 0; i < runs.size(); ++i) {
      const fs::path m = runs[i].dir / "metrics.jsonl";
      if (!fs::exists(m)) continue;
      const fs::path dat = pdir / fmt::format("metrics_{}.dat", i);
      std::ifstream in(m);
      std::ofstream out(dat);
      std::string line;
      while (std::getline(in, line)) {
        json j = json::parse(line);
        if (j.value("phase", std::string()) != "mask") continue;
        out << j["step"].get<int64_t>() << " " << j["expected_sparsity"].get<double>() << " " << j["target"].get<double>()
            << " " << j["loss"].get<double>() << "\n";
      }
      const std::string name = fs::relative(runs[i].dir, dir).string();
      g << (i ? ", " : "") << "'" << dat.string() << "' using 1:2 with lines title '" << name << "', '' using 1:3 with lines dt 2 notitle";
      loss_plot += fmt::format("{}'{}' using 1:4 with lines title '{}'", i ? ", " : "", dat.string(), name);
    }
    g << "\n" << loss_plot << "\nunset multiplot\n";
    g.close();
    gnuplot(gp);
    md << "## Training curves\n\n![curves](plots/curves.png)\n\n";
    // per-layer kept heads and neurons of the KOFF runs
    const fs::path lg = pdir / "layers.gp";
    std::ofstream h(lg);
    h << "set terminal pngcairo size 1000,420\nset output '" << (pdir / "layers.png").string() << "'\n"
      << "set multiplot layout 1,2\nset xlabel 'layer'\nset yrange [0:1.05]\nset key bottom left font ',8'\n";
    std::string heads = "set title 'kept query heads (fraction)'\nplot ", neurons = "set title 'kept MLP neurons (fraction)'\nplot ";
    int n = 0;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (!fs::exists(runs[i].dir / "mask.json")) continue;
      json mj = read_json(runs[i].dir / "mask.json");
      const fs::path dat = pdir / fmt::format("layers_{}.dat", i);
      std::ofstream out(dat);
      for (size_t l = 0; l < mj["layers"].size(); ++l) {
        const json& x = mj["layers"][l];
        out << l << " " << x["kept_heads"].get<double>() / x["heads"].get<double>() << " "
            << x["kept_neurons"].get<double>() / x["neurons"].get<double>() << "\n";
      }
      const std::string name = fs::relative(runs[i].dir, dir).string();
      heads += fmt::format("{}'{}' using 1:2 with linespoints title '{}'", n ? ", " : "", dat.string(), name);
      neurons += fmt::format("{}'{}' using 1:3 with linespoints title '{}'", n ? ", " : "", dat.string(), name);
      ++n;
    }
    h << heads << "\n" << neurons << "\nunset multiplot\n";
    h.close();
    gnuplot(lg);
    md << "## Kept units per layer\n\n![layers](plots/layers.png)\n\n";
  } else {
    md << "(gnuplot not found: no plots. `apt-get install gnuplot-nox` and run `koff report` again.)\n";
  }
  io::write_file_atomic(dir / "report.md", md.str());
  return table.str();
}

}  // namespace koff::offload
