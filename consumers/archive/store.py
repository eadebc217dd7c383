"""The archive's S3 bucket (`CIE_ARCHIVE_URL`, s3://bucket/prefix), through boto3.

Credentials, region and endpoint come from the standard AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL), read by boto3 itself; they are never
logged. With an endpoint of our own (an S3-compatible server) requests use path-style URLs,
which such servers on an IP address need. boto3 blocks, so calls run in a worker thread."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from consumers.errors import SettingsError

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ends with a slash)

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise SettingsError("CIE_ARCHIVE_URL: must be s3://bucket[/prefix]")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key(self, name: str) -> str:
        return self.prefix + name


class ObjectStore:
    def __init__(self, location: Location) -> None:
        self.location = location
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._client: Any = boto3.client(
            "s3", config=Config(s3={"addressing_style": "path" if endpoint else "auto"},
                                retries={"max_attempts": 5, "mode": "standard"}))

    async def upload(self, path: Path, key: str) -> None:
        await asyncio.to_thread(self._client.upload_file, str(path), self.location.bucket,
                                self.location.key(key))

    async def put_bytes(self, data: bytes, key: str) -> None:
        await asyncio.to_thread(self._client.put_object, Bucket=self.location.bucket,
                                Key=self.location.key(key), Body=data)

    async def download(self, key: str, path: Path) -> str:
        """Fetch ``key`` into ``path``; its SHA-256 (hex), computed from what was read."""
        await asyncio.to_thread(self._client.download_file, self.location.bucket,
                                self.location.key(key), str(path))
        return await asyncio.to_thread(sha256_of, path)

    async def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (relative to the archive's own prefix)."""
        def listing() -> list[str]:
            paginator = self._client.get_paginator("list_objects_v2")
            found: list[str] = []
            for page in paginator.paginate(Bucket=self.location.bucket,
                                           Prefix=self.location.key(prefix)):
                found.extend(item["Key"][len(self.location.prefix):]
                             for item in page.get("Contents", []))
            return found
        return await asyncio.to_thread(listing)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
