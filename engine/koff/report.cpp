// `koff report`: the section-8 table, the cross-memory matrix, the LAPE analysis, and plots.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "engine/koff/experiment.h"
#include "engine/koff/statistics.h"

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

// One row of the section-8 table, pooled over seeds: per seed, the windows of every domain
// concatenated (domain order of the runs).
struct Row {
  std::string name, target, achieved, group;
  SeedWindowNll nll;                             // [seed][window of all domains]
  std::vector<std::vector<double>> domain_ppl;   // [domain][seed]
};

std::string fmt_interval(const BootstrapInterval& b) { return fmt::format("{:.2f} [{:.2f}, {:.2f}]", b.estimate, b.lower, b.upper); }
std::string fmt_ratio(const BootstrapInterval& b) {
  return fmt::format("{:.3f} [{:.3f}, {:.3f}]{}", b.estimate, b.lower, b.upper, b.significant ? " *" : "");
}

// What the report is made from: the finished runs under one directory, grouped by (variant,
// target), and the rows of the section-8 table.
struct ReportInputs {
  fs::path dir;
  std::string dir_str;
  std::vector<Run> runs;  // sorted by directory
  std::vector<std::string> domains;
  bool windows = false;  // per-window figures (older runs have ppl only)
  // The windows of every domain, concatenated: tokens and domain (stratum) per window.
  std::vector<double> tokens;
  std::vector<int64_t> strata;
  // Runs by (variant, target), each with its seeds.
  std::map<std::pair<std::string, double>, std::vector<const Run*>> groups;
  std::set<int64_t> seeds;
  std::set<double> targets;  // of the runs that learn a mask
  std::vector<Row> rows;
  const Row* dense = nullptr;
  BootstrapOptions bo;

  const Row* find_row(const std::string& name, const std::string& group) const {
    for (const Row& r : rows)
      if (r.name == name && (r.group == group || group.empty())) return &r;
    return nullptr;
  }
  BootstrapInterval ratio(const Row& a, const Row& b) const {
    return bootstrap_perplexity_ratio(a.nll, b.nll, tokens, bo, strata);
  }
};

// A run, a directory of runs, or a directory of seed-N directories of runs (koff demo --seeds).
std::vector<Run> read_runs(const fs::path& dir) {
  std::vector<Run> runs;
  auto add = [&](const fs::path& d) {
    if (fs::exists(d / "eval.json")) runs.push_back({d, read_json(d / "eval.json"), read_json(d / "run.json")});
  };
  add(dir);
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory()) continue;
    add(e.path());
    for (const auto& f : fs::directory_iterator(e.path()))
      if (f.is_directory() && !fs::exists(e.path() / "eval.json")) add(f.path());
  }
  std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return a.dir < b.dir; });
  return runs;
}

// A row from the eval key `what` of the runs `rs`; none when no run has it.
std::optional<Row> make_row(const ReportInputs& in, const std::string& name, const std::vector<const Run*>& rs,
                            const std::string& what, const std::string& group) {
  Row row;
  row.name = name, row.group = group;
  row.domain_ppl.resize(in.domains.size());
  double achieved = 0;
  for (const Run* r : rs) {
    const json& e = r->eval;
    if (!e["ppl"][in.domains[0]].contains(what)) continue;
    std::vector<double> all;
    for (size_t d = 0; d < in.domains.size(); ++d) {
      row.domain_ppl[d].push_back(e["ppl"][in.domains[d]][what].get<double>());
      if (in.windows)
        for (const auto& x : e["nll"][in.domains[d]][what]) all.push_back(x.get<double>());
    }
    if (in.windows) row.nll.push_back(all);
    achieved += e.at("achieved").get<double>();
    row.target = pct(e.at("target").get<double>());
  }
  if (row.domain_ppl[0].empty()) return std::nullopt;
  row.achieved = fmt::format("{:.1f}%", 100 * achieved / static_cast<double>(row.domain_ppl[0].size()));
  return row;
}

