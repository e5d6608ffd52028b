"""CEL fraud rules, compiled once into one native Python function.

Parsing is done by cel-python (``celpy``), a maintained CEL implementation; its interpreter is
also the reference the tests compare us against. Interpreting CEL per message costs 20-100 us per
expression, far too slow for a hot path that targets tens of thousands of transactions per
second, so this module type-checks the parse tree against the transaction contract and the
feature set and emits Python source for the whole rule set: one function call per transaction
returns a bitmask of the rules that matched.

What is supported (anything else is refused at compile time with a message naming it):
literals (int, uint, double, string, bool, null), lists, ``tx.<field>``, ``tx.attributes[...]``
and ``features.<name>``; ``! - * / % + - < <= > >= == != in && || ?:``; ``has()``; ``size``,
``startsWith``, ``endsWith``, ``contains``, ``matches``; ``int()``, ``double()``, ``string()``.

Semantics follow CEL: no implicit int/double arithmetic (``1 + 1.0`` is an error), ordering
comparisons across int and double are allowed, integer ``/`` and ``%`` truncate toward zero,
double division by zero gives infinity, and ``&&`` / ``||`` absorb an error on either side when
the other side decides the result. A rule whose evaluation fails (e.g. ``tx.lat`` absent) does
not match and is counted as a rule error.
"""

from __future__ import annotations

import ast
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import celpy
import lark
import msgspec.inspect as mi
import re2

from fraud_scorer.config import DecisionSettings, RuleSpec, rules_version
from fraud_scorer.contract import Transaction
from fraud_scorer.feature_sets import V1, FeatureSet

Tree = lark.Tree[Any]
Read = tuple[str, str]  # what a rule reads: ("tx", field), ("features", name), ("attribute", key)


def _tx_fields() -> tuple[dict[str, str], frozenset[str]]:
    """The CEL type of every :class:`Transaction` field rules can see, and the fields that may
    be absent (default None), read from the struct itself so the two cannot drift. The
    timestamp stays hidden: rules see time through features (``hour_of_day``...)."""
    cel = {mi.StrType: "string", mi.FloatType: "double", mi.DictType: "map"}
    types, optional = {}, set()
    info = mi.type_info(Transaction)
    assert isinstance(info, mi.StructType)
    for f in info.fields:
        t = f.type
        if isinstance(t, mi.UnionType):
            optional.add(f.name)
            (t,) = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if type(t) in cel:
            types[f.name] = cel[type(t)]
    return types, frozenset(optional)


TX_FIELDS, _OPTIONAL_TX_FIELDS = _tx_fields()
_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_NUMERIC: Final = frozenset({"int", "double"})


@dataclass(frozen=True)
class RuleProblem:
    """Why one rule does not compile: its name, the column of the expression where the
    compiler stopped (1-based; 0 when the whole expression is at fault), and what to change."""

    rule: str
    column: int
    message: str


class RuleCompileError(ValueError):
    """A rule that cannot be compiled; the message names the rule and what to change, and
    ``problems`` says the same per rule (``fraud-rules check`` prints them)."""

    def __init__(
        self, message: str, *, column: int = 0, problems: Sequence[RuleProblem] = ()
    ) -> None:
        super().__init__(message)
        self.column = column
        self.problems = tuple(problems)


@dataclass(frozen=True)
class _Expr:
    code: str
    type: str
    may_fail: bool = False
    const: Any = field(default=None, compare=False)
    is_const: bool = False


