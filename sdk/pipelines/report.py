"""The demo report: one Markdown file and one self-contained-folder HTML page.

Both are written from the cached step results (``DIR/steps/*.json``), so a report can be
rebuilt without running anything (``semedge demo --out DIR --only report``). Every
section names the command that reproduces its numbers; plots are the step's PNGs,
linked relatively so the folder can be zipped and sent.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

from sdk.pipelines.demo import DOMAIN, REPORT_DB, Demo

Table = list[list[str]]
"""Rows of cells, the first row the header."""
Section = tuple[str, str, list[Table], list[str], list[str]]
"""(title, text, tables, plot paths, commands)."""

BACKENDS = {"onnxrt": "ONNX Runtime", "trt": "TensorRT", "torch": "PyTorch"}
METRIC_UNITS = {"psnr": "PSNR (dB)", "accuracy": "accuracy (%)"}


def write_report(demo: Demo, results: dict[str, dict[str, Any] | None]) -> tuple[Path, Path]:
    from sdk.files import write_text

    sections = [_section(demo, step, result) for step, result in results.items()]
    md = write_text(demo.out / "report.md", _markdown(demo, sections))
    page = write_text(demo.out / "report.html", _html(demo, sections))
    return md, page


def summary(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """A few lines for the terminal: the headline number of every step that ran."""
    lines = []
    for step, result in results.items():
        if result is not None and step in _SECTIONS:
            lines.append(f"{step:8s} {_SECTIONS[step][1](result)}")
    return lines


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def signed(value: float) -> str:
    """``+0.12`` / ``-0.12``, and ``0.00`` for what rounds to zero (no ``-0.00``)."""
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _sentence(text: str) -> str:
    """A headline as a sentence of the report's text."""
    return text[:1].upper() + text[1:] + "."


def _accuracy(row: dict[str, Any]) -> str:
    return f"{100 * row['accuracy']:.1f} %" if row.get("accuracy") is not None else ""


def _backend(name: str) -> str:
    return f"{BACKENDS.get(name, name)} ({name})"


# ---------------------------------------------------------------- headlines


def _train_headline(r: dict[str, Any]) -> str:
    multi = ", ".join(
        f"{label} {_accuracy(m)} / {_f(m['psnr'])} dB"
        for label, m in r["multitask_at_report_db"].items()
    )
    return (
        f"DeepJSCC {_f(r['psnr_at_report_db'])} dB vs uncoded {_f(r['uncoded_at_report_db'])} dB "
        f"PSNR at {REPORT_DB:g} dB; two-task accuracy / PSNR: {multi}"
    )


def _build_headline(r: dict[str, Any]) -> str:
    drops = ", ".join(
        f"{label} {m['metric']} {signed(m['drop'])}"
        for label, item in r["int8"].items()
        for m in item["metrics"]
    )
    return f"{r['backend']} artifact; INT8 drop: {drops}"


def _flash_headline(r: dict[str, Any]) -> str:
    return (
        f"{r['wire_bytes']:,} bytes in {_f(r['flash_seconds'], 1)} s, SHA-256 "
        f"{'matches' if r['sha256_match'] else 'DIFFERS'}; bad build "
        f"{'rolled back' if r['rolled_back'] else 'NOT rolled back'}, active "
        f"v{r['active_version']} {'confirmed' if r['active_confirmed'] else 'TEST'}"
    )


def _channel_headline(r: dict[str, Any]) -> str:
    at = {row["model"]: row["psnr"] for row in r["rows"] if row["snr_db"] == REPORT_DB}
    return ", ".join(f"{k} {_f(v)} dB" for k, v in at.items()) + f" at {REPORT_DB:g} dB"


def _delta_headline(r: dict[str, Any]) -> str:
    return (
        f"{DOMAIN} camera {r['gain_db']:+.2f} dB with a {r['delta_bytes']:,}-byte delta; off: "
        f"{'bit-exact' if r['bit_exact'] else 'NOT bit-exact'}"
    )


def _slf_headline(r: dict[str, Any]) -> str:
    runs = ", ".join(f"ℓ={x['freeze']} {_accuracy(x)} / {_f(x['psnr'])} dB" for x in r["runs"])
    mis = r["misaligned"]
    back = all(x["bit_exact_after_rollback"] for x in r["runs"])
    return (
        f"accuracy / PSNR: misaligned {_accuracy(mis)} / {_f(mis['psnr'])} dB → SLF {runs}; "
        f"rolled back: {'bit-exact' if back else 'NOT bit-exact'}"
    )