// The rows of the section-8 table, in its order: dense, the adaptation baseline, then per target
// prune-only (binary mask, then with scales) and each KOFF variant (backbone alone, then with memory).
std::vector<Row> make_rows(const ReportInputs& in) {
  std::vector<Row> rows;
  auto push = [&](std::optional<Row> r) {
    if (r) rows.push_back(std::move(*r));
  };
  auto group = [&](const char* v, double t) -> const std::vector<const Run*>& { return in.groups.at({v, t}); };
  // dense: deterministic; the first run that evaluated it.
  for (const Run& r : in.runs)
    if (r.eval["ppl"][in.domains[0]].contains("dense")) {
      push(make_row(in, "dense", {&r}, "dense", "dense"));
      rows.back().target = "0%", rows.back().achieved = "0%";
      break;
    }
  for (const char* v : {"dense+LoRA", "dense+KV", "dense+LoRA+KV"})
    if (in.groups.count({v, 0.0})) push(make_row(in, v, group(v, 0.0), "memory", "adaptation"));
  for (double t : in.targets) {
    const std::string g = pct(t);
    if (in.groups.count({"prune-only", t})) {
      push(make_row(in, "prune-only, binary mask", group("prune-only", t), "binary", g));
      push(make_row(in, "prune-only", group("prune-only", t), "backbone", g));
    }
    for (const char* v : {"KOFF-LoRA", "KOFF-KV", "KOFF"}) {
      if (!in.groups.count({v, t})) continue;
      push(make_row(in, fmt::format("{} backbone alone", v), group(v, t), "backbone", g));
      push(make_row(in, v, group(v, t), "memory", g));
    }
  }
  return rows;
}

// Reads the runs under dir and makes the table's rows.
void read_inputs(ReportInputs& in) {
  in.runs = read_runs(in.dir);
  KOFF_CHECK(!in.runs.empty(), "{}: no finished run (a run directory has eval.json; run koff offload first)",
             in.dir_str);
  in.domains = in.runs[0].eval.at("domains").get<std::vector<std::string>>();
  in.windows = in.runs[0].eval.contains("nll");
  if (in.windows)
    for (size_t d = 0; d < in.domains.size(); ++d)
      for (const auto& t : in.runs[0].eval.at("window_tokens").at(in.domains[d])) {
        in.tokens.push_back(t.get<double>());
        in.strata.push_back(static_cast<int64_t>(d));
      }
  for (const Run& r : in.runs) {
    in.groups[{r.eval.at("variant").get<std::string>(), r.eval.at("target").get<double>()}].push_back(&r);
    in.seeds.insert(r.eval.value("seed", int64_t{1}));
  }
  for (const auto& [key, v] : in.groups)
    if (key.second > 0) in.targets.insert(key.second);
  in.rows = make_rows(in);
  in.dense = in.find_row("dense", "dense");
}

// The section-8 table (also what `koff demo` prints).
std::string perplexity_table(const ReportInputs& in) {
  std::ostringstream table;
  table << "| row | target | achieved |";
  for (const auto& d : in.domains) table << " " << d << " |";
  table << (in.windows ? " all [95% CI] | vs dense [95% CI] |\n" : " mean |\n") << "|---|---|---|";
  for (size_t i = 0; i < in.domains.size() + (in.windows ? 2 : 1); ++i) table << "---|";
  table << "\n";
  for (const Row& r : in.rows) {
    table << "| " << r.name << " | " << r.target << " | " << r.achieved << " |";
    double sum = 0;
    for (size_t d = 0; d < in.domains.size(); ++d) {
      // Per domain: the perplexity of the seeds' pooled nll (the geometric mean of their perplexities).
      double log_sum = 0;
      for (double p : r.domain_ppl[d]) log_sum += std::log(p);
      const double v = std::exp(log_sum / static_cast<double>(r.domain_ppl[d].size()));
      sum += v;
      table << fmt::format(" {:.2f} |", v);
    }
    if (in.windows) {
      table << " " << fmt_interval(bootstrap_perplexity(r.nll, in.tokens, in.bo, in.strata)) << " | "
            << (in.dense && &r != in.dense ? fmt_ratio(in.ratio(r, *in.dense)) : std::string("")) << " |\n";
    } else {
      table << fmt::format(" {:.2f} |\n", sum / static_cast<double>(in.domains.size()));
    }
  }
  return table.str();
}

void write_header(std::ostream& md, const ReportInputs& in) {
  md << "# Knowledge offloading report\n\nRuns under `" << in.dir_str << "`: " << in.seeds.size()
     << " seed(s). Held-out "
     << "perplexity per domain (lower is better), evaluated through the exported backbone";
  if (in.windows)
    md << fmt::format(" on {} windows of up to {} tokens ({} tokens in all)", in.tokens.size(),
                      in.runs[0].eval.value("eval_seq", int64_t{0}),
                      static_cast<int64_t>(std::accumulate(in.tokens.begin(), in.tokens.end(), 0.0)));
  md << ".\n\n";
}

