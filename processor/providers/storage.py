"""Where generated files go: Supabase Storage when SUPABASE_URL is set, else a local folder that
the service itself serves under /files/, so every URL in a job's result opens in a browser."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import httpx

from processor.providers.errors import Permanent, ProviderError, Transient

FILES_PREFIX = "/files"


class Storage(Protocol):
    name: str
    durable_urls: bool  # False: URLs expire (signed), so they are made when a job is read

    async def put(self, path: str, data: bytes, content_type: str) -> str | None:
        """Stores (overwriting); returns the file's lasting URL, or None when URLs expire."""
        ...

    async def url_for(self, path: str) -> str:
        """A URL for the file that works now (a fresh signed one for a private bucket)."""
        ...

    async def get(self, path: str) -> bytes: ...

    async def delete(self, paths: list[str]) -> list[str]:
        """Deletes files (a missing one counts as deleted); returns the paths that failed."""
        ...


def safe_path(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"invalid storage path {path!r}")
    return "/".join(parts)


class LocalStorage:
    name = "local"
    durable_urls = True

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")

    def _file(self, path: str) -> Path:
        return self.root / safe_path(path)

    async def put(self, path: str, data: bytes, content_type: str) -> str | None:
        await asyncio.to_thread(self._write, self._file(path), data)
        return await self.url_for(path)

    async def url_for(self, path: str) -> str:
        return f"{self.base_url}{FILES_PREFIX}/{safe_path(path)}"

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write aside and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)

    async def get(self, path: str) -> bytes:
        try:
            return await asyncio.to_thread(self._file(path).read_bytes)
        except FileNotFoundError:
            raise Permanent("storage", f"no file at {path!r} in the storage") from None

    async def delete(self, paths: list[str]) -> list[str]:
        def remove() -> list[str]:
            failed = []
            for path in paths:
                try:
                    target = self._file(path)
                    target.unlink(missing_ok=True)
                    folder = target.parent
                    if folder != self.root and not any(folder.iterdir()):
                        folder.rmdir()  # the job's folder, once empty
                except (OSError, ValueError):
                    failed.append(path)
            return failed

        return await asyncio.to_thread(remove)


class SupabaseStorage:
    """Supabase Storage through the `supabase` package (storage3 underneath)."""

    name = "supabase"

    def __init__(
        self,
        url: str,
        key: str,
        bucket: str,
        *,
        public: bool = True,
        signed_url_seconds: int = 7 * 24 * 3600,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._key = key
        self.bucket = bucket
        self.public = public
        self.durable_urls = public  # signed URLs expire: they are made when a job is read
        self.signed_url_seconds = signed_url_seconds
        self._http = client
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _bucket(self) -> Any:
        async with self._lock:
            if self._client is None:
                from supabase import AsyncClientOptions, acreate_client

                # Our own httpx client: its timeouts apply, and tests can watch its requests.
                http = self._http or httpx.AsyncClient(timeout=60)
                options = AsyncClientOptions(httpx_client=http)
                self._client = await acreate_client(self.url, self._key, options)
        return self._client.storage.from_(self.bucket)

    async def put(self, path: str, data: bytes, content_type: str) -> str | None:
        path = safe_path(path)
        bucket = await self._bucket()
        try:
            await bucket.upload(
                path, data, file_options={"content-type": content_type, "upsert": "true"}
            )
            return str(await bucket.get_public_url(path)) if self.public else None
        except Exception as exc:  # storage3 raises its own error types and httpx's
            raise _storage_error(exc) from exc

    async def url_for(self, path: str) -> str:
        path = safe_path(path)
        bucket = await self._bucket()
        try:
            if self.public:
                return str(await bucket.get_public_url(path))
            signed = await bucket.create_signed_url(path, self.signed_url_seconds)
            return str(signed["signedURL"])
        except Exception as exc:
            raise _storage_error(exc) from exc

    async def get(self, path: str) -> bytes:
        bucket = await self._bucket()
        try:
            return bytes(await bucket.download(safe_path(path)))
        except Exception as exc:
            raise _storage_error(exc) from exc

    async def delete(self, paths: list[str]) -> list[str]:
        bucket = await self._bucket()
        failed: list[str] = []
        for start in range(0, len(paths), 100):  # storage3 removes a list per request
            chunk = paths[start : start + 100]
            try:
                await bucket.remove(chunk)
            except Exception:  # storage3 raises its own error types and httpx's
                failed += chunk
        return failed


def _storage_error(exc: Exception) -> ProviderError:
    status = getattr(exc, "status", None) or getattr(exc, "statusCode", None)
    message = getattr(exc, "message", None) or " ".join(str(exc).split()) or type(exc).__name__
    try:
        code = int(status) if status is not None else None
    except (TypeError, ValueError):
        code = None
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return Permanent("supabase storage", f"{code}: {message}")
    return Transient("supabase storage", f"{code or 'error'}: {message}")


async def fresh_urls(value: Any, storage: Storage) -> Any:
    """A job's result or progress with a working URL for every stored file in it: each object
    that names a `storage_path` gets a fresh signed URL when the storage's URLs expire (the
    database keeps the path, never a URL that stops working)."""
    if storage.durable_urls:
        return value
    if isinstance(value, list):
        return [await fresh_urls(v, storage) for v in value]
    if isinstance(value, dict):
        out = {k: await fresh_urls(v, storage) for k, v in value.items()}
        if isinstance(out.get("storage_path"), str):
            out["url"] = await storage.url_for(out["storage_path"])
        return out
    return value
