"""What one run measures: a serving configuration at a numeric precision, labelled ``onnx-cpu@int8``.

Precision is its own axis (fp32 is the study's), so the configuration name stays ``<engine>-<provider>``
and a lower precision is appended after ``@``. At fp32 the label is the bare configuration, so every
run id, table and plan made before precision was an axis keeps its name. This module is the one place
that parses and checks a label against the engines; its spelling is analysis/catalog.py's (the analysis
reads results without the serving stack). The bench, studies, the analysis and the dashboards use them.
Whether an engine serves a precision is the engine's own declaration (``Engine.precisions`` and
``Engine.provider_refusals``), read here without loading any runtime library.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.catalog import DEFAULT_PRECISION as DEFAULT
from analysis.catalog import VARIANT_SEP as SEP
from analysis.catalog import split_variant as split
from analysis.catalog import variant_label as label
from services.inference.configs import ConfigError, ServingConfig, expand


@dataclass(frozen=True)
class Variant:
    config: str             # <engine>-<provider>, a registered configuration
    precision: str = DEFAULT

    @property
    def label(self) -> str:
        return label(self.config, self.precision)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """``onnx-cpu`` or ``onnx-cpu@int8`` (strict: a known configuration, a known precision)."""
        from services.inference.engines.precision import PrecisionError, check

        config, _, precision = str(text).strip().lower().partition(SEP)
        name = ServingConfig.parse(config).name
        try:
            return cls(name, check(precision or DEFAULT))
        except PrecisionError as exc:
            raise ConfigError(f"{text!r}: {exc}") from None


def refusal(variant: Variant) -> str | None:
    """Why ``variant``'s engine does not serve its precision on its provider (None: it does)."""
    from services.inference.engines import engine_class
    from services.inference.engines.precision import PrecisionError, check_serving

    config = ServingConfig.parse(variant.config)
    try:
        check_serving(engine_class(config.engine), config.provider, variant.precision)
    except PrecisionError as exc:
        return str(exc)
    return None


def served_by(precision: str, configs: list[str]) -> list[str]:
    """The configurations among ``configs`` whose engine serves ``precision`` there."""
    return [c for c in configs if refusal(Variant(c, precision)) is None]


GROUPS = ("cpu", "cuda", "all")


def not_installed(config: str) -> str | None:
    """Why ``config``'s engine cannot run here at all (an opt-in library absent: ``Engine.missing``)."""
    from services.inference.engines import engine_class

    return engine_class(ServingConfig.parse(config).engine).missing()


def left_out_of_groups(selection: str) -> dict[str, str]:
    """{config: why} for the opt-in configurations a group in ``selection`` (cpu, cuda, all) leaves out
    because their engine is not installed here (named on their own, they are refused with the reason)."""
    parts = {p.strip().lower() for p in (selection or "").split(",")}
    out: dict[str, str] = {}
    for group in GROUPS:
        if group in parts:
            out.update({c: why for c in expand(group) if (why := not_installed(c))})
    return out


def expand_variants(selection: str, precisions: str | None = None) -> list[Variant]:
    """A user's CONFIG (names, groups, or labels with ``@precision``) times PRECISION (a comma list,
    default fp32) → the variants to run, each one checked against its engine. A group (cpu, cuda, all)
    leaves out the opt-in configurations whose engine is not installed (``left_out_of_groups`` says which). An item with its own
    ``@precision`` keeps it; PRECISION applies to the others. A refused pair is a ConfigError naming
    every refused pair and the configurations that do serve the precision."""
    wanted = [p.strip().lower() for p in (precisions or DEFAULT).split(",") if p.strip()] or [DEFAULT]
    out: list[Variant] = []
    for part in (selection or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if SEP in part:
            items = [Variant.parse(part)]
        else:  # a group takes what can run here: an opt-in engine not installed is left out (said by the caller)
            names = [c for c in expand(part) if part not in GROUPS or not_installed(c) is None]
            items = [Variant.parse(f"{c}{SEP}{p}") for c in names for p in wanted]
        out.extend(v for v in items if v not in out)
    if not out:
        expand(selection)  # raises the usual "no configuration selected"
    refused = [(v, why) for v in out if (why := refusal(v))]
    if refused:
        lines = [f"  {v.label}: {why}" for v, why in refused]
        for p in sorted({v.precision for v, _ in refused}):
            ok = served_by(p, list(dict.fromkeys(v.config for v in out)) or [])
            everywhere = served_by(p, [c for c in expand("all")])
            lines.append(f"  {p} is served by: {', '.join(everywhere) or 'no configuration'}"
                         + (f" (of those asked: {', '.join(ok)})" if ok else ""))
        raise ConfigError("precision not served:\n" + "\n".join(lines))
    return out
