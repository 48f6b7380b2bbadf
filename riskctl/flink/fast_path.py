"""A shorter way from the JVM into the decide function, for each event (thread mode).

For every record of the events side, PyFlink's embedded operator (``TwoInputFunctionOperation`` of
apache-flink 1.20) builds two ``Row`` objects from the Java record (the keyed ``Row(k, v)`` and the event's
``Row(raw, topic, partition, offset)``, each with its field names and a ``RowKind`` looked up by value), runs
the function's result through four nested generators (the operation, its output loop, the function's wrapper
and its side-output filter), and converts each output ``Row`` back; the function then asks the JVM for the
current key, which converts a third ``Row``. That costs about 6.5 µs per event in Python alone
(bench/flink_profile/README.md), more than the engine's features and condition rules together.

:func:`install` replaces, on the one operation object that runs this function, its ``process_element1`` by
a single generator that hands the function the key and the record's fields as the JVM sent them (a tuple)
and yields each output as the ``(row kind, fields)`` pair that PyFlink's converter would have made of it.
What reaches the JVM is the same, value for value (a unit test compares both ways over PyFlink's own
classes, and the job's tests run through it). The broadcast side, the timers and everything else keep
PyFlink's path.

It reaches into PyFlink's internals, so it checks every piece it relies on first (the classes, the converters
for exactly the job's record types, the function's wrapper and its context) and changes nothing when one
differs, e.g. in another PyFlink version: the job then runs PyFlink's own path, which decides the same. The
decide operator logs which path it runs; ``job.fast_path: false`` turns it off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

#: how many frames above the function's ``open`` the operation's own ``open`` is (3 in PyFlink 1.20)
_MAX_DEPTH = 8


def install(
    function: Any,
    decide: Callable[[str, Any, Any], list[tuple[str, str, bytes]]],
    event_fields: list[str],
    output_fields: list[str],
) -> str | None:
    """Route the events of the operation running ``function`` to ``decide(key, record, ctx)``.

    Called from ``function.open``; ``event_fields`` and ``output_fields`` name the fields of the event record
    (``Row(k, v)``'s ``v``) and of the output row, all of them types PyFlink passes as they are (strings,
    numbers, bytes). Returns None when installed, else why not (nothing was changed).
    """
    try:
        from pyflink.fn_execution.embedded.converters import IdentityDataConverter, RowDataConverter
        from pyflink.fn_execution.embedded.operations import TwoInputFunctionOperation
    except Exception as exc:  # noqa: BLE001 - not inside an embedded (thread-mode) operator, or another PyFlink
        return f"PyFlink's embedded operations are not importable here ({type(exc).__name__})"
    operation = _calling_operation(TwoInputFunctionOperation)
    if operation is None:
        return "open() was not called by PyFlink's TwoInputFunctionOperation"
    why = _check_converters(operation, RowDataConverter, IdentityDataConverter, event_fields, output_fields)
    if why is not None:
        return why
    if getattr(operation, "_chained_operations", None):
        return "Python operations are chained after the decide function"
    wrapper = getattr(getattr(operation, "_main_operation", None), "_process_element_func1", None)
    cells = _closure(wrapper)
    bound = cells.get("process_element")
    ctx = cells.get("read_only_broadcast_ctx")
    if getattr(bound, "__self__", None) is not function or ctx is None:
        return "the operation's event wrapper is not the keyed broadcast one of this function"
    operation.process_element1 = make_process_element1(decide, ctx)
    return None


def make_process_element1(
    decide: Callable[[str, Any, Any], list[tuple[str, str, bytes]]], ctx: Any
) -> Callable[[Any], Iterator[tuple[int, tuple[str, str, bytes]]]]:
    """The replacement: ``value`` is the JVM's ``(kind, (k, (kind, (raw, topic, partition, offset))))``; each
    output ``(ch, k, v)`` goes back as ``(0, (ch, k, v))``, what PyFlink's converter makes of an INSERT row.

    A generator, not a list: pemja hands the JVM an iterator only for an exact generator.
    """

    def process_element1(value: Any) -> Iterator[tuple[int, tuple[str, str, bytes]]]:
        fields = value[1]
        for out in decide(fields[0], fields[1][1], ctx):
            yield (0, out)

    return process_element1


def java_value_state(value_state: Any) -> tuple[Any, str | None]:
    """The Java ValueState under PyFlink's thread-mode ``value_state`` of pickled bytes, and None; or
    ``value_state`` itself and why not.

    PyFlink's wrapper pickles every value on its way into the JVM and unpickles it on its way back, through
    two Python calls and a general pickler, and the job's values are already bytes (``FlinkKeyedState``
    encodes the state itself). The Java state takes and gives the bytes as they are (a ``byte[]``, the
    descriptor's ``PICKLED_BYTE_ARRAY`` serializer); ``FlinkKeyedState(pickle_writes=True)`` pickles each
    write itself, as a ``bytes`` object without pickle's frame (8 bytes more per user instead of the
    wrapper's 18), so the wrapper, on PyFlink's own path, reads every value written here as the bytes they
    are. Values written through the wrapper (older releases, or PyFlink's own path) read here as well:
    ``FlinkKeyedState`` decodes a value that unpickles to bytes once more.
    """
    try:
        from pyflink.fn_execution.datastream.embedded.state_impl import ValueStateImpl
        from pyflink.fn_execution.embedded.converters import PickleDataConverter
    except Exception as exc:  # noqa: BLE001 - not inside an embedded (thread-mode) operator, or another PyFlink
        return value_state, f"PyFlink's embedded states are not importable here ({type(exc).__name__})"
    if type(value_state) is not ValueStateImpl:
        return value_state, f"the state is a {type(value_state).__name__}, not PyFlink's embedded one"
    if type(getattr(value_state, "_value_converter", None)) is not PickleDataConverter:
        return value_state, "the state's values are not pickled bytes"
    java = getattr(value_state, "_state", None)
    if java is None or not all(callable(getattr(java, m, None)) for m in ("value", "update", "clear")):
        return value_state, "the state wraps no Java ValueState"
    return java, None


def _calling_operation(cls: type) -> Any:
    frame: FrameType | None = sys._getframe(2)  # noqa: SLF001 - the caller of the function's open()
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if type(candidate) is cls:
            return candidate
        frame = frame.f_back
    return None


def _check_converters(
    operation: Any, row: type, identity: type, event_fields: list[str], output_fields: list[str]
) -> str | None:
    inp: Any = getattr(operation, "_input_data_converter1", None)
    if not _is_row(inp, row, ["k", "v"]) or type(inp._field_data_converters[0]) is not identity:  # noqa: SLF001
        return "the events side is not Row(k, v Row(...))"
    if not _is_row(inp._field_data_converters[1], row, event_fields, identity):  # noqa: SLF001
        return f"the event record is not Row({', '.join(event_fields)}) of plain values"
    if not _is_row(getattr(operation, "_output_data_converter", None), row, output_fields, identity):
        return f"the output is not Row({', '.join(output_fields)}) of plain values"
    return None


def _is_row(conv: Any, row: type, names: list[str], identity: type | None = None) -> bool:
    """``conv`` converts a Row of fields ``names``; with ``identity``: each field as it is."""
    if type(conv) is not row or getattr(conv, "_field_names", None) != names:
        return False
    fields = getattr(conv, "_field_data_converters", None)
    if not isinstance(fields, list) or len(fields) != len(names):
        return False
    return identity is None or all(type(f) is identity for f in fields)


def _closure(fn: Any) -> dict[str, Any]:
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells:
        return {}
    found = {}
    for name, cell in zip(code.co_freevars, cells, strict=True):
        try:
            found[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return found
