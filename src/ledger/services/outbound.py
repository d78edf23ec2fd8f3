"""Outbound requests to agencies' webhook endpoints, safe against server-side request forgery.

A URL is `https` (plain `http` only to a loopback address, and only with
`LEDGER_WEBHOOK_ALLOW_HTTP_LOOPBACK`, for development). Every address its host resolves to
must be on the public internet: private, loopback, link-local, shared, reserved and multicast
addresses are refused unless a network in `LEDGER_WEBHOOK_ALLOWED_NETWORKS` holds them. The
check runs at registration and again at every delivery (DNS can change), and the request goes
to the address that was checked, never to a second lookup, so a name that resolves one way for
the check and another for the connection (DNS rebinding) reaches nothing unchecked. No
redirects are followed; connect and read time out; at most `MAX_BODY` bytes of an answer are
read.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from ledger import __version__

MAX_BODY = 65_536  # bytes of an endpoint's answer read, at most
MAX_URL = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class Refused(ValueError):
    """The URL may not be called: the reason, in words without anything personal."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        parts = urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        return urlunsplit(
            (parts.scheme, f"{netloc}:{self.port}", parts.path or "/", parts.query, "")
        )

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


@dataclass(frozen=True)
class OutboundPolicy:
    allow_http_loopback: bool = False
    allowed_networks: Sequence[str] = ()
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    resolve: Resolver = field(default=system_resolver, compare=False)

    def _allowed(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in ipaddress.ip_network(net, strict=False) for net in self.allowed_networks):
            return True
        if self.allow_http_loopback and ip.is_loopback:
            return True
        return ip.is_global and not ip.is_multicast

    def check(self, url: str) -> Target:
        """The URL's target if it may be called now; Refused with the reason otherwise."""
        if not isinstance(url, str) or len(url) > MAX_URL:
            raise Refused(f"the URL must be a string of at most {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise Refused("the URL is not valid") from None
        if parts.scheme not in ("https", "http"):
            raise Refused("the URL must be https")
        if parts.scheme == "http" and not self.allow_http_loopback:
            raise Refused("the URL must be https (plain http is for loopback in development)")
        if parts.username is not None or parts.password is not None:
            raise Refused("the URL may not carry a user name or password")
        if parts.fragment:
            raise Refused("the URL may not have a fragment")
        host = parts.hostname
        if not host:
            raise Refused("the URL has no host")
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = self.resolve(host, port)
        except (OSError, UnicodeError):
            raise Refused("the URL's host does not resolve") from None
        if not addresses:
            raise Refused("the URL's host does not resolve")
        ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
        if not all(self._allowed(ip) for ip in ips):
            raise Refused(
                "the URL's host resolves to a private, loopback, link-local or reserved"
                " address, which webhooks may not reach"
            )
        if parts.scheme == "http" and not all(_loopback(ip) for ip in ips):
            raise Refused("plain http is allowed to a loopback address only")
        return Target(url, parts.scheme, host, port, str(ips[0]))

    def client(self) -> httpx.Client:
        """A client for one endpoint (its connections are to that endpoint only)."""
        timeout = httpx.Timeout(
            self.read_timeout_s, connect=self.connect_timeout_s, pool=self.connect_timeout_s
        )
        return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)


def _loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def post(client: httpx.Client, target: Target, body: bytes, headers: dict[str, str]) -> str | None:
    """POST `body` to the checked target; None when it answered 2xx, else why not (a
    redirect counts as a failure: it is never followed)."""
    sent = {
        **headers,
        "host": target.host_header,
        "content-type": "application/json",
        "user-agent": f"survivor-case-ledger/{__version__} (webhooks)",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with client.stream(
            "POST", target.pinned_url, content=body, headers=sent, extensions=extensions
        ) as answer:
            read = 0
            for chunk in answer.iter_raw():
                read += len(chunk)
                if read >= MAX_BODY:
                    break  # the rest is not read: the connection is closed with the stream
            status = answer.status_code
    except httpx.TimeoutException:
        return "timed out"
    except httpx.HTTPError:
        return "could not connect"
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"answered {status}: redirects are not followed"
    return f"answered {status}"
