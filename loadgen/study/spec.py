"""The study spec (YAML): every key checked, a typo is an error that names the closest key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loadgen.runfolder import slug

class StudyError(ValueError):
    """Bad input or a study that cannot start; nothing was started."""




class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sensors(Strict):
    """``protocol.sensors`` as a mapping (loadgen.sampling.SensorChoice; ``true`` = all auto)."""

    cpu: Literal["auto", "rapl", "energibridge", "estimate"] = "auto"
    gpu: str = "auto"
    wall: str = "auto"
    tdp_watts: float | None = Field(None, gt=0, allow_inf_nan=False)
    idle_watts: float | None = Field(None, ge=0, allow_inf_nan=False)
    energibridge_bin: str = "energibridge"
    max_device_watts: float = Field(10_000.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _valid(self):
        from loadgen.sampling import SensorError

        try:
            self.choice()
        except SensorError as exc:
            raise ValueError(str(exc)) from None
        if urlsplit(self.wall).password:
            raise ValueError("wall: put the NETIO's credentials in NETIO_USER / NETIO_PASSWORD, not in the spec")
        return self

    def choice(self):
        from loadgen.sampling import SensorChoice

        return SensorChoice.parse(self.cpu, self.gpu, self.wall, self.tdp_watts, self.idle_watts,
                                  self.energibridge_bin, self.max_device_watts)


class Protocol(Strict):
    warmup_s: float = Field(5.0, ge=0, allow_inf_nan=False)
    cooldown_s: float = Field(5.0, ge=0, allow_inf_nan=False)
    rest_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    prompts: str = "paper"
    max_new_tokens: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=1)
    ignore_eos: bool = False
    # replay with streamed completions (SSE on /v1/completions): TTFT and ITL as a client sees them; needs
    # max_new_tokens (OpenAI's max_tokens counts new tokens only)
    stream: bool = False
    request_timeout_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    ready_timeout_s: float = Field(600.0, gt=0, allow_inf_nan=False)
    threads: int | None = Field(None, ge=1)
    sample_interval_s: float = Field(0.5, ge=0.05, le=10)
    sensors: bool | Sensors = True  # true/false as before (a spec's digest unchanged), or the choice
    # prompts: humaneval - the sandbox its completions are scored in after each run (scoring/; not part of
    # what identifies a study: where completions are scored changes no measured number)
    score_isolation: Literal["auto", "docker", "namespace", "unsafe-local"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _humaneval_limit(cls, data):
        """``prompts: humaneval`` generates ``max_new_tokens`` (192 unless given), never ``max_length``:
        its prompts are whole problems (loadgen/humaneval.py)."""
        if isinstance(data, dict) and data.get("prompts") == "humaneval":
            from loadgen.humaneval import DEFAULT_MAX_NEW_TOKENS

            if data.get("max_length") is not None:
                raise ValueError("the humaneval workload takes max_new_tokens (prompts are whole problems), "
                                 "not max_length")
            if data.get("max_new_tokens") is None:
                data = {**data, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
        return data

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_new_tokens is not None and self.max_length is not None:
            raise ValueError("give max_new_tokens or max_length, not both")
        if self.stream and self.max_new_tokens is None:
            raise ValueError("stream: true needs max_new_tokens: OpenAI's /v1/completions limits new tokens only "
                             "(max_tokens), while the study's max_length counts the prompt")
        return self


class SlurmOptions(Strict):
    """``slurm:`` - how ``--executor slurm`` submits each cell attempt (ignored by the local executor;
    not part of what identifies a study: where runs execute does not change the protocol)."""

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = Field(None, pattern=r"^[0-9:-]+$")  # sbatch --time: minutes, H:MM:SS, D-HH...
    gpus_per_job: int = Field(1, ge=1)  # for -cuda configurations only; CPU cells ask for none
    sbatch_options: list[str] = []  # extra sbatch arguments, e.g. [--constraint=a100, --qos=bench]
    max_jobs: int = Field(0, ge=0)  # at most this many submitted at once (0: no limit)
    poll_s: float = Field(2.0, gt=0, le=60, allow_inf_nan=False)  # how often squeue is asked
    # where a job's exporters listen: every address, so a Prometheus elsewhere scrapes them (file_sd,
    # loadgen/study/targets.py); 127.0.0.1 keeps them to the node (then nothing scrapes them live)
    exporters_listen: str = Field("0.0.0.0", pattern=r"^[0-9a-fA-F.:]+$")


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    models: list[str] = Field(min_length=1)
    configs: list[str] = Field(min_length=1)
    # every configuration at each precision (a config may also carry its own: onnx-cpu@int8);
    # services/inference/variants.py checks each pair against its engine
    precisions: list[str] = Field(["fp32"], min_length=1)
    repetitions: int = Field(ge=1)
    seed: int | None = None
    retries: int = Field(2, ge=0, le=20)
    runner: Literal["auto", "native", "docker"] = "auto"
    results: str = "results"
    revision: str | None = None
    trust_remote_code: bool = False
    protocol: Protocol = Protocol()
    slurm: SlurmOptions | None = None

    @field_validator("configs", "models", "precisions", mode="before")
    @classmethod
    def _listify(cls, v):
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else v

    @field_validator("models", "configs", "precisions")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"an entry is listed twice: {', '.join(sorted({x for x in v if v.count(x) > 1}))}")
        return v


def _problem(err: dict) -> str:
    if err["loc"][:2] == ("protocol", "sensors") and len(err["loc"]) > 2:  # bool | Sensors: say it plainly
        branch = str(err["loc"][2])
        if branch == "bool":
            return ""  # the mapping branch's errors say what is wrong
        if "Sensors" in branch:
            err = {**err, "loc": ("protocol", "sensors", *err["loc"][3:])}
            if err["type"] in ("model_type", "dict_type"):
                return f"protocol.sensors: true, false or a mapping of cpu, gpu, wall, ... (got {err.get('input')!r})"
            if err["type"] == "value_error":
                return f"protocol.sensors: {err['msg'].removeprefix('Value error, ')}"
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        model = Sensors if err["loc"][:2] == ("protocol", "sensors") else Protocol if err["loc"][:1] == ("protocol",) \
            else SlurmOptions if err["loc"][:1] == ("slurm",) else StudySpec
        known = list(model.model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        return f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}")
    if err["type"] == "missing":
        return f"{where}: required"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def load_spec(path: Path) -> StudySpec:
    """Parse and check a spec file; :class:`StudyError` lists every problem at once."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))
        raise StudyError(f"no spec file {path}" + (f"; shipped: studies/{', studies/'.join(shipped)}" if shipped else ""))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study spec is a mapping of keys (name, models, configs, repetitions, ...)")
    data.setdefault("name", slug(path.stem))
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        problems = [p for p in (_problem(e) for e in exc.errors()) if p]
        raise StudyError(f"{path}: " + "; ".join(problems)) from None
