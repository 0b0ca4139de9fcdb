"""Option values of the plain kinds (str, Path, bool) converted without pydantic.

typer (0.2x) converts every option value through a pydantic TypeAdapter, built the first time
the option is used. That imports pydantic and builds a validator - about 40 ms of CPU, a
quarter of `scanner status` - to turn `--instance x` into "x". `install` gives typer a
conversion of its own for str, Path and bool options (optional or not, one value each, no
custom parser, no `path_type`) with typer's result: a str or a bool is kept, a path becomes
`Path(value)` and then goes through typer's own checks (`exists`, `readable`, ...). Every other
kind, and any other value (a flag's "yes" from the environment), keeps typer's conversion.

It relies on typer's internals (`typer.core._TyperParameter.get_runtime_param`,
`typer._coercion.RuntimeParam`). On a typer without them it installs nothing and the CLI works
as before, only slower; `tests/cli/test_common.py` notices (a stopped instance's `status` then
imports pydantic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def install() -> bool:
    """Patch typer once per process; False when its internals are not the expected ones."""
    try:
        from typer._coercion import RuntimeParam, build_runtime_param
        from typer._param_types import coerce_cli_path
        from typer.core import _TyperParameter
    except ImportError:
        return False
    typer_way = getattr(_TyperParameter, "get_runtime_param", None)
    if typer_way is None:
        return False
    if getattr(typer_way, "plain_kinds", False):
        return True  # installed already

    @dataclass(frozen=True)
    class PlainParam(RuntimeParam):
        """str / Path / bool conversion as typer's TypeAdapter would do it, without pydantic."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.annotation is bool and isinstance(value, bool):
                return value
            if self.annotation is not bool and isinstance(value, str):
                if self.annotation is str:
                    return value
                return coerce_cli_path(Path(value), self.parameter_info, path_type=Path, param=param, ctx=ctx)
            # anything else (a flag's "yes" from the environment, a default of another type):
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)

    def get_runtime_param(self: Any) -> Any:
        d = self.type_descriptor
        if (self._runtime_param is None and d.annotation in (str, Path, bool) and d.file_annotation is None
                and d.parameter_info.parser is None and d.parameter_info.path_type is None
                and not self.multiple and self.nargs == 1):
            self._runtime_param = PlainParam(parameter_info=d.parameter_info, annotation=d.annotation)
        return typer_way(self)

    get_runtime_param.plain_kinds = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param
    return True
