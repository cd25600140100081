"""HF model folder → GGUF, with llama.cpp's own converter (convert_hf_to_gguf.py's ``conversion`` package).

The converter is not in the llama-cpp-python wheel: it lives in the llama.cpp tree that the
llama-cpp-python sdist vendors, next to the gguf-py it is written against (the PyPI ``gguf`` of the
same version number differs from it). scripts/install-llamacpp.sh copies those from the sdist of the
pinned version into ``<venv>/share/wattserve/llama.cpp`` (VERSION names the sdist), and this module
runs them, in a process of its own (``python -m services.inference.engines.llamacpp_convert``): the
tree's ``conversion`` and ``gguf`` packages never enter the serving process, and the conversion's
memory goes back to the system when it ends.

One change to the converter's behaviour, on purpose: it refuses a BPE tokenizer whose
pre-tokenizer it does not recognise by hash (tiny's, trained here). wattserve never lets llama.cpp
tokenize (the engine is fed our token ids), so the vocabulary in the GGUF is there for llama.cpp to
load the model only; an unrecognised one is written with the GPT-2 pre-tokenizer name (byte-level
BPE, tiny's kind) and the GGUF's metadata records that (``wattserve.pre_tokenizer``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: the converter's output types that wattserve asks for, per precision (f16/q8_0: only if offered)
OUTTYPES = {"fp32": "f32", "fp16": "f16", "int8": "q8_0"}
#: written for a tokenizer the converter does not recognise (never used: we tokenize)
FALLBACK_PRE_TOKENIZER = "gpt-2"
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py")


def converter_home() -> Path:
    """Where the llama.cpp converter tree is: ``$WATTSERVE_LLAMACPP_CONVERTER``, else the one
    scripts/install-llamacpp.sh puts beside this Python (``<sys.prefix>/share/wattserve/llama.cpp``)."""
    env = os.environ.get("WATTSERVE_LLAMACPP_CONVERTER")
    return Path(env).expanduser() if env else Path(sys.prefix) / "share" / "wattserve" / "llama.cpp"


def converter_problem(home: Path, version: str) -> str | None:
    """Why the converter tree at ``home`` cannot convert for llama-cpp-python ``version`` (None: it can)."""
    missing = [f for f in CONVERTER_FILES if not (home / f).exists()]
    if missing:
        return f"llama.cpp's GGUF converter is not at {home} (missing {', '.join(missing)})"
    try:
        found = (home / "VERSION").read_text().strip()
    except OSError:
        return f"llama.cpp's GGUF converter at {home} has no VERSION file"
    if found != version:
        return (f"llama.cpp's GGUF converter at {home} is from llama-cpp-python {found}, the installed "
                f"llama-cpp-python is {version}: a GGUF must be written by the converter of the llama.cpp it runs on")
    return None


def convert(model_dir: Path, out: Path, outtype: str, home: Path) -> dict:
    """Write ``out`` (a GGUF of ``outtype``) from the HF folder ``model_dir``; return what was done."""
    sys.path.insert(0, str(home / "gguf-py"))
    sys.path.insert(0, str(home))
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    ftypes = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    hparams = ModelBase.load_hparams(model_dir, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    base = get_model_class(architecture)
    record = {"architecture": architecture, "converter_class": base.__name__, "outtype": outtype,
              "pre_tokenizer": None, "pre_tokenizer_recognised": True}

    class Converter(base):  # the converter's class, with a fallback for a tokenizer it does not know
        model_arch = base.model_arch  # the converter's classes must each name it

        def get_vocab_base_pre(self, tokenizer) -> str:
            try:
                name = super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                name = FALLBACK_PRE_TOKENIZER
                record["pre_tokenizer_recognised"] = False
            record["pre_tokenizer"] = name
            return name

        def set_gguf_parameters(self):
            super().set_gguf_parameters()
            self.gguf_writer.add_string("wattserve.pre_tokenizer",
                                        "recognised" if record["pre_tokenizer_recognised"]
                                        else f"unrecognised, written as {FALLBACK_PRE_TOKENIZER}")

    t0 = time.perf_counter()
    with torch.inference_mode():
        Converter(model_dir, ftypes[outtype], out, eager=False).write()
    record["convert_seconds"] = round(time.perf_counter() - t0, 3)
    record["bytes"] = out.stat().st_size
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.inference.engines.llamacpp_convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="a Hugging Face model folder (config, tokenizer, weights)")
    p.add_argument("out", type=Path, help="the GGUF file to write")
    p.add_argument("--outtype", choices=sorted(set(OUTTYPES.values())), default="f32")
    p.add_argument("--converter", type=Path, default=None, help="the converter tree (default: converter_home())")
    p.add_argument("--record", type=Path, default=None, help="write what was done here (JSON)")
    args = p.parse_args(argv)
    record = convert(args.model_dir, args.out, args.outtype, args.converter or converter_home())
    if args.record:
        args.record.write_text(json.dumps(record, indent=2, sort_keys=True))
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
