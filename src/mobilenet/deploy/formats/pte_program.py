"""Reading what an ExecuTorch ``.pte`` program runs, without running it: its ``forward`` plan
(which instructions call a delegate, which call a kernel outside it) and the dtypes of the
constant tensors each XNNPACK delegate holds.

A ``.pte`` is a FlatBuffer of ExecuTorch's ``program.fbs`` (identifier ``ET12``), followed by data
segments; an XNNPACK delegate's payload is itself a FlatBuffer of XNNPACK's ``runtime_schema.fbs``
(``XN00``), behind a small ``XH00`` header. The few fields read here are addressed by their index
in those schemas (noted beside each); anything out of bounds is a ``DamagedFileError``.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from mobilenet.deploy.integrity import DamagedFileError

# XNNPACK's XNNDatatype (runtime_schema.fbs) -> how a stored constant is described.
XNN_DATATYPES = {
    1: "float32", 2: "float16", 3: "int8", 4: "uint8", 5: "int32", 6: "int8 per-channel", 7: "int32 per-channel",
    8: "int4 per-channel", 9: "int8 dynamic", 10: "int4 blockwise",
}
_KERNEL_CALL, _DELEGATE_CALL = 1, 2  # InstructionArguments union (program.fbs)
_TENSOR_VALUE, _QUANTIZED_TENSOR_VALUE = 1, 2  # XValueUnion (runtime_schema.fbs)
_STATIC_TRANSPOSE = 5  # XNodeUnion (runtime_schema.fbs)
_INLINE = 0  # DataLocation


@dataclass
class ProgramPlan:
    """What ``forward`` runs: ``steps`` in order, each a delegate's id or an operator's name;
    ``outside`` the operators among them that run outside every delegate; over the XNNPACK payloads,
    their nodes, the transposes among them, and the dtypes of their multi-dimensional constants
    (``weights``)."""

    steps: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    delegate_calls: int = 0
    xnnpack_nodes: int = 0
    xnnpack_transposes: int = 0
    weights: Counter[str] = field(default_factory=Counter)


class _Table:
    """One FlatBuffer table; ``field`` numbers are the schema's field order (a union takes two)."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def _u32(self, at: int) -> int:
        return struct.unpack_from("<I", self.data, at)[0]

    def _slot(self, number: int) -> int:
        vtable = self.pos - struct.unpack_from("<i", self.data, self.pos)[0]
        size = struct.unpack_from("<H", self.data, vtable)[0]
        entry = 4 + 2 * number
        return struct.unpack_from("<H", self.data, vtable + entry)[0] if entry < size else 0

    def scalar(self, number: int, fmt: str, default: int = 0) -> int:
        slot = self._slot(number)
        return struct.unpack_from("<" + fmt, self.data, self.pos + slot)[0] if slot else default

    def table(self, number: int) -> _Table | None:
        slot = self._slot(number)
        return _Table(self.data, self.pos + slot + self._u32(self.pos + slot)) if slot else None

    def _vector(self, number: int) -> tuple[int, int]:
        slot = self._slot(number)
        if not slot:
            return 0, 0
        start = self.pos + slot + self._u32(self.pos + slot)
        return start + 4, self._u32(start)

    def tables(self, number: int) -> list[_Table]:
        start, count = self._vector(number)
        return [_Table(self.data, start + 4 * i + self._u32(start + 4 * i)) for i in range(count)]

    def blob(self, number: int) -> bytes:
        start, count = self._vector(number)
        if start + count > len(self.data):
            raise IndexError("vector out of range")
        return self.data[start : start + count]

    def string(self, number: int) -> str:
        return self.blob(number).decode("utf-8")


def read_plan(data: bytes, method: str = "forward") -> ProgramPlan:
    """The plan of ``method`` in the program ``data`` (the bytes of a .pte file)."""
    if data[4:8] != b"ET12":
        raise DamagedFileError("not an ExecuTorch program (no 'ET12' identifier)")
    try:
        return _read_plan(data, method)
    except (struct.error, IndexError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"the program's plan is damaged ({err})") from None


