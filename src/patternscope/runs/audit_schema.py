"""The JSON Schema of ``audit.json`` (draft 2020-12), shipped with the package so a pipeline can validate an
audit before it reads it: ``json.dumps(patternscope.AUDIT_SCHEMA)`` writes it to a file. ``schema`` in every
``audit.json`` names the version (:data:`SCHEMA_ID`); a change that breaks a reader gets a new version."""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "patternscope.audit/1"

_SHARE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
_INTERVAL: dict[str, Any] = {"type": "array", "items": _SHARE, "minItems": 2, "maxItems": 2}
_MAYBE_INTERVAL: dict[str, Any] = {"anyOf": [_INTERVAL, {"type": "null"}]}
_ROW: dict[str, Any] = {  # one method's row of the comparison (patterns/compare.json)
    "type": "object",
    "required": ["method", "fooling_ratio", "fooling_ci", "agreement", "agreement_ci", "dominance_top1", "passes"],
    "properties": {
        "method": {"type": "string"},
        "fooling_ratio": _SHARE,
        "fooling_ci": _INTERVAL,
        "fooling_ratio_confident": {"anyOf": [_SHARE, {"type": "null"}]},
        "agreement": _SHARE,
        "agreement_ci": _INTERVAL,
        "dominance_top1": _SHARE,
        "psnr_db": {"type": ["number", "null"]},
        "ssim": {"type": ["number", "null"]},
        "passes": {"type": ["number", "null"]},
        "error": {"type": "null"},
    },
}
_CLASS: dict[str, Any] = {
    "type": "object",
    "required": ["class", "name", "k", "pattern"],
    "properties": {
        "class": {"type": "integer", "minimum": 0},
        "name": {"type": "string"},
        "k": {"type": "integer", "minimum": 0},
        "verified": {"type": ["number", "null"]},
        "pattern": {"type": "string"},
    },
}

AUDIT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "patternscope audit",
    "type": "object",
    "required": ["schema", "patternscope_version", "model", "data", "level", "patterns", "verdict", "fail_on"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "patternscope_version": {"type": "string"},
        "model": {"type": "object", "required": ["spec"]},
        "data": {"type": "string"},
        "labels": {"type": "boolean"},
        "level": {
            "type": "object",
            "required": ["name", "budget", "scan_steps", "additive_steps", "eval_views"],
            "properties": {"name": {"enum": ["quick", "standard", "thorough"]}, "budget": {"type": "number"}},
        },
        "patterns": {
            "type": "object",
            "required": ["eps", "norm", "budget_passes", "n_images", "random_sign_fooling_ratio", "dominant"],
            "properties": {
                "eps": {"type": "number", "exclusiveMinimum": 0},
                "norm": {"enum": ["linf", "l2"]},
                "n_images": {"type": "integer", "minimum": 1},
                "random_sign_fooling_ratio": _SHARE,
                "dominant": {"anyOf": [_ROW, {"type": "null"}]},
                "baseline": {"anyOf": [_ROW, {"type": "null"}]},
            },
        },
        "transfer": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["models", "patterns", "fooling", "fooling_ci", "random_sign", "n_images"],
                    "properties": {
                        "models": {"type": "array", "items": {"type": "string"}},
                        "patterns": {"type": "array", "items": {"type": "string"}},
                        "fooling": {"type": "array", "items": {"type": "array", "items": _SHARE}},
                        "fooling_ci": {"type": "array", "items": {"type": "array", "items": _INTERVAL}},
                        "random_sign": {"type": "array", "items": _SHARE},
                    },
                },
            ]
        },
        "backdoor": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["flagged", "verdict", "p_value", "classes", "basis", "triggers"],
                    "properties": {
                        "flagged": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "verdict": {"type": "string"},
                        "p_value": {"anyOf": [_SHARE, {"type": "null"}]},
                        "classes": {"type": "integer", "minimum": 1},
                        "basis": {"type": "object"},
                        "triggers": {"type": "object"},
                    },
                },
            ]
        },
        "classes": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["least_robust", "most_robust", "pixels"],
                    "properties": {
                        "least_robust": {"type": "array", "items": _CLASS},
                        "most_robust": {"type": "array", "items": _CLASS},
                        "pixels": {"type": "integer", "minimum": 1},
                    },
                },
            ]
        },
        "verdict": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["finding", "text", "value", "ci", "control"],
                "properties": {
                    "finding": {"type": "string"},
                    "text": {"type": "string"},
                    "value": {"type": ["number", "null"]},
                    "ci": _MAYBE_INTERVAL,
                    "control": {"type": ["number", "null"]},
                },
            },
        },
        "fail_on": {
            "type": "object",
            "required": ["terms", "failed"],
            "properties": {
                "terms": {"type": "array", "items": {"type": "string"}},
                "failed": {"type": "array", "items": {"type": "string"}},
            },
        },
        "seconds": {"type": "number", "minimum": 0},
    },
}
