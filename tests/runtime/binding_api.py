"""What the SDK uses of ``tensorrt`` / ``pycuda``, read by AST, and what their sources define.

The SDK reaches TensorRT through ``import tensorrt`` or the one lazy importer
(``lazy_import("tensorrt", ...)``, :func:`sdk.errors.lazy_import`), or a helper function
whose body imports and returns it, and pycuda the same way (``import pycuda.driver``,
``lazy_import("pycuda.driver", ...)``). :func:`collect_usage` walks every module, follows
values derived from those modules through assignments (locals and ``self.*`` attributes,
to a fixpoint) and records

* ``module.X`` and ``module.X.Y`` chains (classes, functions, enums and their members);
* ``obj.member`` on a value derived from the module (a parameter counts when it is
  named like such a value elsewhere in the module), with ``obj``'s class where it is
  known (a constructor ``trt.Builder(...)``, or a method whose C++ return type the
  headers give); ``"?"`` where it is not (checked against every class then);
* ``getattr``/``setattr``/``hasattr`` on such a value, as :data:`DYNAMIC` — a name
  computed at run time cannot be checked, so it is reported instead of slipping past;
* every call of a method (or constructor) on such a value with its positional count
  and keyword names, checked against the overloads' ``"name"_a`` parameters where the
  binding annotates them (:func:`bad_calls`).

:func:`trt_api` reads a pybind11 binding folder into ``{class: members}`` plus the module
functions and attributes; :func:`pycuda_api` reads pycuda's Boost.Python wrapper and
``driver.py`` into one set of names (pycuda's classes are few and share no member names
we could confuse).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = "?"
MODULE = "<module>"
DYNAMIC = "<getattr>"
"""Member recorded for ``getattr(trt_object, name)``: never defined, so always reported."""

# ---------------------------------------------------------------- TensorRT binding sources

_DECL = re.compile(r"py::(class_|enum_)<(.*?)>\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*\"(\w+)\"", re.DOTALL)
_MEMBER = re.compile(
    r"(?<![\w])(\w*)\s*\.\s*(def|def_static|def_property|def_property_readonly|def_readwrite|"
    r"def_readonly|def_property_readonly_static|def_property_static|value)\s*\(\s*\"(\w+)\"\s*,"
    r"\s*([^,)]*)"
)
_MODULE_ATTR = re.compile(r"\bm\.attr\(\s*\"(\w+)\"\s*\)")
_LAMBDA = re.compile(r"(?:auto|auto const|const auto)\s+(\w+)\s*=\s*\[\]\s*\(\s*(\w+)\s*&")


@dataclass
class TrtApi:
    """Python names one TensorRT release's bindings define."""

    classes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    returns: dict[tuple[str, str], str] = field(default_factory=dict)
    module: set[str] = field(default_factory=set)
    signatures: dict[tuple[str, str], list[Signature | None]] = field(
        default_factory=lambda: defaultdict(list)
    )
    """Per ``.def`` overload its ``"name"_a`` parameters (None: not annotated, unknown)."""

    def accepts(self, call: Call) -> bool:
        """True unless every overload of ``call``'s method is known and refuses its arguments."""
        overloads = self.signatures.get((call.owner, call.member), [])
        if not overloads or None in overloads:
            return True
        return any(sig is not None and sig.accepts(call) for sig in overloads)

    def has(self, owner: str, member: str) -> bool:
        if owner == MODULE:
            return member in self.module or member in self.classes
        if owner == UNKNOWN:
            return any(member in members for members in self.classes.values())
        return member in self.classes.get(owner, set())


@dataclass(frozen=True)
class Signature:
    """Parameter names of one bound overload and how many have no default."""

    names: tuple[str, ...]
    required: int

    def accepts(self, call: Call) -> bool:
        if call.positional > len(self.names) or not set(call.keywords) <= set(self.names):
            return False
        given = set(self.names[: call.positional]) | set(call.keywords)
        return set(self.names[: self.required]) <= given and len(given) == call.positional + len(
            call.keywords
        )


def _call_text(text: str, open_paren: int) -> str:
    """The argument text of the call whose ``(`` is at ``open_paren`` (strings skipped)."""
    depth, i, quote = 0, open_paren, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return text[open_paren + 1 : i]
        i += 1
    return text[open_paren + 1 :]


_PARAM = re.compile(r"\"(\w+)\"_a(\s*=)?")