def _read_plan(data: bytes, method: str) -> ProgramPlan:
    program = _Table(data, struct.unpack_from("<I", data, 0)[0])
    # The extended header (eh00): its length, the program's size, then where the segments start.
    segment_base = struct.unpack_from("<Q", data, 24)[0] if data[8:12] == b"eh00" else 0
    plans = [p for p in program.tables(1) if p.string(0) == method]  # Program.execution_plan; ExecutionPlan.name
    if not plans:
        raise DamagedFileError(f"the program has no {method!r} method")
    plan = plans[0]
    operators = [op.string(0) for op in plan.tables(6)]  # ExecutionPlan.operators; Operator.name
    delegates = plan.tables(7)  # ExecutionPlan.delegates
    result = ProgramPlan()
    for chain in plan.tables(5):  # ExecutionPlan.chains
        for instruction in chain.tables(2):  # Chain.instructions
            kind, call = instruction.scalar(0, "B"), instruction.table(1)  # Instruction.instr_args (a union)
            if call is None:
                continue
            if kind == _KERNEL_CALL:
                name = operators[call.scalar(0, "i")]  # KernelCall.op_index
                result.steps.append(name)
                result.outside.append(name)
            elif kind == _DELEGATE_CALL:
                delegate = delegates[call.scalar(0, "i")]  # DelegateCall.delegate_index
                result.steps.append(delegate.string(0))  # BackendDelegate.id
                result.delegate_calls += 1
                if delegate.string(0) == "XnnpackBackend":
                    _read_xnnpack(_payload(data, program, delegate, segment_base), result)
    return result


def _payload(data: bytes, program: _Table, delegate: _Table, segment_base: int) -> bytes:
    """A delegate's processed bytes: inline in the program, or in a data segment after it."""
    reference = delegate.table(1)  # BackendDelegate.processed
    if reference is None:
        return b""
    location, index = reference.scalar(0, "b"), reference.scalar(1, "I")
    if location == _INLINE:
        return program.tables(3)[index].blob(0)  # Program.backend_delegate_data; BackendDelegateInlineData.data
    segment = program.tables(4)[index]  # Program.segments
    offset, size = segment.scalar(0, "Q"), segment.scalar(1, "Q")  # DataSegment.offset, .size
    return data[segment_base + offset : segment_base + offset + size]


def _read_xnnpack(payload: bytes, result: ProgramPlan) -> None:
    """Count the nodes of an XNNPACK graph and the dtypes of its constant weights (2-D and up)."""
    if payload[4:8] == b"XH00":  # header: flatbuffer offset at 10, then its size
        start = struct.unpack_from("<I", payload, 10)[0]
        payload = payload[start : start + struct.unpack_from("<I", payload, 14)[0]]
    graph = _Table(payload, struct.unpack_from("<I", payload, 0)[0])
    nodes = graph.tables(1)  # XNNGraph.xnodes
    result.xnnpack_nodes += len(nodes)
    result.xnnpack_transposes += sum(node.scalar(0, "B") == _STATIC_TRANSPOSE for node in nodes)  # XNode.xnode_union
    for value in graph.tables(2):  # XNNGraph.xvalues
        kind, tensor = value.scalar(0, "B"), value.table(1)  # XValue.xvalue_union
        if kind == _QUANTIZED_TENSOR_VALUE and tensor is not None:
            tensor = tensor.table(0)  # XNNQuantizedTensorValue.tensor_value
        if tensor is None or kind not in (_TENSOR_VALUE, _QUANTIZED_TENSOR_VALUE):
            continue
        constant = tensor.scalar(3, "I")  # XNNTensorValue.constant_buffer_idx (0: not a constant)
        if constant and tensor.scalar(1, "I") >= 2:  # XNNTensorValue.num_dims: a weight, not a bias
            datatype = tensor.scalar(0, "h")  # XNNTensorValue.datatype
            result.weights[XNN_DATATYPES.get(datatype, f"xnn datatype {datatype}")] += 1
