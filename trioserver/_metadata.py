"""Public names report the public module they are imported from, not the private one."""

from __future__ import annotations

from typing import Any


def fixup_module_metadata(module_name: str, names: list[str], namespace: dict[str, Any]) -> None:
    """Make each public name of `namespace` report `module_name`, where it is imported from,
    not the private module that defines it (as trio and outcome do): ``trioserver.CallTimeout``
    in tracebacks, reprs and the docs. Attributes defined in those classes report it too."""
    import typing

    seen: set[int] = set()

    def fix(obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not (isinstance(module, str) and module.startswith(module_name + "._")):
            return
        if isinstance(obj, type):
            resolve_annotations(obj)
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):  # read-only, as on some builtins' wrappers
            return
        if isinstance(obj, type):
            for attribute in vars(obj).values():
                fix(getattr(attribute, "__func__", attribute))

    def resolve_annotations(cls: type) -> None:
        # `typing.get_type_hints` evaluates a class's string annotations in the module its
        # `__module__` names: evaluate them now, in the module that wrote them.
        own = vars(cls).get("__annotations__")  # (a named tuple's are ForwardRefs)
        if not own or not any(isinstance(value, str | typing.ForwardRef) for value in own.values()):
            return
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # a name only imported for type checkers: leave them as written
            return
        cls.__annotations__ = {name: hints[name] for name in own}

    for name in names:
        fix(namespace[name])
