#!/usr/bin/python3
"""Build koff's six-language, paragraph-aligned corpus from the LibreOffice help.

Downloads the Debian packages libreoffice-help-{en-us,de,fr,es,it,nl} with `apt-get download`,
unpacks them with `dpkg -x`, reads the help pages under usr/share/libreoffice/help/<ll>/text/ and
keeps the <p> paragraphs of real prose. Every <p> of a help page carries an id that is the same in
every language, so a paragraph is keyed by (page path, paragraph id, occurrence) and the languages
line up paragraph by paragraph. Paragraphs left untranslated (English) in a non-English language
are dropped, and only keys that survive in all six languages are kept.

Output (the data layout of docs ARCHITECTURE.md, "Data directory"):

    data/corpus/<lang>/train.txt   data/corpus/<lang>/valid.txt   (lang: en de fr es it nl)
    data/corpus/LICENSE            data/corpus/README.md

UTF-8, one paragraph per line, paragraphs separated by one blank line. The split is by key (a hash
of it), so the valid paragraphs of all six languages are translations of one another. Running the
script twice on the same package versions gives byte-identical files.

Python 3 standard library only; needs apt-get and dpkg (Debian). Exit status 2 on a bad input or a
failed download, with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import html.parser
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# corpus language -> (Debian package, directory under usr/share/libreoffice/help/)
LANGS = {
    "en": ("libreoffice-help-en-us", "en-US"),
    "de": ("libreoffice-help-de", "de"),
    "fr": ("libreoffice-help-fr", "fr"),
    "es": ("libreoffice-help-es", "es"),
    "it": ("libreoffice-help-it", "it"),
    "nl": ("libreoffice-help-nl", "nl"),
}
HELP_ROOT = Path("usr/share/libreoffice/help")
MPL_TEXT = Path("/usr/share/common-licenses/MPL-2.0")

# Elements whose content is never prose: page chrome, scripts, code listings.
SKIP_TAGS = {"script", "style", "pre", "code", "head", "header", "footer", "nav", "aside",
             "noscript", "button", "label"}
# <p class="..."> values that mark code, formulas, command lines or images, not prose.
SKIP_P_CLASSES = {"code", "codeintable", "smathcode", "example", "image", "imageintable",
                  "youtube_consent"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
             "source", "track", "wbr"}

# English function words, and for each other language its own frequent function words. A word that
# is common in the target language too ("in", "was", "an", "of"...) is not taken as a sign of English.
# ("if", "then", "end" are left out: they are Basic keywords that stay in English in every language.)
EN_STOP = set("""the and of to that for with you this are be on by from or can which not your
will when have has was were at these there their into only also other than is it an as in
its been would should must may each any such how what where who all more some they them""".split())
LANG_STOP = {
    "de": set("""der die das und ist zu den von mit ein eine einer eines dem des sich auf für nicht
              im wird werden sie es oder auch wenn an als bei aus nur kann können diese dieser
              so in was will also man ihre""".split()),
    "fr": set("""le la les de des du et est un une pour dans que qui sur par pas avec ou au aux ce
              cette vous sont être peut en il elle on ne se son sa ses plus si or""".split()),
    "es": set("""el la los las de del y es un una para en que con por se no o al lo su sus como
              este esta más si puede son ser desde""".split()),
    "it": set("""il lo la i gli le di del della dei delle e è un una per in che con da non o al
              alla si come questo questa più se può sono essere nel nella""".split()),
    "nl": set("""de het een en van in is te dat die op voor met zijn niet of als aan door om kan
              worden wordt deze dit ook bij uit naar u was an as""".split()),  # as: axis
}
WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
SENTENCE_RE = re.compile(r"(?<=[.!?:;])\s+")
# Code that is not marked as code: a Python prompt, a shell prompt, a method signature
# (`svc.Copy(array: any): any`), an assignment from a call, HTML/field markup shown as an example.
CODE_RES = [re.compile(r) for r in (
    r"^>>>", r"\w@\w+:~?\$", r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\(.*\)(\s*:\s*[\w\[\]0-9.*, ]+)?$",
    r"^[A-Za-z_][\w.]*\s*=\s*[A-Za-z_][\w.]*\(", r"^<[A-Za-z]+\s+[A-Za-z-]+=\"", r"^<[A-Za-z]+.*</[A-Za-z]+>$")]
CODE_CHARS = set("()[]{}=<>;_\"'")


def log(msg: str) -> None:
    print(msg, flush=True)


def die(msg: str) -> None:
    print(f"build_corpus: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Download and unpack
# ---------------------------------------------------------------------------------------------

def download(debs_dir: Path, packages: list[str], offline: bool) -> dict[str, Path]:
    debs_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for pkg in packages:
        old = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if offline:
            if len(old) != 1:
                die(f"--offline: expected exactly one {pkg}_*.deb in {debs_dir}, found {len(old)}")
            found[pkg] = old[0]
            log(f"  {pkg}: reusing {old[0].name}")
            continue
        for f in old:
            f.unlink()
        if shutil.which("apt-get") is None:
            die("apt-get not found: this script needs a Debian system (apt-get and dpkg)")
        t0 = time.monotonic()
        proc = subprocess.run(["apt-get", "download", pkg], cwd=debs_dir, capture_output=True,
                              text=True)
        new = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if proc.returncode != 0 or len(new) != 1:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            detail = detail[-1] if detail else f"exit status {proc.returncode}"
            die(f"`apt-get download {pkg}` failed in {debs_dir}: {detail} "
                "(is the package archive reachable, and has `apt-get update` been run?)")
        found[pkg] = new[0]
        log(f"  {pkg}: {new[0].name} ({new[0].stat().st_size / 1e6:.1f} MB, "
            f"{time.monotonic() - t0:.1f} s)")
    return found


def deb_field(deb: Path, field: str) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"{deb}: cannot read the package field {field}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def unpack(deb: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    proc = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"`dpkg -x {deb}` failed: {proc.stderr.strip()}")


# ---------------------------------------------------------------------------------------------
# Help pages -> paragraphs
# ---------------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    for invisible in ("\u00ad", "\u200b", "\u200e", "\u200f", "\ufeff"):  # soft hyphen, ZWSP, marks
        text = text.replace(invisible, "")
    return " ".join(text.split())


class PageParser(html.parser.HTMLParser):
    """Collects the <p id=...> paragraphs of one help page, in document order.

    Inside a paragraph, the variants of an inline switch (`<span hidden id="MAC...">` etc.) are
    skipped except the default one (`id="default..."`), so that a paragraph reads as one text.
    Paragraphs inside page chrome or code listings, and those of a code/formula class, are skipped.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, causes skipping)
        self.skipping = 0                        # open elements that cause skipping
        self.cur: dict | None = None             # the open paragraph
        self.cur_depth = 0                       # len(stack) right after its <p> was pushed
        self.paragraphs: list[tuple[str, str, str]] = []  # (id, class, text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in VOID_TAGS:
            if tag == "br" and self.cur is not None:
                self.cur["parts"].append(" ")
            return
        a = dict(attrs)
        if tag == "p":
            if self.cur is not None:            # a <p> never nests: close the open one
                self._close_to(self.cur_depth - 1)
            pid = a.get("id") or ""
            cls = a.get("class") or ""
            if self.skipping == 0 and pid and not pid.startswith("bm_"):
                self.stack.append(("p", False))
                self.cur = {"id": pid, "class": cls, "parts": []}
                self.cur_depth = len(self.stack)
                return
            self.stack.append(("p", False))
            return
        skip = tag in SKIP_TAGS
        if self.cur is not None and "hidden" in a and not (a.get("id") or "").startswith("default"):
            skip = True
        self.stack.append((tag, skip))
        self.skipping += skip

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                self._close_to(i)
                return
        # a stray end tag: ignore it

    def _close_to(self, n: int) -> None:
        """Pops the stack down to n elements, finishing the open paragraph if it is popped."""
        while len(self.stack) > n:
            tag, skip = self.stack.pop()
            self.skipping -= skip
            if self.cur is not None and len(self.stack) < self.cur_depth:
                text = normalise("".join(self.cur["parts"]))
                self.paragraphs.append((self.cur["id"], self.cur["class"], text))
                self.cur = None

    def handle_data(self, data: str) -> None:
        if self.cur is not None and self.skipping == 0:
            self.cur["parts"].append(data)

    def close(self) -> None:
        super().close()
        self._close_to(0)


