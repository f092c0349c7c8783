"""PySyncObj's internals stay behind one module: the ones oct relies on still exist in the installed
PySyncObj, the adapter lists every one it uses, and no other module touches one."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from octctl.state import pysyncobj_adapter
from octctl.state.pysyncobj_adapter import PRIVATE_SURFACE

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = Path(pysyncobj_adapter.__file__).resolve()
#: Where oct's own Python lives; every module there but the adapter is checked.
SOURCES = ("octctl", "octcli", "bench", "tests")
#: PySyncObj's modules whose classes oct could reach into.
PYSYNCOBJ_MODULES = (
    "pysyncobj.syncobj",
    "pysyncobj.transport",
    "pysyncobj.tcp_connection",
    "pysyncobj.tcp_server",
    "pysyncobj.poller",
    "pysyncobj.serializer",
    "pysyncobj.journal",
    "pysyncobj.node",
    "pysyncobj.config",
    "pysyncobj.pipe_notifier",
)
KINDS = {"method", "attribute", "class", "global"}


def resolve(where: str) -> Any:
    """``pysyncobj.syncobj.SyncObj`` -> the class; ``pysyncobj.tcp_server`` -> the module."""
    module_name, _, rest = where, "", ""
    while True:
        try:
            found: Any = importlib.import_module(module_name)
            break
        except ModuleNotFoundError:
            module_name, _, last = module_name.rpartition(".")
            rest = f"{last}.{rest}" if rest else last
    for part in filter(None, rest.split(".")):
        found = getattr(found, part)
    return found


def pysyncobj_classes() -> list[type]:
    classes = []
    for name in PYSYNCOBJ_MODULES:
        module = importlib.import_module(name)
        classes += [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == name]
    return classes


def assigned_in_init(cls: type, name: str) -> bool:
    """Whether ``cls.__init__`` sets ``name`` on the instance (``name`` as stored: mangled)."""
    prefix = f"_{cls.__name__}"
    written = name[len(prefix) :] if name.startswith(f"{prefix}__") else name
    source = inspect.getsource(cls.__init__)  # type: ignore[misc]
    return re.search(rf"self\.{re.escape(written)}\s*=", source) is not None


@pytest.mark.parametrize(("where", "name", "kind"), PRIVATE_SURFACE, ids=lambda v: str(v))
def test_each_internal_the_adapter_relies_on_exists_in_the_installed_pysyncobj(
    where: str, name: str, kind: str
) -> None:
    assert kind in KINDS
    owner = resolve(where)
    if kind == "method":
        assert inspect.isfunction(getattr(owner, name, None)), f"{where}.{name} is no longer a method"
    elif kind == "attribute":
        assert assigned_in_init(owner, name), f"{where}.__init__ no longer sets {name}"
    elif kind == "class":
        assert inspect.isclass(getattr(owner, name, None)), f"{where}.{name} is no longer a class"
    else:  # a global the module looks up on every use, so that replacing it takes effect
        assert isinstance(owner, ModuleType) and hasattr(owner, name), f"{where}.{name} is gone"
        source = inspect.getsource(owner)
        assert re.search(rf"(?<![\w.]){name}[.(]", source), f"{where} no longer uses {name} by name"


def test_the_leader_state_is_pysyncobjs() -> None:
    states = vars(resolve("pysyncobj.syncobj"))["_RAFT_STATE"]  # by name: see the check below
    assert pysyncobj_adapter.LEADER_STATE == states.LEADER
    assert len({states.FOLLOWER, states.CANDIDATE, states.LEADER}) == 3


def mangled_prefixes() -> tuple[str, ...]:
    return tuple(f"_{cls.__name__.lstrip('_')}__" for cls in pysyncobj_classes())


def is_pysyncobj_private(name: str, classes: list[type], prefixes: tuple[str, ...]) -> bool:
    """Whether ``name`` (used by the adapter) is one of PySyncObj's own private names."""
    if not name.startswith("_") or name.startswith("__") or name.endswith("__"):
        return False
    if name.startswith(prefixes) or any(name in vars(importlib.import_module(m)) for m in PYSYNCOBJ_MODULES):
        return True
    for cls in classes:
        if name in vars(cls) or any(name in vars(base) for base in cls.__mro__[1:-1]):
            return True
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        if re.search(rf"self\.{re.escape(name)}\b", source):
            return True
    return False