void write_perplexity_section(std::ostream& md, const ReportInputs& in, const std::string& table) {
  md << "## Perplexity (KOFF_METHOD.md section 8)\n\n" << table << "\n";
  md << "Rows: **dense** the base model; **dense+LoRA / +KV / +LoRA+KV** memories trained the same steps on the "
        "unpruned model (the adaptation baseline); **prune-only** the mask learned without memories, with its kept "
        "units' z_det folded in as scales, and **binary mask** the same mask with kept units at 1; **KOFF-LoRA / "
        "KOFF-KV / KOFF** the mask learned jointly with the memories, each domain with its own memory, and each "
        "pruned backbone also **alone** (no memory). Domain columns: perplexity (over seeds, the geometric mean). ";
  if (in.windows)
    md << "**all**: perplexity over every token of every domain, with a 95% interval from a paired bootstrap over "
          "seeds and windows (windows resampled within domains; engine/koff/statistics.h). **vs dense**: the ratio "
          "of perplexities, `*` where its interval excludes 1.";
  md << "\n\n";
}

// LAPE of the runs of `v` at target t, pooled over layer x seed strata: one line.
void write_lape_claim(std::ostream& md, const ReportInputs& in, const char* v, double t) {
  if (!in.groups.count({v, t})) return;
  std::vector<RemovalTable> tables;
  for (const Run* r : in.groups.at({v, t})) {
    if (!r->eval.contains("lape")) continue;
    for (const json& x : r->eval["lape"]["layers"]) {
      const int64_t st = x["specific"], sr = x["specific_removed"], ot = x["other"], orem = x["other_removed"];
      tables.push_back({sr, st - sr, orem, ot - orem});
    }
  }
  if (tables.empty()) return;
  const CmhResult c = cochran_mantel_haenszel(tables);
  const char* verdict = !(c.p_value < 0.05) ? "not significant"
                        : c.odds_ratio > 1  ? "holds"
                                            : "does not hold (the opposite: specific neurons are kept)";
  md << fmt::format("- Language-specific neurons pruned preferentially ({} mask): removed {:.1f}% of "
                    "language-specific neurons vs {:.1f}% of the others; Mantel-Haenszel odds ratio {:.2f}, "
                    "CMH p = {:.3g} over {} layer x seed strata{}.\n",
                    v, 100 * c.specific_removal_rate, 100 * c.other_removal_rate, c.odds_ratio, c.p_value, c.strata,
                    std::string(v) == "KOFF" ? fmt::format(" — **{}**", verdict) : "");
}

// The paper's claims, judged from these measurements' intervals.
void write_claims(std::ostream& md, const ReportInputs& in) {
  if (!in.windows || !in.dense) return;
  const Row* dense = in.dense;
  md << "## The paper's claims, here\n\nA verdict needs the 95% interval: *holds* / *does not hold* when the "
        "interval is on one side, *not significant* when it straddles the threshold.\n\n";
  auto verdict_below = [](const BootstrapInterval& b, double threshold) {  // "a <= threshold * b"
    return b.upper <= threshold ? "holds" : b.lower > threshold ? "does not hold" : "not significant";
  };
  for (double t : in.targets) {
    const std::string g = pct(t);
    md << "### Target " << g << "\n\n";
    if (const Row* k = in.find_row("KOFF", g)) {
      const BootstrapInterval b = in.ratio(*k, *dense);
      md << fmt::format("- KOFF close to dense (within 5%): KOFF / dense = {} — **{}**.\n", fmt_ratio(b),
                        verdict_below(b, 1.05));
      if (const Row* a = in.find_row("dense+LoRA+KV", "adaptation"))
        md << fmt::format("  KOFF / dense+LoRA+KV (the same memories without pruning) = {}.\n",
                          fmt_ratio(in.ratio(*k, *a)));
    }
    const Row* p = in.find_row("prune-only", g);
    const Row* pb = in.find_row("prune-only, binary mask", g);
    if (const Row* k = in.find_row("KOFF", g); p && k) {
      const BootstrapInterval b = in.ratio(*k, *p);
      md << fmt::format("- Prune-only clearly worse than KOFF: KOFF / prune-only = {} — **{}**; prune-only / dense "
                        "= {}{}.\n",
                        fmt_ratio(b), verdict_below(b, 1.0), fmt_ratio(in.ratio(*p, *dense)),
                        pb ? fmt::format(", binary mask / dense = {}", fmt_ratio(in.ratio(*pb, *dense))) : "");
    }
    const Row* k = in.find_row("KOFF", g);
    const Row* kl = in.find_row("KOFF-LoRA", g);
    const Row* kk = in.find_row("KOFF-KV", g);
    if (k && kl && kk) {
      const BootstrapInterval a = in.ratio(*k, *kl), b = in.ratio(*k, *kk);
      const char* v = a.upper < 1 && b.upper < 1 ? "holds" : a.lower > 1 || b.lower > 1 ? "does not hold" : "not significant";
      md << fmt::format("- LoRA and KV complementary (both beat either alone): KOFF / KOFF-LoRA = {}, KOFF / KOFF-KV "
                        "= {} — **{}**.\n",
                        fmt_ratio(a), fmt_ratio(b), v);
    }
    for (const char* v : {"KOFF", "prune-only"}) write_lape_claim(md, in, v, t);
    md << "\n";
  }
}

