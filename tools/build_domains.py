#!/usr/bin/python3
"""Build the English multi-domain dataset (SmolLM2-135M experiment) from installed Debian packages.

Four domains, each <out>/<domain>/train.txt and <out>/<domain>/valid.txt in the data layout of docs
ARCHITECTURE.md, "Data directory" (UTF-8, one paragraph per line, paragraphs separated by one blank
line):

  help   the English LibreOffice help of the committed corpus, data/corpus/en/{train,valid}.txt,
         copied byte for byte (made by tools/build_corpus.py; MPL-2.0)
  man    the man pages of the Debian package `manpages` (the Linux man-pages project), every page
         the package ships (`dpkg -L manpages`), rendered by groff to plain text; a paragraph is a
         filled paragraph of a page (a tagged paragraph keeps its tag in front; tables and code
         blocks are joined to one line); section headings, the page header and footer are dropped
  bible  the King James Version from `bible-kjv-text` (/usr/lib/bible.data), decoded by the `bible`
         program of `bible-kjv`; a paragraph is a run of consecutive verses of one chapter (verse
         numbers dropped), about --bible-group characters long
  novel  The Adventures of Sherlock Holmes (Arthur Conan Doyle, Project Gutenberg EBook #1661), as
         shipped in `golang-github-jdkato-prose-dev` (testdata/sherlock.txt); the Project Gutenberg
         header and footer are cut off, a paragraph is a blank-line paragraph of the book, unwrapped

Every paragraph is NFC-normalised, its whitespace collapsed to single spaces; paragraphs under
--min-chars characters are dropped and a paragraph that repeats an earlier one of its domain is
dropped. The split is by unit (man: a page; bible: a chapter; novel: a run of paragraphs of one
story, about --novel-unit characters): units are taken in the order of a SHA-256 hash of
(domain, unit key) and go to valid until valid holds max(--min-valid, --valid-fraction of the
domain's text, counting at most --train-cap/(1 - fraction) of it) bytes; the rest is train, capped
at --train-cap bytes (units again in hash order), so that the domains are of a similar size. Files
keep the source order (page order, canonical book order, story order). Same packages and options
give byte-identical files.

Also written: <out>/NOTICE (source packages, versions, licences and their Debian copyright files),
<out>/README.md (what was built, sizes) and <out>/.stamp (a hash of this script, its options and
the package versions). Only sub-folders of <out> are domains, so these files are not read as data.

  /usr/bin/python3 tools/build_domains.py               # build into .cache/domains (skip if up to date)
  /usr/bin/python3 tools/build_domains.py --force       # build again
  /usr/bin/python3 tools/build_domains.py --check       # only check an existing output

Python 3 standard library only; needs dpkg-query, groff (groff-base) and the `bible` program.
Exit status: 0 ok; 1 when --check finds a problem; 2 on a missing source package or a bad input, with
one clear line on stderr that names the Debian package to install.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_corpus  # noqa: E402  (tools/check_corpus.py: the paragraph-file checks)

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ["help", "man", "bible", "novel"]
SPLITS = ["train", "valid"]
STAMP = ".stamp"

HELP_DIR = REPO / "data" / "corpus" / "en"
HELP_LICENSE = REPO / "data" / "corpus" / "LICENSE"
BIBLE_DATA = Path("/usr/lib/bible.data")
NOVEL_FILE = Path("/usr/share/gocode/src/github.com/jdkato/prose/testdata/sherlock.txt")

# domain -> Debian packages its text comes from (the first one is the text's own package).
PACKAGES = {
    "help": ["libreoffice-help-en-us"],
    "man": ["manpages", "groff-base"],
    "bible": ["bible-kjv-text", "bible-kjv"],
    "novel": ["golang-github-jdkato-prose-dev"],
}

# Characters mapped before whitespace is collapsed: groff's hyphen and minus, box drawing of tables.
CHAR_MAP = {0x2010: "-", 0x2011: "-", 0x2212: "-", 0x00AD: None, 0xFEFF: None, 0x200B: None}
CHAR_MAP.update({c: " " for c in range(0x2500, 0x2580)})           # ─ ┼ ┌ ... (table rules)
CHAR_MAP.update({0x2502: " | ", 0x2503: " | ", 0x2551: " | "})    # │ ┃ ║ (column separators)
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
OVERSTRIKE_RE = re.compile(r".\x08")
CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
WS_RE = re.compile(r"\s+")


def log(msg: str) -> None:
    print(msg, flush=True)


def die(msg: str) -> None:
    print(f"build_domains: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(CHAR_MAP)
    return WS_RE.sub(" ", text).strip()


def key_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# Source packages
# ---------------------------------------------------------------------------------------------

def package_version(pkg: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        die("dpkg-query not found: this script needs a Debian system")
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
                          capture_output=True, text=True)
    if proc.returncode != 0 or "\t" not in proc.stdout:
        return None
    status, version = proc.stdout.split("\t", 1)
    return version if status.endswith("installed") and not status.endswith("not-installed") else None


def require_sources() -> dict[str, str]:
    """Package -> installed version, for every package of every domain; exits 2 if one is missing."""
    versions: dict[str, str] = {}
    missing: list[str] = []
    for dom in DOMAINS:
        for pkg in PACKAGES[dom]:
            if dom == "help":
                continue  # the help domain is the committed corpus; its package is only named
            v = package_version(pkg)
            if v is None:
                missing.append(f"{pkg} (for the {dom} domain)")
            else:
                versions[pkg] = v
    if missing:
        die("Debian package(s) not installed: " + ", ".join(missing) +
            "; install with: apt-get install " + " ".join(m.split()[0] for m in missing))
    for path, what in ((BIBLE_DATA, "bible-kjv-text"), (NOVEL_FILE, "golang-github-jdkato-prose-dev")):
        if not path.is_file():
            die(f"{path} not found although {what} is installed; reinstall it: "
                f"apt-get install --reinstall {what}")
    for prog, what in (("groff", "groff-base"), ("bible", "bible-kjv")):
        if shutil.which(prog) is None:
            die(f"the program `{prog}` is not on PATH; install with: apt-get install {what}")
    for split in SPLITS:
        if not (HELP_DIR / f"{split}.txt").is_file():
            die(f"{HELP_DIR / f'{split}.txt'} not found: the help domain is the committed corpus "
                "(data/corpus, made by tools/build_corpus.py)")
    # The version the help corpus was built from, as its LICENSE names it.
    m = re.search(r"libreoffice-help-en-us (\S+)", HELP_LICENSE.read_text(encoding="utf-8"))
    versions["libreoffice-help-en-us"] = m.group(1) if m else "(see data/corpus/LICENSE)"
    return versions


def copyright_text(pkg: str) -> str:
    path = Path("/usr/share/doc") / pkg / "copyright"
    if not path.is_file():
        die(f"{path} not found (reinstall {pkg}: apt-get install --reinstall {pkg})")
    return path.read_text(encoding="utf-8", errors="replace").rstrip("\n")


# ---------------------------------------------------------------------------------------------
# Domains: each gives a list of units (key, [paragraph, ...]) in source order
# ---------------------------------------------------------------------------------------------

Units = list[tuple[str, list[str]]]


def manpage_files() -> list[Path]:
    proc = subprocess.run(["dpkg", "-L", "manpages"], capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"`dpkg -L manpages` failed: {proc.stderr.strip()}")
    files = []
    for line in proc.stdout.splitlines():
        p = Path(line)
        if re.fullmatch(r"/usr/share/man/man[0-9]/[^/]+\.gz", line) and p.is_file() and not p.is_symlink():
            files.append(p)
    if not files:
        die("`dpkg -L manpages` lists no man page under /usr/share/man/man*/ "
            "(reinstall it: apt-get install --reinstall manpages)")
    return sorted(files, key=lambda p: (p.parent.name, p.name))


def render_manpage(path: Path, width: int) -> tuple[str, str | None]:
    """(page key, plain text), or (key, None) for a page that only sources another (`.so`)."""
    key = f"{path.parent.name}/{path.name[:-3]}"
    src = gzip.decompress(path.read_bytes())
    requests = [ln for ln in src.split(b"\n") if ln.strip() and not ln.startswith((b'.\\"', b"'\\\""))]
    if len(requests) <= 2 and any(r.startswith(b".so ") for r in requests):
        return key, None
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.pop("GROFF_SGR", None)
    env.pop("GROFF_NO_SGR", None)
    # -k: preconv (input encoding); -t: tbl; a very long line and no hyphenation, so that a filled
    # paragraph comes out as one line; -P-cbou: no SGR escapes, no bold/underline overstrikes.
    proc = subprocess.run(["groff", "-k", "-t", "-man", "-Tutf8", f"-rLL={width}n", "-rHY=0",
                           "-P-cbou"], input=src, capture_output=True, env=env)
    if proc.returncode != 0:
        die(f"groff failed on {path}: {proc.stderr.decode(errors='replace').strip()[:300]}")
    text = proc.stdout.decode("utf-8", errors="replace")
    return key, OVERSTRIKE_RE.sub("", ANSI_RE.sub("", text))


def man_paragraphs(text: str) -> list[str]:
    lines = text.split("\n")
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(nonblank) >= 2:  # page header ("signal(7)  Miscellaneous ...  signal(7)") and footer
        lines[nonblank[0]] = ""
        lines[nonblank[-1]] = ""
    paras: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if block:
            paras.append(" ".join(block))
            block.clear()

    for ln in lines:
        if not ln.strip():
            flush()
        elif not ln[0].isspace() and ln.strip().upper() == ln.strip():
            flush()  # a section heading (NAME, DESCRIPTION, SEE ALSO): not prose
        else:
            block.append(ln.strip())
    flush()
    return paras


def build_man(width: int, jobs: int) -> tuple[Units, dict]:
    files = manpage_files()
    units: Units = []
    skipped = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        for key, text in ex.map(lambda p: render_manpage(p, width), files):
            if text is None:
                skipped += 1
                continue
            units.append((key, man_paragraphs(text)))
    return units, {"pages": len(files), "so_pages": skipped}


BIBLE_HEAD_RE = re.compile(r"^(\S.*\S) (\d+)$")
BIBLE_VERSE_RE = re.compile(r"^ +(\d+) (.*)$")


def build_bible(group: int) -> tuple[Units, dict]:
    # `bible` reads its data file (bible.data of bible-kjv-text); -l: line width (no wrapping).
    proc = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL,
                          capture_output=True)
    if proc.returncode != 0:
        die(f"`bible gen1:1-rev22:21` failed (status {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()[:300]}")
    text = proc.stdout.decode("utf-8")
    chapters: list[tuple[str, list[str]]] = []
    verses = 0
    for ln in text.split("\n"):
        if not ln.strip():
            continue
        m = BIBLE_VERSE_RE.match(ln)
        if m and chapters:
            if int(m.group(1)) != len(chapters[-1][1]) + 1:
                die(f"bible output: {chapters[-1][0]}: verse {m.group(1)} out of order")
            chapters[-1][1].append(m.group(2))
            verses += 1
            continue
        h = BIBLE_HEAD_RE.match(ln)
        if not h:
            die(f"bible output: unexpected line {ln[:80]!r}")
        chapters.append((ln.strip(), []))
    if len(chapters) != 1189 or verses != 31102:
        die(f"bible output: {len(chapters)} chapters and {verses} verses, expected the KJV's 1189 "
            "and 31102 (a different bible-kjv-text?)")
    units: Units = []
    for key, vs in chapters:
        paras: list[str] = []
        cur: list[str] = []
        for v in vs:
            cur.append(v)
            if sum(len(x) + 1 for x in cur) >= group:
                paras.append(" ".join(cur))
                cur = []
        if cur:  # the chapter's last verses: join to the previous group when short
            if paras and sum(len(x) + 1 for x in cur) < group // 2:
                paras[-1] += " " + " ".join(cur)
            else:
                paras.append(" ".join(cur))
        units.append((key, paras))
    return units, {"chapters": len(chapters), "verses": verses}


NOVEL_STORY_RE = re.compile(r"^(ADVENTURE [IVXL]+\.|[IVXL]+\. THE ADVENTURE OF .*)")


def build_novel(unit_chars: int) -> tuple[Units, dict]:
    text = NOVEL_FILE.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    start = text.find("*** START OF THIS PROJECT GUTENBERG EBOOK")
    end = text.find("End of the Project Gutenberg EBook")
    if start < 0 or end < 0 or end < start:
        die(f"{NOVEL_FILE}: the Project Gutenberg start/end markers were not found (a changed file?)")
    body = text[text.index("\n", start) + 1:end]
    units: Units = []
    story = "front"
    cur: list[str] = []
    n_unit = 0
    stories = 0
    for block in re.split(r"\n[ \t]*\n", body):
        para = " ".join(ln.strip() for ln in block.split("\n") if ln.strip())
        if not para:
            continue
        if NOVEL_STORY_RE.match(para):  # a new story: close the open unit
            if cur:
                units.append((f"{story}#{n_unit}", cur))
            story, cur, n_unit = para, [], 0
            stories += 1
            continue  # the story title itself is a heading
        if story == "front":
            continue  # title page, transcriber's credit, table of contents
        cur.append(para)
        if sum(len(p) + 2 for p in cur) >= unit_chars:
            units.append((f"{story}#{n_unit}", cur))
            cur, n_unit = [], n_unit + 1
    if cur:
        units.append((f"{story}#{n_unit}", cur))
    if stories != 12:
        die(f"{NOVEL_FILE}: found {stories} stories, expected the 12 of the book (a changed file?)")
    return units, {"stories": stories}


# ---------------------------------------------------------------------------------------------
# Cleaning, split, writing
# ---------------------------------------------------------------------------------------------

def clean(units: Units, min_chars: int) -> tuple[Units, dict]:
    seen: set[str] = set()
    out: Units = []
    stats = {"raw": 0, "short": 0, "dup": 0}
    for key, paras in units:
        kept = []
        for p in paras:
            stats["raw"] += 1
            p = normalise(p)
            if len(p) < min_chars:
                stats["short"] += 1
            elif p in seen:
                stats["dup"] += 1
            else:
                seen.add(p)
                kept.append(p)
        if kept:
            out.append((key, kept))
    return out, stats


def unit_bytes(paras: list[str]) -> int:
    return sum(len(p.encode()) + 2 for p in paras)


def split_units(domain: str, units: Units, args) -> tuple[list[str], list[str]]:
    total = sum(unit_bytes(p) for _, p in units)
    frac = args.valid_fraction
    valid_target = max(args.min_valid, int(frac * min(total, args.train_cap / (1 - frac))))
    order = sorted(range(len(units)), key=lambda i: (key_hash("split", domain, units[i][0]), i))
    valid_idx: set[int] = set()
    vbytes = 0
    for i in order:  # fill valid in hash order; a unit that would overshoot by a lot is passed over
        if vbytes >= valid_target:
            break
        b = unit_bytes(units[i][1])
        if vbytes + b <= valid_target * 1.25 or vbytes == 0 and b <= 2 * valid_target:
            valid_idx.add(i)
            vbytes += b
    if vbytes < valid_target:
        die(f"{domain}: only {vbytes} bytes of valid text could be set aside (wanted {valid_target})")
    train_idx: set[int] = set()
    tbytes = 0
    for i in sorted((i for i in range(len(units)) if i not in valid_idx),
                    key=lambda i: (key_hash("order", domain, units[i][0]), i)):
        b = unit_bytes(units[i][1])
        if tbytes + b <= args.train_cap:
            train_idx.add(i)
            tbytes += b
    train = [p for i, (_, ps) in enumerate(units) if i in train_idx for p in ps]
    valid = [p for i, (_, ps) in enumerate(units) if i in valid_idx for p in ps]
    return train, valid


def paragraphs_bytes(paras: list[str]) -> bytes:
    return ("\n\n".join(paras) + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def notice_text(versions: dict[str, str]) -> str:
    out = ["NOTICE: sources and licences of the English multi-domain dataset", "",
           "Made by tools/build_domains.py of koff from installed Debian packages (Debian 12). The text",
           "was extracted, filtered, deduplicated and split by that script; it is not the original",
           "form of these works. Each domain's source, licence and the Debian copyright file of its",
           "package follow.", ""]
    entries = [
        ("help", "libreoffice-help-en-us",
         "LibreOffice help (English), via data/corpus/en of koff (tools/build_corpus.py).",
         "MPL-2.0 (Mozilla Public License, v. 2.0; https://mozilla.org/MPL/2.0/). Copyright 2000, 2010 "
         "Oracle and/or its affiliates; (c) 2000, 2010 LibreOffice contributors and/or their affiliates. "
         "Source form: https://git.libreoffice.org/help and the Debian source package `libreoffice`.",
         HELP_LICENSE.read_text(encoding="utf-8").rstrip("\n")),
        ("man", "manpages",
         "The Linux man-pages project, every page of the Debian package `manpages`, rendered to plain "
         "text with groff (groff-base).",
         "Per file, as the copyright file below says: mostly GPL-2+ (\"Files: *\", (c) 2005-2021 Michael "
         "Kerrisk, (c) 2022-2023 Alejandro Colomar), and for some pages Linux-man-pages-copyleft, "
         "BSD-2-clause, BSD-3-clause, BSD-4-clause, Expat, GPL-1+, GPL-2. The source form is the "
         "Debian source package `manpages` (https://www.kernel.org/pub/linux/docs/man-pages/).",
         copyright_text("manpages")),
        ("bible", "bible-kjv-text",
         "The King James Version of the Bible (1611), text of the Debian package `bible-kjv-text` "
         "(/usr/lib/bible.data), decoded with the `bible` program of `bible-kjv`.",
         "The KJV text is in the public domain (its copyright file: \"The copyright for the King James "
         "Version text of the Bible is expired\"). The Bible Retrieval System data file: (c) Chip "
         "Chapin, Hewlett Packard Company, 1989, \"provided for unrestricted use provided that this "
         "legend is included\" (the legend is in the copyright file below); the Debian program code: "
         "GPL-2+.",
         copyright_text("bible-kjv-text")),
        ("novel", "golang-github-jdkato-prose-dev",
         "Arthur Conan Doyle, The Adventures of Sherlock Holmes (1892), Project Gutenberg EBook #1661, "
         "from testdata/sherlock.txt of the Go library `prose` (Debian package "
         "golang-github-jdkato-prose-dev). The Project Gutenberg header, licence and footer were "
         "removed; the text is not a Project Gutenberg edition.",
         "The book is in the public domain (Arthur Conan Doyle died in 1930; published 1892). The "
         "package that ships it is Expat (MIT): (c) 2017 Joseph Kato; its copyright file follows.",
         copyright_text("golang-github-jdkato-prose-dev")),
    ]
    for dom, pkg, what, lic, copyright in entries:
        out += ["=" * 100, f"Domain `{dom}`: Debian package {pkg} {versions.get(pkg, '?')}", "",
                what, "", "Licence: " + lic, "", f"--- {('data/corpus/LICENSE' if dom == 'help' else f'/usr/share/doc/{pkg}/copyright')} ---",
                copyright, ""]
    out += ["=" * 100, "Tools used (not a source of text): groff-base "
            f"{versions.get('groff-base', '?')} (GPL-3+), bible-kjv {versions.get('bible-kjv', '?')} (GPL-2+).",
            ""]
    return "\n".join(out)


def summary_rows(root: Path) -> list[tuple[str, int, int, int, int, int]]:
    rows = []
    for dom in DOMAINS:
        n = {}
        b = {}
        for split in SPLITS:
            data = (root / dom / f"{split}.txt").read_bytes()
            n[split] = data.count(b"\n\n") + 1
            b[split] = len(data)
        rows.append((dom, n["train"], n["valid"], b["train"], b["valid"],
                     round(100 * b["valid"] / (b["train"] + b["valid"]))))
    return rows


def table(rows) -> str:
    lines = [f"| {'domain':<6} | {'train paragraphs':>16} | {'valid paragraphs':>16} | {'train bytes':>11} "
             f"| {'valid bytes':>11} | {'valid %':>7} |",
             "|--------|-----------------:|-----------------:|------------:|------------:|--------:|"]
    for dom, nt, nv, bt, bv, pct in rows:
        lines.append(f"| {dom:<6} | {nt:>16,} | {nv:>16,} | {bt:>11,} | {bv:>11,} | {pct:>6}% |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Check
# ---------------------------------------------------------------------------------------------

def read_paragraphs(path: Path, problems: list[str]) -> list[str] | None:
    """The committed corpus's checks (tools/check_corpus.py: UTF-8, layout, no repeats), plus no
    control characters, which rendered man pages could leave behind."""
    paragraphs = check_corpus.read_paragraphs(path, problems)
    if paragraphs is not None and any(CTRL_RE.search(p) for p in paragraphs):
        problems.append(f"{path}: contains control characters (backspace, escape...)")
    return paragraphs


def check(root: Path, min_valid: int, need_stamp: bool = True) -> int:
    problems: list[str] = []
    if not root.is_dir():
        print(f"build_domains: check: {root}: not a directory", file=sys.stderr)
        return 1
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    if dirs != sorted(DOMAINS):
        problems.append(f"{root}: sub-folders (domains) are {dirs}, expected {sorted(DOMAINS)}")
    if need_stamp and not (root / STAMP).is_file():
        problems.append(f"{root / STAMP}: missing (the build did not finish; run the build again)")
    notice = root / "NOTICE"
    if not notice.is_file():
        problems.append(f"{notice}: missing")
    else:
        t = notice.read_text(encoding="utf-8", errors="replace")
        for must in ("MPL-2.0", "GPL-2+", "King James", "public domain", "Expat", "Sherlock Holmes",
                     "libreoffice-help-en-us", "manpages", "bible-kjv-text",
                     "golang-github-jdkato-prose-dev"):
            if must not in t:
                problems.append(f"{notice}: does not mention {must!r}")
    for dom in DOMAINS:
        paras = {s: read_paragraphs(root / dom / f"{s}.txt", problems) for s in SPLITS}
        if paras["train"] is None or paras["valid"] is None:
            continue
        train = set(paras["train"])
        leaked = [p for p in paras["valid"] if p in train]
        if leaked:
            problems.append(f"{root / dom / 'valid.txt'}: {len(leaked)} paragraph(s) also in train.txt, "
                            f"e.g. {leaked[0][:60]!r}")
        vchars = sum(len(p) for p in paras["valid"])
        if dom != "help" and vchars < min_valid * 0.9:
            problems.append(f"{root / dom / 'valid.txt'}: only {vchars:,} characters (want ~{min_valid:,})")
    if problems:
        for line in problems:
            print(f"build_domains: check: {line}", file=sys.stderr)
        return 1
    log(table(summary_rows(root)))
    log(f"build_domains: check: ok: {root}: {len(DOMAINS)} domains")
    return 0


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(
        description="Build the English multi-domain dataset (help, man, bible, novel) from Debian "
                    "packages.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "domains", help="output directory")
    ap.add_argument("--force", action="store_true", help="build even if the output is up to date")
    ap.add_argument("--check", action="store_true", help="only check an existing output")
    ap.add_argument("--train-cap", type=int, default=1_600_000,
                    help="most bytes of train text per domain (the help domain is taken as it is: 1.6 MB)")
    ap.add_argument("--valid-fraction", type=float, default=0.05, help="share of a domain's text in valid")
    ap.add_argument("--min-valid", type=int, default=64_000, help="fewest bytes of valid text per domain")
    ap.add_argument("--min-chars", type=int, default=40, help="shortest paragraph kept (man, bible)")
    ap.add_argument("--novel-min-chars", type=int, default=20,
                    help="shortest paragraph kept in the novel (dialogue lines are short)")
    ap.add_argument("--bible-group", type=int, default=600,
                    help="a bible paragraph is the verses of a chapter up to about this many characters")
    ap.add_argument("--novel-unit", type=int, default=4000,
                    help="the novel is split in units of consecutive paragraphs of about this many characters")
    ap.add_argument("--man-width", type=int, default=2000, help="groff line length (characters)")
    ap.add_argument("--jobs", type=int, default=2, help="groff processes at once")
    args = ap.parse_args()
    out: Path = args.out.resolve()

    if args.check:
        return check(out, args.min_valid)

    try:
        os.nice(10)
    except OSError:
        pass
    t0 = time.monotonic()
    versions = require_sources()
    script_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    opts = {k: v for k, v in sorted(vars(args).items()) if k not in ("out", "force", "check", "jobs")}
    stamp = hashlib.sha256(repr((script_hash, opts, sorted(versions.items()),
                                 [hashlib.sha256((HELP_DIR / f"{s}.txt").read_bytes()).hexdigest()
                                  for s in SPLITS])).encode()).hexdigest()
    stamp_file = out / STAMP
    if not args.force and stamp_file.is_file() and stamp_file.read_text().strip() == stamp \
            and all((out / d / f"{s}.txt").is_file() for d in DOMAINS for s in SPLITS):
        log(f"build_domains: {out} is up to date (stamp {stamp[:12]}); --force to build again")
        log(table(summary_rows(out)))
        return 0
    if stamp_file.exists():
        stamp_file.unlink()  # not complete until the new stamp is written

    log(f"build_domains: building into {out}")
    info: dict[str, str] = {}
    for dom in DOMAINS:
        t = time.monotonic()
        if dom == "help":
            for split in SPLITS:
                data = (HELP_DIR / f"{split}.txt").read_bytes()
                write_atomic(out / dom / f"{split}.txt", data)
            info[dom] = "copied from data/corpus/en"
        else:
            if dom == "man":
                units, extra = build_man(args.man_width, args.jobs)
            elif dom == "bible":
                units, extra = build_bible(args.bible_group)
            else:
                units, extra = build_novel(args.novel_unit)
            min_chars = args.novel_min_chars if dom == "novel" else args.min_chars
            units, stats = clean(units, min_chars)
            total = sum(unit_bytes(p) for _, p in units)
            train, valid = split_units(dom, units, args)
            for split, paras in (("train", train), ("valid", valid)):
                write_atomic(out / dom / f"{split}.txt", paragraphs_bytes(paras))
            info[dom] = (", ".join(f"{k} {v:,}" for k, v in extra.items()) +
                         f"; {stats['raw']:,} paragraphs, {stats['short']:,} under {min_chars} characters "
                         f"and {stats['dup']:,} repeats dropped; {len(units):,} units, {total:,} bytes "
                         f"after cleaning")
        log(f"  {dom:<6} {info[dom]} ({time.monotonic() - t:.1f} s)")

    write_atomic(out / "NOTICE", notice_text(versions).encode("utf-8"))
    rows = summary_rows(out)
    readme = ["# English multi-domain dataset (made by tools/build_domains.py; do not edit)", "",
              "Domains: " + ", ".join(DOMAINS) + ". Sources and licences: NOTICE.", "",
              "Package versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".", "",
              table(rows), "", "Per domain:", ""] + [f"- {d}: {info[d]}" for d in DOMAINS] + \
             ["", "Options: " + ", ".join(f"{k}={v}" for k, v in opts.items()), ""]
    write_atomic(out / "README.md", "\n".join(readme).encode("utf-8"))
    rc = check(out, args.min_valid, need_stamp=False)
    if rc != 0:
        die(f"the output in {out} fails its own check (see above); not stamped")
    write_atomic(stamp_file, (stamp + "\n").encode())
    log(f"build_domains: done in {time.monotonic() - t0:.1f} s; licences in {out / 'NOTICE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
