"""``semedge demo --tiny`` end to end: the report's numbers are there and make sense."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdk.artifact import file_sha256
from sdk.checkpoint import resolve
from sdk.cli import main
from sdk.pipelines.demo import QUICKSTART, RX_NAME, STEPS, TINY, Demo, DemoError
from sdk.pipelines.demo_steps import SLF_DOWNLOAD, SLF_RX
from tests.demo.conftest import result


def test_quickstart_is_the_fast_subset_and_demo_reuses_it(demo_run):
    out, before = demo_run["out"], demo_run["quickstart_steps"]
    assert sorted(before) == sorted(f"{s}.json" for s in QUICKSTART)
    for name, mtime in before.items():  # demo reused them: not rewritten
        assert (out / "steps" / name).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (out / "steps").iterdir()) == sorted(f"{s}.json" for s in STEPS)
    assert "report: " in demo_run["logs"]["demo"]
    assert "everything is in" in demo_run["logs"]["quickstart"]


def test_flash_sha256_matches_and_the_bad_build_is_rolled_back(demo_run):
    out = demo_run["out"]
    r = result(out, "flash")
    assert r["sha256_match"] and r["sha256"]
    from sdk.artifact import file_sha256, read_manifest

    built = read_manifest(out / "artifact-rx")["files"]
    installed = out / "device" / "models" / "demo-rx" / "A"
    for name, entry in built.items():  # checked again here, against the files themselves
        assert file_sha256(installed / name) == entry["sha256"] == r["sha256"][name]["device"]
    assert r["rolled_back"] and r["active_version"] == "1" and r["active_confirmed"]
    assert r["health_psnr"]["v2"] < r["health_psnr"]["v1"] - 1.0
    assert r["health_psnr"]["after"] == r["health_psnr"]["v1"]  # the same build, same inputs
    assert [e["state"] for e in r["events"]] == ["TEST", "confirmed", "TEST", "confirmed"]
    assert r["wire_bytes"] > 0 and r["artifact_bytes"] > 0


def test_int8_drop_is_reported(demo_run):
    r = result(demo_run["out"], "build")
    metrics = {(label, m["metric"]): m for label, x in r["int8"].items() for m in x["metrics"]}
    assert ("transceiver", "psnr") in metrics and ("multitask", "accuracy") in metrics
    for m in metrics.values():
        assert m["drop"] == pytest.approx(m["fp32"] - m["int8"])
        assert abs(m["drop"]) < 5  # dB or accuracy points: quantization, not a broken model
    manifest = json.loads((demo_run["out"] / "artifact-transceiver-int8/manifest.json").read_text())
    assert manifest["precision"] == "int8" and "calibration" in manifest


def test_delta_gain_and_bit_exact_return(demo_run):
    r = result(demo_run["out"], "delta")
    assert r["bit_exact"] and r["psnr"]["delta off"] == r["psnr"]["base"]
    assert r["psnr"]["delta on"] != r["psnr"]["base"]  # the delta did something
    assert r["nnz"] > 0 and 0 < r["percent_of_weights"] < 5
    assert max(r["max_abs_diff_vs_torch"].values()) < 1e-4  # the device runs the same model
    pictures = list((demo_run["out"] / "device" / "local-images").glob("*.png"))
    assert len(pictures) == r["local_images"] == TINY.zfda_images


def test_delta_is_switched_by_the_agent_and_followed_by_the_app(demo_run):
    out = demo_run["out"]
    r = result(out, "delta")
    name = Path(r["delta"]).name
    assert f"delta {name} active" in r["switch"]["on"]["agent"]
    assert f"deactivated delta {name}" in r["switch"]["off"]["agent"]
    assert all(s["seconds"] > 0 for s in r["switch"].values())
    model = out / "device" / "models" / RX_NAME
    assert (model / "deltas" / name).read_bytes() == Path(r["delta"]).read_bytes()
    state = json.loads((model / "state.json").read_text())
    assert not any(state["changes"].get(state["active"], {}).values())  # switched off again
    assert "agent" in (out / "device-agent-delta.log").read_text()


def test_gai_and_kem_are_trained_and_reported_per_task(demo_run):
    r = result(demo_run["out"], "train")
    assert list(r["multitask_models"]) == ["GAI", "GAI+KEM"]
    gai, kem = (r["multitask_models"][k] for k in ("GAI", "GAI+KEM"))
    assert kem["parameters"] > gai["parameters"]  # the KEM memory is there
    config = json.loads((resolve(kem["checkpoint"]) / "config.json").read_text())
    assert config["args"]["kem_slots"] > 0
    snrs = {x["snr_db"] for x in r["multitask_sweep"]}
    for label in ("GAI", "GAI+KEM"):
        rows = [x for x in r["multitask_sweep"] if x["model"] == label]
        assert {x["snr_db"] for x in rows} == snrs
        for x in rows:
            assert 0 <= x["accuracy"] <= 1 and 5 < x["psnr"] < 60
        assert r["multitask_at_report_db"][label]["accuracy"] > 0.1  # above chance (10 %)


def test_channel_sweep_covers_both_channels_against_uncoded(demo_run):
    rows = result(demo_run["out"], "channel")["rows"]
    curves = {row["model"] for row in rows}
    assert curves == {
        f"{who}, {ch}" for who in ("device runtime", "uncoded") for ch in ("AWGN", "Rayleigh")
    }
    for curve in curves:
        points = sorted((row["snr_db"], row["psnr"]) for row in rows if row["model"] == curve)
        assert points[-1][1] > points[0][1]  # more SNR, better pictures


def test_slf_improves_over_the_misaligned_pair(demo_run):
    r = result(demo_run["out"], "slf")
    assert len(r["runs"]) == 2 and r["runs"][0]["freeze"] != r["runs"][1]["freeze"]
    for run in r["runs"]:
        assert run["accuracy"] > r["misaligned"]["accuracy"] + 0.1
        assert run["psnr"] > r["misaligned"]["psnr"]
        assert 0 < run["tensor_bytes"]["up"] <= run["tensor_bytes"]["down"]
        assert run["download_bytes"] > run["tensor_bytes"]["down"]  # the file: header too
        assert all(seconds > 0 for seconds in run["seconds"].values())
    frozen_more = max(r["runs"], key=lambda x: x["freeze"])
    assert frozen_more["upload_bytes"] < min(
        x["upload_bytes"] for x in r["runs"] if x is not frozen_more
    )


def test_slf_goes_over_the_link_and_rolls_back_bit_exactly(demo_run):
    out = demo_run["out"]
    r = result(out, "slf")
    model = out / "device" / "models" / SLF_RX
    pulled = out / "slf" / SLF_DOWNLOAD
    assert pulled.read_bytes() == (model / SLF_DOWNLOAD).read_bytes()  # pulled through the agent
    assert r["pull"]["bytes"] == pulled.stat().st_size and r["pull"]["wire_bytes"] > 0
    for run in r["runs"]:
        update = Path(run["update"])
        assert (model / "updates" / update.name).read_bytes() == update.read_bytes()  # pushed
        before, applied, back = (run["device"][k] for k in ("before", "applied", "rolled_back"))
        assert before["update"] is None and back == before
        assert applied["update"] == update.name and applied["update_sha256"] == file_sha256(update)
        assert applied["base_fingerprint"] == before["base_fingerprint"]
        assert f"update {update.name} active" in run["apply"]["agent"]
        assert f"rolled back update {update.name}" in run["rollback"]["agent"]
        assert run["bit_exact_after_rollback"]
    state = json.loads((model / "state.json").read_text())
    assert not any(state["changes"].get(state["active"], {}).values())


def test_report_has_every_section_number_and_plot(demo_run):
    out = demo_run["out"]
    md = (out / "report.md").read_text()
    for title in (
        "1. Train",
        "2. Export",
        "3. Flash",
        "4. The device",
        "5. On-device",
        "6. Re-alignment over the link",
    ):
        assert f"## {title}" in md
    assert "bit-exact" in md and "NOT bit-exact" not in md and "SHA-256 matches" in md
    assert "GAI+KEM" in md and "DIFFERENT" not in md and "--tiny` numbers" in md
    assert md.count("semedge demo --out") >= 7  # a command under every section
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(plots) >= 7
    for plot in plots:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert "nan" not in md.lower().split("reproduce")[0]


def test_only_report_rebuilds_from_the_cache(demo_run, capsys):
    out = demo_run["out"]
    steps = {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir() if p.stem != "report"}
    assert main(["demo", "--tiny", "--out", str(out), "--only", "report"]) == 0
    assert {
        p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir() if p.stem != "report"
    } == steps
    assert "report: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "fly"], "unknown step(s) ['fly']"),
        (["--only", "train,nope"], "unknown step(s) ['nope']"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["demo", "--tiny", "--out", str(tmp_path / "d"), *args]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing written


def test_a_failing_step_names_itself_and_the_command_to_rerun(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DemoError, match=r"demo step 'train' failed: .* --only train --tiny"):
        Demo(blocker / "out", TINY, progress=False).run(["train"])


def test_settings_decide_the_cache(tmp_path):
    demo = Demo(tmp_path, TINY)
    demo.save("train", {"x": 1})
    assert demo.cached("train") == {"x": 1}
    assert Demo(tmp_path, TINY, seed=1).cached("train") is None
    (tmp_path / "steps" / "delta.json").write_text("{not json")
    assert demo.cached("delta") is None
