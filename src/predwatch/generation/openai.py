"""``OpenAIGenerator``: answers from any OpenAI-compatible server, over httpx.

vLLM (``vllm serve``), SGLang, TGI and ``transformers serve`` all speak this API, so generation
at GPU scale runs on the engine a team already operates. A plain prompt goes to
``/v1/completions``; a chat (``messages``) to ``/v1/chat/completions``, where the server applies
the model's chat template. Generation settings map 1:1: ``max_new_tokens`` -> ``max_tokens``,
greedy (``do_sample`` false) -> ``temperature 0``, ``top_p``, ``stop_strings`` -> ``stop``,
``seed``; ``top_k``, ``repetition_penalty`` and ``min_new_tokens`` are sent (as vLLM's and
SGLang's extra parameters) only when set. Beam search has no equivalent in this API and is
refused rather than silently dropped.

Server errors (5xx, 429), timeouts and a server that is down are retried with backoff. A
request the server refuses (4xx: a prompt too long, say) becomes that sample's error row. When
every attempt at the server failed, ``generate`` raises ``ServerUnavailable`` instead of
returning rows full of errors: a worker then retries the whole job later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from predwatch.errors import ConfigError, DeliveryError
from predwatch.generation.base import (
    ACCELERATOR_BATCH_SIZE,
    error_generation,
    find_stop,
    resolve_params,
)
from predwatch.records import FinishReason, Generation, Sample

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_FINISH = {"stop": FinishReason.EOS, "length": FinishReason.LENGTH}


class ServerUnavailable(DeliveryError):
    """The generation server could not be reached (or kept failing) for every attempt."""

    code = "generation_server_unavailable"


class _Retryable(Exception):
    pass


class OpenAIGenerator:
    """Answers samples through an OpenAI-compatible HTTP server.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000`` (``/v1`` is added when missing).
        model: The model name the server knows (for ``transformers serve``: the local path; for
            vLLM: the served name or a LoRA adapter's ``--lora-modules`` name).
        api_key: Sent as ``Authorization: Bearer`` when given.
        timeout: Seconds per request.
        retries: Attempts per request after the first, for server errors and timeouts.
        backoff: Seconds before the first retry (doubled after each).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else f"{url}/v1"
        self.model = model
        self.retries = max(retries, 0)
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self._served: dict[str, Any] = {}  # what the server said about itself (describe())

    def close(self) -> None:
        self._client.close()

    # --- public API -----------------------------------------------------------------------
    def generate(self, samples: Sequence[Sample], params: Mapping[str, Any]) -> list[Generation]:
        """One ``Generation`` per sample, in order; ``batch_size`` requests run at once.

        Raises:
            ConfigError: a setting this API cannot express (beam search).
            ServerUnavailable: the server failed every attempt for every sample.
        """
        p = resolve_params(params)
        if p["num_beams"] != 1:
            raise ConfigError(
                f"num_beams={p['num_beams']}: beam search has no OpenAI-API equivalent; "
                "use the 'hf' backend or num_beams 1"
            )
        workers = max(1, min(int(p["batch_size"] or ACCELERATOR_BATCH_SIZE), len(samples) or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="predwatch-openai") as pool:
            outcomes = list(pool.map(
                lambda item: self._one(item[1], p, item[1].seed if item[1].seed is not None
                                       else p["seed"] + item[0]), enumerate(samples)
            ))
        unreachable = [err for gen, err in outcomes if err is not None]
        if samples and len(unreachable) == len(samples):
            raise ServerUnavailable(
                f"generation server {self.base_url} failed every request "
                f"({self.retries + 1} attempts each); last error: {unreachable[-1]}"
            )
        if unreachable:
            log.error("predwatch: %d of %d requests to %s failed after retries; first: %s",
                      len(unreachable), len(samples), self.base_url, unreachable[0])
        return [gen for gen, _ in outcomes]

    def describe(self) -> dict[str, Any]:
        """The backend, the server and the model id (and version) it reported."""
        if "version" not in self._served and not self._client.is_closed:
            self._served["version"] = self._server_version()
        return {
            "backend": "openai",
            "server_url": self.base_url,
            "model_name": self.model,
            "server_model": self._served.get("model"),
            "server_version": self._served.get("version"),
            "server_fingerprint": self._served.get("fingerprint"),
        }

    def _server_version(self) -> str | None:
        """``GET /version`` (vLLM, SGLang answer it); None where the server has no such route."""
        try:
            answer = self._client.get(self.base_url.removesuffix("/v1") + "/version", timeout=5)
            version = answer.json().get("version") if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return str(version) if version is not None else None

    # --- one request ------------------------------------------------------------------------
    def _body(self, sample: Sample, p: Mapping[str, Any], seed: int) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": p["max_new_tokens"], "n": 1,
                                "seed": seed}
        if p["do_sample"]:
            body.update(temperature=p["temperature"], top_p=p["top_p"])
            if p["top_k"]:
                body["top_k"] = p["top_k"]
        else:
            body["temperature"] = 0.0
        if p["stop_strings"]:
            body["stop"] = list(p["stop_strings"])
        if p["repetition_penalty"] not in (None, 1.0):
            body["repetition_penalty"] = p["repetition_penalty"]
        if p["min_new_tokens"]:
            body["min_tokens"] = p["min_new_tokens"]
        if sample.messages is not None:
            return "/chat/completions", {**body, "messages": sample.messages}
        return "/completions", {**body, "prompt": sample.prompt}

    def _one(
        self, sample: Sample, p: Mapping[str, Any], seed: int
    ) -> tuple[Generation, str | None]:
        """The sample's answer, and the error when the server could not be used at all."""
        path, body = self._body(sample, p, seed)
        started = time.perf_counter()
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                data = self._post(path, body)
            except _Retryable as exc:
                error = str(exc)
                continue
            except httpx.HTTPStatusError as exc:  # refused for this prompt: its row says why
                detail = exc.response.text[:500]
                return error_generation(
                    f"HTTP {exc.response.status_code} from {self.base_url}{path}: {detail}",
                    latency_ms=(time.perf_counter() - started) * 1000,
                ), None
            return self._generation(data, p, started), None
        latency = (time.perf_counter() - started) * 1000
        return error_generation(f"ServerUnavailable: {error}", latency_ms=latency), error

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'no answer'}") from None
        if response.status_code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
        response.raise_for_status()
        try:
            data = response.json()
            data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"not an OpenAI answer: {response.text[:200]!r}") from None
        self._served.update(model=data.get("model"), fingerprint=data.get("system_fingerprint"))
        return dict(data)

    def _generation(
        self, data: dict[str, Any], p: Mapping[str, Any], started: float
    ) -> Generation:
        choice = data["choices"][0]
        message = choice.get("message")
        text = (message or {}).get("content") if message is not None else choice.get("text")
        text = text or ""
        usage = data.get("usage") or {}
        reason = _FINISH.get(choice.get("finish_reason") or "", FinishReason.LENGTH)
        stops = p["stop_strings"]
        if stops and (choice.get("stop_reason") is not None or find_stop(text, stops) is not None):
            # The server stops at the string and leaves it out (like HFGenerator's cut).
            cut = find_stop(text, stops)
            text = text[:cut] if cut is not None else text
            reason = FinishReason.STOP
        return Generation(
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason=reason,
        )
