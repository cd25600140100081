"""What analysis knows without reading any run: the study's models, size categories, configurations
and the names and units of the dependent variables.

Kept here (not imported from ``services``) so that analysis runs from a results folder or a table
alone, with none of the serving stack installed.
"""

from __future__ import annotations

import re


# The study's twelve models: registry name -> (Hugging Face id, parameters, size category).
# Size categories: 1 = < 1B parameters, 2 = 1B to < 2B, 3 = >= 2B (same as services/models/registry.yaml).
MODELS: dict[str, tuple[str, int, int]] = {
    "codeparrot-small": ("codeparrot/codeparrot-small", 110_000_000, 1),
    "tiny-starcoder-py": ("bigcode/tiny_starcoder_py", 164_000_000, 1),
    "pythia-410m": ("EleutherAI/pythia-410m", 405_000_000, 1),
    "bloomz-560m": ("bigscience/bloomz-560m", 559_000_000, 1),
    "starcoderbase-1b": ("bigcode/starcoderbase-1b", 1_140_000_000, 2),
    "bloomz-1b1": ("bigscience/bloomz-1b1", 1_070_000_000, 2),
    "tinyllama": ("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", 1_100_000_000, 2),
    "pythia-1.4b": ("EleutherAI/pythia-1.4b", 1_410_000_000, 2),
    "codegemma-2b": ("google/codegemma-2b", 2_510_000_000, 3),
    "phi2": ("microsoft/phi-2", 2_780_000_000, 3),
    "stablecode-instruct-alpha-3b": ("stabilityai/stablecode-instruct-alpha-3b", 2_800_000_000, 3),
    "stablecode-completion-alpha-3b-4k": ("stabilityai/stablecode-completion-alpha-3b-4k", 2_800_000_000, 3),
}

# Other spellings seen in the study's paper and package.
ALIASES = {
    "stablecode-3b-completion": "stablecode-completion-alpha-3b-4k",
    "stablecode-3b-instruct": "stablecode-instruct-alpha-3b",
    "phi-2": "phi2",
    "tiny_starcoder_py": "tiny-starcoder-py",
    "tiny-starcoder": "tiny-starcoder-py",
    "tinyllama-1.1b": "tinyllama",
}

SIZE_CATEGORIES = {1: "< 1B parameters", 2: "1B to < 2B parameters", 3: ">= 2B parameters"}

# The study's configurations, in the order tables and figures show them. Others (an added engine,
# e.g. compile-cpu) are accepted and placed after these.
CONFIG_ORDER = ("torch-cpu", "onnx-cpu", "ov-cpu", "jit-cpu", "torch-cuda", "onnx-cuda", "jit-cuda")
# What a run measures is a configuration at a precision: its label is the configuration at fp32 (the
# study's; every name made before precision was an axis keeps it) and <config>@<precision> below it.
# Spelled here once; services/inference/variants.py checks a label against the engines.
VARIANT_SEP = "@"
DEFAULT_PRECISION = "fp32"
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8", "int4")
CONFIG_RE = re.compile(r"^[a-z0-9_.]+-(cpu|cuda)(@[a-z0-9]+)?$")


def variant_label(config: str, precision: str | None) -> str:
    """The name a run of ``config`` at ``precision`` goes by: the configuration itself at fp32."""
    precision = (precision or DEFAULT_PRECISION).lower()
    return config if precision == DEFAULT_PRECISION else f"{config}{VARIANT_SEP}{precision}"


def split_variant(text: str) -> tuple[str, str]:
    """(configuration, precision) of a label, unchecked (recorded data is read as it is)."""
    config, _, precision = str(text).partition(VARIANT_SEP)
    return config, precision or DEFAULT_PRECISION

# Dependent variables of the study (tested, aggregated, plotted), with a label and unit.
DEPENDENT_VARIABLES: dict[str, str] = {
    "energy_global_j": "Global energy (CPU + GPU) [J]",
    "energy_cpu_j": "CPU energy [J]",
    "energy_gpu_j": "GPU energy [J]",
    "energy_wall_j": "Wall (whole machine) energy [J]",
    "time_s": "Inference time [s]",
    "cpu_usage_pct": "CPU usage [%]",
    "ram_usage_pct": "RAM usage [%]",
    "gpu_usage_pct": "GPU usage [%]",
    "gpu_mem_util_pct": "GPU memory utilization [%]",
    "gpu_mem_used_pct": "GPU memory used [%]",
}

