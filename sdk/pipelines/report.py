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

Section = tuple[str, str, list[list[str]], list[str], list[str]]
"""(title, text, table rows (first row = header), plot paths, commands)."""


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
        if result is not None and step in _HEADLINES:
            lines.append(f"{step:8s} {_HEADLINES[step](result)}")
    return lines


def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _train_headline(r: dict[str, Any]) -> str:
    return (
        f"DeepJSCC {_f(r['psnr_at_report_db'])} dB vs uncoded {_f(r['uncoded_at_report_db'])} dB "
        f"PSNR at {REPORT_DB:g} dB; GAI two-task accuracy "
        f"{100 * r['multitask_accuracy_at_report_db']:.1f} %"
    )


def _build_headline(r: dict[str, Any]) -> str:
    drops = ", ".join(
        f"{label} {m['metric']} {m['drop']:+.2f}"
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
    return f"accuracy / PSNR: misaligned {_accuracy(mis)} / {_f(mis['psnr'])} dB -> SLF {runs}"


_HEADLINES = {
    "train": _train_headline,
    "build": _build_headline,
    "flash": _flash_headline,
    "channel": _channel_headline,
    "delta": _delta_headline,
    "slf": _slf_headline,
}


def _section(demo: Demo, step: str, r: dict[str, Any] | None) -> Section:
    again = f"semedge demo --out {demo.out} --only {step}{demo.flags()}"
    if r is None:
        return (step, f"Not run yet: `{again}`.", [], [], [again])
    plots = list(r.get("plots", []))
    if step == "train":
        rows = [["model", "SNR (dB)", "PSNR (dB)", "accuracy"]]
        rows += [
            [x["model"], f"{x['snr_db']:g}", _f(x["psnr"]), _accuracy(x)]
            for x in r["sweep"] + r["multitask_sweep"]
        ]
        text = (
            f"A DeepJSCC (R = 1/6) trained on {r['train_patches']:,} patches of the "
            f"scikit-image photos, tested on {r['test_patches']} held-out patches; a GAI "
            "transmitter with two tasks (reconstruction and digit class) trained on MNIST. "
            + _train_headline(r)
            + "."
        )
        cmds = [again, f"semedge eval {r['transceiver']} --snr 0,10,20"]
        return ("1. Train", text, rows, plots, cmds)
    if step == "build":
        rows = [["model", "backend", "metric", "fp32", "int8", "drop"]]
        rows += [
            [label, item["backend"], m["metric"], _f(m["fp32"]), _f(m["int8"]), f"{m['drop']:+.2f}"]
            for label, item in r["int8"].items()
            for m in item["metrics"]
        ]
        text = (
            f"The receiver is built as a {r['backend']} artifact with the decoder's weights as "
            "switchable delta targets. Both models are also built in INT8 (explicit Q/DQ, "
            "entropy calibration on the training data); the drop is measured on held-out data "
            "against the float model in torch (PSNR in dB, accuracy in percentage points)."
        )
        cmds = [again] + [
            f"semedge compare {item['artifact']} --backends torch,{item['backend']}"
            for item in r["int8"].values()
        ]
        return ("2. Export, calibrate, build", text, rows, plots, cmds)
    if step == "flash":
        rows = [["event", "active slot", "version", "state", "health PSNR (dB)"]]
        rows += [
            [e["event"], str(e["active"]), str(e["version"]), e["state"], _f(e["health_psnr"])]
            for e in r["events"]
        ]
        rows += [["file", "SHA-256 in manifest", "SHA-256 on device", "", ""]]
        rows += [
            [n, h["manifest"][:16] + "…", h["device"][:16] + "…", "", ""]
            for n, h in r["sha256"].items()
        ]
        text = (
            f"A device agent in its own process on a pty pair at 921,600 baud receives the "
            f"artifact ({r['artifact_bytes']:,} bytes, {r['wire_bytes']:,} bytes on the wire, "
            f"{_f(r['flash_seconds'], 1)} s) into slot {r['installed_slot']} in TEST; the "
            "health check runs the device runtime on held-out images, then the build is "
            "confirmed. A second build with scrambled decoder weights goes in TEST, fails the "
            f"health check and is rolled back. {_flash_headline(r)}."
        )
        return ("3. Flash, confirm, roll back", text, rows, plots, [again])
    if step == "channel":
        snrs = sorted({x["snr_db"] for x in r["rows"]})
        models = list(dict.fromkeys(x["model"] for x in r["rows"]))
        at = {(x["model"], x["snr_db"]): x["psnr"] for x in r["rows"]}
        rows = [["SNR (dB)", *models]]
        rows += [[f"{s:g}"] + [_f(at[(m, s)]) for m in models] for s in snrs]
        text = (
            f"The runtime on the device's active artifact ({r['backend']}) decodes symbols "
            f"sent over AWGN and block Rayleigh fading (MMSE equalisation), {r['images']} "
            "held-out patches per point, against analog uncoded transmission at the same "
            "bandwidth. PSNR in dB."
        )
        return ("4. The device runtime over the channel", text, rows, plots, [again])
    if step == "delta":
        rows = [["", "PSNR (dB)"]] + [[k, _f(v)] for k, v in r["psnr"].items()]
        text = (
            f"{r['local_images']} pictures from a {DOMAIN}-shifted camera are written as PNGs "
            f"into the device's root; a ZFDA delta ({r['nnz']:,} weights, "
            f"{_f(r['percent_of_weights'])} % of the model, {r['delta_bytes']:,} bytes) is "
            f"trained on them and switched on in the running app ({r['mode']} mode), then off. "
            f"{_delta_headline(r)}. The device runtime against the torch reference: max "
            f"|diff| {r['max_abs_diff_vs_torch']['base']:.1e} (delta off), "
            f"{r['max_abs_diff_vs_torch']['delta on']:.1e} (delta on)."
        )
        return ("5. On-device domain adaptation (ZFDA)", text, rows, plots, [again])
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
            _f(x["seconds"], 1),
        ]
        for x in r["runs"]
    ]
    text = (
        "Two DeepJSCC transceivers (reconstruction + digit class) trained apart on the "
        "sklearn digits do not speak the same language: one's transmitter with the other's "
        "receiver is the misaligned pair. SLF downloads the receiver's decoder, freezes ℓ "
        "layers at its output, fine-tunes the transmitter's encoder with the rest and "
        "uploads the tuned layers as an update package; the receiver applies it. Time is "
        "until the receiver runs the update (training, packaging, applying; the link's "
        f"transfer time is bytes / rate). {r['test_images']} held-out digits at "
        f"{REPORT_DB:g} dB. {_slf_headline(r)}."
    )
    return ("6. Re-alignment (SLF)", text, rows, plots, [again])


