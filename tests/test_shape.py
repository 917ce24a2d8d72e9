"""The shape the code keeps (issue 23): in embedder/, ui/ and pages/ no function is longer than a screen
(MAX_LINES), and at most MAX_WIDE functions take more than MAX_PARAMS parameters (a parameter object says what
they describe). Measured with ast, so the shape cannot drift back unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedder", "ui", "pages")
MAX_LINES = 60  # from the def line to the last line of the body, decorators not counted
MAX_PARAMS = 6  # self and cls not counted; *args and **kwargs count one each
MAX_WIDE = 5  # public functions whose keyword arguments are their documented API may stay wide


def _functions():
    """(where, name, lines, parameters) of every function and method in PACKAGES."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node.name, _lines(node), _params(node)


def _lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return node.end_lineno - node.lineno + 1


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    named = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def test_shape__the_measure_counts_lines_and_parameters_as_the_bar_does():
    tree = ast.parse("class C:\n    def f(self, a, /, b, *args, c, **kw):\n        x = 1\n        return x\n")
    method = tree.body[0].body[0]
    assert (_lines(method), _params(method)) == (3, 5)


def test_shape__no_function_is_longer_than_a_screen():
    long = [f"{where} {name} ({n} lines)" for where, name, n, _ in _functions() if n > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines: split them into named steps: {long}"


def test_shape__few_functions_take_more_than_six_parameters():
    wide = [f"{where} {name} ({n} parameters)" for where, name, _, n in _functions() if n > MAX_PARAMS]
    assert len(wide) <= MAX_WIDE, (
        f"{len(wide)} functions take over {MAX_PARAMS} parameters (at most {MAX_WIDE}): {wide}"
    )


def _cycles(graph) -> list[list[str]]:
    """Every group of modules that import each other round in a circle (strongly connected, more than one)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return found


def test_shape__no_two_modules_import_each_other_round_in_a_circle():
    """Between subpackages the layers (pyproject's import-linter contracts) forbid it; within one, this does
    (issue 23 found cli -> cli_args -> cli_insights -> cli, and onnx_input <-> onnx_model)."""
    import grimp

    assert _cycles(grimp.build_graph("embedder")) == []
    circle = type("Graph", (), {"modules": {"a", "b", "c"}, "find_modules_directly_imported_by": None})()
    circle.find_modules_directly_imported_by = {"a": {"b"}, "b": {"c"}, "c": {"a"}}.get
    assert _cycles(circle) == [["a", "b", "c"]]  # the measure sees a circle where there is one
