#!/usr/bin/env python3
"""
Messages never say "1 points": a count printed in a message, a log line or
a reply is followed by its noun through relay_plural()/relay_s()
(relay/base/util.h), never by a fixed plural noun and never by "(s)".

The check reads every C file under relay/, wal/ and cmd/ and flags, inside
string literals:
  - an integer conversion (%u, %d, %zu, "PRIu64", ...) followed by one of
    the count nouns below in the plural (a rate such as "points/s" is a
    unit, not a count, and passes);
  - the text "(s)" after a letter.
A line may carry the comment "plural-ok: <why>" when the count can never
be 1 (say why). Exit status 1 with every offending line listed.

Usage: messages.py SOURCE_DIR
"""

import os
import re
import sys

NOUNS = ("points|batches|backends|attempts|bytes|lines|seconds|databases|connections|records|"
         "statements|writes|requests|errors|files|entries|listeners|values|fields|tags|retries|"
         "messages|rounds|minutes|hours|days|samples|keys|items|dead letters")
# An integer conversion, possibly split around an inttypes macro
# ("%" PRIu64 " points"), then spaces, then a plural noun.
COUNT = re.compile(r'%[-+ #0-9.*]*(?:hh|h|ll|l|z|j|t)?[uid]\s+(?:' + NOUNS + r')\b(?!/)'
                   r'|\bPRI[udi](?:8|16|32|64|MAX|PTR)\s*"\s+(?:' + NOUNS + r')\b(?!/)')
PARENS = re.compile(r'[a-z]\(s\)')
STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"(?:\s*PRI[a-zA-Z0-9]+\s*"(?:[^"\\\n]|\\.)*")*')


def strings_of(line):
    """The string literals of a line, with inttypes macros kept between them."""
    return [m.group(0) for m in STRING.finditer(line)]


def check(root):
    bad = []
    for top in ("relay", "wal", "cmd"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith(".c"):
                    continue
                path = os.path.join(d, f)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for no, line in enumerate(fh, 1):
                        if "plural-ok:" in line or line.lstrip().startswith(("*", "/*", "//")):
                            continue
                        for s in strings_of(line):
                            if COUNT.search(s) or PARENS.search(s):
                                bad.append("%s:%d: %s" % (os.path.relpath(path, root), no, line.strip()))
                                break
    return bad


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    bad = check(sys.argv[1])
    for b in bad:
        print(b)
    if bad:
        print("\n%d message%s print a count with a fixed plural or '(s)': use relay_plural()/relay_s() "
              "(relay/base/util.h), or mark a count that is never 1 with 'plural-ok: <why>'"
              % (len(bad), "" if len(bad) == 1 else "s"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