// What the sparsity control did, per run group (mean over seeds).
void write_control_section(std::ostream& md, const ReportInputs& in) {
  md << "## Sparsity control\n\nPer run (mean over seeds): the expected sparsity s_hat at the end against the "
        "target, the share the gates close by themselves (z_det = 0), the undecided share (p_open in (0.1, 0.9)), "
        "the largest |s_hat - t| after the ramp, and the share of the prunable size that the exact-target final "
        "mask removed although the gates held it open (p_open >= 0.5): what the final sort decided instead of "
        "the gates.\n\n| run | control | target | s_hat at end | hard | undecided | max abs(s_hat - t) after ramp | "
        "final-mask override |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& [key, rs] : in.groups) {
    if (key.second <= 0) continue;
    double sh = 0, hard = 0, und = 0, over = 0, err = 0;
    std::string control;
    int n = 0;
    for (const Run* r : rs) {
      if (!r->eval.contains("control")) continue;
      const json& c = r->eval["control"];
      control = c["control"].get<std::string>();
      sh += c["expected_sparsity"].get<double>(), hard += c["hard_sparsity"].get<double>();
      und += c["undecided"].get<double>(), over += c["final_mask_override"].get<double>();
      // the tracking error after the ramp, from metrics.jsonl
      const OffloadSettings st = OffloadSettings::from_json(r->run.at("settings"));
      const double ramp = ramp_steps(st.control());
      std::ifstream metrics(r->dir / "metrics.jsonl");
      double worst = 0;
      for (std::string line; std::getline(metrics, line);) {
        const json j = json::parse(line);
        if (j.value("phase", std::string()) == "mask" && j.contains("expected_sparsity") &&
            j["step"].get<double>() > ramp)
          worst = std::max(worst, std::abs(j["expected_sparsity"].get<double>() - j["target"].get<double>()));
      }
      err += worst;
      ++n;
    }
    if (n == 0) continue;
    md << fmt::format("| {} | {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.4f} |\n", key.first, control,
                      pct(key.second), sh / n, hard / n, und / n, err / n, over / n);
  }
  md << "\n";
}

void write_runs_section(std::ostream& md, const ReportInputs& in) {
  md << "## Runs\n\n| run | variant | target | achieved | removed of all parameters | backbone parameters |\n|---|---|---|---|---|---|\n";
  for (const Run& r : in.runs)
    md << fmt::format("| `{}` | {} | {} | {:.2f}% | {:.2f}% | {} of {} |\n", fs::relative(r.dir, in.dir).string(),
                      r.eval["variant"].get<std::string>(), pct(r.eval["target"].get<double>()),
                      100 * r.eval["achieved"].get<double>(), 100 * r.eval["removed_fraction_of_all"].get<double>(),
                      r.eval["parameters"]["backbone"].get<int64_t>(), r.eval["parameters"]["base"].get<int64_t>());
  md << "\n";
}

// The cross matrix's heat map (plots/cross_<target>.png).
void plot_cross(std::ostream& md, const ReportInputs& in, const fs::path& pdir, double target,
                const std::vector<std::vector<double>>& cross) {
  const size_t D = in.domains.size();
  const fs::path dat = pdir / fmt::format("cross_{:.0f}.dat", 100 * target);
  std::ofstream f(dat);
  for (size_t a = 0; a < D; ++a)
    for (size_t b = 0; b < D; ++b) f << b << " " << a << " " << cross[a][b] << "\n";
  f.close();
  const fs::path gp = pdir / fmt::format("cross_{:.0f}.gp", 100 * target);
  std::ofstream g(gp);
  std::string tics;
  for (size_t i = 0; i < D; ++i) tics += fmt::format("{}\"{}\" {}", i ? ", " : "", in.domains[i], i);
  g << "set terminal pngcairo size 640,560\nset output '" << (pdir / fmt::format("cross_{:.0f}.png", 100 * target)).string()
    << "'\nset title 'valid perplexity: domain (row) with memory (column), KOFF " << pct(target)
    << "'\nset xtics (" << tics << ")\nset ytics (" << tics << ")\nset yrange [] reverse\nset view map\n"
    << "plot '" << dat.string() << "' using 1:2:3 with image notitle, '' using 1:2:(sprintf('%.1f',$3)) with labels notitle\n";
  g.close();
  gnuplot(gp);
  md << fmt::format("![cross matrix](plots/cross_{:.0f}.png)\n\n", 100 * target);
}

