"""Locust replay: one user sends every prompt of a set once, in order, and records every request.

    locust -f loadgen/locustfile.py --host http://127.0.0.1:8000              # web UI, 1 user
    locust -f loadgen/locustfile.py --headless -u 1 -r 1 --host URL --csv out/locust --only-summary

The workload is the study's closed loop: one user (``fixed_count = 1``), no think time
(``constant(0)``), each prompt popped from a queue and POSTed to ``/v1/generate`` once. When the
queue is empty the runner is stopped after ``--stop-delay`` seconds (Locust 2.47 has no
``--iterations``). The delay is longer than Locust's CSV interval (its ``--csv`` files are rewritten
every second and not at exit), so Locust's own statistics include the last request; headless
Locust then exits, the web UI stays open (press start again to replay the set again).

``--stream`` replays with streamed completions instead (``stream: true`` on ``/v1/completions``, with
``stream_options.include_usage``): the same prompts and limits (equal work), each stream read event by
event as it arrives, so ``ttft_s`` is the first token chunk's arrival and ``decode_s`` runs to the chunk
with the finish reason, as a client sees them (non-streamed, both are the service's own times). A
stream carries no token ids: ``token_ids`` stays empty and output agreement is left to non-streamed runs.

Every request — answered, refused, timed out — is appended as one row to ``--requests-csv`` and
flushed at once, so a crash loses nothing already answered. Columns are those of the run folder's
``requests.csv`` (docs/run-folder.md); ``start``/``end`` are client epoch seconds (``time.time()``).

Options (each also an environment variable, which is how ``loadgen.protocol`` sets them):
    --prompts          WATTSERVE_PROMPTS          set name (paper) or JSONL path   [paper]
    --prompts-sha256   WATTSERVE_PROMPTS_SHA256   refuse the set unless it has this hash
    --requests-csv     WATTSERVE_REQUESTS_CSV     per-request CSV (appended; unset = none)
    --request-timeout  WATTSERVE_REQUEST_TIMEOUT  seconds per request                [300]
    --max-new-tokens   WATTSERVE_MAX_NEW_TOKENS   generation limit (new tokens)
    --max-length       WATTSERVE_MAX_LENGTH       limit counting the prompt  [128 if neither is set]
    --ignore-eos       WATTSERVE_IGNORE_EOS       1 = generate to the limit           [0]
    --stop             WATTSERVE_STOP             stop strings, a JSON list (up to 4)  [none]
    --stop-delay       WATTSERVE_STOP_DELAY       seconds between the last answer and the stop [1.25]
    --stream           WATTSERVE_STREAM           1 = SSE on /v1/completions (needs --max-new-tokens) [0]
    --mark-url         WATTSERVE_MARK_URL         the bench's edge marks (loadgen/marks.py; unset = none)

With ``--mark-url`` the replay calls ``<url>/inference_start`` just before it sends the first request
and ``<url>/inference_end`` just after the last answer: the bench scrapes every sensor at the two edges
of the requests' span, the measured inference window. Nothing else is added to the request path.
The bench runs Locust without ``--csv`` (its statistics are in ``--only-summary``'s table in the log;
the rows file is the record) and with no stop delay, so Locust's stop lies outside every window.
"""

from __future__ import annotations

import csv
import json
import logging
import urllib.request
import sys
import time
from collections import deque
from pathlib import Path

import gevent
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser
from locust.stats import CSV_STATS_INTERVAL_SEC

try:
    import loadgen  # noqa: F401
except ImportError:  # run by hand without PYTHONPATH: Locust only puts this file's folder on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadgen.prompts import PromptError, load_prompts  # noqa: E402
from loadgen.runfolder import REQUEST_COLUMNS, TIMING_COLUMNS  # noqa: E402
from analysis.quantities import itl_mean_s  # noqa: E402

COLUMNS = (*REQUEST_COLUMNS, *TIMING_COLUMNS)  # + time to first token, decode time, mean inter-token latency

