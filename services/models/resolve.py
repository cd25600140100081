"""Turn a MODEL string into a :class:`ModelSpec`: a registry name, ``tiny``, ``shape:<hf id>``,
any Hugging Face id, or a local folder.

Locally built models (``tiny``, ``shape:…``) are made on first use into the cache; hub models are
downloaded on first use through huggingface_hub (the real path; it needs network access).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml

from services.models.cache import cache_root

HERE = Path(__file__).parent
SHAPES_DIR = HERE / "shapes"
META_FILE = "wattserve-model.json"


class ModelError(ValueError):
    """A MODEL string that names nothing we can load."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the user named it
    kind: str  # tiny | shape | hub | local
    source: str  # hub id, or the folder for local models
    path: Path | None = None  # local folder with config, tokenizer and weights (None: not fetched)
    revision: str | None = None  # hub revision (commit hash once fetched)
    content_hash: str | None = None  # sha256 over the model's files, for local and built models
    params: int | None = None
    size_category: int | None = None
    trust_remote_code: bool = False

    @property
    def identity(self) -> str:
        """What makes two models the same for caching and for results."""
        return f"{self.kind}:{self.source}@{self.content_hash or self.revision or 'unknown'}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "--", f"{self.kind}-{self.name}").strip("-")

    @property
    def load_source(self) -> str:
        return str(self.path) if self.path else self.source

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "revision": self.revision,
            "content_hash": self.content_hash,
            "params": self.params,
            "size_category": self.size_category,
            "trust_remote_code": self.trust_remote_code,
        }


@lru_cache(maxsize=1)
def registry() -> dict[str, dict]:
    return yaml.safe_load((HERE / "registry.yaml").read_text())["models"]


def shape_names() -> list[str]:
    return sorted(p.stem.replace("--", "/") for p in SHAPES_DIR.glob("*.json"))


def size_category(params: int) -> int:
    """The study's categories: 1 below 1B parameters, 2 from 1B to below 2B, 3 from 2B."""
    return 1 if params < 1_000_000_000 else 2 if params < 2_000_000_000 else 3


CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "seq_length", "max_sequence_length", "n_ctx")


def context_length(config) -> int:
    """A transformers config's context window, whichever name its architecture gives it."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def content_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel in (META_FILE, ".complete") or rel.endswith(".lock"):
            continue
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _built_spec(name: str, kind: str, source: str, folder: Path) -> ModelSpec:
    meta = json.loads((folder / META_FILE).read_text())
    return ModelSpec(
        name=name,
        kind=kind,
        source=source,
        path=folder,
        content_hash=meta["content_hash"],
        params=meta["params"],
        size_category=size_category(meta["params"]),
    )


def resolve(model: str, *, revision: str | None = None, trust_remote_code: bool = False,
            build: bool = True, progress=print) -> ModelSpec:
    """Resolve (and, for locally built models, build on first use) a MODEL string."""
    model = (model or "").strip()
    if not model:
        raise ModelError("MODEL is empty; " + _help())
    if model == "tiny":
        from services.models.tiny import build_tiny

        folder = build_tiny(cache_root() / "models", progress=progress) if build else None
        return _built_spec("tiny", "tiny", "wattserve/tiny", folder) if folder else ModelSpec("tiny", "tiny", "wattserve/tiny")
    if model.startswith("shape:"):
        hf_id = model.split(":", 1)[1]
        cfg = SHAPES_DIR / (hf_id.replace("/", "--") + ".json")
        if not cfg.is_file():
            raise ModelError(
                f"no shape config for {hf_id!r}; available: {', '.join('shape:' + s for s in shape_names())}"
            )
        from services.models.shape import build_shape

        if not build:
            return ModelSpec(model, "shape", hf_id)
        folder = build_shape(hf_id, cfg, cache_root() / "models", progress=progress)
        return _built_spec(model, "shape", hf_id, folder)
    reg = registry()
    if model in reg:
        entry = reg[model]
        return ModelSpec(model, "hub", entry["hf_id"], revision=revision or "main",
                         params=entry["params"], size_category=entry["size_category"],
                         trust_remote_code=trust_remote_code)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"local folder {path} has no config.json; it is not a transformers model folder")
        path = path.resolve()
        return ModelSpec(path.name, "local", str(path), path=path, content_hash=content_hash(path),
                         trust_remote_code=trust_remote_code)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        by_id = {e["hf_id"]: e for e in reg.values()}
        entry = by_id.get(model, {})
        return ModelSpec(model, "hub", model, revision=revision or "main", params=entry.get("params"),
                         size_category=entry.get("size_category"), trust_remote_code=trust_remote_code)
    raise ModelError(f"unknown model {model!r}; " + _help())


def download_patterns(files: list[str], trust_remote_code: bool = False) -> list[str]:
    """What to fetch of a hub repository: safetensors where it has them (pickled ``.bin`` weights,
    which can run code when loaded, only where it has nothing else), and its Python files only when
    the user opted in to running them."""
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
    patterns = ["*.json", "*.model", "*.txt", "*.tiktoken", weights]
    if trust_remote_code:
        patterns.append("*.py")
    return patterns


def materialize(spec: ModelSpec, progress=print) -> ModelSpec:
    """Make sure the model's files are on disk (downloading hub models) and return the spec."""
    if spec.path is not None:
        return spec
    if spec.kind != "hub":
        return resolve(spec.name, progress=progress)
    from huggingface_hub import HfApi, snapshot_download

    progress(f"downloading {spec.source}@{spec.revision} from the Hugging Face Hub")
    try:
        files = HfApi().list_repo_files(spec.source, revision=spec.revision)
        patterns = download_patterns(files, spec.trust_remote_code)
        folder = Path(snapshot_download(spec.source, revision=spec.revision, allow_patterns=patterns))
    except Exception as exc:  # offline, gated, missing: say which model and why
        raise ModelError(
            f"could not fetch {spec.source}@{spec.revision} from the Hugging Face Hub: {exc}. "
            "Without hub access use MODEL=tiny, a shape stand-in, or a local folder."
        ) from exc
    return replace(spec, path=folder, revision=folder.name)


def _help() -> str:
    return (
        "use 'tiny', a registry name (" + ", ".join(registry()) + "), a shape stand-in ("
        + ", ".join("shape:" + s for s in shape_names()) + "), a Hugging Face id (org/name) "
        "or a local model folder"
    )
