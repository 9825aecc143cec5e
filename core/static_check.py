"""Static checks of a candidate `algorithm.py` before anything executes it.

`check_source(src)` returns a list of problems, each starting with `line N:` and
worded so it can be fed back to the LLM for repair; an empty list means the file
passed. This is the cheap first gate of verification. It is NOT the security
boundary: a determined author can hide behaviour from an AST walk, so every
candidate still runs only inside `core.sandbox`. What it buys is fast, precise
feedback and one less class of accidents (a candidate that opens files, spawns
processes or imports things the trainers will not have on the GPU server).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

ALLOWED_IMPORT_ROOTS = frozenset({"torch", "math", "typing", "dataclasses", "functools", "__future__"})
ALLOWED_CORE_MODULES = frozenset({"core.contract"})

# Names that reach the interpreter, the file system, the network or processes.
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "input",
    "breakpoint", "exit", "quit", "help", "memoryview", "setattr", "delattr",
    "os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "pickle", "marshal",
    "shutil", "pathlib", "io", "signal", "threading", "multiprocessing", "resource", "gc",
    "inspect", "types", "code", "codeop", "pty", "tempfile", "urllib", "http", "asyncio",
})
# torch attributes that load code, touch files, spawn processes or talk to the network.
FORBIDDEN_TORCH_ATTRS = frozenset({
    "load", "save", "hub", "compile", "jit", "ops", "classes", "utils", "multiprocessing",
    "distributed", "package", "cuda", "backends", "library", "_C", "_dynamo", "_inductor",
    "set_default_device", "set_num_threads", "manual_seed", "seed",
    # files through C++, where no audit hook sees them: torch.from_file(path, shared=True) writes any file
    "from_file", "serialization", "storage", "Storage", "UntypedStorage", "TypedStorage",
})
# Dunder attributes a candidate legitimately needs; every other `x.__foo__` is refused
# because dunders are the classic way out of a restricted namespace (__globals__, __subclasses__).
# Attributes that lead to processes, files or the interpreter from any object (`torch.os.system`).
FORBIDDEN_ATTRS = frozenset({
    "os", "sys", "subprocess", "socket", "builtins", "importlib", "ctypes", "pickle", "marshal", "shutil",
    "pathlib", "signal", "threading", "multiprocessing", "resource", "gc", "inspect", "pty", "tempfile",
    "system", "popen", "fork", "forkpty", "execv", "execve", "spawnv", "posix_spawn", "environ", "kill",
    "eval", "exec", "__import__", "globals", "locals", "load_library",
    # file access on any tensor, storage or array (C++/C, unseen by the runtime guard)
    "from_file", "tofile", "fromfile", "numpy", "storage", "untyped_storage", "share_memory_", "save", "load",
})
# Module names may only be the base of an attribute (`torch.exp`). As a value (`t = torch`, `f(torch)`,
# `reduce(getattr, ["os"], torch)`) they carry the checks above out of sight. These are the usual ones;
# every name an `import` statement binds is added per file.
MODULE_NAMES = frozenset({"torch", "math", "typing", "dataclasses", "functools", "F", "nn"})
ALLOWED_DUNDER_ATTRS = frozenset({"__init__", "__post_init__", "__name__", "__doc__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__", "__all__", "__annotations__"})
NAME_ARG_FUNCS = frozenset({"getattr", "hasattr"})
_DUNDER_IN_STRING = re.compile(r"__\w+__")

# name -> (parameter names, what it returns): the arity the trainers call with.
REQUIRED = {
    "compute_advantages": (("batch", "hp"), "Tensor [B] or [B, T]"),
    "compute_policy_loss": (("logprobs", "batch", "advantages", "hp"), "(loss Tensor [], metrics dict[str, float])"),
}
OPTIONAL = {"filter_groups": (("batch", "hp"), "bool Tensor [B], True = keep")}


def check_source(src: str) -> list[str]:
    """All problems of a candidate source text, sorted by line; [] when it passes."""
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        return [f"line {exc.lineno or 0}: syntax error: {exc.msg}; the file must be valid Python 3.11"]
    problems: list[tuple[int, str]] = []
    problems += _check_imports(tree)
    problems += _check_names_and_attributes(tree)
    problems += _check_top_level(tree)
    problems += _check_functions(tree)
    problems += _check_hparams(tree)
    return [f"line {line}: {msg}" for line, msg in sorted(set(problems))]


# --- imports ---------------------------------------------------------------

def _check_imports(tree: ast.Module) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, msg) for alias in node.names if (msg := _import_problem(alias.name))]
        elif isinstance(node, ast.ImportFrom):
            found += _import_from_problems(node)
    return found


def _import_from_problems(node: ast.ImportFrom) -> list[tuple[int, str]]:
    if node.level:
        return [(node.lineno, ("relative imports are not allowed; import only torch, math, typing, "
                              "dataclasses, functools and core.contract"))]
    module = node.module or ""
    if msg := _import_problem(module):
        return [(node.lineno, msg)]
    if module == "torch":
        return [(node.lineno, _torch_attr_message(a.name)) for a in node.names if a.name in FORBIDDEN_TORCH_ATTRS]
    return []


def _import_problem(module: str) -> str:
    root = module.split(".")[0]
    if module in ALLOWED_CORE_MODULES:
        return ""
    if root not in ALLOWED_IMPORT_ROOTS:
        return (f"import of {module!r} is not allowed; a candidate may import only torch, math, typing, "
                f"dataclasses, functools and core.contract")
    parts = module.split(".")
    if root == "torch" and len(parts) > 1 and parts[1] in FORBIDDEN_TORCH_ATTRS:
        return _torch_attr_message(parts[1])
    return ""


def _torch_attr_message(attr: str) -> str:
    return (f"torch.{attr} is not allowed in a candidate (it loads code, touches files or processes, or changes "
            f"global state the trainer owns); use plain tensor operations")


# --- names and attributes --------------------------------------------------

def _check_names_and_attributes(tree: ast.Module) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    docstrings = _docstring_nodes(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases = _import_aliases(tree)  # name -> module, e.g. {"t": "torch"} for `import torch as t`
    modules = MODULE_NAMES | set(aliases)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found += _name_problem(node) + _name_as_value_problem(node, parents.get(id(node)), modules)
        elif isinstance(node, ast.Attribute):
            found += _attribute_problem(node, aliases)
        elif isinstance(node, ast.Call):
            found += _call_problem(node)
        elif _is_dunder_string(node) and id(node) not in docstrings:
            found.append((node.lineno, ("string literals may not name dunder attributes (format strings and "
                                        "getattr can reach interpreter internals through them)")))
    return found


def _is_dunder_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(_DUNDER_IN_STRING.search(node.value))


def _name_problem(node: ast.Name) -> list[tuple[int, str]]:
    name = node.id
    if name in FORBIDDEN_NAMES:
        return [(node.lineno, (f"name {name!r} is not allowed in a candidate (no file, process, network or "
                              f"interpreter access); compute with torch and math only"))]
    if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDER_NAMES:
        return [(node.lineno, f"name {name!r} is not allowed; interpreter internals are off limits")]
    return []


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Name -> module for every `import` statement: `import torch as t` binds t to torch, `import a.b` binds a."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                found[alias.asname or root] = alias.name if alias.asname else root
    return found


def _name_as_value_problem(node: ast.Name, parent: ast.AST | None, modules: set[str]) -> list[tuple[int, str]]:
    """getattr/hasattr only as a direct call, a module only as the base of an attribute."""
    if node.id in NAME_ARG_FUNCS and not (isinstance(parent, ast.Call) and parent.func is node):
        return [(node.lineno, (f"{node.id} may only be called directly with a literal name; passed around "
                              f"(functools.reduce, partial, an alias) it reaches forbidden attributes"))]
    if node.id in modules and isinstance(node.ctx, ast.Load) and not (
            isinstance(parent, ast.Attribute) and parent.value is node):
        return [(node.lineno, (f"module {node.id!r} may only be used as {node.id}.<name>; bound to another name "
                              f"or passed as a value it slips past the checks"))]
    return []


def _attribute_problem(node: ast.Attribute, aliases: dict[str, str]) -> list[tuple[int, str]]:
    attr = node.attr
    if attr.startswith("__") and attr.endswith("__") and attr not in ALLOWED_DUNDER_ATTRS:
        return [(node.lineno, f"attribute {attr!r} is not allowed; dunder attributes reach interpreter internals")]
    base = node.value.id if isinstance(node.value, ast.Name) else ""
    if aliases.get(base, base) == "torch" and attr in FORBIDDEN_TORCH_ATTRS:
        return [(node.lineno, _torch_attr_message(attr))]
    if attr.startswith("_") and base not in ("self", "cls"):
        return [(node.lineno, (f"private attribute {attr!r} is not allowed; only a class's own (self._x) may be "
                              f"used, library internals reach files and processes"))]
    if attr in FORBIDDEN_ATTRS:
        return [(node.lineno, f"attribute {attr!r} is not allowed; it reaches processes, files or the interpreter")]
    return []


def _call_problem(node: ast.Call) -> list[tuple[int, str]]:
    if not (isinstance(node.func, ast.Name) and node.func.id in NAME_ARG_FUNCS and len(node.args) >= 2):
        return []
    name_arg = node.args[1]
    if not (isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)):
        return [(node.lineno, (f"{node.func.id}() needs a literal attribute name; computed names can reach "
                              f"forbidden attributes"))]
    if name_arg.value.startswith("__"):
        return [(node.lineno, f"{node.func.id}() on dunder name {name_arg.value!r} is not allowed")]
    return []


def _docstring_nodes(tree: ast.Module) -> set[int]:
    owners: Iterable[ast.AST] = [tree, *(n for n in ast.walk(tree)
                                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    ids: set[int] = set()
    for owner in owners:
        body = getattr(owner, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            ids.add(id(body[0].value))
    return ids


# --- module structure ------------------------------------------------------

_TOP_LEVEL_OK = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.If)


def _check_top_level(tree: ast.Module) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for i, stmt in enumerate(tree.body):
        is_docstring = i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        if not is_docstring and not isinstance(stmt, _TOP_LEVEL_OK):
            found.append((stmt.lineno, (f"top-level {type(stmt).__name__} statement runs at import time; a candidate "
                                       f"may only define imports, constants, functions and classes at top level")))
    return found


def _check_functions(tree: ast.Module) -> list[tuple[int, str]]:
    defs: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs.setdefault(stmt.name, []).append(stmt)
    found: list[tuple[int, str]] = []
    for name, (params, returns) in REQUIRED.items():
        if name not in defs:
            found.append((1, (f"missing required top-level function `def {name}({', '.join(params)})` "
                             f"returning {returns}")))
    for name, (params, returns) in {**REQUIRED, **OPTIONAL}.items():
        found += _function_problems(name, defs.get(name, []), params)
    return found


def _function_problems(name: str, nodes: list, params: tuple[str, ...]) -> list[tuple[int, str]]:
    if not nodes:
        return []
    if len(nodes) > 1:
        lines = ", ".join(str(n.lineno) for n in nodes)
        return [(nodes[-1].lineno, f"{name} is defined {len(nodes)} times (lines {lines}); keep exactly one")]
    node = nodes[0]
    if isinstance(node, ast.AsyncFunctionDef):
        return [(node.lineno, f"{name} must be a plain `def`, not `async def`")]
    if not _accepts_positional(node.args, len(params)):
        got = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
        return [(node.lineno, (f"{name} must take {len(params)} positional arguments ({', '.join(params)}); "
                              f"it takes {len(got)} ({', '.join(got)})"))]
    return []


def _accepts_positional(args: ast.arguments, n: int) -> bool:
    """True when f(a1, ..., an) binds: enough positional slots and no required keyword-only argument."""
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_kwonly = sum(1 for d in args.kw_defaults if d is None)
    fits = required <= n and (n <= positional or args.vararg is not None)
    return fits and required_kwonly == 0


def _check_hparams(tree: ast.Module) -> list[tuple[int, str]]:
    value, line = _find_hparams(tree)
    if value is None:
        return [(1, 'missing top-level `HPARAMS = {...}` dict literal; it must contain at least "lr"')]
    if not isinstance(value, ast.Dict):
        return [(line, 'HPARAMS must be a dict literal like {"lr": 1e-6, "clip_eps": 0.2}, not a computed value')]
    keys = [k.value if isinstance(k, ast.Constant) else None for k in value.keys]
    if any(not isinstance(k, str) for k in keys):
        return [(line, "HPARAMS keys must all be string literals")]
    if "lr" not in keys:
        return [(line, 'HPARAMS must contain "lr" (the learning rate the trainer uses)')]
    try:
        lr = ast.literal_eval(value.values[keys.index("lr")])
    except ValueError:
        return []  # computed from other constants: the probes see the value
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0):
        return [(line, f'HPARAMS["lr"] must be a positive number, got {lr!r}')]
    return []


def _find_hparams(tree: ast.Module) -> tuple[ast.expr | None, int]:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HPARAMS" for t in stmt.targets):
            return stmt.value, stmt.lineno
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == "HPARAMS":
            return stmt.value, stmt.lineno
    return None, 0
