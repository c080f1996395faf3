#include "engine/koff/run_identity.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "engine/nn/model_files.h"
#include "engine/tensor/error.h"
#include "engine/tensor/interrupt.h"

namespace koff::offload {

namespace fs = std::filesystem;
using nlohmann::json;

std::string file_content_hash(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "cannot open {}", path.string());
  // Four independent multiply-xorshift lanes over 8-byte words (a few GB/s), folded at the end with
  // the length: not cryptographic, but any change of a weight changes it.
  uint64_t lane[4] = {0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull, 0x27D4EB2F165667C5ull};
  auto mix = [](uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
  };
  std::vector<char> buf(size_t{1} << 22);
  uint64_t total = 0;
  while (in) {
    check_interrupt("hashing the model and data files");
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const size_t n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    std::memset(buf.data() + n, 0, (8 - n % 8) % 8);  // the last word's tail (the buffer is a multiple of 8)
    const size_t words = (n + 7) / 8;
    for (size_t i = 0; i < words; ++i) {
      uint64_t w;
      std::memcpy(&w, buf.data() + 8 * i, 8);
      lane[i & 3] = mix(lane[i & 3], w);
    }
    total += n;
  }
  uint64_t h = total;
  for (uint64_t l : lane) h = mix(h, l);
  return fmt::format("{:016x}", h);
}

json run_fingerprint(const std::string& model, const std::vector<data::DomainFiles>& domains, const json& settings) {
  json files = json::object();
  if (nn::is_gguf_model(model)) {
    files[fs::path(model).filename().string()] = file_content_hash(model);
  } else {
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(model)) {
      const std::string n = e.path().filename().string();
      if (e.is_regular_file() && (n == "config.json" || n == "tokenizer.json" || e.path().extension() == ".safetensors"))
        paths.push_back(e.path());
    }
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) files[p.filename().string()] = file_content_hash(p);
  }
  json data = json::object();
  for (const auto& d : domains)
    data[d.name] = {{"train", file_content_hash(d.train)}, {"valid", file_content_hash(d.valid)}};
  return {{"model", {{"path", fs::absolute(model).lexically_normal().string()}, {"files", files}}},
          {"data", data},
          {"settings", settings}};
}

namespace {

std::string names_of(const json& object) {
  std::string s;
  for (const auto& [k, v] : object.items()) s += (s.empty() ? "" : ", ") + k;
  return "[" + s + "]";
}

// The first setting (a path like memory.rank) whose value differs, as "--flag: V here, W in the run".
std::string settings_difference(const json& now, const json& then, const std::string& prefix = "") {
  for (const auto& [k, v] : now.items()) {
    const std::string path = prefix + k;
    if (!then.contains(k)) return fmt::format("setting {} = {} is new (the run has none)", path, v.dump());
    if (v.is_object() && then.at(k).is_object()) {
      std::string d = settings_difference(v, then.at(k), path + ".");
      if (!d.empty()) return d;
    } else if (v != then.at(k)) {
      return fmt::format("setting {} is {} here but {} in the run", path, v.dump(), then.at(k).dump());
    }
  }
  for (const auto& [k, v] : then.items())
    if (!now.contains(k)) return fmt::format("the run has setting {} = {}, which is absent here", prefix + k, v.dump());
  return "";
}

}  // namespace

void check_resume_identity(const fs::path& out, const json& fingerprint) {
  const fs::path path = out / "run.json";
  if (!fs::exists(path)) return;
  json run;
  try {
    std::ifstream in(path);
    run = json::parse(in);
  } catch (const std::exception&) {
    fail("{}: not valid JSON, so this run cannot be resumed; use --force-new to start over or another --out",
         path.string());
  }
  auto refuse = [&](const std::string& what) {
    fail("{} holds another run: {}; use --force-new to start over, or another --out", out.string(), what);
  };
  const json fp = run.value("fingerprint", json());
  if (!fp.is_object()) {  // an older koff: compare what it recorded
    json domains = json::array();
    for (const auto& [name, v] : fingerprint.at("data").items()) domains.push_back(name);
    if (run.contains("domains") && run.at("domains") != domains)
      refuse(fmt::format("the domains are {} here but {} in the run", domains.dump(), run.at("domains").dump()));
    if (run.contains("settings")) {
      const std::string d = settings_difference(fingerprint.at("settings"), run.at("settings"));
      if (!d.empty()) refuse(d);
    }
    return;
  }
  const json& model_now = fingerprint.at("model").at("files");
  const json model_then = fp.value("model", json::object()).value("files", json::object());
  for (const auto& [name, hash] : model_now.items()) {
    if (!model_then.contains(name) || model_then.at(name) != hash)
      refuse(fmt::format("the base model differs ({} is not the file of {} the run was made with)",
                         (fs::path(fingerprint.at("model").at("path").get<std::string>()) / name).string(),
                         fp.value("model", json::object()).value("path", std::string("?"))));
  }
  if (model_then.size() != model_now.size())
    refuse(fmt::format("the base model differs (files {} here, {} in the run)", names_of(model_now),
                       names_of(model_then)));
  const json& data_now = fingerprint.at("data");
  const json data_then = fp.value("data", json::object());
  if (names_of(data_now) != names_of(data_then))
    refuse(fmt::format("the domains are {} here but {} in the run", names_of(data_now), names_of(data_then)));
  for (const auto& [name, files] : data_now.items())
    for (const char* split : {"train", "valid"})
      if (files.at(split) != data_then.at(name).value(split, json()))
        refuse(fmt::format("domain '{}': its {}.txt has other contents than in the run", name, split));
  const std::string d = settings_difference(fingerprint.at("settings"), fp.value("settings", json::object()));
  if (!d.empty()) refuse(d);
}

void clear_run_directory(const fs::path& out) {
  for (const char* name : {"run.json", "metrics.jsonl", "ckpt", "backbone", "memories", "eval.json", "mask.json",
                           "profile.txt", "report.md"})
    fs::remove_all(out / name);
}

}  // namespace koff::offload
