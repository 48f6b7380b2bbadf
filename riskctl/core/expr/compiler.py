"""The compiler: a syntax tree and a rule's names in, one closure ``fn(event, ctx)`` out.

:class:`Compiler` walks the tree (:mod:`riskctl.core.expr.nodes`), resolving names (``event``, the rule's
features, its pattern steps) and compiling fields and aggregates itself; the operators and scalar functions
are built by :mod:`riskctl.core.expr.operators`. :class:`CompiledExpression` is the result the rest of
riskctl uses: the closure, plus what the expression reads, so the engine can skip work for an event.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from riskctl.core.errors import suggest
from riskctl.core.expr import nodes, operators
from riskctl.core.expr.closures import Compiled, Fn, as_bool, constant, get_path
from riskctl.core.expr.functions import AGGREGATE_FUNCTIONS, FOLDS, FUNCTIONS, SCALAR_FUNCTIONS
from riskctl.core.expr.lexer import expr_error
from riskctl.core.expr.nodes import COMPARE_OPS, Node
from riskctl.core.expr.parser import parse
from riskctl.core.pattern_spec import AGGREGATES_KEY

#: Key under which the engine stamps an event's feature values before handing it to a sequence pattern, so
#: that step conditions (signature ``cond(event, steps)``) can refer to features. Names starting with ``_``
#: are refused in expressions, so a user cannot read or spoof it through ``event._features``.
FEATURES_FIELD = "_features"


class Compiler:
    """Compiles one expression's tree for one rule: resolves names against the rule's features and pattern
    steps, and records what the expression reads (features, steps, top-level event fields), which the engine
    uses to keep and hand over only what matters."""

    def __init__(
        self,
        features: Collection[str],
        steps: Collection[str],
        feature_source: str,
    ) -> None:
        self.features = frozenset(features)
        self.steps = frozenset(steps)
        self.feature_source = feature_source
        self.used_features: set[str] = set()
        self.used_steps: set[str] = set()
        # top-level event fields read (of the event or of a step's events); None: a whole event is a value
        self.event_fields: set[str] | None = set()
        # paths read of the current event itself (``event.a.b`` -> "a.b"): what an explanation shows
        self.event_paths: set[str] = set()
        # the aggregates over steps that read every event (sum avg min max distinct), which a pattern matcher
        # keeps folded per partial match: (kind, step, field path) -> (step, initial, fold(acc, event))
        self.aggregates: dict[tuple[str, str, tuple[str, ...]], tuple[str, Any, Fn]] = {}

    def names(self) -> list[str]:
        """The names an expression of this rule may use (for "did you mean")."""
        return ["event", *sorted(self.features), *sorted(self.steps)]

    # ------------------------------------------------------------------ entry
    def value(self, node: Node) -> Compiled:
        """Compile a node used as a value (a bare step is not a value)."""
        c = self.compile(node)
        if c.step is not None and not c.path:
            msg = (
                f"step {c.step!r} is a list of events: use a field ({c.step}.amount is the last event's), "
                f"count({c.step}), first({c.step}) or last({c.step})"
            )
            raise expr_error(msg, node.pos)
        return c

    def compile(self, node: Node) -> Compiled:
        """Compile any node (a bare step too: aggregates and members take one)."""
        if isinstance(node, nodes.Const):
            return constant(node.value)
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, nodes.Member):
            return self.member(node)
        if isinstance(node, nodes.ListNode):
            return self.list_(node)
        if isinstance(node, nodes.Unary):
            return self.unary(node)
        if isinstance(node, nodes.BoolOp):
            return self.boolop(node)
        if isinstance(node, nodes.Binary):
            a, b = self.value(node.a), self.value(node.b)
            if node.op in COMPARE_OPS:
                return operators.compare(node.op, a, b)
            if node.op in ("in", "not in"):
                return operators.contains(node.op, a, b, node.b.pos)
            return operators.arith(node.op, a, b, node.pos, node.b.pos)
        if isinstance(node, nodes.Call):
            return self.call(node)
        msg = f"internal error: unknown node {type(node).__name__}"  # pragma: no cover
        raise expr_error(msg, node.pos)

    # ------------------------------------------------------------------ names
    def name(self, node: nodes.Name) -> Compiled:
        """A feature's value (from ``ctx``; in a step, from the event's :data:`FEATURES_FIELD`) or a step."""
        name = node.name
        if name == "event":
            msg = "'event' is the whole event: use one of its fields, e.g. event.amount"
            raise expr_error(msg, node.pos)
        if name in self.features:
            self.used_features.add(name)
            if self.feature_source == "event":

                def from_event(e: Any, c: Any) -> Any:
                    f = e.get(FEATURES_FIELD)
                    return f.get(name) if f is not None else None

                return Compiled(from_event)

            def feature(e: Any, c: Any) -> Any:
                return c.get(name)

            return Compiled(feature)
        if name in self.steps:
            self.used_steps.add(name)

            def step_events(e: Any, c: Any) -> Any:
                return c.get(name) or ()

            return Compiled(step_events, step=name)
        if name in FUNCTIONS:
            msg = f"{name!r} is a function: call it, e.g. {name}(...)"
            raise expr_error(msg, node.pos)
        what = "feature or step" if self.steps else "feature"
        msg = f"unknown name {name!r}: not 'event', a {what} of this rule"
        choices = self.names()
        hint = suggest(name, choices)
        if not self.features and not self.steps:
            msg = f"unknown name {name!r}: fields are read as event.<field>"
            hint = "event." + name
        raise expr_error(msg, node.pos, hint)

    def member(self, node: nodes.Member) -> Compiled:
        """``event.a.b``, ``step.f`` (the step's last event) or ``first(s).f``, read with ``Mapping.get``."""
        # Flatten a.b.c into root + path.
        path: list[str] = []
        cur: Node = node
        while isinstance(cur, nodes.Member):
            path.append(cur.name)
            cur = cur.obj
        path.reverse()
        fields = tuple(path)
        if self.event_fields is not None:
            self.event_fields.add(fields[0])
        if isinstance(cur, nodes.Name) and cur.name == "event":
            self.event_paths.add(".".join(fields))
            if len(fields) == 1:
                key = fields[0]

                def event_field(e: Any, c: Any) -> Any:
                    return e.get(key)

                return Compiled(event_field, field=key)

            def event_path(e: Any, c: Any) -> Any:
                return get_path(e, fields)

            return Compiled(event_path)
        if isinstance(cur, nodes.Name) and cur.name in self.features and cur.name not in self.steps:
            msg = f"feature {cur.name!r} is a value and has no field {fields[0]!r}"
            raise expr_error(msg, node.pos)
        known = self.event_fields
        root = self.compile(cur)
        if isinstance(cur, nodes.Call) and cur.name in ("first", "last"):
            self.event_fields = known  # first(s).f reads field f of an event, not the whole event
        if root.step is not None:
            step = root.step

            def last_field(e: Any, c: Any) -> Any:
                events = c.get(step)
                if not events:
                    return None
                return get_path(events[-1], fields)

            return Compiled(last_field, step=step, path=fields)
        if root.is_const:
            msg = "a constant has no fields"
            raise expr_error(msg, node.pos)
        inner = root.fn

        def get_member(e: Any, c: Any) -> Any:
            return get_path(inner(e, c), fields)

        return Compiled(get_member)

    # ------------------------------------------------------------------ literals
    def list_(self, node: nodes.ListNode) -> Compiled:
        """A list literal: a constant list when every item is constant.

        A Python list, as the event's lists are: a tuple never equals a list, so ``event.tags == ["vpn"]`` was
        never true (and ``!=`` always), nor ``event.pair in [[1, 2]]`` or ``contains(event.pairs, [1, 2])``.
        Nothing changes a value while a condition is evaluated, so one constant list serves every event.
        """
        items = [self.value(i) for i in node.items]
        if all(i.is_const for i in items):
            return constant([i.const for i in items])
        fns = tuple(i.fn for i in items)

        def make_list(e: Any, c: Any) -> Any:
            return [f(e, c) for f in fns]

        return Compiled(make_list)

    # ------------------------------------------------------------------ operators

    # ------------------------------------------------------------------ operators
    def unary(self, node: nodes.Unary) -> Compiled:
        return operators.unary(node.op, self.value(node.x))

    def boolop(self, node: nodes.BoolOp) -> Compiled:
        """Compile an ``and``/``or`` chain item by item: a constant item that decides the chain ends it (the
        items after it are never compiled), one that cannot decide it is dropped."""
        is_and = node.op == "and"
        items: list[Compiled] = []
        for item in node.items:
            c = self.value(item)
            if c.is_const:
                truth = bool(c.const)
                if truth == is_and:  # True in 'and' / False in 'or': no effect
                    continue
                return constant(not is_and)  # False in 'and' / True in 'or': decides
            items.append(c)
        if not items:
            return constant(is_and)
        return operators.bool_chain(items, is_and)

    def call(self, node: nodes.Call) -> Compiled:
        """An aggregate over a step (``min``/``max`` of one step argument too), else a scalar function."""
        name = node.name
        if name not in FUNCTIONS:
            if name in self.features or name in self.steps or name == "event":
                msg = f"{name!r} is not a function"
                raise expr_error(msg, node.pos)
            msg = f"unknown function {name!r} (functions: {', '.join(FUNCTIONS)})"
            raise expr_error(msg, node.pos, suggest(name, FUNCTIONS))
        args = [self.compile(a) for a in node.args]
        steps_args = [a for a in args if a.step is not None]
        if name in AGGREGATE_FUNCTIONS and (name not in SCALAR_FUNCTIONS or (len(args) == 1 and steps_args)):
            return self.aggregate(node, args)
        for arg, arg_node in zip(args, node.args, strict=True):
            if arg.step is not None and not arg.path:
                self.value(arg_node)  # raises the "step is a list" error
        return operators.scalar_call(name, args, node.pos)

    def aggregate(self, node: nodes.Call, args: list[Compiled]) -> Compiled:
        """``count first last sum avg min max distinct`` over the events of a pattern step."""
        name = node.name
        if len(args) != 1 or args[0].step is None:
            msg = f"{name}() takes one pattern step or step field, e.g. {name}(fails) or {name}(fails.amount)"
            if not self.steps:
                msg = f"{name}() works on pattern steps, and this condition has none"
            raise expr_error(msg, node.pos)
        step, path = args[0].step, args[0].path
        if name == "count":
            if path:
                msg = "count() takes a step, not a field: count(fails)"
                raise expr_error(msg, node.pos)

            def count(e: Any, c: Any) -> Any:
                events = c.get(step)
                return len(events) if events else 0

            return Compiled(count)
        if name in ("first", "last"):
            index = 0 if name == "first" else -1

            if not path:
                self.event_fields = None  # the whole event is a value: every field may matter

            def pick(e: Any, c: Any) -> Any:
                events = c.get(step)
                if not events:
                    return None
                return get_path(events[index], path) if path else events[index]

            return Compiled(pick)
        if not path:
            msg = f"{name}() needs a field of the step, e.g. {name}({step}.amount)"
            raise expr_error(msg, node.pos)

        kind, initial, step_fn, read = FOLDS[name]
        key = (kind, step, path)
        if len(path) == 1:
            field = path[0]

            def fold(acc: Any, ev: Any) -> Any:
                return step_fn(acc, ev.get(field))

        else:

            def fold(acc: Any, ev: Any) -> Any:
                return step_fn(acc, get_path(ev, path))

        self.aggregates.setdefault(key, (step, initial, fold))

        def aggregate(e: Any, c: Any) -> Any:
            events = c.get(step) or ()
            kept = c.get(AGGREGATES_KEY)
            if kept is not None:
                # the matcher's fold of the step's events (riskctl.core.patterns), if it covers them all
                entry = kept.get(key)
                if entry is not None and entry[0] == len(events):
                    return read(entry[1])
            acc = initial
            for ev in events:
                acc = fold(acc, ev)
            return read(acc)

        return Compiled(aggregate)


class CompiledExpression:
    """An expression compiled once; evaluate it any number of times.

    ``fn(event, ctx)`` is the raw closure: ``ctx`` is the feature values (a mapping) for rule conditions, or
    the earlier steps' events (``name -> list of events``) for pattern step conditions. :meth:`test` returns a
    bool.
    Pickling ships the text and recompiles it (a closure cannot be pickled, and text is small and safe).
    """

    __slots__ = (
        "text",
        "fn",
        "features",
        "steps",
        "constant",
        "event_types",
        "event_fields",
        "event_paths",
        "aggregates",
        "_params",
    )

    def __init__(
        self,
        text: str,
        *,
        features: Collection[str] = (),
        steps: Collection[str] = (),
        feature_source: str = "context",
    ) -> None:
        self._params = (tuple(sorted(features)), tuple(steps), feature_source)
        self.text = text
        node = parse(text)
        comp = Compiler(features, steps, feature_source)
        c = comp.value(node)
        fn = c.fn if c.is_bool else as_bool(c.fn)
        self.fn: Fn = fn
        #: names of the features the expression reads
        self.features: frozenset[str] = frozenset(comp.used_features)
        #: names of the pattern steps the expression reads
        self.steps: frozenset[str] = frozenset(comp.used_steps)
        #: the value when the whole expression is constant (e.g. ``true``), else None
        self.constant: bool | None = bool(c.const) if c.is_const else None
        #: the expression can only be true for events whose ``type`` is one of these (None: any type); the
        #: engine uses it to skip work that cannot matter for an event
        self.event_types: frozenset[str] | None = c.types if self.constant is not False else frozenset()
        #: the top-level event fields the expression can read (of the event or of steps' events), or None
        #: when it cannot be known (a whole event used as a value, e.g. ``first(s) == last(s)``)
        self.event_fields: frozenset[str] | None = (
            None if comp.event_fields is None else frozenset(comp.event_fields)
        )
        #: the paths of the current event the expression reads, dotted (``event.device.id`` -> "device.id"),
        #: sorted: the values an explanation of a hit shows
        self.event_paths: tuple[str, ...] = tuple(sorted(comp.event_paths))
        #: the aggregates over steps that read every event of the step, as ``(key, step, initial, fold)``: a
        #: pattern matcher may keep ``steps[AGGREGATES_KEY][key] = (events folded, acc)`` (see the aggregate)
        self.aggregates: tuple[tuple[tuple[str, str, tuple[str, ...]], str, Any, Fn], ...] = tuple(
            (key, st, initial, fold) for key, (st, initial, fold) in comp.aggregates.items()
        )

    def test(self, event: Mapping[str, Any], ctx: Any = None) -> bool:
        """Evaluate to a bool."""
        return bool(self.fn(event, ctx if ctx is not None else _EMPTY))

    def as_filter(self) -> Callable[[Mapping[str, Any]], bool]:
        """A feature filter, ``f(event) -> bool`` (the expression may only read the event)."""
        fn = self.fn

        def event_filter(event: Mapping[str, Any]) -> bool:
            return fn(event, _EMPTY)  # type: ignore[no-any-return]

        return event_filter

    def as_step_condition(
        self,
    ) -> Callable[[Mapping[str, Any], Mapping[str, Sequence[Mapping[str, Any]]]], bool]:
        """A pattern step condition, ``cond(event, steps) -> bool`` (the contract of ``patterns.py``).

        The callable carries ``reads_steps``: False when its verdict ignores ``steps`` (it reads only the
        event and the features stamped on it), which lets the matcher keep less per buffered event;
        ``event_types`` (see the attribute), which lets it skip the call for events of other types; and
        ``aggregates`` (see the attribute), the folds the matcher keeps per partial match.
        """
        fn = self.fn
        try:
            fn.reads_steps = bool(self.steps)  # type: ignore[attr-defined]
            fn.event_types = self.event_types  # type: ignore[attr-defined]
            fn.event_fields = self.event_fields  # type: ignore[attr-defined]
            fn.event_paths = self.event_paths  # type: ignore[attr-defined]
            fn.features_read = self.features  # type: ignore[attr-defined]
            fn.aggregates = self.aggregates  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - every compiled closure is a plain function
            pass
        return fn

    def __reduce__(self) -> tuple[Any, ...]:
        features, steps, source = self._params
        return (_rebuild, (self.text, features, steps, source))

    def __repr__(self) -> str:
        return f"CompiledExpression({self.text!r})"


_EMPTY: Mapping[str, Any] = {}


def _rebuild(text: str, features: tuple[str, ...], steps: tuple[str, ...], source: str) -> CompiledExpression:
    return CompiledExpression(text, features=features, steps=steps, feature_source=source)


def compile_condition(text: str, *, features: Collection[str] = ()) -> CompiledExpression:
    """Compile a rule condition: reads the event (``event.x``) and the named features (``ctx``: values)."""
    return CompiledExpression(text, features=features)


def compile_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a feature filter: ``f(event) -> bool``; only ``event.<field>`` may be read."""
    return CompiledExpression(text).as_filter()


def compile_step_condition(
    text: str, *, steps: Collection[str] = (), features: Collection[str] = ()
) -> CompiledExpression:
    """Compile a pattern step condition ``cond(event, steps)``.

    ``steps`` are the names the condition may refer to (earlier steps); features are read from the event's
    :data:`FEATURES_FIELD`, which the engine stamps on events it hands to the pattern.
    """
    return CompiledExpression(text, features=features, steps=steps, feature_source="event")
