#!/usr/bin/python3
"""Check the committed corpus (data/corpus, made by tools/build_corpus.py).

Verifies the layout (<lang>/train.txt and <lang>/valid.txt for en de fr es it nl, LICENSE with the
MPL-2.0 notice, README.md), that every file is non-empty valid UTF-8 made of paragraphs separated by
one blank line, that all languages have the same number of train and of valid paragraphs (the
corpus is paragraph-aligned), that no paragraph repeats within a file, and that no valid paragraph
also appears in train. Prints one line per problem and exits 1 if there is any; 0 otherwise.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LANGS = ["en", "de", "fr", "es", "it", "nl"]
SPLITS = ["train", "valid"]


def read_paragraphs(path: Path, problems: list[str]) -> list[str] | None:
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    data = path.read_bytes()
    if not data.strip():
        problems.append(f"{path}: empty")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not valid UTF-8 at byte {e.start}")
        return None
    if text.startswith("\ufeff"):
        problems.append(f"{path}: starts with a byte-order mark")
    if "\r" in text:
        problems.append(f"{path}: contains carriage returns (expected \\n line ends)")
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append(f"{path}: does not end with exactly one newline")
    paragraphs = text[:-1].split("\n\n") if text.endswith("\n") else text.split("\n\n")
    for i, p in enumerate(paragraphs, 1):
        if not p.strip() or p != p.strip() or "\n" in p:
            problems.append(f"{path}: paragraph {i} is empty, has surrounding whitespace or spans "
                            f"lines (paragraphs must be single lines separated by one blank line)")
            break
    seen: set[str] = set()
    for i, p in enumerate(paragraphs, 1):
        if p in seen:
            problems.append(f"{path}: paragraph {i} repeats an earlier one: {p[:60]!r}")
            break
        seen.add(p)
    return paragraphs


def main() -> int:
    ap = argparse.ArgumentParser(description="Check the layout and consistency of the "
                                             "six-language corpus made by tools/build_corpus.py.")
    ap.add_argument("corpus", type=Path, nargs="?", default=REPO / "data" / "corpus",
                    help="corpus directory (default: data/corpus of this repository)")
    args = ap.parse_args()
    root: Path = args.corpus
    problems: list[str] = []
    if not root.is_dir():
        print(f"check_corpus: {root}: not a directory", file=sys.stderr)
        return 1

    lic = root / "LICENSE"
    if not lic.is_file() or lic.stat().st_size == 0:
        problems.append(f"{lic}: missing or empty")
    else:
        t = lic.read_text(encoding="utf-8", errors="replace")
        for must in ("Mozilla Public License", "https://mozilla.org/MPL/2.0/", "LibreOffice"):
            if must not in t:
                problems.append(f"{lic}: does not mention {must!r}")
    readme = root / "README.md"
    if not readme.is_file() or readme.stat().st_size == 0:
        problems.append(f"{readme}: missing or empty")
    extra = sorted(p.name for p in root.iterdir()
                   if p.name not in set(LANGS) | {"LICENSE", "README.md"})
    if extra:
        problems.append(f"{root}: unexpected entries: {', '.join(extra)}")

    paras: dict[tuple[str, str], list[str]] = {}
    for lang in LANGS:
        for split in SPLITS:
            p = read_paragraphs(root / lang / f"{split}.txt", problems)
            if p is not None:
                paras[lang, split] = p

    for split in SPLITS:
        counts = {lang: len(paras[lang, split]) for lang in LANGS if (lang, split) in paras}
        if len(set(counts.values())) > 1:
            problems.append(f"{root}: the languages differ in the number of {split} paragraphs "
                            f"(not aligned): " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    for lang in LANGS:
        if (lang, "train") in paras and (lang, "valid") in paras:
            train = set(paras[lang, "train"])
            leaked = [p for p in paras[lang, "valid"] if p in train]
            if leaked:
                problems.append(f"{root / lang / 'valid.txt'}: {len(leaked)} paragraph(s) also in "
                                f"train.txt, e.g. {leaked[0][:60]!r}")

    if problems:
        for line in problems:
            print(f"check_corpus: {line}", file=sys.stderr)
        return 1
    n_train = len(paras["en", "train"])
    n_valid = len(paras["en", "valid"])
    size = sum((root / lang / f"{s}.txt").stat().st_size for lang in LANGS for s in SPLITS)
    print(f"check_corpus: ok: {root}: {len(LANGS)} languages, {n_train:,} train and {n_valid:,} "
          f"valid paragraphs each, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
