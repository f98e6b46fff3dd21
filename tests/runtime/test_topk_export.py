"""KEM top-K attention: standard-op export selects what torch selects (ties too); plugin node."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sdk.export import PLUGIN_DOMAIN, PLUGIN_OP, _topk_plugin

kem = pytest.importorskip("sdk.models.kem", reason="sdk.models.kem has not landed yet")


class TopK(torch.nn.Module):
    def __init__(self, topk: int) -> None:
        super().__init__()
        self.topk = topk

    def forward(self, q, k, v):
        return kem.topk_attention(q, k, v, self.topk)


def _export(topk, q, k, v, path, plugin=False):
    with warnings.catch_warnings(), _topk_plugin() if plugin else _null():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TopK(topk),
            (q, k, v),
            str(path),
            input_names=["q", "k", "v"],
            output_names=["out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch"} for n in ("q", "k", "v", "out")},
        )
    return path


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _selection_probe(n: int, d: int, ties: bool, seed: int):
    """q, k and one-hot v: the output row is the softmax weight put on each key index."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, d, generator=g)
    k = torch.randn(2, n, d, generator=g)
    if ties:  # many equal scores: repeated keys and integer-valued queries/keys
        q = q.round()
        k = k.round()
        k[:, n // 2 :] = k[:, : n - n // 2]
    v = torch.eye(n).expand(2, n, n).contiguous()
    return q, k, v


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("topk", [1, 3, 8])
def test_standard_op_export_selects_like_torch(tmp_path, ties, topk):
    path = _export(topk, *_selection_probe(16, 4, ties, 0), tmp_path / "t.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert PLUGIN_OP not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in range(5):
        q, k, v = _selection_probe(16, 4, ties, seed)
        want = kem.topk_attention(q, k, v, topk).numpy()
        got = sess.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0]
        assert np.array_equal(got > 0, want > 0)  # the same key indices were kept
        assert (want > 0).sum(-1).max() <= topk
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_plugin_mode_emits_one_topk_memory_node(tmp_path):
    q, k, v = _selection_probe(16, 4, False, 0)
    path = _export(4, q, k, v, tmp_path / "p.onnx", plugin=True)
    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type == PLUGIN_OP]
    assert len(nodes) == 1 and nodes[0].domain == PLUGIN_DOMAIN
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"topk": 4, "plugin_version": b"1", "plugin_namespace": b"semedge"}
    assert list(nodes[0].input) == ["q", "k", "v"]
    assert "TopK" not in {n.op_type for n in proto.graph.node}
    assert kem.topk_attention is not None and kem.topk_attention.__name__ == "topk_attention"
