"""Bad calibration input: one line that says what to do, and no output file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sdk.cli import main


def _no_inputs(path):
    value = onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [1.0])
    node = onnx.helper.make_node("Constant", [], ["y"], value=value)
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [], [out])), str(path))
    return path


def _empty(tmp_path, model):
    (tmp_path / "empty").mkdir()
    return model, ["--data", str(tmp_path / "empty")]


def _wrong_npy(tmp_path, model):
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "a.npy", np.zeros((4, 2, 8, 8), np.float32))
    return model, ["--data", str(tmp_path / "npy")]


def _not_onnx(tmp_path, model):
    (tmp_path / "x.onnx").write_text("not a model")
    return tmp_path / "x.onnx", []


CASES = {  # case: (tmp_path, good model) -> (model, extra args); expected message
    "empty data folder": (_empty, "holds no"),
    "wrong .npy shape": (_wrong_npy, "but the model takes"),
    "unknown method": (lambda t, m: (m, ["--method", "kl-magic"]), "unknown calibration method"),
    "no such dataset": (lambda t, m: (m, ["--data", "cifar"]), "unknown dataset"),
    "exclude matches nothing": (lambda t, m: (m, ["--exclude", "no*"]), "matches no quantizable"),
    "negative budget": (lambda t, m: (m, ["--budget-db=-1"]), "budgets must be >= 0"),
    "no samples": (lambda t, m: (m, ["--samples", "0"]), "must be at least 1"),
    "model without inputs": (lambda t, m: (_no_inputs(t / "n.onnx"), []), "has 0 data inputs"),
    "missing model": (lambda t, m: (t / "gone.onnx", []), "does not exist"),
    "not an onnx file": (_not_onnx, "is not an ONNX model"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(case, receiver_onnx, tmp_path, capsys):
    make, message = CASES[case]
    model, extra = make(tmp_path, receiver_onnx)
    out = tmp_path / "q.onnx"
    assert (
        main(
            [
                "calibrate",
                str(model),
                "--out",
                str(out),
                *(["--samples", "8"] if "--samples" not in extra else []),
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
