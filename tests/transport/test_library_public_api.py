"""The library transports use the libraries' public API only, so a library release that
reshuffles its internals cannot break them silently (as reading trio channel internals could:
the drain would just stop draining).

Checked on the source of coinfeed/transport/libraries.py: no ``_private`` attribute read on
anything but our own objects, none by name through ``getattr``, and imports only from the
libraries' documented modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import coinfeed.transport.libraries

SOURCE = Path(coinfeed.transport.libraries.__file__)
PUBLIC_MODULES = {
    # module -> why it is public
    "trio_websocket": "the package itself (its docs: clients.rst, api.rst)",
    "websockets.exceptions": "documented exceptions",
    "websockets.trio.client": "documented trio client (connect, ClientConnection)",
    "websockets.protocol": "documented sans-I/O API (State)",
}
LIBRARIES = ("trio_websocket", "websockets", "wsproto")


def _tree() -> ast.Module:
    return ast.parse(SOURCE.read_text(), filename=str(SOURCE))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_attribute_is_read_but_our_own() -> None:
    """``self._x`` is ours; ``something._x`` on anything else may be a library's internals."""
    found = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(_tree())
        if isinstance(node, ast.Attribute)
        and _is_private(node.attr)
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert found == []


def test_no_private_attribute_is_read_by_name() -> None:
    found = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(_tree())
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "hasattr", "setattr")
        and any(
            isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _is_private(arg.value)
            for arg in node.args
        )
    ]
    assert found == []


def test_library_imports_come_from_documented_modules() -> None:
    imported: set[str] = set()
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    from_libraries = {name for name in imported if name.split(".")[0] in LIBRARIES}
    assert from_libraries <= set(PUBLIC_MODULES), from_libraries - set(PUBLIC_MODULES)