class _Compiler:
    def __init__(self, constants: dict[str, Any], features: FeatureSet) -> None:
        self.constants = constants
        self.features = features
        self.feature_index = features.index
        # What the expression reads, in order of first use: an alert explains a rule's match
        # with these values.
        self.reads: dict[Read, None] = {}

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def compile(self, node: Tree | lark.Token) -> _Expr:
        if isinstance(node, lark.Token):
            raise RuleCompileError(f"unexpected token {node!s}")
        handler = getattr(self, f"_{node.data}", None)
        try:
            if handler is None:
                raise RuleCompileError(f"CEL construct '{node.data}' is not supported in rules")
            result: _Expr = handler(node)
        except RuleCompileError as exc:
            if not exc.column:  # the innermost node that failed says where
                exc.column = getattr(node.meta, "column", 0)
            raise
        return result

    def _passthrough(self, node: Tree) -> _Expr:
        children = [c for c in node.children if c is not None]
        if len(children) != 1:
            raise RuleCompileError(f"unexpected shape of '{node.data}'")
        return self.compile(children[0])

    _member = _passthrough
    _primary = _passthrough

    def _expr(self, node: Tree) -> _Expr:
        cond, *rest = [c for c in node.children if c is not None]
        if not rest:
            return self.compile(cond)
        c, a, b = self.compile(cond), self.compile(rest[0]), self.compile(rest[1])
        _require(c, "bool", "the condition of ?:")
        if a.type != b.type and "dyn" not in (a.type, b.type) and "null" not in (a.type, b.type):
            raise RuleCompileError(
                f"both branches of ?: must have one type, got {a.type}, {b.type}"
            )
        return _Expr(
            f"({a.code} if {c.code} else {b.code})", a.type, c.may_fail or a.may_fail or b.may_fail
        )

    def _logical(self, node: Tree, op: str, helper: str) -> _Expr:
        children = [c for c in node.children if c is not None]
        if len(children) == 1:
            return self.compile(children[0])
        left, right = children
        a, b = self.compile(left), self.compile(right)
        _require(a, "bool", f"the left side of {op}")
        _require(b, "bool", f"the right side of {op}")
        py = "and" if op == "&&" else "or"
        if not a.may_fail:
            return _Expr(f"({a.code} {py} {b.code})", "bool", b.may_fail)
        return _Expr(f"{helper}(lambda: {a.code}, lambda: {b.code})", "bool", True)

    def _conditionalor(self, node: Tree) -> _Expr:
        return self._logical(node, "||", "_cel_or")

    def _conditionaland(self, node: Tree) -> _Expr:
        return self._logical(node, "&&", "_cel_and")

    def _binary(self, node: Tree) -> _Expr:
        children = [c for c in node.children if c is not None]
        if len(children) == 1:
            return self.compile(children[0])
        op_node, right = children
        assert isinstance(op_node, lark.Tree)
        (left,) = op_node.children
        a, b = self.compile(left), self.compile(right)
        return _BINARY[op_node.data](self, a, b)

    _relation = _binary
    _addition = _binary
    _multiplication = _binary

    def _unary(self, node: Tree) -> _Expr:
        if len(node.children) == 1:
            return self.compile(node.children[0])
        op, operand = node.children
        e = self.compile(operand)
        assert isinstance(op, lark.Tree)
        if op.data == "unary_not":
            _require(e, "bool", "the operand of !")
            return _Expr(f"(not {e.code})", "bool", e.may_fail)
        if e.type not in _NUMERIC and e.type != "dyn":
            raise RuleCompileError(f"cannot negate a {e.type}")
        return _Expr(f"(-{e.code})", e.type, e.may_fail)

    def _paren_expr(self, node: Tree) -> _Expr:
        return self.compile(node.children[0])

    def _literal(self, node: Tree) -> _Expr:
        (tok,) = node.children
        assert isinstance(tok, lark.Token)
        text = str(tok)
        value: Any
        if tok.type == "INT_LIT":
            value, typ = int(text, 0) if "x" not in text else int(text.replace("0x", ""), 16), "int"
        elif tok.type == "UINT_LIT":
            value, typ = int(text[:-1], 0), "int"
        elif tok.type == "FLOAT_LIT":
            value, typ = float(text), "double"
        elif tok.type in ("STRING_LIT", "MLSTRING_LIT"):
            value, typ = _string_literal(text), "string"
        elif tok.type == "BOOL_LIT":
            value, typ = text == "true", "bool"
        elif tok.type == "NULL_LIT":
            value, typ = None, "null"
        else:
            raise RuleCompileError(
                f"{tok.type.lower().replace('_lit', '')} literals are not supported"
            )
        return _Expr(repr(value), typ, const=value, is_const=True)

    def _list_lit(self, node: Tree) -> _Expr:
        items = [self.compile(c) for c in _exprlist(node)]
        if all(i.is_const for i in items):
            values = tuple(i.const for i in items)
            return _Expr(self.constant(values), "list", const=values, is_const=True)
        return _Expr(
            "[" + ", ".join(i.code for i in items) + "]", "list", any(i.may_fail for i in items)
        )

    def _ident(self, node: Tree) -> _Expr:
        name = str(node.children[0])
        if name == "tx":
            return _Expr("tx", "tx")
        if name == "features":
            return _Expr("features", "features")
        raise RuleCompileError(f"unknown variable '{name}': rules can use 'tx' and 'features'")

    def _member_dot(self, node: Tree) -> _Expr:
        target, name_tok = node.children
        name = str(name_tok)
        obj = self.compile(target)
        if obj.type == "tx":
            if name not in TX_FIELDS:
                raise RuleCompileError(
                    f"tx has no field '{name}'; fields: {', '.join(sorted(TX_FIELDS))}"
                    " (custom data goes in tx.attributes)"
                )
            self.reads[("tx", name)] = None
            return _Expr(f"tx.{name}", TX_FIELDS[name], name in _OPTIONAL_TX_FIELDS)
        if obj.type == "features":
            if name not in self.feature_index:
                raise RuleCompileError(
                    f"unknown feature '{name}'; features: {', '.join(self.features.names)}"
                )
            cel_type = self.features.cel_types[name]
            idx = self.feature_index[name]
            self.reads[("features", name)] = None
            if cel_type == "bool":
                return _Expr(f"(f[{idx}] != 0.0)", "bool")
            if cel_type == "int":
                return _Expr(f"int(f[{idx}])", "int")
            return _Expr(f"f[{idx}]", "double")
        if obj.type in ("map", "dyn"):
            return _Expr(f"{obj.code}[{name!r}]", "dyn", True)
        raise RuleCompileError(f"cannot select field '{name}' of a {obj.type}")

    def _member_index(self, node: Tree) -> _Expr:
        target, index = node.children
        obj, key = self.compile(target), self.compile(index)
        if obj.code == "tx.attributes" and key.type == "string":
            with contextlib.suppress(ValueError, SyntaxError):
                literal = ast.literal_eval(key.code)  # a string literal compiles to its repr
                if isinstance(literal, str):
                    self.reads[("attribute", literal)] = None
        if obj.type not in ("map", "list", "dyn", "string"):
            raise RuleCompileError(f"cannot index a {obj.type}")
        return _Expr(f"{obj.code}[{key.code}]", "dyn", True)

    def _member_dot_arg(self, node: Tree) -> _Expr:
        target, name_tok, *args_node = node.children
        name = str(name_tok)
        if name in _MACROS:
            raise RuleCompileError(f"the macro {name}() is not supported in rules")
        obj = self.compile(target)
        args = [self.compile(a) for a in _exprlist_of(args_node)]
        return self._call(name, [obj, *args])

    def _ident_arg(self, node: Tree) -> _Expr:
        name_tok, *args_node = node.children
        name = str(name_tok)
        if name == "has":
            return self._has(args_node)
        args = [self.compile(a) for a in _exprlist_of(args_node)]
        return self._call(name, args)

    def _has(self, args_node: list[Any]) -> _Expr:
        (arg,) = _exprlist_of(args_node)
        selection = _find_member_dot(arg)
        if selection is None:
            raise RuleCompileError("has() takes a field selection such as has(tx.lat)")
        target, name_tok = selection.children
        obj, name = self.compile(target), str(name_tok)
        if obj.type == "tx":
            if name not in TX_FIELDS:
                raise RuleCompileError(f"tx has no field '{name}'")
            return _Expr(
                f"(tx.{name} is not None)" if name in _OPTIONAL_TX_FIELDS else "True", "bool"
            )
        if obj.type in ("map", "dyn"):
            return _Expr(f"({name!r} in {obj.code})", "bool", obj.may_fail)
        raise RuleCompileError(f"has() cannot test a field of a {obj.type}")

    def _call(self, name: str, args: list[_Expr]) -> _Expr:
        fail = any(a.may_fail for a in args)
        sig = tuple(a.type for a in args)
        if name == "size" and len(args) == 1:
            return _Expr(f"len({args[0].code})", "int", fail)
        if name in ("startsWith", "endsWith", "contains") and len(args) == 2:
            for a in args:
                _require(a, "string", f"{name}()")
            method = {"startsWith": "startswith", "endsWith": "endswith"}.get(name)
            if method:
                return _Expr(f"{args[0].code}.{method}({args[1].code})", "bool", fail)
            return _Expr(f"({args[1].code} in {args[0].code})", "bool", fail)
        if name == "matches" and len(args) == 2:
            _require(args[0], "string", "matches()")
            if not args[1].is_const or not isinstance(args[1].const, str):
                raise RuleCompileError("matches() needs a constant pattern")
            try:
                # RE2, as CEL specifies: linear time in the input, so no pattern and no
                # attacker-chosen field can make a rule backtrack for seconds.
                pattern = re2.compile(args[1].const, _RE2_OPTIONS)
            except re2.error as exc:
                why = exc.args[0].decode() if isinstance(exc.args[0], bytes) else str(exc)
                raise RuleCompileError(
                    f"invalid regular expression {args[1].const!r} (RE2 syntax): {why}"
                ) from exc
            return _Expr(
                f"({self.constant(pattern)}.search({args[0].code}) is not None)", "bool", fail
            )
        if name == "int" and len(args) == 1:
            return _Expr(f"_cel_int({args[0].code})", "int", True)
        if name == "double" and len(args) == 1:
            return _Expr(f"float({args[0].code})", "double", True)
        if name == "string" and len(args) == 1:
            return _Expr(f"_cel_string({args[0].code})", "string", fail)
        raise RuleCompileError(f"unsupported function {name}{sig}")


