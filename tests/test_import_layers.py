"""Imports point down the layers, and no two project modules import each other (STYLE rule 10).

An AST scan of every module of `speech_adapter` and `data_prep`, imports inside functions
included (a lazy import is still a dependency; hiding one is how circles went unseen). Layers,
low to high; a module may import its own layer (without a circle) and any lower one:

    0  foundations   errors, config, utils, version, the `speech_adapter` package itself
    1  vocabulary    audio, prompts, paths, eval.constraints, eval.scoring, templates
    2  models        models, offline_models
    3  work          data_prep, train, eval, inference, export
    4  commands      serve, pipeline, recipe, stages, cli, and every `*.cli` module

Two cuts differ from the package tree, where the code showed a better one:
- `eval.constraints` and `eval.scoring` are vocabulary, not evaluation: the template pool
  (`templates`) renders constraint texts and distillation's judge scores answers with them,
  so they sit below `templates` and `data_prep` (their package `eval` stays in layer 3).
- The `*.cli` modules (`data_prep.cli`, `train.cli`, `eval.cli`, `offline_models.cli`,
  `serve.cli`) are commands: they read a recipe (`recipe`, layer 4) and take their section,
  so they sit with `cli` rather than with the work they start.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("speech_adapter", "data_prep")

LAYERS = [
    ["speech_adapter", "speech_adapter.errors", "speech_adapter.config", "speech_adapter.utils",
     "speech_adapter.version"],
    ["speech_adapter.audio", "speech_adapter.prompts", "speech_adapter.paths", "speech_adapter.eval.constraints",
     "speech_adapter.eval.scoring", "speech_adapter.templates"],
    ["speech_adapter.models", "speech_adapter.offline_models"],
    ["data_prep", "speech_adapter.train", "speech_adapter.eval", "speech_adapter.inference", "speech_adapter.export"],
    ["speech_adapter.serve", "speech_adapter.pipeline", "speech_adapter.recipe", "speech_adapter.stages",
     "speech_adapter.cli"],
]
TOP = len(LAYERS) - 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of the longest listed prefix of `module`; every `*.cli` module is a command."""
    if module.endswith(".cli"):
        return TOP
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    if found is None:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS in {Path(__file__).name}")
    return found


def imports(path: Path, modules) -> set[tuple[str, int]]:
    me = module_name(path)
    return imports_in(path.read_text(), me, me if path.name == "__init__.py" else me.rpartition(".")[0], modules)


def imports_in(source: str, me: str, package: str, modules) -> set[tuple[str, int]]:
    """(project module, line) of every import in `source`, at any depth. `from pkg import sub`
    names the submodule `pkg.sub` where one exists, else `pkg`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import a.b.c` of a non-module attribute: its module
                t = t.rpartition(".")[0]
            if t and t != me:
                found.add((t, node.lineno))
    return found


MODULES = project_modules()
GRAPH = {m: imports(p, MODULES) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer(m)


def test_imports_point_down_the_layers():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)}) at {MODULES[m].relative_to(ROOT)}:{line}"
              for m, edges in GRAPH.items() for t, line in sorted(edges) if layer(t) > layer(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    cycles = find_cycles({m: {t for t, _ in edges} for m, edges in GRAPH.items()})
    assert not cycles, "modules that import each other (directly or round a loop):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph, cycles", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_itself(graph, cycles):
    assert find_cycles(graph) == cycles


def test_the_scan_sees_imports_inside_functions():
    """A lazy import is an edge too (the way the circles above stayed hidden)."""
    source = "import os\n\n\ndef f():\n    from speech_adapter.models.speechlm import SpeechLM\n"
    assert imports_in(source, "speech_adapter.probe", "speech_adapter", MODULES) == {
        ("speech_adapter.models.speechlm", 5)}