# Further per-run numbers (medians and aggregates are computed for them too, no tests).
DERIVED_VARIABLES: dict[str, str] = {
    "energy_dram_j": "DRAM energy [J]",
    "energy_per_request_j": "Global energy per answered request [J]",
    "energy_per_token_j": "Global energy per generated token [J]",
    "idle_power_cpu_w": "CPU idle power [W]",
    "idle_power_gpu_w": "GPU idle power [W]",
    "idle_power_wall_w": "Wall idle power [W]",
    "dynamic_energy_cpu_j": "CPU energy above idle [J]",
    "dynamic_energy_gpu_j": "GPU energy above idle [J]",
    "dynamic_energy_wall_j": "Wall energy above idle [J]",
    "dynamic_energy_global_j": "Global energy above idle [J]",
    "idle_share": "Share of global energy that idle power explains [ratio]",
    "requests": "Requests replayed",
    "requests_ok": "Requests answered",
    "prompt_tokens": "Prompt tokens",
    "completion_tokens": "Generated tokens",
    "latency_median_s": "Median request latency [s]",
    "ttft_median_s": "Median time to first token [s]",
    "ttft_p90_s": "90th percentile time to first token [s]",
    "itl_median_s": "Median of the requests' mean inter-token latency [s]",
    "itl_p90_s": "90th percentile of the requests' mean inter-token latency [s]",
    "tokens_per_s": "Generated tokens per second of inference",
    "output_match_rate": "Share of prompts whose token ids equal the torch reference [ratio]",
    # the humaneval workload (analysis/solved.py): correctness, and what a solved problem costs
    "pass_at_1": "HumanEval pass@1 (greedy) [ratio]",
    "solved": "HumanEval problems solved",
    "problems": "HumanEval problems",
    "energy_per_solved_j": "Global energy per solved task [J]",
    "time_per_solved_s": "Inference time per solved task [s]",
}

ALL_VARIABLES: dict[str, str] = {**DEPENDENT_VARIABLES, **DERIVED_VARIABLES}

# Energy domains read from the series; "global" is cpu + gpu, as the study defines it.
ENERGY_DOMAINS = ("cpu", "gpu", "wall", "dram")

# Columns of runs.csv, in order. Empty cell = not measured.
RUN_COLUMNS = (
    ["model", "size_category", "config", "precision", "rep", "study", "workload", "host_fingerprint"]
    + list(DEPENDENT_VARIABLES)
    + ["run_id", "engine", "provider", "requests", "requests_ok", "prompt_tokens", "completion_tokens",
       "latency_median_s", "ttft_median_s", "ttft_p90_s", "itl_median_s", "itl_p90_s",
       "tokens_per_s", "energy_per_request_j", "energy_per_token_j", "energy_dram_j",
       "idle_power_cpu_w", "idle_power_gpu_w", "idle_power_wall_w",
       "dynamic_energy_cpu_j", "dynamic_energy_gpu_j", "dynamic_energy_wall_j", "dynamic_energy_global_j",
       "idle_share", "energy_global_parts", "energy_global_estimated", "energy_global_provenance",
       "energy_global_complete", "wall_rest_j", "request_energy_median_j", "requests_prefill_j",
       "requests_decode_j", "requests_resolved_share", "harness_cpu_s", "harness_share",
       "harness_energy_cpu_j_estimated"]
    + [f"energy_{d}_{k}" for d in ENERGY_DOMAINS for k in ("source", "estimated", "method", "complete")]
    + ["pass_at_1", "solved", "problems", "skipped_prompts", "energy_per_solved_j", "energy_per_solved_provenance",
       "time_per_solved_s", "scoring_isolation"]
    + ["output_match_rate", "output_reference", "output_match_fp32_rate", "output_fp32_reference",
       "energy_notes", "flags"]
)


def canonical_model(name: str) -> str:
    """The registry name for a model given as registry name, alias, or Hugging Face id; else as given."""
    name = str(name).strip()
    if name in MODELS:
        return name
    low = name.lower()
    for key in MODELS:
        if key.lower() == low:
            return key
    if low in ALIASES:
        return ALIASES[low]
    for key, (hf_id, _, _) in MODELS.items():
        if hf_id.lower() == low:
            return key
    return name


def size_category_for(model: str, params: int | None = None) -> int | None:
    """The study's size category of a model: from the catalog, else from a parameter count."""
    key = canonical_model(model)
    if key in MODELS:
        return MODELS[key][2]
    if params:
        return 1 if params < 1_000_000_000 else 2 if params < 2_000_000_000 else 3
    return None


def config_sort_key(config: str) -> tuple[int, str, int, str]:
    """The study's order of configurations; a lower precision right after its configuration at fp32."""
    base, precision = split_variant(str(config))
    rank = CONFIG_ORDER.index(base) if base in CONFIG_ORDER else len(CONFIG_ORDER)
    prec = PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)
    return (rank, base, prec, precision)


def model_sort_key(model: str) -> tuple[int, str]:
    order = list(MODELS)
    return (order.index(model), model) if model in order else (len(order), model)


