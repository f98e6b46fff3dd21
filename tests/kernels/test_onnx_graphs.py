"""The ONNX graphs of the op: standard ops agree with the reference; the plugin node matches
the node ``semedge export --topk-plugin`` emits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernels.onnx_graphs import plugin_graph, standard_graph
from kernels.reference import REFERENCES


@pytest.mark.parametrize("n,topk", [(50, 1), (50, 50), (300, 64)])
def test_standard_graph_matches_reference(n: int, topk: int) -> None:
    rng = np.random.default_rng(n + topk)
    L, d = 4, 16
    feeds = {
        x: rng.standard_normal(s).astype(np.float32)
        for x, s in (("q", (1, L, d)), ("k", (1, n, d)), ("v", (1, n, d)))
    }
    feeds["k"][0, 10:20] = feeds["k"][0, 0]  # exact ties, lower index must win
    session = ort.InferenceSession(
        standard_graph(L, n, d, topk).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    want, _ = REFERENCES["topk_memory"](feeds["q"], feeds["k"], feeds["v"], topk)
    np.testing.assert_allclose(session.run(None, feeds)[0], want, atol=1e-5)


def test_plugin_node_matches_export_contract() -> None:
    export = pytest.importorskip("sdk.export")
    model = plugin_graph(2, 3, 40, 8, 5, np.float16)
    onnx.checker.check_model(model)
    (node,) = model.graph.node
    assert (node.op_type, node.domain) == (export.PLUGIN_OP, export.PLUGIN_DOMAIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"topk": 5, "plugin_version": b"1", "plugin_namespace": b"semedge"}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
