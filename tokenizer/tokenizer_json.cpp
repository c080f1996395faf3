// Reading tokenizer.json into Tokenizer::Impl. Every refusal names the file and the JSON field
// (e.g. "llama3/tokenizer.json: field 'pre_tokenizer.pretokenizers[0].pattern.Regex': ...").
#include <fmt/core.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/tokenizer_impl.h"

namespace koff {

namespace {

using json = nlohmann::json;

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw TokenizerError(fmt::format("{}: field '{}': {}", source_, field, what));
  }

  const json& object(const json& parent, const std::string& key, const std::string& path) const {
    auto it = parent.find(key);
    if (it == parent.end()) fail(join(path, key), "missing");
    if (!it->is_object()) fail(join(path, key), "expected an object");
    return *it;
  }
  const json& array(const json& parent, const std::string& key, const std::string& path) const {
    auto it = parent.find(key);
    if (it == parent.end()) fail(join(path, key), "missing");
    if (!it->is_array()) fail(join(path, key), "expected an array");
    return *it;
  }
  std::string string(const json& parent, const std::string& key, const std::string& path) const {
    auto it = parent.find(key);
    if (it == parent.end()) fail(join(path, key), "missing");
    if (!it->is_string()) fail(join(path, key), "expected a string");
    return it->get<std::string>();
  }
  std::optional<std::string> optional_string(const json& parent, const std::string& key,
                                             const std::string& path) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) fail(join(path, key), "expected a string or null");
    return it->get<std::string>();
  }
  bool boolean(const json& parent, const std::string& key, const std::string& path, bool fallback) const {
    auto it = parent.find(key);
    if (it == parent.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(join(path, key), "expected true or false");
    return it->get<bool>();
  }
  uint32_t id(const json& value, const std::string& path) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > 0x7FFFFFFF)
      fail(path, "expected a token id (a non-negative integer below 2^31)");
    return static_cast<uint32_t>(value.get<int64_t>());
  }
  std::string type(const json& node, const std::string& path) const {
    if (!node.is_object()) fail(path, "expected an object");
    return string(node, "type", path);
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string index(const std::string& path, size_t i) { return fmt::format("{}[{}]", path, i); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

PrependScheme read_prepend_scheme(const Reader& r, const json& node, const std::string& path) {
  if (auto scheme = r.optional_string(node, "prepend_scheme", path)) {
    if (*scheme == "always") return PrependScheme::Always;
    if (*scheme == "first") return PrependScheme::First;
    if (*scheme == "never") return PrependScheme::Never;
    r.fail(Reader::join(path, "prepend_scheme"), fmt::format("unknown value \"{}\" (always, first, never)", *scheme));
  }
  // Files older than prepend_scheme used add_prefix_space.
  return r.boolean(node, "add_prefix_space", path, true) ? PrependScheme::Always : PrependScheme::Never;
}

void read_normalizer(const Reader& r, const json& node, const std::string& path, std::vector<NormalizerStep>& out) {
  if (node.is_null()) return;
  std::string type = r.type(node, path);
  using Kind = NormalizerStep::Kind;
  using Form = unicode::NormalizationForm;
  if (type == "Sequence") {
    const json& list = r.array(node, "normalizers", path);
    for (size_t i = 0; i < list.size(); ++i)
      read_normalizer(r, list[i], Reader::index(Reader::join(path, "normalizers"), i), out);
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    Form form = type == "NFC" ? Form::NFC : type == "NFD" ? Form::NFD : type == "NFKC" ? Form::NFKC : Form::NFKD;
    out.push_back({Kind::Unicode, form, {}, {}});
  } else if (type == "Prepend") {
    out.push_back({Kind::Prepend, Form::NFC, r.string(node, "prepend", path), {}});
  } else if (type == "Replace") {
    const json& pattern = r.object(node, "pattern", path);
    if (!pattern.contains("String"))
      r.fail(Reader::join(path, "pattern"), "only {\"String\": ...} patterns are supported in a Replace normalizer");
    std::string from = r.string(pattern, "String", Reader::join(path, "pattern"));
    if (from.empty()) r.fail(Reader::join(path, "pattern.String"), "must not be empty");
    out.push_back({Kind::Replace, Form::NFC, from, r.string(node, "content", path)});
  } else {
    r.fail(Reader::join(path, "type"),
           fmt::format("unsupported normalizer \"{}\" (supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence)",
                       type));
  }
}

void read_pre_tokenizer(const Reader& r, const json& node, const std::string& path,
                        std::vector<PreTokenizerStep>& out) {
  if (node.is_null()) return;
  std::string type = r.type(node, path);
  using Kind = PreTokenizerStep::Kind;
  if (type == "Sequence") {
    const json& list = r.array(node, "pretokenizers", path);
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(r, list[i], Reader::index(Reader::join(path, "pretokenizers"), i), out);
  } else if (type == "Split") {
    const json& pattern = r.object(node, "pattern", path);
    if (!pattern.contains("Regex"))
      r.fail(Reader::join(path, "pattern"), "only {\"Regex\": ...} patterns are supported in a Split pre-tokenizer");
    std::string regex = r.string(pattern, "Regex", Reader::join(path, "pattern"));
    auto known = recognize_split_pattern(regex);
    if (!known)
      r.fail(Reader::join(path, "pattern.Regex"),
             "unsupported regex (koff matches the GPT-2, Llama 3 and Qwen 2/3 patterns by hand, byte for byte)");
    std::string behavior = r.string(node, "behavior", path);
    if (behavior != "Isolated")
      r.fail(Reader::join(path, "behavior"), fmt::format("unsupported value \"{}\" (supported: Isolated)", behavior));
    if (r.boolean(node, "invert", path, false)) r.fail(Reader::join(path, "invert"), "unsupported value true");
    PreTokenizerStep step;
    step.kind = Kind::Split;
    step.pattern = *known;
    out.push_back(step);
  } else if (type == "ByteLevel") {
    PreTokenizerStep step;
    step.kind = Kind::ByteLevel;
    step.add_prefix_space = r.boolean(node, "add_prefix_space", path, true);
    step.use_regex = r.boolean(node, "use_regex", path, true);
    out.push_back(step);
  } else if (type == "Metaspace") {
    PreTokenizerStep step;
    step.kind = Kind::Metaspace;
    step.replacement = r.string(node, "replacement", path);
    size_t n = 0;
    if (!step.replacement.empty()) n = unicode::utf8_length(static_cast<unsigned char>(step.replacement[0]));
    if (step.replacement.empty() || n != step.replacement.size())
      r.fail(Reader::join(path, "replacement"), "expected exactly one character");
    step.prepend_scheme = read_prepend_scheme(r, node, path);
    step.split = r.boolean(node, "split", path, true);
    out.push_back(step);
  } else {
    r.fail(Reader::join(path, "type"),
           fmt::format("unsupported pre-tokenizer \"{}\" (supported: Split, ByteLevel, Metaspace, Sequence)", type));
  }
}

void read_post_processor(const Reader& r, const json& node, const std::string& path, const Vocab& vocab,
                         Tokenizer::Impl& impl, bool& have_template) {
  if (node.is_null()) return;
  std::string type = r.type(node, path);
  if (type == "Sequence") {
    const json& list = r.array(node, "processors", path);
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(r, list[i], Reader::index(Reader::join(path, "processors"), i), vocab, impl, have_template);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets; the ids are unchanged.
  } else if (type == "TemplateProcessing") {
    if (have_template) r.fail(path, "more than one TemplateProcessing");
    have_template = true;
    const json& single = r.array(node, "single", path);
    const json* specials = nullptr;
    if (auto it = node.find("special_tokens"); it != node.end() && it->is_object()) specials = &*it;
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      std::string item_path = Reader::index(Reader::join(path, "single"), i);
      const json& item = single[i];
      if (!item.is_object()) r.fail(item_path, "expected an object");
      if (item.contains("Sequence")) {
        if (seen_sequence) r.fail(item_path, "more than one Sequence in a single-sequence template");
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken")) r.fail(item_path, "expected SpecialToken or Sequence");
      std::string name =
          r.string(r.object(item, "SpecialToken", item_path), "id", Reader::join(item_path, "SpecialToken"));
      std::vector<uint32_t> ids;
      if (specials && specials->contains(name)) {
        std::string sp_path = Reader::join(Reader::join(path, "special_tokens"), name);
        const json& list = r.array((*specials)[name], "ids", sp_path);
        for (size_t k = 0; k < list.size(); ++k)
          ids.push_back(r.id(list[k], Reader::index(Reader::join(sp_path, "ids"), k)));
      } else {
        r.fail(Reader::join(path, "special_tokens"), fmt::format("no entry for \"{}\" used in the template", name));
      }
      auto& target = seen_sequence ? impl.suffix_ids : impl.prefix_ids;
      target.insert(target.end(), ids.begin(), ids.end());
    }
    if (!seen_sequence) r.fail(Reader::join(path, "single"), "no Sequence item");
  } else {
    r.fail(Reader::join(path, "type"),
           fmt::format("unsupported post-processor \"{}\" (supported: ByteLevel, TemplateProcessing, Sequence)", type));
  }
  (void)vocab;
}

DecoderStep decoder_step(DecoderStep::Kind kind) {
  DecoderStep step;
  step.kind = kind;
  return step;
}

void read_decoder(const Reader& r, const json& node, const std::string& path, std::vector<DecoderStep>& out) {
  if (node.is_null()) return;
  std::string type = r.type(node, path);
  using Kind = DecoderStep::Kind;
  if (type == "Sequence") {
    const json& list = r.array(node, "decoders", path);
    for (size_t i = 0; i < list.size(); ++i)
      read_decoder(r, list[i], Reader::index(Reader::join(path, "decoders"), i), out);
  } else if (type == "ByteLevel") {
    out.push_back(decoder_step(Kind::ByteLevel));
  } else if (type == "ByteFallback") {
    out.push_back(decoder_step(Kind::ByteFallback));
  } else if (type == "Fuse") {
    out.push_back(decoder_step(Kind::Fuse));
  } else if (type == "Replace") {
    const json& pattern = r.object(node, "pattern", path);
    if (!pattern.contains("String"))
      r.fail(Reader::join(path, "pattern"), "only {\"String\": ...} patterns are supported in a Replace decoder");
    DecoderStep step;
    step.kind = Kind::Replace;
    step.pattern = r.string(pattern, "String", Reader::join(path, "pattern"));
    if (step.pattern.empty()) r.fail(Reader::join(path, "pattern.String"), "must not be empty");
    step.content = r.string(node, "content", path);
    out.push_back(step);
  } else if (type == "Strip") {
    DecoderStep step;
    step.kind = Kind::Strip;
    step.content = r.string(node, "content", path);
    if (step.content.empty() ||
        unicode::utf8_length(static_cast<unsigned char>(step.content[0])) != step.content.size())
      r.fail(Reader::join(path, "content"), "expected exactly one character");
    auto count = [&](const char* key) -> size_t {
      auto it = node.find(key);
      if (it == node.end() || !it->is_number_unsigned()) r.fail(Reader::join(path, key), "expected a count");
      return it->get<size_t>();
    };
    step.start = count("start");
    step.stop = count("stop");
    out.push_back(step);
  } else if (type == "Metaspace") {
    DecoderStep step;
    step.kind = Kind::Metaspace;
    step.content = r.string(node, "replacement", path);
    step.prepend_scheme = read_prepend_scheme(r, node, path);
    out.push_back(step);
  } else {
    r.fail(Reader::join(path, "type"),
           fmt::format("unsupported decoder \"{}\" (supported: ByteLevel, ByteFallback, Fuse, Replace, Strip, "
                       "Metaspace, Sequence)",
                       type));
  }
}

BpeConfig read_model(const Reader& r, const json& root, bool byte_level_input) {
  const json& model = r.object(root, "model", "");
  // Files written before models were tagged have no "type"; they are BPE when they have merges.
  std::string type = model.contains("type") ? r.string(model, "type", "model") : "BPE";
  if (type != "BPE") r.fail("model.type", fmt::format("unsupported model \"{}\" (koff reads BPE models)", type));
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      r.fail("model.dropout", "BPE dropout is not supported (must be null)");
  }
  BpeConfig config;
  const json& vocab = r.object(model, "vocab", "model");
  config.vocab.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it)
    config.vocab[it.key()] = r.id(it.value(), "model.vocab." + it.key());

  const json& merges = r.array(model, "merges", "model");
  config.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    if (m.is_string()) {
      // The legacy form "left right": exactly one space (HF rejects anything else too).
      const std::string& s = m.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        r.fail(Reader::index("model.merges", i), fmt::format("\"{}\" is not two tokens separated by one space", s));
      config.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      config.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.fail(Reader::index("model.merges", i), "expected \"left right\" or [\"left\", \"right\"]");
    }
  }
  config.unk_token = r.optional_string(model, "unk_token", "model");
  config.continuing_subword_prefix = r.optional_string(model, "continuing_subword_prefix", "model").value_or("");
  config.end_of_word_suffix = r.optional_string(model, "end_of_word_suffix", "model").value_or("");
  config.fuse_unk = r.boolean(model, "fuse_unk", "model", false);
  config.byte_fallback = r.boolean(model, "byte_fallback", "model", false);
  config.ignore_merges = r.boolean(model, "ignore_merges", "model", false);
  config.byte_level_input = byte_level_input;
  return config;
}

}  // namespace