_PAIRS = ("aligned", "misaligned")


def _accuracy(row: dict[str, Any]) -> str:
    return f"{100 * row['accuracy']:.1f} %" if "accuracy" in row else ""


def _relative(demo: Demo, path: str) -> str:
    return Path(os.path.relpath(Path(path).resolve(), demo.out.resolve())).as_posix()


def _markdown(demo: Demo, sections: list[Section]) -> str:
    again = f"semedge demo --out {demo.out}{demo.flags()}"
    parts = [f"# semedge demo report\n\nReproduce everything: `{again}`\n"]
    for title, text, rows, plots, cmds in sections:
        parts.append(f"## {title}\n\n{text}\n")
        if rows:
            parts.append("| " + " | ".join(rows[0]) + " |")
            parts.append("|" + "---|" * len(rows[0]))
            parts.extend("| " + " | ".join(row) + " |" for row in rows[1:])
            parts.append("")
        parts.extend(f"![{title}]({_relative(demo, p)})\n" for p in plots)
        parts.append("Reproduce:\n\n```\n" + "\n".join(cmds) + "\n```\n")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape for HTML, turning `code` spans into <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _html(demo: Demo, sections: list[Section]) -> str:
    body = []
    for title, text, rows, plots, cmds in sections:
        body.append(f"<h2>{html.escape(title)}</h2>\n<p>{_inline(text)}</p>")
        if rows:
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
img {{ max-width: 100%; display: block; margin: 0.6em 0; }}
pre {{ background: #f4f4f4; padding: 0.5em; overflow-x: auto; }}
</style></head>
<body>
<h1>semedge demo report</h1>
<p>Reproduce everything: <code>{command}</code></p>
{body}
</body></html>
"""