def parse_language(args: tuple[str, str]) -> tuple[str, dict, list, int]:
    """Returns (lang, {key: (class, text)}, keys in document order, number of pages)."""
    lang, help_dir = args
    text_dir = Path(help_dir) / "text"
    pages = sorted(p for p in text_dir.rglob("*.html") if p.is_file())
    paras: dict[tuple[str, str, int], tuple[str, str]] = {}
    order: list[tuple[str, str, int]] = []
    for page in pages:
        rel = page.relative_to(help_dir).as_posix()
        parser = PageParser()
        try:
            parser.feed(page.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{page}: not valid UTF-8 ({e})") from None
        parser.close()
        seen: collections.Counter = collections.Counter()
        for pid, cls, text in parser.paragraphs:
            seen[pid] += 1
            key = (rel, pid, seen[pid])
            paras[key] = (cls, text)
            order.append(key)
    return lang, paras, order, len(pages)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

def prose_reason(cls: str, text: str, min_chars: int) -> str | None:
    """Why a paragraph is not real prose ("short" or another reason), or None if it is."""
    if len(text) < min_chars:
        return "short"
    if set(cls.split()) & SKIP_P_CLASSES:
        return "code/formula class"
    if any(r.search(text) for r in CODE_RES) or sum(c in CODE_CHARS for c in text) >= 0.15 * len(text):
        return "code-like"
    if sum(ch.isalpha() for ch in text) < 0.6 * len(text):
        return "few letters"
    if len(WORD_RE.findall(text)) < 6:
        return "under 6 words"
    return None


def english_reason(lang: str, text: str, en_text: str | None) -> str | None:
    """Why a paragraph of a non-English language looks like untranslated English, or None."""
    if en_text is not None and text == en_text:
        return "identical to en"
    words = [w.lower() for w in WORD_RE.findall(text)]
    own = LANG_STOP[lang]
    en_stop = EN_STOP - own
    n_en = sum(w in en_stop for w in words)
    n_own = sum(w in own for w in words)
    if n_en >= 3 and n_en >= 0.15 * len(words) and n_en > n_own:
        return "English stopwords"
    for sentence in SENTENCE_RE.split(text):   # an English sentence left inside a translation
        words = [w.lower() for w in WORD_RE.findall(sentence)]
        n_en = sum(w in en_stop for w in words)
        n_own = sum(w in own for w in words)
        if len(words) >= 6 and n_en >= 3 and n_en >= 0.2 * len(words) and n_own <= n_en // 4:
            return "English stopwords"
    return None


def key_hash(tag: str, key: tuple[str, str, int]) -> int:
    return int.from_bytes(hashlib.sha256(f"{tag}\0{key[0]}\0{key[1]}\0{key[2]}".encode()).digest()[:8],
                          "big")


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def paragraphs_bytes(texts: list[str]) -> bytes:
    return ("\n\n".join(texts) + "\n").encode("utf-8")


def copyright_stanza(copyright_file: Path) -> str:
    """The `Files: *` stanza of the Debian copyright file (it covers the help text)."""
    text = copyright_file.read_text(encoding="utf-8")
    m = re.search(r"^Files: \*\n(?:.+\n)*?(?=\n|\Z)", text, re.M)
    if not m:
        die(f"{copyright_file}: no `Files: *` stanza found")
    return m.group(0).rstrip("\n")


def license_text(packages: dict[str, str], stanza: str) -> str:
    pkgs = "\n".join(f"  {name} {ver}" for name, ver in packages.items())
    out = f"""The text in this directory (data/corpus/<lang>/train.txt and valid.txt) is extracted from the
LibreOffice help (LibreOffice 7.4 help pages, https://help.libreoffice.org), as packaged by Debian:

{pkgs}

Only the text of help paragraphs was kept: markup, code listings and formulas were removed, and the
paragraphs were filtered, deduplicated, reordered and split by tools/build_corpus.py in this
repository. The help text is made available under the terms of the Mozilla Public License, v. 2.0
(MPL-2.0). If a copy of the MPL was not distributed with this file, you can obtain one at
https://mozilla.org/MPL/2.0/. The source form of the help is the LibreOffice `help` repository
(https://git.libreoffice.org/help) and the Debian source package `libreoffice`.

The Debian copyright file of these packages (/usr/share/doc/<package>/copyright) says, for the files
this text comes from:

{stanza}
"""
    if MPL_TEXT.is_file():
        out += ("\n" + "=" * 100 + "\n"
                f"The full text of the MPL-2.0 follows (from Debian's {MPL_TEXT}).\n"
                + "=" * 100 + "\n\n" + MPL_TEXT.read_text(encoding="utf-8"))
    else:
        print(f"build_corpus: warning: {MPL_TEXT} is missing; LICENSE carries the notice and URL only",
              file=sys.stderr)
    return out


def wrap(text: str, indent: str = "", first: str | None = None) -> str:
    return textwrap.fill(" ".join(text.split()), width=100, initial_indent=first or indent,
                         subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)


def readme_text(rows: list[tuple], packages: dict[str, str], stats: dict, cmd: str) -> str:
    table = ["| language | train paragraphs | train bytes | valid paragraphs | valid bytes |",
             "|---|---:|---:|---:|---:|"]
    for lang, ntr, btr, nva, bva in rows:
        table.append(f"| {lang} | {ntr:,} | {btr:,} | {nva:,} | {bva:,} |")
    tot_b = sum(r[2] + r[4] for r in rows)
    table.append(f"| all | {sum(r[1] for r in rows):,} | {sum(r[2] for r in rows):,} | "
                 f"{sum(r[3] for r in rows):,} | {sum(r[4] for r in rows):,} |")
    drops = [f"| language | paragraphs with an id | under {stats['min_chars']} characters "
             "| code, formula, few letters or words | untranslated: identical to en "
             "| untranslated: English words |",
             "|---|---:|---:|---:|---:|---:|"]
    for lang in LANGS:
        d = stats["drops"][lang]
        drops.append(f"| {lang} | {stats['parsed'][lang]:,} | {d['short']:,} | {d['not prose']:,} | "
                     f"{d['identical to en']:,} | {d['English stopwords']:,} |")
    pkgs = "\n".join(f"- `{n}` {v}" for n, v in packages.items())
    split = (f"Split by key: a key goes to valid when a SHA-256 hash of it falls in "
             f"{stats['valid_percent']}% of the range, so the valid paragraphs of all languages are "
             f"translations of one another and never appear in train.")
    if stats["train_kept"] < stats["train_all"]:
        split += (f" The aligned set holds {stats['aligned']:,} keys ({stats['aligned_en_bytes']:,} "
                  f"bytes of English, about {stats['aligned_all_bytes'] / 1e6:.1f} MB in all six "
                  f"languages); to keep the repository lean, the train split is capped: train keys are "
                  f"taken in the order of another hash of the key while the English train text stays "
                  f"within {stats['cap']:,} bytes, which keeps {stats['train_kept']:,} of "
                  f"{stats['train_all']:,} train keys. The valid split is not capped "
                  f"({stats['valid']:,} keys, {100 * stats['valid'] / (stats['valid'] + stats['train_kept']):.1f}% "
                  f"of the kept paragraphs).")
    else:
        split += (f" All {stats['aligned']:,} aligned keys are kept (the cap of {stats['cap']:,} "
                  f"English train bytes was not reached).")
    steps = [
        f"`apt-get download` the six packages and unpack them with `dpkg -x`; read the "
        f"{stats['pages']:,} pages per language under `usr/share/libreoffice/help/<ll>/text/`.",
        "Keep every `<p>` with an id, outside page chrome (header, footer, navigation) and code "
        "listings (`pre`, `code`, `script`, `style`); strip markup, unescape entities, NFC-normalise, "
        "remove soft hyphens and zero-width characters, collapse whitespace. Of the inline system "
        "switches (macOS vs other) keep the default variant only. Key a paragraph by (page path, "
        "paragraph id, occurrence of that id in the page): the key is the same in every language.",
        f"Drop what is not prose: paragraphs under {stats['min_chars']} characters; code, formula, "
        "example and image paragraphs (by class); code that is not marked as such (Python and shell "
        "prompts, method signatures, assignments from calls, markup examples, 15% or more of the "
        "characters brackets, quotes or operators); under 60% letters; under 6 words.",
        "In de, fr, es, it, nl drop paragraphs left untranslated in English: identical to the English "
        "paragraph of the same key, or with at least 3 English function words making up 15% or more "
        "of the words and outnumbering the language's own function words, or with a sentence of 6+ "
        "words that is English by a similar measure (an English sentence left in a translation).",
        "Keep the keys that survive in all six languages; drop a key when the text of any language "
        "already appeared under an earlier key (embedded sections repeat across pages), so no "
        "paragraph appears twice in a language.",
        split,
    ]
    steps_md = "\n".join(wrap(t, "   ", f"{i}. ") for i, t in enumerate(steps, 1))
    return f"""# The corpus: LibreOffice help in six languages

{wrap("Paragraph-aligned prose from the LibreOffice 7.4 help in English (en), German (de), French "
      "(fr), Spanish (es), Italian (it) and Dutch (nl), from these Debian packages:")}

{pkgs}

License: MPL-2.0; see `LICENSE` here, which must stay with the text.

{wrap("Layout (the `--data` layout of `koff`, one folder per domain, here one per language): "
      "`<lang>/train.txt` and `<lang>/valid.txt`, UTF-8, one paragraph per line, paragraphs "
      "separated by one blank line. Paragraph i of `de/valid.txt` is the translation of paragraph i "
      "of `en/valid.txt`, and likewise for every language and for `train.txt`. Paragraphs come in "
      "the order of the help pages (sorted by path) and, within a page, in document order.")}

{chr(10).join(table)}

Total: {tot_b:,} bytes ({tot_b / 1e6:.2f} MB).

## How it was made

Regenerate (needs a Debian system with `apt-get` and `dpkg`, and the package archive; about 20 s):

```
{cmd}
```

{wrap("and check it with `/usr/bin/python3 tools/check_corpus.py data/corpus`. The script is "
      "deterministic: on the same package versions it writes byte-identical files. If Debian has "
      "moved on to a newer version of the packages, the text changes accordingly.")}

{steps_md}

{wrap("Paragraphs dropped per language (counted before the alignment of step 5, which then drops a "
      "key from all languages when any one language lost it):")}

{chr(10).join(drops)}

{wrap(f"Keys with a prose paragraph in all six languages: {stats['aligned_before_dedup']:,}; after "
      f"removing repeated texts: {stats['aligned']:,}.")}
"""


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Build the six-language paragraph-aligned LibreOffice-help corpus "
                    "(data/corpus/<lang>/{train,valid}.txt, LICENSE, README.md) from the Debian "
                    "packages libreoffice-help-{en-us,de,fr,es,it,nl}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "data" / "corpus",
                    help="output directory")
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "corpus-build",
                    help="work directory for the downloaded and unpacked packages (git-ignored)")
    ap.add_argument("--offline", action="store_true",
                    help="reuse the .deb files already in WORK/debs instead of downloading")
    ap.add_argument("--valid-percent", type=int, default=5,
                    help="share of keys that go to the valid split, in percent")
    ap.add_argument("--max-train-en-bytes", type=int, default=1_600_000,
                    help="cap on the English train text in bytes (0: no cap); the other languages "
                         "follow, since the corpus is aligned")
    ap.add_argument("--min-chars", type=int, default=40, help="shortest paragraph kept")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes for parsing the pages")
    args = ap.parse_args()
    if not 1 <= args.valid_percent <= 50:
        die("--valid-percent must be between 1 and 50")
    return args