# ---------------------------------------------------------------- sections


def _train(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    sweep = {(x["model"], x["snr_db"]): x for x in r["sweep"]}
    snrs = sorted({x["snr_db"] for x in r["sweep"]})
    photos = [["SNR (dB)", "DeepJSCC PSNR (dB)", "uncoded PSNR (dB)"]]
    photos += [
        [f"{s:g}", _f(sweep[("DeepJSCC", s)]["psnr"]), _f(sweep[("uncoded", s)]["psnr"])]
        for s in snrs
    ]
    labels = list(r["multitask_models"])
    multi = {(x["model"], x["snr_db"]): x for x in r["multitask_sweep"]}
    digits = [["SNR (dB)"] + [f"{m}: {t}" for m in labels for t in ("PSNR (dB)", "accuracy")]]
    digits += [
        [f"{s:g}"]
        + [cell for m in labels for cell in (_f(multi[(m, s)]["psnr"]), _accuracy(multi[(m, s)]))]
        for s in sorted({x["snr_db"] for x in r["multitask_sweep"]})
    ]
    sizes = ", ".join(f"{m} {x['parameters']:,}" for m, x in r["multitask_models"].items())
    text = (
        f"A DeepJSCC (R = 1/6) trained on {r['train_patches']:,} patches of the "
        f"scikit-image photos and tested on {r['test_patches']} held-out patches, against "
        "uncoded analog transmission at the same bandwidth (first table). Two two-task "
        "transmitters (reconstruction and digit class, R = 1/16) trained with the same budget "
        f"on {r['mnist_train']:,} MNIST digits and tested on {r['mnist_test']}: GAI, and GAI "
        "with a KEM memory between the fused task features and the channel (8 slots, each "
        f"reading its top 16 tokens); parameters: {sizes} (second table). "
        + _sentence(_train_headline(r))
    )
    return "1. Train", text, [photos, digits]


def _build(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    rows = [["model", "backend", "metric", "fp32", "int8", "drop"]]
    rows += [
        [label, item["backend"], METRIC_UNITS.get(m["metric"], m["metric"]), _f(m["fp32"]),
         _f(m["int8"]), signed(m["drop"])]
        for label, item in r["int8"].items()
        for m in item["metrics"]
    ]  # fmt: skip
    text = (
        f"The receiver is built as an {_backend(r['backend'])} artifact with the decoder's "
        "weights as switchable delta targets. The DeepJSCC (`transceiver`) and the GAI "
        "transmitter with its receiver (`multitask`) are also built in INT8 (explicit Q/DQ, "
        "entropy calibration on training data); the drop is measured against the float model "
        "in torch on held-out validation samples sent at 0, 10 and 20 dB (so the PSNR is not "
        "step 1's at 10 dB), PSNR in dB and accuracy in percentage points; a positive drop "
        "is a loss."
    )
    return "2. Export, calibrate, build", text, [rows]


def _flash(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    events = [["event", "active slot", "version", "state", "health PSNR (dB)"]]
    events += [
        [e["event"], str(e["active"]), str(e["version"]), e["state"], _f(e["health_psnr"])]
        for e in r["events"]
    ]
    hashes = [["file on the device", "SHA-256 in the manifest", "SHA-256 of the device's file"]]
    hashes += [
        [n, h["manifest"][:16] + "…", h["device"][:16] + "…"] for n, h in r["sha256"].items()
    ]
    text = (
        f"A device agent in its own process on a pty pair at 921,600 baud receives the "
        f"artifact ({r['artifact_bytes']:,} bytes, {r['wire_bytes']:,} bytes on the wire, "
        f"{_f(r['flash_seconds'], 1)} s) into slot {r['installed_slot']} in TEST; the "
        "health check runs an app following the device on held-out images, then the build is "
        "confirmed. A second build with scrambled decoder weights goes in TEST, fails the "
        "health check and is rolled back: the confirmed build is active again. The device's "
        f"SHA-256 {'matches' if r['sha256_match'] else 'DIFFERS from'} the manifest for every "
        "file in the slot (second table)."
    )
    return "3. Flash, confirm, roll back", text, [events, hashes]


def _channel(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    snrs = sorted({x["snr_db"] for x in r["rows"]})
    models = list(dict.fromkeys(x["model"] for x in r["rows"]))
    at = {(x["model"], x["snr_db"]): x["psnr"] for x in r["rows"]}
    rows = [["SNR (dB)", *models]]
    rows += [[f"{s:g}"] + [_f(at[(m, s)]) for m in models] for s in snrs]
    text = (
        f"An app on the device (`sdk.Runtime.open_device`, serving the active slot's "
        f"artifact: {_backend(r['backend'])}) decodes "
        f"symbols sent over AWGN and block Rayleigh fading (MMSE equalisation), {r['images']} "
        "held-out patches per point, against analog uncoded transmission at the same "
        "bandwidth. PSNR in dB."
    )
    return "4. The device runtime over the channel", text, [rows]


def _delta(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    rows = [["the app on the device", "PSNR (dB)", "switch until the app serves it (s)"]]
    switched = {"delta on": r["switch"]["on"], "delta off": r["switch"]["off"]}
    rows += [
        [k, _f(v), _f(switched[k]["seconds"]) if k in switched else ""]
        for k, v in r["psnr"].items()
    ]
    text = (
        f"{r['local_images']} pictures from a {DOMAIN}-shifted camera are written as PNGs "
        f"into the device's root; a ZFDA delta ({r['nnz']:,} weights, "
        f"{_f(r['percent_of_weights'])} % of the model, {r['delta_bytes']:,} bytes) is "
        "trained on them and installed beside the model (as `semedge adapt zfda --install` "
        "does on a device). An app on the device follows the device's state "
        "(`sdk.Runtime.open_device`); while it runs, the agent switches the delta on "
        f'(`semedge device activate-delta`; the agent: "{r["switch"]["on"]["agent"]}") '
        "and off again (`semedge device deactivate-delta`), and the app picks each switch "
        f"up. {_sentence(_delta_headline(r))} The app against the torch reference: max |diff| "
        f"{r['max_abs_diff_vs_torch']['base']:.1e} (delta off), "
        f"{r['max_abs_diff_vs_torch']['delta on']:.1e} (delta on)."
    )
    return "5. On-device domain adaptation (ZFDA)", text, [rows]


def _runs(weights: dict[str, Any]) -> str:
    """What the device reports it runs: base fingerprint, and the update on it."""
    base = f"base {weights['base_fingerprint'][:8]}…"
    if not weights["update"]:
        return base
    update = weights["update"].removesuffix(".update.safetensors")
    return f"{base} + update {update} ({weights['update_sha256'][:8]}…)"


def _slf(r: dict[str, Any]) -> tuple[str, str, list[Table]]:
    rows = [["pair", "ℓ", "accuracy", "PSNR (dB)", "down (bytes)", "up (bytes)", "time (s)"]]
    rows += [[name, "", _accuracy(r[name]), _f(r[name]["psnr"]), "", "", ""] for name in _PAIRS]
    rows += [
        [
            "SLF",
            str(x["freeze"]),
            _accuracy(x),
            _f(x["psnr"]),
            f"{x['download_bytes']:,}",
            f"{x['upload_bytes']:,}",
            _f(sum(x["seconds"].values()), 1),
        ]
        for x in r["runs"]
    ]
    link = [["ℓ", "pull (s)", "fine-tune (s)", "push (s)", "apply (s)", "the device runs",
             "after rollback", "app after rollback"]]  # fmt: skip
    link += [
        [
            str(x["freeze"]),
            *(_f(x["seconds"][k], 1) for k in ("pull", "fine_tune", "push")),
            _f(x["seconds"]["apply"]),
            _runs(x["device"]["applied"]),
            _runs(x["device"]["rolled_back"]),
            "bit-exact" if x["bit_exact_after_rollback"] else "DIFFERENT",
        ]
        for x in r["runs"]
    ]
    pull = r["pull"]
    text = (
        "Two DeepJSCC transceivers (reconstruction + digit class) trained apart on the "
        "sklearn digits do not speak the same language: one's transmitter with the other's "
        "receiver is the misaligned pair. The receiver is flashed to the simulated device, "
        "where an app follows it (`sdk.Runtime.open_device`). The transmitter pulls the "
        f"receiver's decoder through the agent (`semedge device pull`: {pull['bytes']:,} "
        f"bytes, {pull['wire_bytes']:,} on the wire), freezes ℓ layers at its output, "
        "fine-tunes its encoder with the rest and pushes the tuned layers back as an update "
        "package (`semedge flash`), which the agent applies (`semedge device apply-update`) "
        "and the app picks up; then the agent rolls it back (`semedge device "
        "rollback-update`) and the app returns to its outputs from before. Accuracy and "
        f"PSNR are the app's, on {r['test_images']} held-out digits sent at "
        f"{REPORT_DB:g} dB. Time runs from the pull until the app serves the update; the "
        "second table splits it (apply: from the agent's verb until the app serves the "
        "update) and shows what the device reports it runs. " + _sentence(_slf_headline(r))
    )
    return "6. Re-alignment over the link (SLF)", text, [rows, link]


_PAIRS = ("aligned", "misaligned")
_SECTIONS = {
    "train": (_train, _train_headline),
    "build": (_build, _build_headline),
    "flash": (_flash, _flash_headline),
    "channel": (_channel, _channel_headline),
    "delta": (_delta, _delta_headline),
    "slf": (_slf, _slf_headline),
}
_EXTRA_COMMANDS = {
    "train": lambda r: [f"semedge eval {r['transceiver']} --snr 0,10,20"],
    "build": lambda r: [
        f"semedge compare {item['artifact']} --backends torch,{item['backend']}"
        for item in r["int8"].values()
    ],
}


def _section(demo: Demo, step: str, r: dict[str, Any] | None) -> Section:
    again = f"semedge demo --out {demo.out} --only {step}{demo.flags()}"
    if r is None:
        return (step, f"Not run yet: `{again}`.", [], [], [again])
    title, text, tables = _SECTIONS[step][0](r)
    extra = _EXTRA_COMMANDS.get(step, lambda r: [])(r)
    return (title, text, tables, list(r.get("plots", [])), [again, *extra])


def _relative(demo: Demo, path: str) -> str:
    return Path(os.path.relpath(Path(path).resolve(), demo.out.resolve())).as_posix()


def _markdown(demo: Demo, sections: list[Section]) -> str:
    again = f"semedge demo --out {demo.out}{demo.flags()}"
    parts = [f"# semedge demo report\n\n{_preface(demo)}Reproduce everything: `{again}`\n"]
    for title, text, tables, plots, cmds in sections:
        parts.append(f"## {title}\n\n{text}\n")
        for rows in tables:
            parts.append("| " + " | ".join(rows[0]) + " |")
            parts.append("|" + "---|" * len(rows[0]))
            parts.extend("| " + " | ".join(row) + " |" for row in rows[1:])
            parts.append("")
        parts.extend(f"![{title}]({_relative(demo, p)})\n" for p in plots)
        parts.append("Reproduce:\n\n```\n" + "\n".join(cmds) + "\n```\n")
    return "\n".join(parts)


def _preface(demo: Demo) -> str:
    """What a ``--tiny`` report's numbers mean (a smoke test's, not the models')."""
    if demo.preset.name != "tiny":
        return ""
    return (
        "These are `--tiny` numbers: models trained for seconds, to show that every step "
        "works, not how good the models get; run without `--tiny` for those. "
    )


def _inline(text: str) -> str:
    """Escape for HTML, turning `code` spans into <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _html(demo: Demo, sections: list[Section]) -> str:
    body = []
    for title, text, tables, plots, cmds in sections:
        body.append(f"<h2>{html.escape(title)}</h2>\n<p>{_inline(text)}</p>")
        for rows in tables:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows[1:]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        body.extend(
            f'<img src="{html.escape(_relative(demo, p))}" alt="{html.escape(title)}">'
            for p in plots
        )
        body.append("<pre>" + html.escape("\n".join(cmds)) + "</pre>")
    return _PAGE.format(
        preface=_inline(_preface(demo)),
        command=html.escape(f"semedge demo --out {demo.out}{demo.flags()}"),
        body="\n".join(body),
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>semedge demo report</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #eee; }}
td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; display: block; margin: 0.6em 0; }}
pre {{ background: #f4f4f4; padding: 0.5em; overflow-x: auto; }}
</style></head>
<body>
<h1>semedge demo report</h1>
<p>{preface}Reproduce everything: <code>{command}</code></p>
{body}
</body></html>
"""
