"""The local corpus: `gptoss index DIR` and BM25 ranking.

Oracle for the ranking: FTS5's BM25 written out in Python from SQLite's documentation
(k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) floored at 1e-6, column weights on term
frequency, document length over all columns), computed from the corpus files themselves (title =
file name words, body = contents, tokens = unicode61's lower-cased letter/digit runs).
"""
from __future__ import annotations

import math
import re
import sqlite3

import pytest

from gptoss.cli import main
from gptoss.tools.browser.index import (COLUMN_WEIGHTS, DEFAULT_INDEX_NAME, CorpusIndexError,
                                        LocalIndex, build_index, match_expression)

CORPUS = {
    "solar_power.txt": "solar panels turn sunlight into power. solar power is clean power.",
    "wind_energy.txt": "wind turbines make energy from wind. wind energy is renewable energy.",
    "nuclear.txt": "nuclear plants make steady power from fission, not from sunlight or wind.",
    "power_grid.txt": "the grid moves power from plants to homes; solar and wind feed the grid "
                      "when the sun shines and the wind blows.",
    "cooking.txt": "boil the pasta for nine minutes and salt the water well.",
    "history.txt": "the first power station opened in london in 1882 and lit streets.",
}


def tokens(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def bm25_oracle(docs: dict[str, tuple[str, str]], query: str) -> dict[str, float]:
    """name -> FTS5 bm25 score (negative; lower ranks first) for documents matching any word."""
    k1, b = 1.2, 0.75
    columns = {name: (tokens(title), tokens(body)) for name, (title, body) in docs.items()}
    n_rows = len(columns)
    avgdl = sum(len(t) + len(bd) for t, bd in columns.values()) / n_rows
    scores = {}
    for name, cols in columns.items():
        length = sum(len(c) for c in cols)
        score, matched = 0.0, False
        for term in dict.fromkeys(tokens(query)):
            hits = sum(1 for cs in columns.values() if any(term in c for c in cs))
            idf = math.log((n_rows - hits + 0.5) / (hits + 0.5))
            idf = idf if idf > 0 else 1e-6
            freq = sum(w * c.count(term) for w, c in zip(COLUMN_WEIGHTS, cols))
            matched |= freq > 0
            score += idf * freq * (k1 + 1) / (freq + k1 * (1 - b + b * length / avgdl))
        if matched:
            scores[name] = -score
    return scores


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for name, text in CORPUS.items():
        (root / name).write_text(text)
    return root


def test_bm25_order_and_scores_match_the_oracle(corpus):
    report = build_index(corpus)
    assert report.documents == len(CORPUS) and report.path == corpus / DEFAULT_INDEX_NAME
    index = LocalIndex.open(corpus)
    docs = {name: (name[:-4].replace("_", " "), text) for name, text in CORPUS.items()}
    for query in ("solar power", "wind energy grid", "power", "pasta water", "sunlight fission"):
        expected = bm25_oracle(docs, query)
        hits = index.search(query, topn=10)
        got = {hit.url.rsplit("/", 1)[1]: hit.score for hit in hits}
        assert got.keys() == expected.keys(), query
        for name, score in expected.items():
            assert got[name] == pytest.approx(score, rel=1e-9, abs=1e-12), (query, name)
        assert [h.score for h in hits] == sorted(h.score for h in hits)
        order = sorted(expected, key=lambda n: expected[n])
        assert [h.url.rsplit("/", 1)[1] for h in hits][:2] == order[:2], query


def test_topn_and_queries_without_words(corpus):
    build_index(corpus)
    index = LocalIndex.open(corpus / DEFAULT_INDEX_NAME)
    assert len(index.search("power", topn=2)) == 2
    assert index.search("?!… ---", topn=5) == []
    assert index.search('power" OR NEAR(', topn=5)  # FTS5 syntax in the query is just words
    assert match_expression('a "b" a') == '"a" OR "b"'


def test_html_and_markdown_keep_links_and_titles(tmp_path):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text(
        "<html><head><title>Home page</title><script>var hidden = 1;</script></head><body>"
        "<h1>Welcome</h1><p>Read the <a href='sub/guide.md'>guide</a> or "
        "<a href='https://example.org/x'>elsewhere</a>.</p></body></html>")
    (root / "sub" / "guide.md").write_text("# The Guide\n\nBack [home](../index.html).\n")
    (root / ".hidden.txt").write_text("secret")
    (root / "image.png").write_bytes(b"\x89PNG")
    build_index(root, base_url="https://docs.test/site")
    index = LocalIndex.open(root)
    assert len(index) == 2
    home = index.document("https://docs.test/site/index.html")
    assert home.title == "Home page" and "hidden" not in home.text
    assert "【0†guide】" in home.text and "【1†elsewhere†example.org】" in home.text
    assert home.links == {0: "https://docs.test/site/sub/guide.md", 1: "https://example.org/x"}
    guide = index.document("https://docs.test/site/sub/guide.md")
    assert guide.title == "The Guide" and guide.links == {0: "https://docs.test/site/index.html"}
    # the search body has the anchor text, not the marker syntax
    body = sqlite3.connect(root / DEFAULT_INDEX_NAME).execute(
        "SELECT body FROM fts JOIN docs ON docs.id = fts.rowid WHERE docs.path = 'index.html'"
    ).fetchone()[0]
    assert "guide" in body and "【" not in body
    assert index.search("secret", 5) == []


def test_bad_index_paths_are_one_line_errors(tmp_path):
    with pytest.raises(CorpusIndexError, match="gptoss index"):
        LocalIndex.open(tmp_path)
    (tmp_path / "junk.sqlite").write_text("not a database" * 100)
    with pytest.raises(CorpusIndexError, match="not a gptoss index"):
        LocalIndex(tmp_path / "junk.sqlite")
    with pytest.raises(CorpusIndexError, match="not a directory"):
        build_index(tmp_path / "missing")


def test_gptoss_index_command(corpus, tmp_path, capsys):
    out = tmp_path / "my.sqlite"
    assert main(["index", str(corpus), "--out", str(out)]) == 0
    assert f"indexed {len(CORPUS)} documents into {out}" in capsys.readouterr().out
    assert LocalIndex(out).search("pasta", 3)[0].url.endswith("/cooking.txt")
    assert main(["index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "gptoss index: error:" in err and "not a directory" in err
    assert "Traceback" not in err


def test_sloppy_html(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "a.html").write_text(
        "<html><head><title>Sloppy &amp; Co</title><meta charset=utf-8>"
        "<body><p>Fish &amp; chips <a href='/menu?a=1&amp;b=2'>menu</a>"
        "<script>if (a < b) { alert('【x】') }</script> end<p>second 【forged†x】 para")
    build_index(root, base_url="https://shop.test")
    doc = LocalIndex.open(root).document("https://shop.test/a.html")
    assert doc.title == "Sloppy & Co"
    assert doc.text == "Fish & chips 【0†menu】 end\n\nsecond 〖forged‡x〗 para"
    assert doc.links == {0: "https://shop.test/menu?a=1&b=2"}