def fetch_packages(work: Path, offline: bool) -> tuple[dict[str, str], dict[str, str], Path]:
    """Steps 1-2: download and unpack the help packages. Returns their versions, each language's
    help directory and the English package's copyright file."""
    log(f"[1/5] download into {work / 'debs'}")
    pkg_names = [p for p, _ in LANGS.values()]
    debs = download(work / "debs", pkg_names, offline)
    versions = {pkg: deb_field(debs[pkg], "Version") for pkg in pkg_names}
    if len(set(versions.values())) != 1:
        log(f"  warning: the packages differ in version: {versions}")

    log(f"[2/5] unpack into {work / 'unpacked'}")
    help_dirs: dict[str, str] = {}
    for lang, (pkg, ll) in LANGS.items():
        dest = work / "unpacked" / lang
        unpack(debs[pkg], dest)
        hd = dest / HELP_ROOT / ll
        if not (hd / "text").is_dir():
            present = sorted(p.name for p in (dest / HELP_ROOT).glob("*"))
            die(f"{debs[pkg].name}: no help pages under {HELP_ROOT / ll / 'text'} (found: {present})")
        help_dirs[lang] = str(hd)
    copyright_file = work / "unpacked" / "en" / "usr/share/doc" / LANGS["en"][0] / "copyright"
    if not copyright_file.is_file():
        die(f"{copyright_file}: missing from the package")
    return versions, help_dirs, copyright_file


