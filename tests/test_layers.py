"""The dependency rule of ARCHITECTURE.md, checked on every import in the package (those inside
functions included), read from the source with `ast`:

    engine     curation.{errors, config, option_types, stage, io, storage, output_folder,
               output_schema, pipeline, executor, embedded_ray, memory, stats}: imports nothing of curation.stages,
               curation.tokenizer, the trainer side or the application
    tokenizer  curation.tokenizer.*: the engine only
    stages     curation.stages.*: the engine and curation.tokenizer
    trainer    curation.{manifest, loader}: the token-shard format (curation.tokenizer.shards) and the
               engine's errors and storage layer only; never Ray, the executor or a stage
    app        curation.{cli, job, job_config, report}: anything

and: an import inside a function is of a third-party module (never of curation) and says why on its
line or the line above (a heavy or optional dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = {"curation": REPO / "curation", "curation.stages": REPO / "stages", "curation.tokenizer": REPO / "tokenizer"}
ENGINE = {"curation", "curation.errors", "curation.config", "curation.option_types", "curation.stage",
          "curation.io", "curation.storage", "curation.output_folder", "curation.output_schema", "curation.pipeline",
          "curation.executor", "curation.embedded_ray", "curation.memory", "curation.stats", "curation.sink",
          "curation.shard"}
TRAINER = {"curation.manifest", "curation.loader"}
APP = {"curation.cli", "curation.job", "curation.job_config", "curation.report"}
TRAINER_MAY_USE = {"curation.errors", "curation.storage", "curation.tokenizer.shards", "curation.tokenizer"} | TRAINER


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts]) if parts else package
            if package == "curation" and parts and parts[0] in ("stages", "tokenizer"):
                continue
            found[name] = path
    return found


def layer(module: str) -> str:
    if module.startswith("curation.stages"):
        return "stages"
    if module.startswith("curation.tokenizer"):
        return "tokenizer"
    if module in TRAINER:
        return "trainer"
    if module in APP:
        return "app"
    if module in ENGINE:
        return "engine"
    return "unassigned"


def imports_of(path: Path, module: str) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, source line) for every import in the file."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, child.lineno, in_function, lines[child.lineno - 1]))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in child.names] if base in ("curation", "curation.stages",
                                                                                 "curation.tokenizer") else [base]
                for name in names:
                    found.append((name, child.lineno, in_function, lines[child.lineno - 1]))
            visit(child, inside)

    visit(tree, False)
    return found


ALLOWED = {
    "engine": {"engine"},
    "tokenizer": {"engine", "tokenizer"},
    "stages": {"engine", "tokenizer", "stages"},
    "trainer": set(),  # checked by name: TRAINER_MAY_USE
    "app": {"engine", "tokenizer", "stages", "trainer", "app"},
}


def test_every_module_has_a_layer():
    unassigned = [name for name in modules() if layer(name) == "unassigned"]
    assert not unassigned, f"modules in no layer of ARCHITECTURE.md: {unassigned}"


def test_imports_follow_the_dependency_rule():
    known = modules()
    problems = []
    for module, path in known.items():
        mine = layer(module)
        for imported, line, _, _ in imports_of(path, module):
            if not imported.startswith("curation"):
                if mine == "trainer" and imported.split(".")[0] == "ray":
                    problems.append(f"{path.relative_to(REPO)}:{line}: the trainer side imports Ray")
                continue
            target = imported if imported in known else imported.rsplit(".", 1)[0]
            if target not in known:
                continue  # a name imported from a module (from curation.x import y): the module is its prefix
            theirs = layer(target)
            if mine == "trainer":
                ok = target in TRAINER_MAY_USE
            else:
                ok = theirs in ALLOWED[mine]
            if not ok:
                problems.append(f"{path.relative_to(REPO)}:{line}: {mine} module {module} imports {theirs} module {target}")
    assert not problems, "imports against ARCHITECTURE.md's rule:\n" + "\n".join(problems)


def test_imports_inside_functions_are_third_party_and_say_why():
    problems = []
    for module, path in modules().items():
        lines = path.read_text().splitlines()
        for imported, line, in_function, text in imports_of(path, module):
            if not in_function:
                continue
            if imported.startswith("curation"):
                problems.append(f"{path.relative_to(REPO)}:{line}: {imported} imported inside a function")
                continue
            above = lines[line - 2].strip() if line >= 2 else ""
            if "#" not in text and not above.startswith("#"):
                problems.append(f"{path.relative_to(REPO)}:{line}: `{text.strip()}` inside a function without a reason")
    assert not problems, "\n".join(problems)