def _signature(args: str) -> Signature | None:
    params = _PARAM.findall(args)
    if not params:
        return None
    names = tuple(name for name, _ in params)
    defaults = [bool(has_default) for _, has_default in params]
    required = defaults.index(True) if True in defaults else len(names)
    return Signature(names, required)


def _header_returns(include: Path) -> dict[str, str]:
    """C++ method name -> the class it returns a pointer/reference to (first declaration)."""
    found: dict[str, str] = {}
    pattern = re.compile(r"\b(I?\w+)\s*[*&]\s*(\w+)\s*\(")
    for header in sorted(include.glob("*.h")):
        for cls, method in pattern.findall(header.read_text(errors="replace")):
            found.setdefault(method, cls)
    return found


def trt_api(folder: Path) -> TrtApi:
    """Parse ``folder/python-bindings`` (and ``folder/include`` for return types)."""
    api = TrtApi()
    py_name: dict[str, str] = {}
    bases: dict[str, list[str]] = {}
    methods: dict[tuple[str, str], str] = {}  # (python class, python member) -> C++ callee
    lambdas: dict[str, str] = {}
    sources = sorted((folder / "python-bindings").rglob("*.cpp"))
    texts = [s.read_text(errors="replace") for s in sources]
    for text in texts:
        for match in _DECL.finditer(text):
            args = [a.strip() for a in re.split(r",(?![^<]*>)", match.group(2))]
            py_name[args[0]] = match.group(5)
        for body in re.split(r"\n\s*static\s+", text):
            if m := _LAMBDA.match(body):
                call = re.search(r"\bself\s*(?:\.|->)\s*(\w+)\s*\(", body)
                if call:
                    lambdas[m.group(1)] = call.group(1)
    for text in texts:
        variables: dict[str, str] = {}
        decls = list(_DECL.finditer(text))
        for i, match in enumerate(decls):
            kind, targs, var, parent, name = match.groups()
            args = [a.strip() for a in re.split(r",(?![^<]*>)", targs)]
            bases[name] = [py_name[a] for a in args[1:] if a in py_name]
            if var:
                variables[var] = name
            if parent != "m":
                api.classes[variables.get(parent, parent)].add(name)
            else:
                api.module.add(name)
            end = decls[i + 1].start() if i + 1 < len(decls) else len(text)
            segment = text[match.end() : end]
            exported = kind == "enum_" and "export_values" in segment.split(";")[0]
            for found in _MEMBER.finditer(segment):
                target, verb, member, callee = found.groups()
                owner = variables.get(target, name) if target else name
                if target == "m":
                    api.module.add(member)
                    continue
                api.classes[owner].add(member)
                if verb in ("def", "def_static"):
                    args = _call_text(segment, segment.index("(", found.start(2)))
                    api.signatures[(owner, member)].append(_signature(args))
                if exported and verb == "value" and parent != "m":
                    api.classes[variables.get(parent, parent)].add(member)
                methods[(owner, member)] = callee
            if parent == "m":  # constructors: ``trt.Builder(logger)`` calls py::init
                for init in re.finditer(r"\.def\(\s*py::init", segment):
                    args = _call_text(segment, segment.index("(", init.start()))
                    api.signatures[(MODULE, name)].append(_signature(args))
        for target, _, member, callee in _MEMBER.findall(
            text[: decls[0].start()] if decls else text
        ):
            if target == "m":
                api.module.add(member)
                methods[(MODULE, member)] = callee
        api.module.update(_MODULE_ATTR.findall(text))
    for text in texts:
        for m in re.finditer(r"\bm\.def\(\s*\"(\w+)\"\s*,\s*([^,)]*)", text):
            api.module.add(m.group(1))
            methods[(MODULE, m.group(1))] = m.group(2)
    for name in list(api.classes):
        todo = list(bases.get(name, []))
        while todo:
            base = todo.pop()
            api.classes[name] |= api.classes.get(base, set())
            todo += bases.get(base, [])
    cpp_returns = _header_returns(folder / "include")
    for (owner, member), callee in methods.items():
        cpp = callee.strip().split("::")[-1].strip(" &)")
        cpp = lambdas.get(cpp, cpp)
        returned = py_name.get(cpp_returns.get(cpp, ""))
        if returned:
            api.returns[(owner, member)] = returned
    return api


# ---------------------------------------------------------------- pycuda sources


