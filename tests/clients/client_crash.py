"""One request per item with a real client library, no error handling: the crash is the client's own.

``--client`` picks the library: anthropic (messages API), genai (google-genai,
generateContent), requests, httpx (raise_for_status) or aiohttp
(raise_for_status=True). Items are appended to RESULT.json with a checkpoint,
as the evaluation scripts do, so a restart resumes. ``--linger-until FILE``
starts a non-daemon worker thread first that lives until FILE exists: a
crash of the main thread then leaves the process alive after its traceback,
as a thread pool or a prefetcher still running keeps a real script alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("eval")


def ask(client: str, base_url: str, item: str) -> str:
    log.info("asking %s for item=%s", client, item)
    prompt = f"Question {item}: answer A or B"
    if client == "anthropic":
        import anthropic

        api = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)
        return api.messages.create(model="claude-sonnet-4", max_tokens=4, messages=[{"role": "user", "content": prompt}]).content[0].text
    if client == "genai":
        from google import genai
        from google.genai import types

        api = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=base_url))
        return api.models.generate_content(model="gemini-2.5-flash", contents=prompt).text
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
    url = f"{base_url}/chat/completions"
    if client == "requests":
        import requests

        response = requests.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]
    if client == "httpx":
        import httpx

        response = httpx.post(url, json=body, timeout=10)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]
    if client == "aiohttp":
        import aiohttp

        async def post() -> str:
            async with aiohttp.ClientSession(raise_for_status=True) as session:
                async with session.post(url, json=body) as response:
                    return (await response.json())["choices"][0]["message"]["content"]

        return asyncio.run(post())
    raise SystemExit(f"unknown client {client}")


def linger(until: Path) -> None:
    while not until.exists():
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--items", "--limit", dest="items", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--linger-until", type=Path)
    args = parser.parse_args()
    if args.linger_until:
        threading.Thread(target=linger, args=(args.linger_until,), name="prefetch").start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2", "google_genai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    checkpoint = args.output.with_name(f"{args.output.stem}_checkpoint.json")
    per_item = json.loads(checkpoint.read_text())["per_item"] if checkpoint.exists() else []
    done = {r["id"] for r in per_item}
    for i in range(args.items):
        item = f"item-{i:04d}"
        if item in done:
            continue
        answer = ask(args.client, args.base_url, item)
        per_item.append({"id": item, "response": answer, "correct": answer == "A"})
        for path, data in ((args.output, {"config": {"client": args.client}, "per_item": per_item}),
                           (checkpoint, {"completed_ids": [r["id"] for r in per_item], "per_item": per_item})):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        log.info("[%d/%d] %s done", len(per_item), args.items, item)


if __name__ == "__main__":
    main()