log = logging.getLogger("wattserve.loadgen")
DEFAULT_MAX_LENGTH = 128  # the study's limit (prompt included), also the service's default
DEFAULT_STOP_DELAY = CSV_STATS_INTERVAL_SEC + 0.25  # one more CSV write after the last request


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--prompts", env_var="WATTSERVE_PROMPTS", default="paper",
                        help="prompt set: a name (paper) or a JSONL file")
    parser.add_argument("--prompts-sha256", env_var="WATTSERVE_PROMPTS_SHA256", default="",
                        help="refuse the prompt set unless its sha256 is this")
    parser.add_argument("--requests-csv", env_var="WATTSERVE_REQUESTS_CSV", default="",
                        help="append one row per request to this CSV")
    parser.add_argument("--request-timeout", env_var="WATTSERVE_REQUEST_TIMEOUT", default="300",
                        help="seconds per request")
    parser.add_argument("--max-new-tokens", env_var="WATTSERVE_MAX_NEW_TOKENS", default="",
                        help="new tokens at most")
    parser.add_argument("--max-length", env_var="WATTSERVE_MAX_LENGTH", default="",
                        help=f"prompt + new tokens at most (default {DEFAULT_MAX_LENGTH})")
    parser.add_argument("--ignore-eos", env_var="WATTSERVE_IGNORE_EOS", default="0",
                        help="1: generate up to the limit even past end-of-sequence")
    parser.add_argument("--stop", env_var="WATTSERVE_STOP", default="",
                        help='stop strings sent with every request, a JSON list, e.g. ["\\ndef", "\\nif"]')
    parser.add_argument("--stop-delay", env_var="WATTSERVE_STOP_DELAY", default="",
                        help="seconds between the last answer and stopping the runner")
    parser.add_argument("--stream", env_var="WATTSERVE_STREAM", default="0",
                        help="1: replay with streamed completions (SSE on /v1/completions) and time the first "
                             "and last token as this client sees them (needs --max-new-tokens)")
    parser.add_argument("--mark-url", env_var="WATTSERVE_MARK_URL", default="",
                        help="bench edge marks: GET <url>/inference_start before the first request, "
                             "<url>/inference_end after the last answer")


def parse_stop(text: str) -> list[str]:
    """``--stop``: a JSON list of strings (stop strings hold newlines: JSON keeps them whole in an
    environment variable); empty = none."""
    if not str(text or "").strip():
        return []
    try:
        stop = json.loads(text)
    except ValueError:
        raise ValueError(f"--stop must be a JSON list of strings, got {text!r}") from None
    if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
        raise ValueError(f"--stop must be a JSON list of non-empty strings, got {text!r}")
    return stop


