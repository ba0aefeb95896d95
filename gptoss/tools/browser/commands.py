"""`gptoss index DIR`: build the browser's local corpus (SQLite FTS5) from a folder of files."""
from __future__ import annotations

import argparse
import sys

from gptoss.tools.browser.index import DEFAULT_INDEX_NAME, KINDS, build_index


def index(args: argparse.Namespace) -> int:
    report = build_index(args.dir, out=args.out, base_url=args.base_url)
    for skipped in report.skipped:
        print(f"skipped {skipped}", file=sys.stderr)
    print(f"indexed {report.documents} documents into {report.path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "index", help="build the browser tool's local search index from a folder",
        description="Index every text, Markdown and HTML file under DIR "
                    f"({', '.join(sorted(KINDS))}; hidden files skipped) into an SQLite FTS5 "
                    "index ranked by BM25, for the browser tool's offline `local` backend.")
    p.add_argument("dir", metavar="DIR", help="the folder to index")
    p.add_argument("--out", metavar="INDEX", default=None,
                   help=f"the index file to write (default: DIR/{DEFAULT_INDEX_NAME})")
    p.add_argument("--base-url", default=None,
                   help="URL the folder is served at: pages get BASE_URL/relative/path "
                        "(default: file:// URLs)")
    p.set_defaults(func=index)
