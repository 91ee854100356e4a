"""Downloads that are verified before anything uses them: size and sha256 checked while streaming to a temporary
file beside the target, mirrors tried in order, a stalled server given up after ``timeout`` seconds without data."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from medattn_networks.errors import ZooError

__all__ = ["download", "read_url", "USER_AGENT"]

logger = logging.getLogger("medattn.zoo")
USER_AGENT = "medattn-zoo/1"


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) and file URLs are the point


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, (socket.timeout, TimeoutError)) or "timed out" in str(e):
        return "timed out (no data)"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    return f"{type(e).__name__}: {e}"


def read_url(url: str, timeout: float = 30.0, limit: int = 16 * 2**20) -> bytes:
    """The body of a small resource (an index), at most ``limit`` bytes."""
    try:
        with _open(url, timeout) as response:
            data = response.read(limit + 1)
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise ZooError(f"cannot read {url}: {_reason(e)}") from None
    if len(data) > limit:
        raise ZooError(f"{url} is larger than {limit} bytes; not a zoo index")
    return data


def _fetch_one(url: str, tmp: Path, sha256: str | None, size: int | None, timeout: float, chunk: int) -> None:
    digest, received, last_log = hashlib.sha256(), 0, time.monotonic()
    with _open(url, timeout) as response, open(tmp, "wb") as out:
        announced = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        if size is not None and announced is not None and announced.isdigit() and int(announced) != size:
            raise ZooError(f"the server announces {announced} bytes, the index says {size}")
        while True:
            block = response.read(chunk)
            if not block:
                break
            received += len(block)
            if size is not None and received > size:
                raise ZooError(f"more than the expected {size} bytes")
            digest.update(block)
            out.write(block)
            if size and time.monotonic() - last_log > 5:
                logger.info(f"  {received / 2**20:.1f} / {size / 2**20:.1f} MiB from {url}")
                last_log = time.monotonic()
    if size is not None and received != size:
        raise ZooError(f"truncated: got {received} of {size} bytes")
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        raise ZooError(f"sha256 {digest.hexdigest()} differs from the expected {sha256.lower()}")


def download(
    urls: Sequence[str],
    target: str | os.PathLike,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 30.0,
    chunk: int = 1 << 20,
) -> str:
    """Fetch the first of ``urls`` that delivers the expected bytes to ``target``; returns that URL.

    The data go to ``.<target>.part-<pid>`` in the target's folder and are renamed into place only when their size
    and sha256 match; a failed attempt leaves nothing behind. ZooError lists every mirror and why it failed.

    Args:
        urls: mirrors, tried in order (http, https or file URLs).
        target: final path of the file.
        sha256: expected hex digest (None: not checked here; the caller must check).
        size: expected size in bytes (None: not checked).
        timeout: seconds a connection or read may wait for data before the mirror is given up.
        chunk: read size.
    """
    target = Path(target)
    if not urls:
        raise ZooError(f"no URL to download {target.name} from")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.part-{os.getpid()}"
    failures = []
    for url in urls:
        logger.info(f"downloading {url}")
        try:
            _fetch_one(url, tmp, sha256, size, timeout, chunk)
        except ZooError as e:
            failures.append(f"{url}: {e}")
        except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {_reason(e)}")
        else:
            os.replace(tmp, target)
            return url
        finally:
            if tmp.exists():
                tmp.unlink()
    raise ZooError(f"could not download {target.name}: " + "; ".join(failures))

