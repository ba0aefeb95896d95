"""Fetching URLs: non-public addresses refused (after DNS resolution and on every redirect) unless
the operator allows them; timeouts, size limits, content types. A real server on 127.0.0.1 is the
oracle that the connection would otherwise have been made."""
from __future__ import annotations

import time

import pytest
from browser_http import html, local_server, redirect

from gptoss.tools.browser.fetch import FetchError, Fetcher, is_public

PAGE = ("<html><head><title>Local page</title></head><body><p>Hello from the "
        "<a href='/other'>other page</a>.</p></body></html>")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1", "0.0.0.0", "::",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1", "ff02::1", "240.0.0.1", "192.0.2.1",
    "198.18.0.1"])
def test_non_public_addresses(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "1.1.1.1",
                                     "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert is_public(address)


def test_loopback_refused_by_default_and_allowed_with_the_flag():
    with local_server({"/page": html(PAGE)}) as (base, requests):
        with pytest.raises(FetchError, match="non-public address 127.0.0.1"):
            Fetcher().fetch(f"{base}/page")
        port = base.rsplit(":", 1)[1]
        with pytest.raises(FetchError, match="`localhost`.*non-public"):  # checked after DNS
            Fetcher().fetch(f"http://localhost:{port}/page")
        assert requests == []  # refused before connecting
        fetched = Fetcher(allow_private=True).fetch(f"{base}/page")
        assert fetched.document.title == "Local page"
        assert "【0†other page】" in fetched.document.text
        assert fetched.document.links == {0: f"{base}/other"}
        assert len(requests) == 1 and requests[0]["headers"]["host"] == base[len("http://"):]


def test_redirects_are_checked_too():
    with local_server({"/page": html(PAGE),
                       "/to-other-loopback": redirect("http://127.0.0.2:8080/page"),
                       "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/")}
                      ) as (base, requests):
        fetcher = Fetcher(allow_networks=["127.0.0.1/32"])  # only the test server's address
        assert fetcher.fetch(f"{base}/page").document.title == "Local page"
        with pytest.raises(FetchError, match="127.0.0.2"):
            fetcher.fetch(f"{base}/to-other-loopback")
        with pytest.raises(FetchError, match="169.254.169.254"):
            fetcher.fetch(f"{base}/to-metadata")
        paths = [r["path"] for r in requests]
        assert paths == ["/page", "/to-other-loopback", "/to-metadata"]


def test_relative_redirect_followed_and_redirect_loops_bounded():
    with local_server({"/page": html(PAGE), "/old": redirect("/page"),
                       "/loop": redirect("/loop")}) as (base, requests):
        fetcher = Fetcher(allow_private=True, max_redirects=3)
        fetched = fetcher.fetch(f"{base}/old")
        assert fetched.url == f"{base}/page" and fetched.document.title == "Local page"
        with pytest.raises(FetchError, match="more than 3 redirects"):
            fetcher.fetch(f"{base}/loop")


def test_a_name_resolving_to_any_private_address_is_refused():
    fetcher = Fetcher(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(FetchError, match="10.0.0.7"):
        fetcher.fetch("http://intranet.example/")


def test_size_limit_timeout_type_and_status():
    big = "<p>" + "word " * 5000 + "</p>"

    def slow(handler):
        time.sleep(3)
        return 200, {"Content-Type": "text/plain"}, b"late"

    with local_server({"/big": html(big), "/slow": slow, "/missing": html("gone", 404),
                       "/png": lambda h: (200, {"Content-Type": "image/png"}, b"\x89PNG")}
                      ) as (base, _):
        fetcher = Fetcher(allow_private=True, max_bytes=1000, timeout=0.5)
        text = fetcher.fetch(f"{base}/big").document.text
        assert text.endswith("[page cut at 1000 bytes]") and len(text) < 1100
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            fetcher.fetch(f"{base}/slow")
        assert time.monotonic() - started < 2.5
        with pytest.raises(FetchError, match="HTTP 404"):
            fetcher.fetch(f"{base}/missing")
        with pytest.raises(FetchError, match="image/png"):
            fetcher.fetch(f"{base}/png")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x",
                                 "http:///nohost"])
def test_only_http_urls(url):
    with pytest.raises(FetchError, match="only http and https"):
        Fetcher(allow_private=True).fetch(url)


def test_https_goes_through_tls_to_the_checked_address():
    with local_server({"/page": html(PAGE)}) as (base, _):
        url = base.replace("http://", "https://") + "/page"  # a plain-HTTP server: TLS fails
        with pytest.raises(FetchError, match="non-public"):
            Fetcher().fetch(url)
        with pytest.raises(FetchError, match=r"fetching `https://127.0.0.1:\d+/page` failed"):
            Fetcher(allow_private=True, timeout=2).fetch(url)


@pytest.mark.parametrize("url", ["http://[::1", "http://host:99999/", "http://a b/",
                                 "http://a..b/", "http://x/\r\nInjected: 1"])
def test_malformed_urls(url):
    with pytest.raises(FetchError):
        Fetcher(resolver=lambda host, port: ["93.184.216.34"]).fetch(url)
