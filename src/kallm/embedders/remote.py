"""Embeddings from the upstream's OpenAI-compatible /embeddings endpoint."""

from __future__ import annotations

import httpx
import numpy as np

from kallm.storage.base import Vector

# OpenAI's embedding models read 8,191 tokens; at fewer than 3 characters a token a longer
# text might be cut, so it is matched exactly only.
MAX_CHARACTERS = 3 * 8191


class EmbeddingError(RuntimeError):
    pass


class RemoteEmbedder:
    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str, model: str) -> None:
        self.name = f"openai:{model}"
        self._client = client
        self._url = f"{base_url}/embeddings"
        self._headers = {"authorization": f"Bearer {api_key}"}
        self._model = model

    async def embed(self, text: str) -> Vector | None:
        if len(text) > MAX_CHARACTERS:
            return None
        response = await self._client.post(
            self._url, headers=self._headers, json={"model": self._model, "input": text}
        )
        if response.status_code != 200:
            raise EmbeddingError(f"upstream embeddings answered {response.status_code}")
        try:
            vector = np.asarray(response.json()["data"][0]["embedding"], dtype=np.float32)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise EmbeddingError(f"unreadable embeddings response: {error}") from None
        norm = float(np.linalg.norm(vector))
        return vector / (norm or 1.0)

    async def close(self) -> None:
        pass  # the client belongs to the app