def pycuda_api(folder: Path) -> set[str]:
    """Every Python name pycuda's wrapper (``src/wrapper/*.cpp``) and ``driver.py`` define.

    The wrapper names things in string literals (``py::def("mem_alloc", ...)``,
    ``("Stream", py::init...)``) and through macros (``DEF_SIMPLE_METHOD(detach)``,
    ``DECLARE_EXC(Error, ...)``); any identifier-like literal counts.
    ``pagelocked_empty`` returns numpy arrays, so ndarray attributes count too.
    """
    names: set[str] = set(dir(np.ndarray))
    for source in sorted((folder / "src" / "wrapper").glob("*.cpp")):
        text = source.read_text(errors="replace")
        names.update(re.findall(r"\"([A-Za-z_]\w*)\"", text))
        names.update(re.findall(r"(?:DEF_SIMPLE_\w+|DECLARE_EXC)\(\s*(\w+)", text))
    tree = ast.parse((folder / "pycuda" / "driver.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                elif isinstance(target, ast.Attribute):
                    names.add(target.attr)
    return names


# ---------------------------------------------------------------- SDK usage


@dataclass(frozen=True)
class Use:
    """``owner.member`` used at ``where`` (owner: a class, ``<module>`` or ``?``)."""

    owner: str
    member: str
    where: str


@dataclass(frozen=True)
class Call:
    """``owner.member(...)`` called at ``where`` with that many positional args and keywords."""

    owner: str
    member: str
    positional: int
    keywords: tuple[str, ...]
    where: str


def _alias(alias: ast.alias, module: str) -> str | None:
    """The name ``import module`` / ``import module.sub as name`` binds to the module."""
    if alias.name == module:
        return alias.asname or alias.name
    if alias.name.startswith(module + ".") and alias.asname:
        return alias.asname
    return None


LAZY_IMPORT = "lazy_import"


def lazy_imports(node: ast.AST, module: str) -> bool:
    """True for ``lazy_import("module...", ...)`` (the SDK's one lazy importer)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == LAZY_IMPORT
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (node.args[0].value == module or node.args[0].value.startswith(module + "."))
    )


def _helpers(tree: ast.Module, module: str) -> set[str]:
    """Functions whose body imports ``module`` and returns it."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        imported = {
            _alias(alias, module)
            for sub in ast.walk(node)
            if isinstance(sub, ast.Import)
            for alias in sub.names
        }
        returns = {
            sub.value.id
            for sub in ast.walk(node)
            if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Name)
        }
        if imported & returns:
            found.add(node.name)
    return found