def parse_pages(help_dirs: dict[str, str], jobs: int) -> tuple[dict, dict, list]:
    """Step 3: every language's paragraphs by key, its page count, and the English key order."""
    log(f"[3/5] parse help pages ({jobs} processes)")
    t0 = time.monotonic()
    try:
        with multiprocessing.Pool(jobs) as pool:
            results = pool.map(parse_language, [(lang, help_dirs[lang]) for lang in LANGS])
    except ValueError as e:
        die(str(e))
    paras = {lang: p for lang, p, _, _ in results}
    npages = {lang: n for lang, _, _, n in results}
    en_order = next(o for lang, _, o, _ in results if lang == "en")
    for lang in LANGS:
        log(f"  {lang}: {npages[lang]:,} pages, {len(paras[lang]):,} paragraphs with an id")
    log(f"  ({time.monotonic() - t0:.1f} s)")
    return paras, npages, en_order


def filter_paragraphs(paras: dict, min_chars: int, work: Path) -> tuple[dict, dict]:
    """Step 4, first half: keep the prose paragraphs that are translated. Returns the kept texts
    and the drop counts per language; what the English filter removed goes to WORK/dropped."""
    drops = {lang: collections.Counter() for lang in LANGS}
    kept: dict[str, dict] = {lang: {} for lang in LANGS}
    en_all = paras["en"]
    for lang in LANGS:
        for key, (cls, text) in paras[lang].items():
            why = prose_reason(cls, text, min_chars)
            if why:
                drops[lang]["short" if why == "short" else "not prose"] += 1
                continue
            if lang != "en":
                en = en_all.get(key)
                why = english_reason(lang, text, en[1] if en else None)
                if why:
                    drops[lang][why] += 1
                    continue
            kept[lang][key] = text
    dropped_dir = work / "dropped"
    dropped_dir.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:   # for inspection: what the English filter removed
        if lang == "en":
            continue
        lines = []
        for key, (cls, text) in sorted(paras[lang].items()):
            if key not in kept[lang] and prose_reason(cls, text, min_chars) is None:
                en = en_all.get(key)
                why = english_reason(lang, text, en[1] if en else None)
                lines.append(f"{key[0]}#{key[1]}.{key[2]}\t{why}\t{text}")
        (dropped_dir / f"{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log(f"  untranslated paragraphs dropped, for inspection: {dropped_dir}/<lang>.tsv")
    return kept, drops


def align(en_order: list, kept: dict) -> tuple[list, list]:
    """Step 4, second half: keys of all six languages in English document order (pages sorted by
    path); then drop a key whose text in some language already appeared under an earlier key.
    Returns the keys before and after that."""
    aligned_before = [k for k in en_order if all(k in kept[lang] for lang in LANGS)]
    seen = {lang: set() for lang in LANGS}
    aligned = []
    for key in aligned_before:
        if any(kept[lang][key] in seen[lang] for lang in LANGS):
            continue
        for lang in LANGS:
            seen[lang].add(kept[lang][key])
        aligned.append(key)
    if len(set(aligned)) != len(aligned):
        die("internal error: a key occurs twice")
    log(f"  keys in all six languages: {len(aligned_before):,}; after removing repeated texts: "
        f"{len(aligned):,}")
    return aligned_before, aligned


def split_keys(aligned: list, kept: dict, valid_percent: int, max_train_en_bytes: int) -> tuple[list, list, list]:
    """The valid split by key hash, and the train keys capped at max_train_en_bytes of English.
    Returns (train, valid, every train key before the cap), in aligned order."""
    period = 1 << 64
    valid_keys = {k for k in aligned if key_hash("split", k) * 100 < valid_percent * period}
    train_all = [k for k in aligned if k not in valid_keys]
    train_keys = set(train_all)
    if max_train_en_bytes > 0:
        budget, taken = max_train_en_bytes, set()
        for k in sorted(train_all, key=lambda k: (key_hash("order", k), k)):
            size = len(kept["en"][k].encode("utf-8")) + 2
            if size > budget:
                break
            budget -= size
            taken.add(k)
        train_keys = taken
    train = [k for k in aligned if k in train_keys]
    valid = [k for k in aligned if k in valid_keys]
    log(f"  train keys: {len(train):,} (of {len(train_all):,}), valid keys: {len(valid):,}")
    return train, valid, train_all


def rebuild_command(out: Path, args: argparse.Namespace) -> str:
    """The command that rebuilds this corpus, for its README: the options that differ from the defaults."""
    try:
        rel_out = out.relative_to(REPO).as_posix()
    except ValueError:
        rel_out = str(out)
    cmd = "/usr/bin/python3 tools/build_corpus.py"
    if rel_out != "data/corpus":
        cmd += f" --out {rel_out}"
    if args.max_train_en_bytes != 1_600_000:
        cmd += f" --max-train-en-bytes {args.max_train_en_bytes}"
    if args.valid_percent != 5:
        cmd += f" --valid-percent {args.valid_percent}"
    if args.min_chars != 40:
        cmd += f" --min-chars {args.min_chars}"
    return cmd


def log_summary(rows: list[tuple], drops: dict, versions: dict[str, str], out: Path, t_start: float) -> None:
    log("")
    log(f"{'lang':<5} {'train paras':>11} {'train MB':>9} {'valid paras':>11} {'valid MB':>9}   "
        f"dropped: short / not prose / identical to en / English words")
    for lang, ntr, btr, nva, bva in rows:
        d = drops[lang]
        log(f"{lang:<5} {ntr:>11,} {btr / 1e6:>9.3f} {nva:>11,} {bva / 1e6:>9.3f}   "
            f"{d['short']:,} / {d['not prose']:,} / {d['identical to en']:,} / "
            f"{d['English stopwords']:,}")
    total = sum(r[2] + r[4] for r in rows)
    log(f"total {total / 1e6:.2f} MB in {out}; versions: "
        + ", ".join(sorted(set(versions.values()))))
    log(f"done in {time.monotonic() - t_start:.0f} s")


def main() -> int:
    args = parse_args()
    t_start = time.monotonic()
    work = args.work.resolve()
    out = args.out.resolve()

    versions, help_dirs, copyright_file = fetch_packages(work, args.offline)
    paras, npages, en_order = parse_pages(help_dirs, args.jobs)
    log("[4/5] filter and align")
    kept, drops = filter_paragraphs(paras, args.min_chars, work)
    aligned_before, aligned = align(en_order, kept)
    train, valid, train_all = split_keys(aligned, kept, args.valid_percent, args.max_train_en_bytes)

    log(f"[5/5] write {out}")
    rows = []
    for lang in LANGS:
        btr = paragraphs_bytes([kept[lang][k] for k in train])
        bva = paragraphs_bytes([kept[lang][k] for k in valid])
        write_atomic(out / lang / "train.txt", btr)
        write_atomic(out / lang / "valid.txt", bva)
        rows.append((lang, len(train), len(btr), len(valid), len(bva)))
    pkg_versions = {pkg: versions[pkg] for pkg, _ in LANGS.values()}
    write_atomic(out / "LICENSE",
                 license_text(pkg_versions, copyright_stanza(copyright_file)).encode("utf-8"))
    stats = {
        "drops": drops, "parsed": {lang: len(paras[lang]) for lang in LANGS},
        "pages": npages["en"], "aligned": len(aligned), "aligned_before_dedup": len(aligned_before),
        "aligned_en_bytes": sum(len(kept["en"][k].encode("utf-8")) + 2 for k in aligned),
        "aligned_all_bytes": sum(len(kept[lang][k].encode("utf-8")) + 2
                                 for lang in LANGS for k in aligned),
        "valid": len(valid),
        "cap": args.max_train_en_bytes, "train_kept": len(train), "train_all": len(train_all),
        "valid_percent": args.valid_percent, "min_chars": args.min_chars,
    }
    write_atomic(out / "README.md", readme_text(rows, pkg_versions, stats, rebuild_command(out, args)).encode("utf-8"))
    log_summary(rows, drops, versions, out, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