void AddedTokenMatcher::add(std::string_view pattern, int32_t token_index) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char b : pattern) {
    int32_t child = -1;
    for (const auto& [byte, next] : nodes_[node].children)
      if (byte == b) child = next;
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(b, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  // The first token with a given content wins, as in HF's added vocabulary.
  if (nodes_[node].token_index < 0) nodes_[node].token_index = token_index;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::optional<AddedTokenMatcher::Match> AddedTokenMatcher::find(std::string_view text, size_t from) const {
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_byte_[static_cast<unsigned char>(text[start])]) continue;
    int32_t node = 0;
    std::optional<Match> best;
    for (size_t i = start; i < text.size(); ++i) {
      int32_t child = -1;
      for (const auto& [byte, next] : nodes_[node].children)
        if (byte == static_cast<unsigned char>(text[i])) child = next;
      if (child < 0) break;
      node = child;
      if (nodes_[node].token_index >= 0) best = Match{start, i + 1, nodes_[node].token_index};
    }
    if (best) return best;
  }
  return std::nullopt;
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& source) {
  Reader r(source);
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    throw TokenizerError(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  if (!root.is_object())
    throw TokenizerError(fmt::format("{}: not a tokenizer.json (the top level is not an object)", source));

  auto impl = std::make_unique<Impl>();
  impl->source = source;
  try {
    if (root.contains("normalizer")) read_normalizer(r, root["normalizer"], "normalizer", impl->normalizers);
    if (root.contains("pre_tokenizer"))
      read_pre_tokenizer(r, root["pre_tokenizer"], "pre_tokenizer", impl->pre_tokenizers);
    bool byte_level = false;
    for (size_t i = 0; i < impl->pre_tokenizers.size(); ++i) {
      if (impl->pre_tokenizers[i].kind != PreTokenizerStep::Kind::ByteLevel) continue;
      // The model sees raw bytes after ByteLevel; a later step would have to split the mapped text.
      if (i + 1 != impl->pre_tokenizers.size())
        r.fail("pre_tokenizer", "ByteLevel must be the last pre-tokenizer of a Sequence");
      byte_level = true;
    }
    impl->model = std::make_unique<BpeModel>(read_model(r, root, byte_level), source);
    impl->max_id = impl->model->max_id();

    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
      const json& list = r.array(root, "added_tokens", "");
      for (size_t i = 0; i < list.size(); ++i) {
        std::string path = Reader::index("added_tokens", i);
        const json& t = list[i];
        if (!t.is_object()) r.fail(path, "expected an object");
        AddedToken tok;
        if (!t.contains("id")) r.fail(Reader::join(path, "id"), "missing");
        tok.id = r.id(t["id"], Reader::join(path, "id"));
        tok.content = r.string(t, "content", path);
        if (tok.content.empty()) r.fail(Reader::join(path, "content"), "must not be empty");
        tok.special = r.boolean(t, "special", path, false);
        tok.lstrip = r.boolean(t, "lstrip", path, false);
        tok.rstrip = r.boolean(t, "rstrip", path, false);
        tok.normalized = r.boolean(t, "normalized", path, !tok.special);
        tok.single_word = r.boolean(t, "single_word", path, false);
        impl->max_id = std::max(impl->max_id, tok.id);
        impl->added.push_back(std::move(tok));
      }
    }
    impl->added_by_id.assign(size_t{impl->max_id} + 1, -1);
    for (size_t i = 0; i < impl->added.size(); ++i) {
      const AddedToken& tok = impl->added[i];
      impl->added_by_id[tok.id] = static_cast<int32_t>(i);
      impl->added_by_content.emplace(tok.content, tok.id);
      if (tok.special) impl->special_contents.insert(tok.content);
      if (tok.normalized)
        impl->normalized_matcher.add(impl->normalize(tok.content), static_cast<int32_t>(i));
      else
        impl->raw_matcher.add(tok.content, static_cast<int32_t>(i));
    }

    bool have_template = false;
    if (root.contains("post_processor"))
      read_post_processor(r, root["post_processor"], "post_processor", impl->model->vocab(), *impl, have_template);
    for (uint32_t id : impl->prefix_ids) impl->max_id = std::max(impl->max_id, id);
    for (uint32_t id : impl->suffix_ids) impl->max_id = std::max(impl->max_id, id);
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      impl->has_decoder = true;
      read_decoder(r, root["decoder"], "decoder", impl->decoders);
    }

    // Long segments may be cut at safe points and encoded in parallel when the first
    // pre-tokenizer splits by one of our patterns and no later step depends on the position.
    const auto& steps = impl->pre_tokenizers;
    if (!steps.empty()) {
      const auto& first = steps.front();
      impl->chunkable = first.kind == PreTokenizerStep::Kind::Split ||
                        (first.kind == PreTokenizerStep::Kind::ByteLevel && first.use_regex && !first.add_prefix_space);
      for (const auto& s : steps)
        if (s.kind == PreTokenizerStep::Kind::Metaspace && s.prepend_scheme == PrependScheme::First)
          impl->chunkable = false;
    }
  } catch (const json::exception& e) {
    // nlohmann throws on type mismatches we did not anticipate; keep the one-line contract.
    throw TokenizerError(fmt::format("{}: unexpected JSON structure: {}", source, e.what()));
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError(fmt::format("{}: cannot open the tokenizer file", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw TokenizerError(fmt::format("{}: read error", path));
  return from_json(buffer.str(), path);
}

}  // namespace koff
