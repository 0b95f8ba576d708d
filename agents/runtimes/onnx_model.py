"""What the agent reads from an ONNX model with the onnx package alone: its inputs (names, declared dimensions,
types), its outputs' types, and whether its tensors lie in files beside it.

No runtime is imported here, so TVM's adapter refuses a request that does not fit its model (an input shape the
model fixes otherwise, a sequence input, a batch size a model without inputs cannot run) before it imports TVM: that
import alone took 4-5 s on a 2-core machine, a refusal read with onnx about 1 s. onnxruntime's adapter reads a model
here only for what its session does not say (which inputs declare no shape). onnx is imported by the functions that
need it: a device given a prebuilt TVM library, or onnxruntime alone, may have none.
"""
from __future__ import annotations

from agents.runtimes.base import LoadFailure, external_data_failure, input_shapes, unfeedable_input


def read_model(data: bytes):
    """The checked model's bytes parsed (the file is never opened again). A model whose tensors lie in files beside
    it is refused: ONNX would read them from the working directory, and no hash covers them."""
    import onnx
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise LoadFailure(f"not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    if uses_external_data(proto.graph) or any(map(uses_external_data, proto.functions)):
        raise external_data_failure()
    return proto


def onnx_inputs(onnx_model, batch: int, input_shape: tuple = ()) -> list[tuple[str, tuple, str]]:
    """(name, shape, numpy dtype) of the graph inputs that are not initializers (shapes: see base.input_shapes)."""
    import onnx

    fed = graph_inputs(onnx_model)
    for x in fed:  # a sequence failed as "KeyError: 0" when its dtype was looked up, strings in the build
        if not is_number_tensor(x.type):
            raise unfeedable_input(x.name, type_name(x.type))
    shapes = input_shapes(declared_dims(fed), batch, input_shape)
    return [(x.name, shape, str(onnx.helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type)))
            for x, shape in zip(fed, shapes)]


def graph_inputs(onnx_model) -> list:
    """The graph inputs that are not initializers: what a measurement feeds."""
    inits = {i.name for i in onnx_model.graph.initializer}
    return [x for x in onnx_model.graph.input if x.name not in inits]


def declared_dims(inputs) -> list[tuple[str, tuple | None]]:
    """(name, dims) of each input as the model declares them (dims None: no shape at all): a free dimension is its
    symbol's name, or None. A size below 1 is free, as onnxruntime reads it: [-1, -1, 8] (a hand-made "dynamic"
    model) ran at [1, 1, 8], its second -1 taking the batch size the first one was given."""
    return [(x.name, tuple(d.dim_value if d.dim_value > 0 else d.dim_param or None
                           for d in x.type.tensor_type.shape.dim) if x.type.tensor_type.HasField("shape") else None)
            for x in inputs]


def is_number_tensor(type_proto) -> bool:
    """Whether a graph input or output of this type is a tensor of numbers (not a sequence, map, optional or string)."""
    import onnx
    return (type_proto.WhichOneof("value") == "tensor_type"
            and type_proto.tensor_type.elem_type not in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING))


def type_name(type_proto) -> str:
    """An ONNX type as onnxruntime writes it: "tensor(float)", "seq(tensor(float))", "map(int64,tensor(float))"."""
    import onnx
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({onnx.TensorProto.DataType.Name(type_proto.tensor_type.elem_type).lower()})"
    if kind == "sequence_type":
        return f"seq({type_name(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_name(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return f"map({key},{type_name(type_proto.map_type.value_type)})"
    return str(kind)


def uses_external_data(graph) -> bool:
    """Whether a tensor of ``graph`` or a function (an initializer, a node's attribute, a subgraph's) lies in a file
    beside the model."""
    import onnx
    for tensor in getattr(graph, "initializer", ()):  # a FunctionProto has none
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return True
    for attr in (a for node in graph.node for a in node.attribute):
        tensors = [attr.t, *attr.tensors] if attr.HasField("t") else list(attr.tensors)
        graphs = [attr.g, *attr.graphs] if attr.HasField("g") else list(attr.graphs)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors) or any(map(uses_external_data, graphs)):
            return True
    return False


def output_dtypes(proto) -> list[str]:
    """The numpy types of the model's tensor outputs; a sequence or map (a classifier's ZipMap) has none: once
    compiled and run, such a model failed here with "KeyError: 0"."""
    import onnx
    return [str(onnx.helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type)) for x in proto.graph.output
            if is_number_tensor(x.type)]


__all__ = ["declared_dims", "graph_inputs", "is_number_tensor", "onnx_inputs", "output_dtypes", "read_model",
           "type_name", "uses_external_data"]