def _require(e: _Expr, typ: str, where: str) -> None:
    if e.type not in (typ, "dyn"):
        raise RuleCompileError(f"{where} must be {typ}, got {e.type}")


def _arith(py: str, cel: str) -> Callable[[_Compiler, _Expr, _Expr], _Expr]:
    def build(_: _Compiler, a: _Expr, b: _Expr) -> _Expr:
        fail = a.may_fail or b.may_fail
        if "dyn" in (a.type, b.type):
            return _Expr(f"_cel_arith({a.code}, {cel!r}, {b.code})", "dyn", True)
        if cel == "+" and a.type == b.type and a.type in ("string", "list"):
            return _Expr(f"({a.code} + {b.code})", a.type, fail)
        if a.type != b.type or a.type not in _NUMERIC:
            raise RuleCompileError(
                f"no operator '{cel}' for ({a.type}, {b.type}); CEL does not mix int and double:"
                " write 2.0 instead of 2, or convert with double()"
            )
        if cel == "/":
            helper = "_cel_idiv" if a.type == "int" else "_cel_fdiv"
            return _Expr(f"{helper}({a.code}, {b.code})", a.type, True)
        if cel == "%":
            if a.type != "int":
                raise RuleCompileError("'%' is defined for int only")
            return _Expr(f"_cel_imod({a.code}, {b.code})", "int", True)
        return _Expr(f"({a.code} {py} {b.code})", a.type, fail)

    return build


