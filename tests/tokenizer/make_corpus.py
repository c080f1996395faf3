#!/usr/bin/env python3
"""Builds the multilingual test corpus for the tokenizer parity tests (about 1.5 MB).

Nothing is downloaded: the text comes from files Debian packages install.
  - translated UI strings from gettext catalogs, /usr/share/locale/<lang>/LC_MESSAGES/*.mo
    (coreutils, libc-l10n, git, dpkg, iso-codes, gnupg-l10n, ...): English (the msgids), German,
    French, Spanish, Italian, Dutch, Chinese, Japanese, Russian, Arabic;
  - emoji sequences (ZWJ, skin tones, flags) from unicode-data's emoji-test.txt;
  - code: Python's standard library and the C++ standard headers;
  - synthetic stress text (seeded): long digit runs, runs of spaces/tabs/newlines and exotic
    whitespace, contractions in all cases, decomposed (NFD) text, and special tokens of all four
    model families inside text.
Output: JSON Lines, one document (a JSON string) per line, so documents can hold any character.

Usage: make_corpus.py OUT.jsonl [--min-bytes N]
"""
import argparse
import gettext
import glob
import json
import os
import random
import sys
import unicodedata

LANGUAGE_BUDGET = {  # bytes of UTF-8 per language
    "en": 160_000, "de": 120_000, "fr": 120_000, "es": 120_000, "it": 120_000, "nl": 120_000,
    "zh_CN": 100_000, "ja": 100_000, "ru": 100_000, "ar": 90_000,
}
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>",
                  "</think>", "<tool_call>", "<s>", "</s>", "<unk>", "<|reserved_special_token_5|>"]


def catalog_strings(lang):
    """(msgid, msgstr) pairs of every readable catalog of `lang`, in a fixed order."""
    pairs = []
    for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue  # a few catalogs are not UTF-8; skipping them keeps the corpus valid text
        for key in sorted(catalog, key=str):
            value = catalog[key]
            if isinstance(key, tuple):
                key = key[0]
            if key and isinstance(value, str) and value and value != key:
                pairs.append((key, value))
    return pairs


def documents_from(strings, budget, rng, doc_bytes=3000):
    """Seeded sample of `strings` grouped into documents of about doc_bytes."""
    rng.shuffle(strings)
    docs, current, size, total = [], [], 0, 0
    for s in strings:
        if total >= budget:
            break
        current.append(s)
        size += len(s.encode())
        total += len(s.encode())
        if size >= doc_bytes:
            docs.append(rng.choice(["\n", "\n\n", " ", "\n"]).join(current))
            current, size = [], 0
    if current:
        docs.append("\n".join(current))
    return docs


def emoji_docs(rng):
    path = "/usr/share/unicode/emoji/emoji-test.txt"
    if not os.path.exists(path):
        return []
    emoji = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if ";" in line and "#" in line and not line.startswith("#"):
                emoji.append(line.split("#", 1)[1].split()[0])
    words = ["hello", "wow", "ok", "Grüße", "你好", "да", "🙂text", "end."]
    docs = []
    for _ in range(60):
        parts = []
        for _ in range(150):
            r = rng.random()
            parts.append(rng.choice(emoji) if r < 0.6 else rng.choice(words))
            parts.append(rng.choice(["", " ", " ", "\n", "  "]))
        docs.append("".join(parts))
    return docs


def code_docs(budget):
    files = sorted(glob.glob("/usr/lib/python3*/[a-m]*.py"))[:40]
    files += sorted(glob.glob("/usr/include/c++/*/bits/stl_*.h"))[:20]
    docs, total = [], 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        text = text[:12000]
        docs.append(text)
        total += len(text.encode())
        if total >= budget:
            break
    return docs


