"""Fetching a URL the model asked for, without letting it reach the operator's own network.

A model that reads web pages can be told by a page to open `http://169.254.169.254/` or
`http://localhost:8000/admin`. `Fetcher` therefore resolves the host itself, refuses the request
when any address it resolves to is not a public one (loopback, private, link-local, carrier NAT,
multicast, reserved, unspecified, IPv4-mapped forms of those), and connects to the address it
checked (no second lookup an attacker could answer differently). Every redirect is checked the
same way. `allow_private=True` turns the check off; `allow_networks` allows chosen networks
(say, an intranet wiki). Timeouts bound each socket operation and the whole fetch; bodies
beyond `max_bytes` are cut (and the page says so).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit

from gptoss.tools.browser.markup import Document, to_text

Resolver = Callable[[str, int], list[str]]
_TEXT_TYPES = {"text/html": "html", "application/xhtml+xml": "html", "text/markdown": "markdown",
               "text/plain": "text", "application/json": "text", "text/csv": "text"}


class FetchError(RuntimeError):
    """A URL that could not or may not be fetched; the message is shown to the model."""


@dataclass
class Fetched:
    url: str  # after redirects
    document: Document


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host `{host}`: {exc.strerror}") from None
    except (UnicodeError, ValueError) as exc:  # e.g. an empty label: "a..b"
        raise FetchError(f"cannot resolve host `{host}`: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to one checked address while keeping the URL's host for the Host header."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host, port, address, timeout, context):
        super().__init__(host, port, address, timeout)
        self.context = context

    def connect(self):
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


class Fetcher:
    def __init__(self, *, allow_private: bool = False, allow_networks: Iterable[str] = (),
                 timeout: float = 10.0, max_bytes: int = 2_000_000, max_redirects: int = 5,
                 resolver: Resolver = system_resolver, user_agent: str = "gptoss-browser/1"):
        self.allow_private = allow_private
        self.allow_networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks]
        self.timeout, self.max_bytes, self.max_redirects = timeout, max_bytes, max_redirects
        self.resolver, self.user_agent = resolver, user_agent
        self._tls = ssl.create_default_context()

    def fetch(self, url: str) -> Fetched:
        """GET `url` (http or https), following checked redirects; raises FetchError."""
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_redirects + 1):
            if time.monotonic() > deadline:
                raise FetchError(f"fetching `{url}` timed out")
            status, headers, body = self._request(url, deadline)
            location = headers.get("location")
            if status in (301, 302, 303, 307, 308) and location:
                try:
                    url = urljoin(url, location)
                except ValueError:
                    raise FetchError(f"`{url}` redirects to a bad URL: {location!r}") from None
                continue
            if status != 200:
                raise FetchError(f"`{url}` answered HTTP {status}")
            return Fetched(url=url, document=self._document(url, headers, body))
        raise FetchError(f"more than {self.max_redirects} redirects from `{url}`")

    def allowed(self, address: str) -> bool:
        if self.allow_private:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return is_public(address) or any(ip in net for net in self.allow_networks)

    def _address(self, host: str, port: int) -> str:
        addresses = self.resolver(host, port)
        refused = [a for a in addresses if not self.allowed(a)]
        if refused:
            raise FetchError(f"refused to fetch from `{host}`: it resolves to the non-public "
                             f"address {refused[0]} (the operator has not allowed it)")
        if not addresses:
            raise FetchError(f"cannot resolve host `{host}`")
        return addresses[0]

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise FetchError(f"cannot fetch `{url}`: {exc}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise FetchError(f"cannot fetch `{url}`: only http and https URLs can be opened")
        port = port or (443 if parts.scheme == "https" else 80)
        address = self._address(host, port)
        if parts.scheme == "https":
            conn = _PinnedHTTPS(host, port, address, self.timeout, self._tls)
        else:
            conn = _PinnedHTTP(host, port, address, self.timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return conn, path

    def _request(self, url: str, deadline: float) -> tuple[int, dict[str, str], bytes]:
        conn = None
        try:
            conn, path = self._connection(url)
            conn.request("GET", path, headers={"User-Agent": self.user_agent,
                                               "Accept": "text/html, text/*;q=0.9"})
            response = conn.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            body = self._read(response, deadline) if response.status == 200 else b""
            return response.status, headers, body
        except (OSError, http.client.HTTPException) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else \
                str(exc) or type(exc).__name__
            raise FetchError(f"fetching `{url}` failed: {reason}") from None
        finally:
            if conn is not None:
                conn.close()

    def _read(self, response, deadline: float) -> bytes:
        chunks, size = [], 0
        while size <= self.max_bytes:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = response.read(min(65536, self.max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _document(self, url: str, headers: dict[str, str], body: bytes) -> Document:
        media, _, params = headers.get("content-type", "text/html").partition(";")
        kind = _TEXT_TYPES.get(media.strip().lower())
        if kind is None:
            raise FetchError(f"`{url}` is {media.strip()}, which the browser cannot show")
        charset = params.partition("charset=")[2].strip().strip('"') or "utf-8"
        truncated = len(body) > self.max_bytes
        try:
            text = body[:self.max_bytes].decode(charset, errors="replace")
        except LookupError:
            text = body[:self.max_bytes].decode("utf-8", errors="replace")
        document = to_text(text, kind, url)
        if truncated:
            document.text += f"\n\n[page cut at {self.max_bytes} bytes]"
        return document
