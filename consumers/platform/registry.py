"""A Confluent-compatible schema registry (Confluent's, Apicurio's ccompat API, Karapace):
the few calls this project makes, over httpx.

Ingest looks schemas up by the id a registry serializer put in front of each message (ids are
immutable, so callers cache them forever); `cie contracts register` registers the contracts
and sets each subject's compatibility. A connection error, a timeout or a 5xx is
``RegistryUnavailable`` (an outage: retried); a 4xx on a lookup is the id's fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from consumers.contracts.registered import SchemaKind
from consumers.errors import RegistryRefused, RegistryUnavailable


@dataclass(frozen=True)
class RegisteredSchema:
    schema_id: int
    kind: SchemaKind
    text: str
    subjects: frozenset[str]  # every subject one of whose versions is this schema


class RegistryClient:
    def __init__(self, url: str, timeout: float) -> None:
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def schema(self, schema_id: int) -> RegisteredSchema | None:
        """The schema with this id, or None if the registry has none."""
        found = await self._get(f"/schemas/ids/{schema_id}")
        if found is None:
            return None
        versions = await self._get(f"/schemas/ids/{schema_id}/versions") or []
        return RegisteredSchema(
            schema_id=schema_id, kind=found.get("schemaType", "AVRO"), text=found["schema"],
            subjects=frozenset(v["subject"] for v in versions))

    async def register(self, subject: str, kind: SchemaKind, text: str) -> int:
        """The id of ``text`` as the subject's latest version (registered if new); raises
        RegistryRefused saying why (an incompatible change)."""
        body: dict[str, Any] = {"schema": text}
        if kind != "AVRO":
            body["schemaType"] = kind
        answer = await self._send("POST", f"/subjects/{subject}/versions", body)
        return int(answer["id"])

    async def set_compatibility(self, subject: str, level: str) -> None:
        await self._send("PUT", f"/config/{subject}", {"compatibility": level})

    async def _get(self, path: str) -> Any:
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry: GET {path}: {exc!r}") from exc
        if response.status_code >= 500:
            raise RegistryUnavailable(
                f"schema registry: GET {path}: {response.status_code} {response.text[:200]}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise RegistryRefused(
                f"schema registry: GET {path}: {response.status_code} {response.text[:200]}")
        return response.json()

    async def _send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.request(
                method, path, json=body,
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry: {method} {path}: {exc!r}") from exc
        if response.status_code >= 500:
            raise RegistryUnavailable(
                f"schema registry: {method} {path}: {response.status_code} "
                f"{response.text[:500]}")
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise RegistryRefused(f"{method} {path}: {response.status_code}: {message}")
        return response.json()