def names_used(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Attribute names read, written or defined as methods, and names imported from PySyncObj."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.lineno, node.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pysyncobj"):
            yield from ((node.lineno, alias.name) for alias in node.names)


def test_the_adapter_lists_every_private_name_it_uses() -> None:
    classes, prefixes = pysyncobj_classes(), mangled_prefixes()
    listed = {name for _, name, _ in PRIVATE_SURFACE}
    tree = ast.parse(ADAPTER.read_text())
    unlisted = {
        f"{line}: {name}"
        for line, name in names_used(tree)
        if name not in listed and is_pysyncobj_private(name, classes, prefixes)
    }
    assert not unlisted, f"add these to PRIVATE_SURFACE: {sorted(unlisted)}"


def pysyncobj_modules(tree: ast.AST) -> dict[str, str]:
    """Local names bound to PySyncObj modules, and the module each is."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pysyncobj") and alias.asname:
                    bound[alias.asname] = alias.name
                elif alias.name.startswith("pysyncobj"):
                    bound["pysyncobj"] = "pysyncobj"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pysyncobj"):
            for alias in node.names:
                if inspect.ismodule(getattr(importlib.import_module(node.module or ""), alias.name, None)):
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def dotted(node: ast.expr, modules: dict[str, str]) -> str | None:
    """The full name of a PySyncObj module or object ``node`` refers to, if it is one."""
    if isinstance(node, ast.Name):
        return modules.get(node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, modules)
        return None if base is None else f"{base}.{node.attr}"
    return None


def touches(tree: ast.AST, private: set[str], prefixes: tuple[str, ...], globals_: set[str]) -> Iterator[str]:
    """Every use of a PySyncObj private name or replaced global, and every change to a PySyncObj
    module (assigning, deleting or ``setattr`` on one of its names)."""
    modules = pysyncobj_modules(tree)
    for line, name in names_used(tree):
        if name in private or name.startswith(prefixes):
            yield f"{line}: {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            full = dotted(node, modules)
            if full is not None and (full in globals_ or not isinstance(node.ctx, ast.Load)):
                yield f"{node.lineno}: {full}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "setattr" and dotted(node.args[0], modules) is not None:
                yield f"{node.lineno}: setattr({dotted(node.args[0], modules)}, ...)"


def oct_sources() -> Iterator[Path]:
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() != ADAPTER:
                yield path


def test_no_module_but_the_adapter_touches_pysyncobj_internals() -> None:
    private = {name for _, name, _ in PRIVATE_SURFACE if name.startswith("_")}
    globals_ = {f"{where}.{name}" for where, name, kind in PRIVATE_SURFACE if kind == "global"}
    prefixes = mangled_prefixes()
    found = []
    checked = 0
    for path in oct_sources():
        checked += 1
        tree = ast.parse(path.read_text(), str(path))
        found += [f"{path.relative_to(ROOT)}:{where}" for where in touches(tree, private, prefixes, globals_)]
    assert checked > 50, "the sources were not found"
    assert not found, f"PySyncObj internals outside {ADAPTER.name}: {found}"


def test_the_check_sees_each_way_of_reaching_in() -> None:
    private = {name for _, name, _ in PRIVATE_SURFACE if name.startswith("_")}
    globals_ = {f"{where}.{name}" for where, name, kind in PRIVATE_SURFACE if kind == "global"}
    prefixes = mangled_prefixes()
    offenders = {
        "call": "def f(sync):\n    return sync._isLeader()\n",
        "mangled": "def f(sync):\n    return sync._SyncObj__raftLog\n",
        "override": "class T:\n    def _onTick(self):\n        pass\n",
        "import": "from pysyncobj.syncobj import _RAFT_STATE\n",
        "patch": "from pysyncobj import tcp_connection\ntcp_connection.zlib = None\n",
        "read global": "from pysyncobj import tcp_connection\ncodec = tcp_connection.zlib\n",
        "new global": "import pysyncobj.transport\npysyncobj.transport.anything = 1\n",
        "setattr": "from pysyncobj import tcp_server\nsetattr(tcp_server, 'TcpConnection', object)\n",
    }
    for what, source in offenders.items():
        assert list(touches(ast.parse(source), private, prefixes, globals_)), what
    fine = "from pysyncobj import tcp_connection\nconn = tcp_connection.TcpConnection\nsync.is_leader()\n"
    assert not list(touches(ast.parse(fine), private, prefixes, globals_))
