"""Keep ZFDA delta targets switchable in an INT8 graph: float weights feeding QuantizeLinear.

ONNX Runtime's quantizer stores a quantized weight ``W`` as an int8 initializer
``W_quantized`` feeding ``DequantizeLinear``; the float ``W`` is gone, so a delta
naming ``W`` has nothing to patch. :func:`float_targets` rewrites every delta target
back to its float form, with the scales calibration chose:

* a weight becomes ``W (float, graph input with the base as default) ->
  QuantizeLinear(scale, 0, axis) -> DequantizeLinear -> Conv``. A delta feeds new float
  values; they are quantized with the **base** scales on every run, so switching back
  writes back the saved base floats and gives bit-identical int8 weights (restoration
  stays exact by construction). A delta value beyond the base channel's range
  saturates at ``+-127 * scale``.
* a bias becomes a float input of its consumer (the int32 bias Q/DQ is dropped: its
  scale depends on the input scale and QuantizeLinear to int32 needs opset 21).

This is also the form TensorRT documents for refitting explicitly quantized networks:
the refittable weights are the float initializers in front of the Q nodes, under
their own names, so the plan builder marks ``W`` refittable exactly as for fp32.

The alternative — int8 weight inputs, with the runtime re-quantising only the
channels a delta touches — keeps one Q op per weight out of the run but moves
quantization into every backend's delta code; ``tools/bench_int8.py`` measures both.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

QUANTIZED_SUFFIX = "_quantized"


def float_targets(
    quantized: onnx.ModelProto, fp32: onnx.ModelProto, targets: Sequence[str]
) -> onnx.ModelProto:
    """``quantized`` with ``targets`` as float graph inputs (see the module docstring)."""
    if not targets:
        return quantized
    base = {i.name: i for i in fp32.graph.initializer}
    specs = {v.name: v for v in fp32.graph.input}
    graph = quantized.graph
    wanted = set(targets)
    drop_inits: set[str] = set()
    drop_nodes = []
    new_nodes = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        name = source[: -len(QUANTIZED_SUFFIX)] if source.endswith(QUANTIZED_SUFFIX) else None
        if name in wanted and node.output[0] == name:  # an int32 bias: use the float one
            drop_nodes.append(node)
            drop_inits.update(n for n in node.input if n)
        elif name in wanted:  # a weight: float -> QuantizeLinear with the same scale
            quantize = onnx.helper.make_node(
                "QuantizeLinear",
                [name, *node.input[1:]],
                [name + "_int8"],
                name=name + "_QuantizeLinear",
            )
            quantize.attribute.extend(a for a in node.attribute if a.name == "axis")
            new_nodes.append((node, quantize))
            node.input[0] = name + "_int8"
            drop_inits.add(source)
    for node in drop_nodes:
        graph.node.remove(node)
    for dq, quantize in new_nodes:
        graph.node.insert(list(graph.node).index(dq), quantize)
    kept = [i for i in graph.initializer if i.name not in drop_inits and i.name not in wanted]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *(base[t] for t in targets)])
    data_inputs = [v for v in graph.input if v.name not in wanted]
    del graph.input[:]
    graph.input.extend([*data_inputs, *(specs[t] for t in targets)])
    return quantized
