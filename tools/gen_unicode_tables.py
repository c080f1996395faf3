#!/usr/bin/env python3
"""Generates tokenizer/unicode_tables.cpp from Debian's `unicode-data` package.

The tokenizer's pre-tokenizers need the Unicode general categories behind \\p{L}, \\p{N} and \\s
(White_Space), and the NFC/NFKC normalizers need canonical combining classes, decompositions and
the primary composites. Typing those by hand invites silent mistakes, so they are generated here
from the Unicode Character Database files that `apt-get install unicode-data` puts in
/usr/share/unicode:

  UnicodeData.txt            general category, combining class, decomposition mapping
  CompositionExclusions.txt  script-specific and post-composition-version exclusions
  PropList.txt               White_Space (what regex engines mean by \\s)

Usage:  tools/gen_unicode_tables.py [--ucd DIR] [--out tokenizer/unicode_tables.cpp]
        tools/gen_unicode_tables.py --check   (exit 1 if the committed file is stale)
"""
import argparse
import os
import sys

MAX_CP = 0x110000
BLOCK = 256

# Character class bits, shared with tokenizer/unicode.h (kLetter ...).
LETTER, NUMBER, SPACE, MARK, NFC_SAFE = 1, 2, 4, 8, 16

S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def parse_unicode_data(path):
    category = {}
    ccc = {}
    decomp = {}  # cp -> (is_compat, [cps])
    range_start = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(";")
            cp = int(fields[0], 16)
            name, gc, cc, dm = fields[1], fields[2], int(fields[3]), fields[5]
            if name.endswith(", First>"):
                range_start = cp
                continue
            if name.endswith(", Last>"):
                for c in range(range_start, cp + 1):
                    category[c] = gc
                    if cc:
                        ccc[c] = cc
                range_start = None
                continue
            category[cp] = gc
            if cc:
                ccc[cp] = cc
            if dm:
                parts = dm.split()
                compat = parts[0].startswith("<")
                if compat:
                    parts = parts[1:]
                decomp[cp] = (compat, [int(p, 16) for p in parts])
    return category, ccc, decomp


def parse_code_point_list(path, want_property=None):
    cps = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(";")]
            if want_property is not None and (len(fields) < 2 or fields[1] != want_property):
                continue
            lo, _, hi = fields[0].partition("..")
            lo = int(lo, 16)
            hi = int(hi, 16) if hi else lo
            cps.update(range(lo, hi + 1))
    return cps


def full_decomposition(cp, decomp, compat):
    """Recursive decomposition (canonical only, or canonical + compatibility)."""
    if S_BASE <= cp < S_BASE + S_COUNT:
        s = cp - S_BASE
        out = [L_BASE + s // (V_COUNT * T_COUNT), V_BASE + (s % (V_COUNT * T_COUNT)) // T_COUNT]
        if s % T_COUNT:
            out.append(T_BASE + s % T_COUNT)
        return out
    entry = decomp.get(cp)
    if entry is None or (entry[0] and not compat):
        return [cp]
    out = []
    for c in entry[1]:
        out.extend(full_decomposition(c, decomp, compat))
    return out


def two_level(values, default):
    """Splits a per-code-point array into a block index and de-duplicated 256-entry blocks."""
    blocks, index, stage1 = [], {}, []
    for start in range(0, MAX_CP, BLOCK):
        block = tuple(values.get(c, default) for c in range(start, start + BLOCK))
        if block not in index:
            index[block] = len(blocks)
            blocks.append(block)
        stage1.append(index[block])
    return stage1, blocks


def c_array(values, per_line=24):
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(str(v) for v in values[i:i + per_line]) + ",")
    return "\n".join(lines)