class Replay:
    """The state of one replay: the queue, the request body's limits and the CSV recorder."""

    def __init__(self, options) -> None:
        self.prompts = load_prompts(options.prompts, expected_sha256=options.prompts_sha256 or None)
        self.timeout = float(options.request_timeout)
        self.stop_delay = float(options.stop_delay) if str(options.stop_delay).strip() else DEFAULT_STOP_DELAY
        max_new = int(options.max_new_tokens) if str(options.max_new_tokens).strip() else None
        max_len = int(options.max_length) if str(options.max_length).strip() else None
        if max_new is not None and max_len is not None:
            raise ValueError("give max-new-tokens or max-length, not both")
        self.limits = {"max_new_tokens": max_new} if max_new else {"max_length": max_len or DEFAULT_MAX_LENGTH}
        if str(options.ignore_eos).strip().lower() in ("1", "true", "yes"):
            self.limits["ignore_eos"] = True
        stop = parse_stop(getattr(options, "stop", ""))
        if stop:
            self.limits["stop"] = stop
        self.stream = str(getattr(options, "stream", "0")).strip().lower() in ("1", "true", "yes")
        if self.stream and not max_new:
            raise ValueError("--stream needs --max-new-tokens: OpenAI's /v1/completions limits new tokens only "
                             "(max_tokens), the study's max_length counts the prompt")
        # the same limits in /v1/completions' names (max_tokens for max_new_tokens)
        self.stream_limits = {("max_tokens" if k == "max_new_tokens" else k): v for k, v in self.limits.items()}
        self.csv_path = Path(options.requests_csv) if options.requests_csv else None
        self.mark_url = str(getattr(options, "mark_url", "") or "").rstrip("/")
        self.queue: deque = deque()
        self.stopping = False
        self.sent = 0
        self._fh = self._writer = None

    def reset(self) -> None:
        self.queue = deque(self.prompts.items)
        self.stopping = False
        self.sent = 0

    def mark(self, name: str) -> None:
        """Tell the bench an edge of the requests' span is here (it scrapes its sensors before answering);
        a bench that does not answer costs the edge its scrape, never the run."""
        if not self.mark_url:
            return
        try:
            with urllib.request.urlopen(f"{self.mark_url}/{name}", timeout=10) as resp:
                resp.read()
        except Exception as exc:  # noqa: BLE001 - the energy edge is then interpolated
            log.warning("loadgen: mark %s not taken: %s", name, exc)

    def record(self, row: dict) -> None:
        """Append one row and flush it (a crash loses nothing answered); the file stays open."""
        if self.csv_path is None:
            return
        if self._writer is None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self._fh = open(self.csv_path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS)
            if fresh:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._fh.flush()


replay: Replay | None = None


@events.init.add_listener
def _init(environment, **_) -> None:
    global replay
    try:
        replay = Replay(environment.parsed_options)
    except (PromptError, ValueError) as exc:
        log.error("loadgen: %s", exc)
        raise SystemExit(2) from None  # an event listener's Exception would only be logged
    # FastHttpUser (geventhttpclient): half the CPU of the requests-based HttpUser (164 requests to
    # onnx-cpu/tiny: 0.21 s against 0.45 s), and Locust's CPU lands in the measured window. The
    # request timeout is the user's network timeout.
    PromptReplayUser.network_timeout = PromptReplayUser.connection_timeout = replay.timeout
    log.info("loadgen: %d prompts from %s (sha256 %s), limits %s, timeout %ss, rows -> %s",
             replay.prompts.count, replay.prompts.path, replay.prompts.sha256, replay.limits,
             replay.timeout, replay.csv_path or "(not recorded)")


@events.test_start.add_listener
def _test_start(environment, **_) -> None:
    replay.reset()


def _stop_runner(environment) -> None:
    """Headless: quit (Locust writes its CSV and exits). Web UI: stop, and keep the UI up."""
    if environment.runner is None:
        return
    if getattr(environment.parsed_options, "headless", False):
        environment.runner.quit()
    else:
        environment.runner.stop()