def _compare(py: str, cel: str) -> Callable[[_Compiler, _Expr, _Expr], _Expr]:
    def build(_: _Compiler, a: _Expr, b: _Expr) -> _Expr:
        fail = a.may_fail or b.may_fail
        types = {a.type, b.type}
        ok = (
            "dyn" in types
            or a.type == b.type
            or (types <= _NUMERIC and cel not in ("==", "!="))
            or ("null" in types and cel in ("==", "!="))
        )
        if not ok:
            hint = " (write 100.0 for a double)" if types <= _NUMERIC else ""
            raise RuleCompileError(f"cannot compare {a.type} with {b.type} using '{cel}'{hint}")
        if cel in ("<", "<=", ">", ">=") and a.type in ("bool", "list", "map", "null"):
            raise RuleCompileError(f"'{cel}' is not defined for {a.type}")
        return _Expr(f"({a.code} {py} {b.code})", "bool", fail)

    return build


def _membership(c: _Compiler, a: _Expr, b: _Expr) -> _Expr:
    if b.type not in ("list", "map", "dyn"):
        raise RuleCompileError(f"the right side of 'in' must be a list or map, got {b.type}")
    code = b.code
    if b.is_const and isinstance(b.const, tuple):
        with contextlib.suppress(TypeError):  # unhashable items: keep the tuple
            code = c.constant(frozenset(b.const))
    return _Expr(f"({a.code} in {code})", "bool", a.may_fail or b.may_fail)


