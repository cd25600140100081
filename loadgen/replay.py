"""The Locust replay as the protocol sees it: a headless ``locust`` subprocess and its request rows.

Everything the locustfile needs goes through its environment variables (documented in
loadgen/locustfile.py); Locust's own output, its summary statistics included, goes to a log file in
the run folder. No ``--csv``: its writer rewrites files every second inside the measured window, and
the rows file is the record.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadgen.prompts import PromptSet
from loadgen.runners import ROOT, child_env, die_with_parent, terminate

LOCUSTFILE = ROOT / "loadgen" / "locustfile.py"


@dataclass(frozen=True)
class Recorded:
    """What the replay has recorded: ``rows`` requests, their client latencies, and the first that got
    no HTTP answer at all (timed out, connection lost: the sign of a hung or vanished service; rows
    refused with an HTTP status do not count)."""

    rows: int
    latencies: list[float]
    first_unanswered: dict | None


class LocustReplay:
    def __init__(self, url: str, prompts: PromptSet, *, run_dir: Path, rows_csv: Path, log_path: Path,
                 request_timeout_s: float, max_new_tokens: int | None, max_length: int | None,
                 ignore_eos: bool, stop_delay_s: float = 0.0, mark_url: str = "",
                 stop: tuple[str, ...] = (), stream: bool = False) -> None:
        self.rows_csv = Path(rows_csv)
        self.log_path = Path(log_path)
        argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1",
                "--host", url, "--only-summary", "--loglevel", "INFO"]
        env = {k: v for k, v in child_env().items() if not k.startswith("LOCUST_")}  # no stray Locust settings
        env.update(
            WATTSERVE_PROMPTS=str(prompts.path), WATTSERVE_PROMPTS_SHA256=prompts.sha256,
            WATTSERVE_REQUESTS_CSV=str(self.rows_csv), WATTSERVE_REQUEST_TIMEOUT=str(request_timeout_s),
            WATTSERVE_MAX_NEW_TOKENS=str(max_new_tokens or ""), WATTSERVE_MAX_LENGTH=str(max_length or ""),
            WATTSERVE_IGNORE_EOS="1" if ignore_eos else "0", WATTSERVE_STOP_DELAY=str(stop_delay_s),
            WATTSERVE_MARK_URL=mark_url, WATTSERVE_STOP=json.dumps(list(stop)) if stop else "",
            WATTSERVE_STREAM="1" if stream else "0",
        )
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, cwd=run_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)

    def poll(self) -> int | None:
        return self.proc.poll()

    def read(self) -> Recorded:
        """The rows recorded so far, in one pass over the CSV (outputs may span lines)."""
        count, latencies, unanswered, bad_latency = 0, [], None, False
        try:
            with open(self.rows_csv, newline="", encoding="utf-8") as fh:
                for r in csv.DictReader(fh):
                    count += 1
                    try:
                        if r.get("latency_s"):
                            latencies.append(float(r["latency_s"]))
                    except ValueError:
                        bad_latency = True
                    if unanswered is None and r.get("status") not in (None, "ok") \
                            and r.get("http_status") in ("0", "0.0", ""):
                        unanswered = r
        except (OSError, csv.Error):
            return Recorded(0, [], None)
        return Recorded(count, [] if bad_latency else latencies, unanswered)

    def stop(self, grace: float = 10) -> int | None:
        """SIGTERM (Locust still writes its statistics), SIGKILL after ``grace`` seconds."""
        terminate(self.proc, grace)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