// LAPE per layer of one run (the first seed).
void write_lape_layers(std::ostream& md, const json& e, double target) {
  if (!e.contains("lape")) return;
  const json& l = e["lape"];
  md << "## Language-specific neurons per layer (LAPE, KOFF_METHOD.md section 9), KOFF at " << pct(target)
     << ", first seed\n\n"
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

// Per target of the KOFF runs: the cross matrix (the seeds' geometric mean) and the LAPE per layer.
void write_cross_sections(std::ostream& md, const ReportInputs& in, bool plots, const fs::path& pdir) {
  for (double target : in.targets) {
    auto it = in.groups.find({"KOFF", target});
    if (it == in.groups.end() || !it->second.front()->eval.contains("cross")) continue;
    const size_t D = in.domains.size();
    std::vector<std::vector<double>> cross(D, std::vector<double>(D, 0.0));
    for (const Run* r : it->second)
      for (size_t a = 0; a < D; ++a)
        for (size_t b = 0; b < D; ++b) cross[a][b] += std::log(r->eval["cross"][a][b].get<double>()) / it->second.size();
    for (auto& row : cross)
      for (double& v : row) v = std::exp(v);
    const json& e = it->second.front()->eval;
    md << "## Cross-memory matrix, KOFF at " << pct(target) << "\n\nRow: the domain evaluated (its first "
       << e.value("cross_tokens", int64_t{0}) << " valid tokens); column: the memory attached. The diagonal is each "
       << "domain with its own memory.\n\n| valid \\ memory |";
    for (const auto& d : in.domains) md << " " << d << " |";
    md << "\n|---|";
    for (size_t i = 0; i < D; ++i) md << "---|";
    md << "\n";
    int diagonal_best = 0;
    for (size_t a = 0; a < D; ++a) {
      md << "| " << in.domains[a] << " |";
      double best = 1e300;
      size_t arg = 0;
      for (size_t b = 0; b < D; ++b) {
        const double v = cross[a][b];
        if (v < best) best = v, arg = b;
        md << (a == b ? fmt::format(" **{:.2f}** |", v) : fmt::format(" {:.2f} |", v));
      }
      diagonal_best += arg == a;
      md << "\n";
    }
    md << fmt::format("\nThe own memory is the best one for {} of {} domains.\n\n", diagonal_best, D);
    if (plots) plot_cross(md, in, pdir, target, cross);
    write_lape_layers(md, e, target);
  }
}

// Training curves of the first seed's runs (plots/curves.png): s_hat against t, loss, hard sparsity
// and the undecided share.
void plot_curves(std::ostream& md, const ReportInputs& in, const fs::path& pdir) {
  const fs::path gp = pdir / "curves.gp";
  std::ofstream g(gp);
  g << "set terminal pngcairo size 1400,420\nset output '" << (pdir / "curves.png").string() << "'\n"
    << "set multiplot layout 1,3\nset xlabel 'step'\nset key outside bottom center horizontal font ',8'\n"
    << "set title 'expected sparsity s_hat (dashed: the target t of the step)'\nplot ";
  std::string loss_plot = "set title 'training loss'\nplot ";
  std::string gate_plot = "set title 'hard sparsity (solid) and undecided share (dotted)'\nplot ";
  int n = 0;
  for (size_t i = 0; i < in.runs.size(); ++i) {
    const fs::path m = in.runs[i].dir / "metrics.jsonl";
    if (!fs::exists(m) || in.runs[i].eval.value("seed", int64_t{1}) != *in.seeds.begin()) continue;
    const fs::path dat = pdir / fmt::format("metrics_{}.dat", i);
    std::ifstream metrics(m);
    std::ofstream out(dat);
    std::string line;
    bool any = false;
    while (std::getline(metrics, line)) {
      json j = json::parse(line);
      if (j.value("phase", std::string()) != "mask" || !j.contains("expected_sparsity")) continue;
      out << j["step"].get<int64_t>() << " " << j["expected_sparsity"].get<double>() << " " << j["target"].get<double>()
          << " " << j["loss"].get<double>() << " " << j.value("hard_sparsity", 0.0) << " " << j.value("undecided", 0.0)
          << "\n";
      any = true;
    }
    if (!any) continue;
    const std::string name = fs::relative(in.runs[i].dir, in.dir).string();
    g << (n ? ", " : "") << "'" << dat.string() << "' using 1:2 with lines lc " << n + 1 << " title '" << name
      << "', '' using 1:3 with lines dt 2 lc " << n + 1 << " notitle";
    loss_plot += fmt::format("{}'{}' using 1:4 with lines lc {} title '{}'", n ? ", " : "", dat.string(), n + 1, name);
    gate_plot += fmt::format("{}'{}' using 1:5 with lines lc {} title '{}', '' using 1:6 with lines dt 3 lc {} notitle",
                             n ? ", " : "", dat.string(), n + 1, name, n + 1);
    ++n;
  }
  if (n == 0) g << "0 notitle";
  g << "\n" << loss_plot << (n ? "" : "0 notitle") << "\n" << gate_plot << (n ? "" : "0 notitle") << "\nunset multiplot\n";
  g.close();
  gnuplot(gp);
  md << "## Training curves (first seed)\n\n![curves](plots/curves.png)\n\n";
}

// Kept query heads and MLP neurons per layer of every run with a mask (plots/layers.png).
void plot_layers(std::ostream& md, const ReportInputs& in, const fs::path& pdir) {
  const fs::path lg = pdir / "layers.gp";
  std::ofstream h(lg);
  h << "set terminal pngcairo size 1000,420\nset output '" << (pdir / "layers.png").string() << "'\n"
    << "set multiplot layout 1,2\nset xlabel 'layer'\nset yrange [0:1.05]\nset key bottom left font ',8'\n";
  std::string heads = "set title 'kept query heads (fraction)'\nplot ", neurons = "set title 'kept MLP neurons (fraction)'\nplot ";
  int n = 0;
  for (size_t i = 0; i < in.runs.size(); ++i) {
    if (!fs::exists(in.runs[i].dir / "mask.json")) continue;
    json mj = read_json(in.runs[i].dir / "mask.json");
    const fs::path dat = pdir / fmt::format("layers_{}.dat", i);
    std::ofstream out(dat);
    for (size_t l = 0; l < mj["layers"].size(); ++l) {
      const json& x = mj["layers"][l];
      out << l << " " << x["kept_heads"].get<double>() / x["heads"].get<double>() << " "
          << x["kept_neurons"].get<double>() / x["neurons"].get<double>() << "\n";
    }
    const std::string name = fs::relative(in.runs[i].dir, in.dir).string();
    heads += fmt::format("{}'{}' using 1:2 with linespoints title '{}'", n ? ", " : "", dat.string(), name);
    neurons += fmt::format("{}'{}' using 1:3 with linespoints title '{}'", n ? ", " : "", dat.string(), name);
    ++n;
  }
  h << heads << "\n" << neurons << "\nunset multiplot\n";
  h.close();
  gnuplot(lg);
  md << "## Kept units per layer\n\n![layers](plots/layers.png)\n\n";
}

}  // namespace

std::string write_report(const std::string& dir_str) {
  KOFF_CHECK(fs::is_directory(fs::path(dir_str)), "{} is not a directory", dir_str);
  ReportInputs in;
  in.dir = fs::path(dir_str);
  in.dir_str = dir_str;
  read_inputs(in);

  std::ostringstream md;
  const std::string table = perplexity_table(in);
  write_header(md, in);
  write_perplexity_section(md, in, table);
  write_claims(md, in);
  write_control_section(md, in);
  write_runs_section(md, in);

  const bool plots = have_gnuplot();
  const fs::path pdir = in.dir / "plots";
  if (plots) fs::create_directories(pdir);
  write_cross_sections(md, in, plots, pdir);
  if (plots) {
    plot_curves(md, in, pdir);
    plot_layers(md, in, pdir);
  } else {
    md << "(gnuplot not found: no plots. `apt-get install gnuplot-nox` and run `koff report` again.)\n";
  }
  io::write_file_atomic(in.dir / "report.md", md.str());
  return table;
}

}  // namespace koff::offload
