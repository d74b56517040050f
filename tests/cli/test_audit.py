"""`patternscope audit`: one run answering what a model lets through; its numbers are the parts' own, its
audit.json is valid against the shipped schema, --fail-on gates the exit code, and bad input is one line."""

from __future__ import annotations

import json

import jsonschema
import pytest
from helpers import TINY_SPEC, save_weights, small_model_args

import patternscope as ps
from patternscope.cli import EXIT_OK, EXIT_USER, main


def _tiny(tiny_weights):
    return ["--model", TINY_SPEC, "--weights", str(tiny_weights), "--device", "cpu"]


def _parts_agree(out):
    """The verdict table's numbers are those of the parts' own JSON files."""
    audit = json.loads((out / "audit.json").read_text())
    jsonschema.validate(audit, ps.AUDIT_SCHEMA)
    compare = json.loads((out / "patterns" / "compare.json").read_text())
    dominant = next(r for r in compare["rows"] if r["method"] == "dominant")
    verdict = {r["finding"]: r for r in audit["verdict"]}
    assert verdict["universal pattern"]["value"] == dominant["fooling_ratio"]
    assert verdict["universal pattern"]["ci"] == dominant["fooling_ci"]
    assert verdict["universal pattern"]["control"] == compare["random_sign_fooling_ratio"]
    assert verdict["dominance"]["value"] == dominant["agreement"]
    return audit, verdict


@pytest.mark.slow
def test_audit_without_labels_measures_patterns_and_transfer(tmp_path, tiny_weights, digit_folders, tiny_net, capsys):
    other = save_weights(tiny_net, tmp_path / "other.safetensors")
    out = tmp_path / "audit"
    argv = ["audit", "--out", str(out), *_tiny(tiny_weights), "--data", str(digit_folders["test"]), "--eps", "0.2"]
    argv += ["--search-data", str(digit_folders["train"]), "--level", "quick", "--also", f"{TINY_SPEC}@{other}"]
    assert main([*argv, "--fail-on", "fooling>0.999", "--quiet"]) == EXIT_OK
    audit, verdict = _parts_agree(out)
    assert audit["level"]["name"] == "quick" and audit["backdoor"] is None and audit["classes"] is None
    assert audit["patterns"]["baseline"]["method"] == "psp-uap"  # the strongest baseline, at the same budget
    assert audit["patterns"]["dominant"]["passes"] <= 1600 and audit["patterns"]["baseline"]["passes"] <= 1600
    transfer = json.loads((out / "transfer.json").read_text())
    assert verdict["transfer"]["value"] == transfer["fooling"][transfer["patterns"].index("dominant")][0]
    assert (out / "report.html").is_file() and (out / "patterns" / "report.html").is_file()
    page = (out / "report.html").read_text()
    assert "What this model lets through" in page and verdict["universal pattern"]["text"].split(";")[0] in page
    # the same run as a gate: a finding that holds gives exit code 1 (and the audit is kept, resumed as is)
    assert main([*argv, "--fail-on", "fooling>0", "--resume", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["fail_on"]["failed"] == ["fooling>0"]
    # from Python: the same audit, the same lifecycle
    again = ps.audit_model(
        TINY_SPEC,
        str(digit_folders["test"]),
        out=str(out),
        weights=str(tiny_weights),
        device="cpu",
        eps="0.2",
        level="quick",
        search_data=[str(digit_folders["train"])],
        also=[f"{TINY_SPEC}@{other}"],
        fail_on=["agreement>0.999"],
        resume=True,
        progress=False,
    )
    assert again.exit_code == 0 and again.payload["verdict"] == audit["verdict"]


@pytest.mark.slow
def test_audit_fail_on_backdoor_gates_a_backdoored_model_not_a_clean_one(tmp_path, weights, rgb_tree, backdoored):
    """The kit's BadNets-backdoored digits CNN exits with 1 under --fail-on backdoor; the clean one with 0."""
    codes = {}
    for kind in ("backdoored", "clean"):
        out = tmp_path / kind
        argv = ["audit", "--out", str(out), *small_model_args(weights[kind]), "--data", str(rgb_tree), "--labels"]
        codes[kind] = main([*argv, "--level", "standard", "--fail-on", "backdoor", "--quiet"])
        audit, verdict = _parts_agree(out)
        scan = json.loads((out / "scan" / "scan.json").read_text())
        assert audit["backdoor"]["flagged"] == scan["flagged"]
        assert verdict["backdoor"]["value"] == scan["decision"]["p_value"]
        assert [c["k"] for c in audit["classes"]["least_robust"]] == sorted(r["smallest_k"] for r in scan["classes"])[
            :3
        ]
    assert codes == {"backdoored": 1, "clean": EXIT_OK}
    assert json.loads((tmp_path / "backdoored" / "audit.json").read_text())["backdoor"]["flagged"] == [
        backdoored.target
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "arguments are required: --data"),
        (["--data", "DATA", "--fail-on", "fooling>2"], "a share in [0, 1]"),
        (["--data", "DATA", "--fail-on", "speed>0.5"], "write backdoor, fooling>X"),
        (["--data", "DATA", "--fail-on", "backdoor"], "needs the backdoor scan"),
        (["--data", "DATA", "--fail-on", "transfer>0.5"], "needs other models"),
        (["--data", "DATA", "--baseline", "dominant-paper"], "other than dominant"),
        (["--data", "MANY", "--labels"], "classes"),
    ],
    ids=[
        "no data",
        "threshold",
        "unknown term",
        "backdoor without labels",
        "transfer without also",
        "baseline",
        "classes",
    ],
)
def test_audit_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_weights, digit_folders, capsys, extra, message):
    many = tmp_path / "many"  # labels 0..11 for a 10-class model
    image = next(digit_folders["test"].rglob("*.png")).read_bytes()
    for c in range(12):
        (many / str(c)).mkdir(parents=True)
        (many / str(c) / "a.png").write_bytes(image)
    extra = [{"DATA": str(digit_folders["test"]), "MANY": str(many)}.get(e, e) for e in extra]
    out = tmp_path / "audit"
    assert main(["audit", "--out", str(out), *_tiny(tiny_weights), *extra, "--quiet"]) == EXIT_USER
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_the_schema_is_a_valid_json_schema_and_rejects_a_damaged_audit():
    jsonschema.Draft202012Validator.check_schema(ps.AUDIT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema": ps.AUDIT_SCHEMA["$id"], "verdict": []}, ps.AUDIT_SCHEMA)