_BINARY: Final[dict[str, Callable[[_Compiler, _Expr, _Expr], _Expr]]] = {
    "relation_lt": _compare("<", "<"),
    "relation_le": _compare("<=", "<="),
    "relation_gt": _compare(">", ">"),
    "relation_ge": _compare(">=", ">="),
    "relation_eq": _compare("==", "=="),
    "relation_ne": _compare("!=", "!="),
    "relation_in": _membership,
    "addition_add": _arith("+", "+"),
    "addition_sub": _arith("-", "-"),
    "multiplication_mul": _arith("*", "*"),
    "multiplication_div": _arith("/", "/"),
    "multiplication_mod": _arith("%", "%"),
}


def _exprlist(node: Tree) -> list[Tree]:
    return _exprlist_of(node.children)


def _exprlist_of(children: Sequence[Any]) -> list[Tree]:
    items = [c for c in children if c is not None]
    if not items:
        return []
    (exprlist,) = items
    return [c for c in exprlist.children if isinstance(c, lark.Tree)]


def _find_member_dot(node: Tree) -> Tree | None:
    """The single member_dot under a chain of one-child nodes, if that is what ``node`` is."""
    while isinstance(node, lark.Tree):
        if node.data == "member_dot":
            return node
        kids = [c for c in node.children if c is not None]
        if len(kids) != 1:
            return None
        node = kids[0]
    return None


def _string_literal(text: str) -> str:
    raw = text[:1] in "rR"
    body = text[1:] if raw else text
    value = ast.literal_eval(("r" if raw else "") + body)
    if not isinstance(value, str):
        raise RuleCompileError(f"bad string literal {text}")
    return value


# --- runtime helpers referenced by generated code -------------------------------------------


