"""What an exported file really runs, read back from the file and the runtime that loaded it.

The silent fallbacks MobileNet users most often meet on mobile runtimes are invisible in the
logits: an op the delegate does not take runs on the runtime's slow reference kernels (a layout
copy in an NHWC ``.pte``, the uint8 -> int8 QUANTIZE at an int8 ``.tflite``'s input), a layout
change adds TRANSPOSE ops, weights are stored wider or narrower than asked. So every file predictor
reads an ``Execution`` back (``predictor.execution``): the ops, the delegate calls and what runs
outside them, the TRANSPOSE ops, and the dtypes of the stored weights. ``mobilenet export`` prints
it and refuses to write a file that breaks its writer's promise (``formats``' ``execution_problem``:
nothing outside XNNPACK in a ``.pte``, no TRANSPOSE in an NHWC ``.tflite``); ``evaluate
--exported`` prints it, as part of the predictor's description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Execution:
    """What a loaded file runs. ``ops``: operators in its graph (a delegating runtime's count is
    taken before delegation). ``delegate``: the delegate that runs them, where the runtime has one,
    with ``delegate_calls`` partitions and the ops ``outside`` every partition, in order."""

    runtime: str
    ops: int
    delegate: str | None = None
    delegate_calls: int = 0
    outside: tuple[str, ...] = ()
    transposes: int = 0
    weights: tuple[tuple[str, int], ...] = ()  # stored dtype of the weight tensors (2-D and up), and how many

    @classmethod
    def of(
        cls, runtime: str, ops: int, *, weights: Mapping[str, int], delegate: str | None = None,
        delegate_calls: int = 0, outside: Sequence[str] = (), transposes: int = 0,
    ) -> Execution:
        return cls(runtime, ops, delegate, delegate_calls, tuple(outside), transposes,
                   tuple(sorted(weights.items(), key=lambda kv: -kv[1])))

    @property
    def fully_delegated(self) -> bool:
        return self.delegate is not None and self.delegate_calls > 0 and not self.outside

    def summary(self) -> str:
        """One line: ``runs 29 ops, all in 1 XNNPACK call; 0 TRANSPOSE; weights stored as float32 (28)``."""
        runs = f"runs {self.ops} ops"
        if self.delegate is not None:
            calls = f"{self.delegate_calls} {self.delegate} call{'s' if self.delegate_calls != 1 else ''}"
            if self.outside:
                runs += f", {calls} and {len(self.outside)} outside {self.delegate} ({', '.join(self.outside)})"
            else:
                runs += f", all in {calls}"
        weights = ", ".join(f"{dtype} ({n})" for dtype, n in self.weights) or "none found"
        return f"{runs}; {self.transposes} TRANSPOSE; weights stored as {weights}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outside"], data["weights"] = list(self.outside), dict(self.weights)
        return data
