"""tools/reproduce_multitask.py: matched parameter counts, the plan, and a tiny full run."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sdk.models.gai import GAITransceiver


@pytest.mark.parametrize("data", ["mnist", "patches"])
@pytest.mark.parametrize("ratio", ["1/4", "1/12", "1/48"])
def test_compared_variants_have_the_same_parameter_count_within_5_percent(repro, data, ratio):
    budget = repro.QUICK
    counts = {}
    extras = {"GAI M=3": {"iterations": 3}, "KEM L=32 K=all": {"kem_slots": 32, "kem_topk": 10**4}}
    for name, kw in [*repro.VARIANTS.items(), *extras.items()]:
        kw = {**repro.VARIANTS["GAI"], **kw} if name in extras else kw
        args = repro.matched_args(repro.model_args(data, repro.RATIOS[ratio], budget, **kw))
        counts[name] = repro.count(GAITransceiver(**args))
    target = counts["GAI"]
    assert all(abs(c - target) / target <= repro.TOLERANCE for c in counts.values()), counts
    # and the knob really matters: unmatched, the baseline is far smaller
    plain = repro.model_args(data, repro.RATIOS[ratio], budget, mode="sequential")
    assert repro.count(GAITransceiver(**plain)) < 0.9 * target


def test_gai_w_is_gai_without_the_graph_update(repro):
    """Same modules and weights except the attention layers; removing GAI's layers gives
    GAI-w's output exactly, keeping them changes it."""
    args = repro.model_args("mnist", 1 / 12, repro.QUICK)
    gai = repro.build(args, 0)
    gai_w = repro.build({**args, "graph_update": False}, 0)
    names = set(gai.state_dict())
    assert set(gai_w.state_dict()) == {n for n in names if ".attention." not in n}
    assert any(".attention." in n for n in names)
    missing = gai_w.load_state_dict(gai.state_dict(), strict=False)
    assert missing.missing_keys == [] and all(".attention." in k for k in missing.unexpected_keys)
    x = torch.rand(4, 1, 28, 28)
    gai.eval(), gai_w.eval()
    with torch.no_grad():
        with_graph = gai.transmitter(x)
        layers, gai.transmitter.attention = gai.transmitter.attention, torch.nn.ModuleList()
        torch.testing.assert_close(gai.transmitter(x), gai_w.transmitter(x), rtol=0, atol=0)
        gai.transmitter.attention = layers
    assert (with_graph - gai_w.transmitter(x)).abs().max() > 1e-4
    # the matched variants differ only in the graph flag and the matching knob
    a = repro.matched_args(repro.model_args("mnist", 1 / 12, repro.QUICK))
    b = repro.matched_args(repro.model_args("mnist", 1 / 12, repro.QUICK, graph_update=False))
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} <= {
        "graph_update",
        "relation_hidden",
    }


def test_mad_is_zero_for_identical_nodes_and_one_for_orthogonal_ones(repro):
    same = torch.randn(2, 1, 5).expand(2, 4, 5)
    assert repro.mean_average_distance(same) == pytest.approx(0.0, abs=1e-6)
    orthogonal = torch.eye(4).expand(3, 4, 4)
    assert repro.mean_average_distance(orthogonal) == pytest.approx(1.0)


def test_long_tailed_set_keeps_a_geometric_share_per_class(repro):
    data = repro.load_dataset("mnist", "train")
    tail = repro.long_tailed(data, rho=0.05)
    counts = torch.bincount(tail.labels, minlength=10)
    full = torch.bincount(data.labels, minlength=10)
    assert counts[0] == full[0] and counts[9] == torch.ceil(full[9] * 0.05)
    assert (counts[1:] <= counts[:-1] + 5).all()  # roughly decreasing


def test_tiny_quick_run_writes_every_table_row_and_resumes(repro, tmp_path):
    doc, out = tmp_path / "docs" / "multitask.md", tmp_path / "cells"
    doc.parent.mkdir()
    doc.write_text(
        "# Mine\n\nkept text\n\n<!-- results:begin -->\nold\n<!-- results:end -->\ntail\n"
    )
    tiny = ["--quick", "--train-size", "32", "--test-size", "8", "--epochs", "1", "--seeds", "1"]
    tiny += ["--jobs", "0", "--parts", "main,m,imbalance,lk"]
    assert repro.main([*tiny, "--out", str(out), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert (
        text.startswith("# Mine\n\nkept text") and text.endswith("tail\n") and "\nold\n" not in text
    )
    sections = {part.split("\n", 1)[0]: part for part in text.split("### ")}
    for data, tasks in repro.TASKS.items():
        for r in repro.RATIOS:
            for channel in repro.channels(repro.QUICK, data, r):
                table = sections[f"{data}, R = {r}, {channel.upper()}"]
                singles = [f"single:{t}" for t in tasks] if channel == "awgn" else []
                for v in [*repro.VARIANTS, *singles]:
                    for t in tasks if v in repro.VARIANTS else [v.split(":")[1]]:
                        assert f"| {v} | " in table and f" | {repro.METRIC[t]} | " in table, (v, t)
                    assert sum(line.startswith(f"| {v} |") for line in table.splitlines()) == (
                        len(tasks) if v in repro.VARIANTS else 1
                    ), (data, r, channel, v)
    assert f"patches, R = {repro.FOCUS}, RAYLEIGH" not in sections  # quick: MNIST only
    for heading in ("graph iterations M", "long-tailed", "memory size L"):
        assert heading in text
    assert text.count("| 0 (GAI-w) |") == 1 and "| 3 |" in text
    assert "| 8 | 16 |" in text  # the L/K sweep reads the main GAI+KEM cells as L = 8, K = 16
    for png in ("multitask_snr_mnist.png", "multitask_snr_patches.png", "multitask_gain.png"):
        assert (doc.parent / "img" / png).read_bytes()[:4] == b"\x89PNG"
    cells = sorted(out.glob("*.json"))
    first = {p.name: json.loads(p.read_text()) for p in cells}
    assert all(len(c["rows"]) == len(repro.SNRS) for c in first.values())
    # a re-run reads every cell back (nothing retrained: the files are untouched)
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    assert repro.main([*tiny, "--out", str(out), "--doc", str(doc), "--parts", "main"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps
    # more seeds from the cache: the seed-0 cells still count (the key is the cell budget),
    # nothing is trained and the report says it is partial
    main_cells = len(repro.plan(dataclasses.replace(repro.QUICK, seeds=1), ["main"]))
    more = [*tiny, "--seeds", "2", "--out", str(out), "--doc", str(doc), "--parts", "main"]
    assert repro.main([*more, "--from-cache"]) == 0
    assert f"Partial: {main_cells} of the {2 * main_cells} planned cells" in doc.read_text()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps
    # seeded: a deleted cell is retrained to the same numbers
    victim = out / repro.cell_name(
        dict(data="mnist", variant="GAI", R="1/4", channel="awgn", seed=0)
    )
    victim.unlink()
    assert repro.main([*tiny, "--out", str(out), "--doc", str(doc), "--parts", "main"]) == 0
    assert json.loads(victim.read_text())["rows"] == first[victim.name]["rows"]