class PromptReplayUser(FastHttpUser):
    """The one client: pops the next prompt, sends it, validates and records the answer."""

    fixed_count = 1
    wait_time = constant(0)

    @task
    def generate(self) -> None:
        if not replay.queue:
            if not replay.stopping:
                replay.stopping = True
                gevent.spawn_later(replay.stop_delay, _stop_runner, self.environment)
            raise StopUser()
        prompt = replay.queue.popleft()
        if replay.sent == 0:
            replay.mark("inference_start")
        replay.sent += 1
        row = {"index": prompt.index, "task_id": prompt.task_id, "http_status": 0, "status": "failed",
               "server_latency_s": "", "prompt_tokens": "", "completion_tokens": "", "output": "",
               "token_ids": "", "error": "", "ttft_s": "", "decode_s": "", "itl_mean_s": ""}
        start = time.time()
        try:
            if replay.stream:
                end = self.streamed(prompt.text, row)
            else:
                with self.client.post("/v1/generate", json={"prompt": prompt.text, **replay.limits},
                                      name="/v1/generate", catch_response=True) as resp:
                    end = time.time()
                    row["http_status"] = resp.status_code or 0
                    error = self.check(resp, row)
                    if error:
                        resp.failure(error)
                        row["error"] = error
                    else:
                        row["status"] = "ok"
        except Exception as exc:  # anything unforeseen is still one failed row, never a lost one
            end = time.time()
            row["error"] = f"{type(exc).__name__}: {exc}"
        row.update(start=start, end=end, latency_s=end - start)
        first, decode = row.pop("first_token_at", None), row.pop("decode", None)
        if isinstance(first, (int, float)) and start <= first <= end:  # one clock: the host's
            row["ttft_s"] = first - start
        if isinstance(decode, (int, float)) and decode >= 0:  # the service's first to last token
            row["decode_s"] = decode
            itl = itl_mean_s(decode, row["completion_tokens"])
            row["itl_mean_s"] = "" if itl is None else itl
        replay.record(row)
        if not replay.queue:
            replay.mark("inference_end")

    def streamed(self, text: str, row: dict) -> float:
        """One streamed completion (SSE on /v1/completions), read event by event as it arrives: the first
        token chunk's arrival is the client's first token, the chunk with the finish reason the last one;
        the usage chunk gives the token counts. Returns the time the stream ended (``data: [DONE]``)."""
        body = {"prompt": text, **replay.stream_limits, "stream": True, "stream_options": {"include_usage": True}}
        with self.client.post("/v1/completions", json=body, name="/v1/completions (stream)", stream=True,
                              catch_response=True) as resp:
            row["http_status"] = resp.status_code or 0
            error = self.check_status(resp)
            first = last = None
            pieces, usage, done = [], None, False
            while error is None:
                line = resp._response.readline(b"\n")  # Locust's iter_content waits for whole 1 KiB blocks
                if not line:
                    break
                if not line.startswith(b"data:"):
                    continue  # the blank line between events, comments
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    error = f"malformed event: {data[:200]!r}"
                    break
                if "error" in chunk:
                    error = f"stream error: {chunk['error']}"
                    break
                now = time.time()
                for choice in chunk.get("choices") or []:
                    if first is None:
                        first = now
                    pieces.append(choice.get("text") or "")
                    if choice.get("finish_reason") is not None:
                        last = now
                usage = chunk.get("usage") or usage
            end = time.time()
            if error is None and not done:
                error = "the stream ended without data: [DONE]"
            elif error is None and not usage:
                error = "the stream carried no usage chunk (stream_options.include_usage)"
            if error:
                resp.failure(error)
                row["error"] = error
                return end
            row.update(status="ok", prompt_tokens=int(usage["prompt_tokens"]),
                       completion_tokens=int(usage["completion_tokens"]), output="".join(pieces), first_token_at=first,
                       decode=None if first is None or last is None else last - first)
        return end

    @staticmethod
    def check_status(resp) -> str | None:
        """The failure of a response that did not even start as a 200, if it is one."""
        error = getattr(resp, "error", None)
        error = getattr(error, "original", None) or error  # geventhttpclient's RetriesExceeded wraps the cause
        if error is not None and not resp.status_code:
            return f"{type(error).__name__}: {error}"
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {resp.text[:500]}"
        return None

    @staticmethod
    def check(resp, row: dict) -> str | None:
        """Validate one answer and copy it into ``row``; return the failure message, if any."""
        error = PromptReplayUser.check_status(resp)
        if error:
            return error
        try:
            body = resp.json()
            ids = body["token_ids"]
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                return "token_ids is not a list of integers"
            if body["completion_tokens"] != len(ids):
                return f"completion_tokens={body['completion_tokens']} but {len(ids)} token_ids"
            row.update(server_latency_s=float(body["latency_s"]), prompt_tokens=int(body["prompt_tokens"]),
                       completion_tokens=int(body["completion_tokens"]), output=str(body["text"]),
                       token_ids=" ".join(map(str, ids)), first_token_at=body.get("first_token_at"),
                       decode=body.get("decode_s"))
        except (ValueError, KeyError, TypeError) as exc:
            return f"malformed response ({type(exc).__name__}: {exc}): {resp.text[:200]}"
        return None