class _Walker:
    """Type flow for one module (flow-insensitive: a name has one type per function)."""

    def __init__(self, tree: ast.Module, module: str, api: TrtApi | None, path: str) -> None:
        self.module, self.api, self.path = module, api, path
        self.helpers = _helpers(tree, module)
        self.tree = tree
        self.uses: set[Use] = set()
        self.calls: set[Call] = set()

    def _is_module(self, node: ast.expr, env: dict[str, str]) -> bool:
        if isinstance(node, ast.Name):
            return env.get(node.id) == MODULE
        return lazy_imports(node, self.module) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in self.helpers
        )

    def _key(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            return "self." + node.attr
        return None

    def type_of(self, node: ast.expr, env: dict[str, str]) -> str | None:
        """The TensorRT class of ``node`` (UNKNOWN if derived but unresolved), else None."""
        if self._is_module(node, env):
            return MODULE
        key = self._key(node)
        if key is not None and key in env:
            return env[key]
        if isinstance(node, ast.Call):
            return self._result(node.func, env)
        if isinstance(node, ast.Attribute):
            owner = self.type_of(node.value, env)
            if owner == MODULE:
                return node.attr
            if owner is not None:
                return UNKNOWN
        return None

    def _result(self, func: ast.expr, env: dict[str, str]) -> str | None:
        if not isinstance(func, ast.Attribute):
            return None
        owner = self.type_of(func.value, env)
        if owner is None:
            return None
        if owner == MODULE and self.api and func.attr in self.api.classes:
            return func.attr
        if self.api is None:
            return UNKNOWN
        return self.api.returns.get((owner, func.attr), UNKNOWN)

    def _imports(self, scope: ast.AST, env: dict[str, str]) -> None:
        for node in ast.walk(scope):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if name := _alias(alias, self.module):
                        env[name] = MODULE

    def _flow(self, scope: ast.AST, env: dict[str, str]) -> None:
        self._imports(scope, env)
        changed = True
        while changed:
            changed = False
            for node in ast.walk(scope):
                if not isinstance(node, ast.Assign):
                    continue
                kind = self.type_of(node.value, env)
                targets: list[ast.expr] = []
                for target in node.targets:
                    targets += target.elts if isinstance(target, ast.Tuple) else [target]
                if isinstance(node.value, ast.Tuple) and len(node.value.elts) == len(targets):
                    pairs = [
                        (t, self.type_of(v, env))
                        for t, v in zip(targets, node.value.elts, strict=True)
                    ]
                else:
                    pairs = [(t, kind) for t in targets] if len(targets) == 1 else []
                for target, value in pairs:
                    key = self._key(target)
                    if key and value and env.get(key) != value:
                        env[key] = value
                        changed = True

    def run(self) -> set[Use]:
        top: dict[str, str] = {}
        self._imports(self.tree, top)
        scopes: list[tuple[ast.AST, dict[str, str]]] = []
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef):
                shared = dict(top)
                self._flow(node, shared)  # self.* across all methods
                scopes += [(f, shared) for f in node.body if isinstance(f, ast.FunctionDef)]
            elif isinstance(node, ast.FunctionDef):
                env = dict(top)
                self._flow(node, env)
                scopes.append((node, env))
        # Parameters: one named like the module's alias elsewhere (``trt``) is the module; one
        # named like a value assigned elsewhere in the module (``refitter`` ~ ``self._refitter``)
        # has that value's type.
        known: dict[str, str] = {}
        for _, env in scopes:
            for key, kind in env.items():
                known.setdefault(key.removeprefix("self.").lstrip("_"), kind)
        for scope, env in scopes:
            local = dict(env)
            assert isinstance(scope, ast.FunctionDef)
            for arg in scope.args.args:
                if arg.arg in known and arg.arg not in local:
                    local[arg.arg] = known[arg.arg]
            self._flow(scope, local)
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute):
                    owner = self.type_of(node.value, local)
                    if owner is not None:
                        self.uses.add(Use(owner, node.attr, f"{self.path}:{node.lineno}"))
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and not any(isinstance(a, ast.Starred) for a in node.args)
                    and all(k.arg for k in node.keywords)
                ):
                    owner = self.type_of(node.func.value, local)
                    if owner is not None:
                        keywords = tuple(str(k.arg) for k in node.keywords)
                        where = f"{self.path}:{node.lineno}"
                        call = Call(owner, node.func.attr, len(node.args), keywords, where)
                        self.calls.add(call)
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "setattr", "hasattr")
                    and node.args
                ):
                    owner = self.type_of(node.args[0], local)
                    if owner is not None:  # a name no check can see: reported as such
                        self.uses.add(Use(owner, DYNAMIC, f"{self.path}:{node.lineno}"))
        return self.uses


def collect_usage(files: Iterable[Path], root: Path, module: str, api: TrtApi | None) -> set[Use]:
    """Every use of ``module`` (``"tensorrt"`` or ``"pycuda"``) in ``files``."""
    return collect(files, root, module, api)[0]


def collect(
    files: Iterable[Path], root: Path, module: str, api: TrtApi | None
) -> tuple[set[Use], set[Call]]:
    """Every use of ``module`` in ``files``, and every call of a method on its values."""
    uses: set[Use] = set()
    calls: set[Call] = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        walker = _Walker(tree, module, api, str(path.relative_to(root)))
        uses |= walker.run()
        calls |= walker.calls
    return uses, calls


def bad_calls(calls: Iterable[Call], api: TrtApi) -> list[str]:
    """``owner.member(args) at file:line`` for every call no bound overload accepts."""
    return [
        f"{c.owner}.{c.member}({c.positional} positional, keywords {list(c.keywords)}) at {c.where}"
        for c in sorted(calls, key=lambda c: (c.where, c.member))
        if not api.accepts(c)
    ]


def missing_names(uses: Iterable[Use], has: Callable[[str, str], bool]) -> list[str]:
    """``owner.member at file:line`` for every use that ``has(owner, member)`` denies."""
    bad = []
    for use in sorted(uses, key=lambda u: (u.where, u.member)):
        if use.member.startswith("__") and use.owner == MODULE:
            continue  # __version__ comes from the package's __init__.py, not the bindings
        if not has(use.owner, use.member):
            bad.append(f"{use.owner}.{use.member} at {use.where}")
    return bad