def synthetic_docs(rng, sample_text):
    docs = []
    # Long digit runs, in every grouping the digit rules care about.
    for _ in range(40):
        parts = []
        for _ in range(60):
            n = rng.choice([1, 2, 3, 4, 5, 7, 10, 16, 33, 64])
            parts.append("".join(rng.choice("0123456789") for _ in range(n)))
            parts.append(rng.choice([" ", ",", ".", "-", "", "\n", " x", "٣٤", "１２", "a", "$"]))
        docs.append("".join(parts))
    # Runs of whitespace between words, including Unicode spaces and line separators.
    spaces = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", " \t\n ",
              "\u00a0", "\u3000", "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\u200b", "\u2009 "]
    words = ["word", "Wort", "mot", "слово", "词", "単語", "كلمة", "x", "'s", "!", "?!", "...", "42"]
    for _ in range(80):
        parts = []
        for _ in range(rng.randint(5, 120)):
            parts.append(rng.choice(words))
            parts.append("".join(rng.choice(spaces) for _ in range(rng.randint(1, 4))))
        if rng.random() < 0.3:
            parts.insert(0, rng.choice(spaces))
        docs.append("".join(parts))
    # Contractions in all cases, including U+017F (long s), which case-folds to 's'.
    contractions = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll",
                    "'LL", "'lL", "'d", "'D", "'ſ", "'x", "''", "'", " '", "’s"]
    for _ in range(30):
        parts = []
        for _ in range(100):
            parts.append(rng.choice(["it", "they", "I", "we", "don", "O", "", " ", "rock", "1"]))
            parts.append(rng.choice(contractions))
            parts.append(rng.choice([" ", "", "\n", "s", "a"]))
        docs.append("".join(parts))
    # Decomposed text: the NFC normalizer (Qwen) must recompose it exactly as HF does.
    for text in sample_text[:40]:
        docs.append(unicodedata.normalize("NFD", text))
    docs.append("\u1100\u1161\u11a8 \u1100\u1161 \uac00\u11a8 e\u0301\u0323 \u0041\u030a\u0301 \u212b \u00c5")
    # Special tokens of every family inside text (each tokenizer treats its own as special and
    # the others as plain text).
    for text in sample_text[40:120]:
        words_ = text.split(" ")
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(words_) + 1)
            tok = rng.choice(SPECIAL_TOKENS)
            words_.insert(pos, rng.choice([tok, " " + tok, tok + " ", tok + tok, "x" + tok + "y"]))
        docs.append(" ".join(words_))
    docs.append("<s>")
    docs.append("<|endoftext|>")
    docs.append(" <|im_start|>user\nhi<|im_end|>\n")
    # Adversarial strings over a small alphabet that hits every branch of the split patterns
    # (apostrophes before letters in all cases, the optional space/prefix char, digit runs,
    # whitespace runs before letters, punctuation followed by newlines).
    alphabet = [" ", " ", "\t", "\n", "\r", "a", "Z", "s", "S", "\u017f", "l", "L", "t", "e", "1", "9",
                "\u0663", "'", "'", ".", "!", "\u00a0", "\u3000", "\u00e9", "\u4e2d", "\U0001F600", "\u0301",
                "_", "\u2028", "\x85"]
    for _ in range(300):
        docs.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))))
    # Edge cases: empty-ish documents, lone whitespace, control characters.
    docs += ["", " ", "\n", "\t", "  ", "a", "\x00\x01\x7f", "\ufeffBOM", "\U0010fffd\U000e0001"]
    return docs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--min-bytes", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(20240607)

    docs = []
    english = []
    for lang, budget in LANGUAGE_BUDGET.items():
        if lang == "en":
            continue
        pairs = catalog_strings(lang)
        english += [k for k, _ in pairs]
        docs += documents_from([v for _, v in pairs], budget, rng)
    english = sorted(set(english))
    en_docs = documents_from(english, LANGUAGE_BUDGET["en"], rng)
    docs += en_docs
    docs += emoji_docs(rng)
    docs += code_docs(150_000)
    docs += synthetic_docs(rng, [d for d in docs if len(d) > 200])
    # Two long documents (over the 64 KiB threshold) exercise the threaded encoder.
    docs.append("\n\n".join(en_docs[:40] + docs[:20]))
    docs.append("".join(code_docs(150_000)[:12]))

    total = sum(len(d.encode()) for d in docs)
    if total < args.min_bytes:
        sys.exit(f"make_corpus: only {total} bytes of text found (need {args.min_bytes}); install the packages "
                 "listed in tests/tokenizer/README.md")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"make_corpus: {len(docs)} documents, {total} bytes -> {args.out}")


if __name__ == "__main__":
    main()
