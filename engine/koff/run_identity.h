// What a run directory is a run OF (README, "Errors, interrupts and resuming"): the base model's
// files, the data (domain names and the contents of their files) and every setting that shapes the
// trained state. It is recorded in run.json as "fingerprint"; a later `koff offload` into the same
// --out resumes only when its own fingerprint is the same, and otherwise refuses with one line naming
// what differs, before anything is written. --force-new clears the run's files instead, to start over.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/data/corpus.h"

namespace koff::offload {

// A 64-bit content hash of a file (hex), read in chunks; Ctrl-C is honoured between them.
std::string file_content_hash(const std::filesystem::path& path);

// {"model": {"path", "files": {name: hash}}, "data": {domain: {"train": hash, "valid": hash}},
//  "settings": settings}. The model's files: a GGUF file, or config.json, tokenizer.json and every
// *.safetensors of a model directory.
nlohmann::json run_fingerprint(const std::string& model, const std::vector<data::DomainFiles>& domains,
                               const nlohmann::json& settings);

// Throws koff::Error naming the first difference when <out>/run.json exists and records another run
// (a run.json of an older koff without a fingerprint is compared on its domains and settings).
void check_resume_identity(const std::filesystem::path& out, const nlohmann::json& fingerprint);

// --force-new: removes what a run writes into its directory (run.json, metrics, checkpoints, exports,
// evaluation, report), and nothing else the directory may hold.
void clear_run_directory(const std::filesystem::path& out);

}  // namespace koff::offload