def _cel_idiv(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cel_imod(a: int, b: int) -> int:
    return a - _cel_idiv(a, b) * b


def _cel_fdiv(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _cel_int(v: Any) -> int:
    if isinstance(v, str):
        return int(v, 10)
    return int(v)


def _cel_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_CEL_KINDS: Final[dict[type, str]] = {bool: "bool", int: "int", float: "double", str: "string"}


def _cel_kind(v: Any) -> str:
    return _CEL_KINDS.get(type(v), type(v).__name__)


def _cel_arith(a: Any, op: str, b: Any) -> Any:
    """Arithmetic on values only known at run time (``tx.attributes``), with CEL's overloads:
    numbers of one kind, or ``+`` of two strings. Anything else is an error (the rule does not
    match): Python's ``"x" * 10**9`` would allocate gigabytes."""
    ka, kb = _cel_kind(a), _cel_kind(b)
    if op == "+" and ka == kb == "string":
        return a + b
    if ka != kb or ka not in _NUMERIC:
        raise TypeError(f"no such overload: {ka} {op} {kb}")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return _cel_idiv(a, b) if isinstance(a, int) else _cel_fdiv(a, b)
    return _cel_imod(a, b)


def _cel_and(a: Callable[[], bool], b: Callable[[], bool]) -> bool:
    try:
        left = a()
    except Exception:
        if b() is False:
            return False
        raise
    return bool(left and b())


def _cel_or(a: Callable[[], bool], b: Callable[[], bool]) -> bool:
    try:
        left = a()
    except Exception:
        if b() is True:
            return True
        raise
    return bool(left or b())


_HELPERS: Final = {
    "_cel_idiv": _cel_idiv,
    "_cel_imod": _cel_imod,
    "_cel_fdiv": _cel_fdiv,
    "_cel_int": _cel_int,
    "_cel_string": _cel_string,
    "_cel_arith": _cel_arith,
    "_cel_and": _cel_and,
    "_cel_or": _cel_or,
}

_PARSER_ENV: Final = celpy.Environment()


@dataclass(frozen=True)
class CompiledRule:
    name: str
    expression: str
    action: str
    python: str
    reads: tuple[Read, ...] = ()  # ("tx" | "features" | "attribute", name), in order of use


MAX_EXPRESSION_CHARS: Final = 4096
_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error reaches the user in RuleCompileError instead


def compile_expression(
    expression: str, constants: dict[str, Any], features: FeatureSet = V1
) -> tuple[str, tuple[Read, ...]]:
    """Type-check one CEL boolean expression; return its Python source and what it reads."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise RuleCompileError(
            f"expression is {len(expression)} characters, more than {MAX_EXPRESSION_CHARS}"
        )
    try:
        tree = _PARSER_ENV.compile(expression)
        compiler = _Compiler(constants, features)
        result = compiler.compile(tree)
    except celpy.CELParseError as exc:  # type: ignore[attr-defined]
        lines = str(exc).splitlines()
        column = lines[1].index("^") + 1 if len(lines) > 1 and "^" in lines[1] else 0
        raise RuleCompileError(f"syntax error at column {column}", column=column) from exc
    except RecursionError as exc:
        raise RuleCompileError("expression nested too deeply") from exc
    if result.type not in ("bool", "dyn"):
        raise RuleCompileError(f"a rule must be a boolean expression, this one is {result.type}")
    return result.code, tuple(compiler.reads)


Evaluator = Callable[[Any, Sequence[float], list[int]], int]


@dataclass(frozen=True)
class RuleSet:
    """The compiled rules. ``evaluate(tx, features, errors)`` returns a bitmask: bit ``i`` set
    means rule ``i`` matched; ``errors[i]`` is incremented when rule ``i`` failed to evaluate."""

    rules: tuple[CompiledRule, ...]
    decision: DecisionSettings
    version: str
    evaluate: Evaluator
    source: str
    block_bits: int = 0
    # Each rule by name, and each feature a rule reads by name: (its index in a row, its type).
    by_name: Mapping[str, CompiledRule] = field(default_factory=dict)
    feature_types: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    def names_of(self, mask: int) -> list[str]:
        return [r.name for i, r in enumerate(self.rules) if mask >> i & 1]

    def block_mask(self) -> int:
        return self.block_bits


def compile_rules(
    specs: Sequence[RuleSpec],
    decision: DecisionSettings | None = None,
    features: FeatureSet = V1,
) -> RuleSet:
    """Compile every rule against ``features`` (their names and types), or raise
    :class:`RuleCompileError` naming each rule that failed."""
    decision = decision or DecisionSettings()
    constants: dict[str, Any] = {}
    compiled: list[CompiledRule] = []
    problems: list[RuleProblem] = []
    messages: list[str] = []
    for spec in specs:
        try:
            code, reads = compile_expression(spec.expression, constants, features)
        except RuleCompileError as exc:
            shown = spec.expression[:117] + ("..." if len(spec.expression) > 117 else "")
            messages.append(f"rule '{spec.name}' ({shown!r}): {exc}")
            problems.append(RuleProblem(spec.name, exc.column, str(exc)))
            continue
        compiled.append(CompiledRule(spec.name, spec.expression, spec.action, code, reads))
    if problems:
        raise RuleCompileError("; ".join(messages), problems=problems)
    lines = ["def _evaluate(tx, f, errors):", "    hits = 0"]
    for i, rule in enumerate(compiled):
        lines += [
            "    try:",
            f"        if {rule.python}:",
            f"            hits |= {1 << i}",
            "    except Exception:",
            f"        errors[{i}] += 1",
        ]
    lines.append("    return hits")
    source = "\n".join(lines)
    namespace: dict[str, Any] = {**_HELPERS, **constants}
    try:
        program = compile(source, "<fraud-rules>", "exec")
    except (RecursionError, SyntaxError, MemoryError) as exc:  # Python's own nesting limits
        raise RuleCompileError(f"rules nested too deeply to compile: {exc}") from exc
    exec(program, namespace)  # noqa: S102 - generated from a type-checked CEL tree
    return RuleSet(
        rules=tuple(compiled),
        decision=decision,
        version=rules_version(tuple(specs), decision),
        evaluate=namespace["_evaluate"],
        source=source,
        block_bits=sum(1 << i for i, r in enumerate(compiled) if r.action == "block"),
        by_name={r.name: r for r in compiled},
        feature_types={
            name: (features.index[name], features.cel_types[name])
            for r in compiled
            for kind, name in r.reads
            if kind == "features"
        },
    )