def generate(ucd):
    category, ccc, decomp = parse_unicode_data(os.path.join(ucd, "UnicodeData.txt"))
    exclusions = parse_code_point_list(os.path.join(ucd, "CompositionExclusions.txt"))
    white_space = parse_code_point_list(os.path.join(ucd, "PropList.txt"), "White_Space")

    # Full_Composition_Exclusion = listed exclusions + singletons + non-starter decompositions.
    full_exclusion = set(exclusions)
    for cp, (compat, parts) in decomp.items():
        if compat:
            continue
        if len(parts) == 1 or ccc.get(cp, 0) != 0 or ccc.get(parts[0], 0) != 0:
            full_exclusion.add(cp)

    compositions = {}
    for cp, (compat, parts) in decomp.items():
        if not compat and len(parts) == 2 and cp not in full_exclusion:
            compositions[(parts[0], parts[1])] = cp
    second_elements = {b for (_, b) in compositions}
    second_elements.update(range(V_BASE, V_BASE + V_COUNT))
    second_elements.update(range(T_BASE + 1, T_BASE + T_COUNT))

    classes = {}
    for cp in range(MAX_CP):
        gc = category.get(cp, "Cn")
        bits = 0
        if gc[0] == "L":
            bits |= LETTER
        elif gc[0] == "N":
            bits |= NUMBER
        elif gc[0] == "M":
            bits |= MARK
        if cp in white_space:
            bits |= SPACE
        # NFC_SAFE: a string made only of such characters is already in NFC. The character is a
        # starter, survives NFC unchanged, and neither it nor the first character of its
        # decomposition can compose with a preceding character.
        first = full_decomposition(cp, decomp, False)[0]
        if (ccc.get(cp, 0) == 0 and cp not in full_exclusion and cp not in second_elements
                and first not in second_elements and ccc.get(first, 0) == 0):
            bits |= NFC_SAFE
        if bits:
            classes[cp] = bits

    class_stage1, class_blocks = two_level(classes, 0)
    ccc_stage1, ccc_blocks = two_level(ccc, 0)

    # One flat table of full decompositions: canonical ones for NFC/NFD, and the
    # canonical+compatibility ones (where they differ) for NFKC/NFKD.
    decomp_entries, decomp_data = [], []
    for cp in sorted(decomp):
        for compat in (False, True):
            if not compat and decomp[cp][0]:
                continue
            seq = full_decomposition(cp, decomp, compat)
            if compat and seq == full_decomposition(cp, decomp, False):
                continue
            decomp_entries.append((cp, int(compat), len(decomp_data), len(seq)))
            decomp_data.extend(seq)

    comp_sorted = sorted(compositions.items())

    out = []
    out.append("// GENERATED by tools/gen_unicode_tables.py from /usr/share/unicode (Debian unicode-data):")
    out.append("// UnicodeData.txt, CompositionExclusions.txt, PropList.txt. Do not edit by hand.")
    out.append('#include "tokenizer/unicode_tables.h"')
    out.append("")
    out.append("namespace koff::unicode_tables {")
    out.append("")
    out.append(f"const uint16_t kClassStage1[{len(class_stage1)}] = {{")
    out.append(c_array(class_stage1))
    out.append("};")
    out.append(f"const uint8_t kClassStage2[{len(class_blocks)}][256] = {{")
    for b in class_blocks:
        out.append("  {" + ",".join(str(v) for v in b) + "},")
    out.append("};")
    out.append(f"const uint16_t kCccStage1[{len(ccc_stage1)}] = {{")
    out.append(c_array(ccc_stage1))
    out.append("};")
    out.append(f"const uint8_t kCccStage2[{len(ccc_blocks)}][256] = {{")
    for b in ccc_blocks:
        out.append("  {" + ",".join(str(v) for v in b) + "},")
    out.append("};")
    out.append(f"const DecompositionEntry kDecompositions[{len(decomp_entries)}] = {{")
    for cp, compat, off, n in decomp_entries:
        out.append(f"  {{0x{cp:X}, {compat}, {off}, {n}}},")
    out.append("};")
    out.append(f"const size_t kDecompositionCount = {len(decomp_entries)};")
    out.append(f"const uint32_t kDecompositionData[{len(decomp_data)}] = {{")
    out.append(c_array([f"0x{c:X}" for c in decomp_data], 12))
    out.append("};")
    out.append(f"const CompositionEntry kCompositions[{len(comp_sorted)}] = {{")
    for (a, b), c in comp_sorted:
        out.append(f"  {{0x{a:X}, 0x{b:X}, 0x{c:X}}},")
    out.append("};")
    out.append(f"const size_t kCompositionCount = {len(comp_sorted)};")
    out.append("")
    out.append("}  // namespace koff::unicode_tables")
    return "\n".join(out) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ucd", default="/usr/share/unicode", help="Unicode Character Database folder")
    parser.add_argument("--out", default=os.path.join(here, "..", "tokenizer", "unicode_tables.cpp"))
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.ucd, "UnicodeData.txt")):
        sys.exit(f"gen_unicode_tables: {args.ucd}/UnicodeData.txt not found (apt-get install unicode-data)")
    text = generate(args.ucd)
    if args.check:
        with open(args.out, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit(f"gen_unicode_tables: {args.out} is stale; rerun tools/gen_unicode_tables.py")
        print(f"{args.out} is up to date")
        return
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
