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
from botocore.exceptions import ClientError

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

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class ObjectStore:
    def __init__(self, location: Location) -> None:
        self.location = location
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self._client: Any = boto3.client(
            "s3", config=Config(s3={"addressing_style": "path" if endpoint else "auto"},
                                retries={"max_attempts": 5, "mode": "standard"}))

    async def create(self, path: Path, key: str) -> bool:
        """Upload ``path`` as a new object ``key``, never over an existing one: a conditional
        put (If-None-Match: *), which servers without it take as a plain put (the archive's
        names are unique anyway). False when ``key`` already existed."""
        def put() -> bool:
            with path.open("rb") as body:
                return self._put_new(key, body)
        return await asyncio.to_thread(put)

    async def create_bytes(self, data: bytes, key: str) -> bool:
        """As ``create``, from memory."""
        return await asyncio.to_thread(self._put_new, key, data)

    def _put_new(self, key: str, body: Any) -> bool:
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=self.location.key(key),
                                    Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    async def versioning(self) -> str:
        """The bucket's versioning: Enabled, Suspended, Off (never turned on), or Unknown
        (credentials that may not read it: the archive needs only to list, get and put)."""
        try:
            answer = await asyncio.to_thread(self._client.get_bucket_versioning,
                                             Bucket=self.location.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403"):
                return "Unknown"
            raise
        return str(answer.get("Status") or "Off")

    async def download(self, key: str, path: Path) -> str:
        """Fetch ``key`` into ``path``; its SHA-256 (hex), computed from what was read."""
        await asyncio.to_thread(self._client.download_file, self.location.bucket,
                                self.location.key(key), str(path))
        return await asyncio.to_thread(sha256_of, path)

    async def read(self, key: str) -> bytes:
        """A small object (a manifest), whole."""
        answer = await asyncio.to_thread(self._client.get_object, Bucket=self.location.bucket,
                                         Key=self.location.key(key))
        return bytes(await asyncio.to_thread(answer["Body"].read))

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
