"""The layout's rules: imports run one way (stages <- train <- commands) with no cycle, and the package installs
anywhere."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

import sgns

PACKAGE = Path(sgns.__file__).resolve().parent
# The stages the train loop is built from: none of them may import the loop, the loaders or a command.
STAGES = ("config", "errors", "device", "corpus", "vocab", "model", "pipelines", "vectors", "benchmarks", "evaluate",
          "distributed")


def imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) of every import in a file, relative imports made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            yield node.lineno, base


def library_modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] != "cli" and path.name != "__main__.py":
            yield path


def test_no_library_module_imports_a_command() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}" for path in library_modules()
             for line, module in imports(path) if module == "sgns.cli" or module.startswith("sgns.cli.")]
    assert not found, "the library must not import the command-line tools:\n" + "\n".join(found)


def test_stages_do_not_import_the_train_loop_or_what_comes_after_it() -> None:
    later = ("sgns.train", "sgns.load", "sgns.cli")
    found = []
    for path in library_modules():
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in STAGES:
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}" for line, module in imports(path)
                  if any(module == m or module.startswith(m + ".") for m in later)]
    assert not found, "stages come before training:\n" + "\n".join(found)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Every sgns module -> the sgns modules it imports, wherever the import stands (top, function body,
    TYPE_CHECKING block): an import hidden in a function still ties the two modules together. `from p import m`
    counts as importing p.m when that is a module. Importing p.m also runs p/__init__.py, but that implicit edge
    is left out: a package's __init__ may gather names from its own modules. `__main__.py` files are entry points
    that nothing imports: left out too."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    graph: Dict[str, Set[str]] = {}
    for name, path in paths.items():
        targets: Set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + [base]).strip(".")
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    done: Set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [(root, iter(sorted(graph.get(root, ()))))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                done.add(node)
                on_path.discard(path.pop())
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                path.append(child)
                on_path.add(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def part_of(module: str) -> str:
    """The part of sgns a module belongs to: a top-level module or a sub-package (sgns.train, sgns.load ...)."""
    return ".".join(module.split(".")[:2])


# Where the composed config (omegaconf's DictConfig) may be seen: the schema, the Hydra seam, the commands, sgns.fit
# and the loop's entry; below them every stage takes its own group's typed config (sgns.config's dataclasses) or
# plain values.
CONFIG_DOORS = ("config.py", "hydra_app.py", "api.py", "cli", "train/loop.py")


def test_omegaconf_stops_at_the_door() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}" for path in sorted(PACKAGE.rglob("*.py"))
             for line, module in imports(path)
             if module.split(".")[0] == "omegaconf"
             and not any(path.relative_to(PACKAGE).as_posix().startswith(door) for door in CONFIG_DOORS)]
    assert not found, "omegaconf below the entry points (take the typed config instead):\n" + "\n".join(found)


def untyped_config_parameters(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, "function(parameter: annotation)") of every parameter named cfg, config or *_cfg whose annotation is
    neither one of the schema's classes (`...Config`) nor a Mapping (the config's plain record, which checkpoints,
    HParams and the resume comparison read): a loose bag read with getattr."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                if arg.arg in ("cfg", "config") or arg.arg.endswith("_cfg"):
                    hint = ast.unparse(arg.annotation) if arg.annotation is not None else "no annotation"
                    names = [n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)] \
                        if arg.annotation is not None else []
                    if not any(n.endswith("Config") or n == "Mapping" for n in names) and \
                            not hint.endswith("Config"):
                        yield node.lineno, f"{node.name}({arg.arg}: {hint})"


def test_stages_below_the_door_take_the_schemas_classes() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line} {what}" for path in sorted(PACKAGE.rglob("*.py"))
             if not any(path.relative_to(PACKAGE).as_posix().startswith(door) for door in CONFIG_DOORS)
             for line, what in untyped_config_parameters(path)]
    assert not found, "a config taken as a loose bag below the entry points (take the group's typed config):\n" + \
        "\n".join(found)


def test_the_untyped_config_check_sees_each_form(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def a(cfg: Any): ...\ndef b(config): ...\ndef c(eval_cfg: EvalConfig): ...\n"
                      "def d(cfg: sgns.config.DataConfig): ...\nclass E:\n    def __init__(self, x, cfg: dict): ...\n"
                      "def f(config: Mapping[str, Any]): ...\ndef g(config: Config | Mapping[str, Any]): ...\n")
    assert [what for _, what in untyped_config_parameters(module)] == [
        "a(cfg: Any)", "b(config: no annotation)", "__init__(cfg: dict)"]


# The options that decide a pipeline or a model, compared as values only where the rules live: the schema, the
# model and the pipelines' factory (sgns/pipelines/__init__.py).
RULE_VALUES = ("sparse_adam", "full_softmax")
RULE_HOMES = ("config.py", "model.py", "pipelines/__init__.py")


def test_optimizer_and_objective_names_appear_only_in_the_config_the_model_and_the_factory() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() in RULE_HOMES:
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}"
                  for node in ast.walk(ast.parse(path.read_text(), str(path)))
                  if isinstance(node, ast.Constant) and node.value in RULE_VALUES]
    assert not found, "a rule outside sgns.pipelines' factory:\n" + "\n".join(found)


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_parts() -> None:
    """Nor between the parts of the package: sgns.load -> sgns.train.x -> sgns.load is a cycle even when no
    single module imports itself back."""
    parts: Dict[str, Set[str]] = {}
    for module, targets in import_graph().items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets if part_of(t) != part_of(module))
    cycle = find_cycle(parts)
    assert cycle is None, "import cycle between parts of sgns: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert part_of("sgns.train.loop") == "sgns.train" and part_of("sgns.load") == "sgns.load"
    assert import_graph()["sgns.load"] >= {"sgns.train.runs"}, "imports are found"


def test_the_guard_sees_an_import(tmp_path: Path) -> None:
    bad = PACKAGE / "_layout_probe.py"  # never committed: written and removed here
    try:
        bad.write_text("from sgns.cli.common import OneLineParser\n")
        assert any(module.startswith("sgns.cli") for _, module in imports(bad))
    finally:
        bad.unlink()


def test_a_built_wheel_trains_from_anywhere(tmp_path: Path) -> None:
    """Build the wheel, install it outside the checkout and train with it from another directory: the configs
    must travel in the package."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE.parent / name, source / name)
    shutil.copytree(PACKAGE, source / "sgns", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("sgns-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    assert (target / "sgns" / "conf" / "train.yaml").is_file()
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "SGNS_CACHE_DIR": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import sgns; print(sgns.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target), "the installed copy, not the checkout, is imported"
    done = subprocess.run([str(target / "bin" / "sgns-train"), "corpus.synthetic.sentences=2000", "trainer.epochs=1",
                           "model.dim=8", "trainer.progress=false", "hydra.run.dir=run"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (work / "run" / "vectors.bin").is_file() and (work / "run" / "metrics.json").is_file()
    scored = subprocess.run([str(target / "bin" / "sgns-eval"), "run"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300)  # the English suite, read from the installed package's files
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout.splitlines()[-1])["eval"]["google"]["total"] == 19544


@pytest.mark.parametrize("folder", ["sgns/conf", "configs", "README.md"])
def test_configs_and_docs_name_no_machine_path(folder: str) -> None:
    root = PACKAGE.parent
    paths = [root / folder] if (root / folder).is_file() else sorted((root / folder).rglob("*.yaml"))
    for path in paths:
        for marker in ("/work/", "/root/", "/home/"):
            assert marker not in path.read_text(), f"{path} names a machine path ({marker})"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's tree matches the package: every module and folder named, no stale names."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = page.split("```", 2)[1]
    named = {word for line in block.splitlines() for word in line.split()[:1] if word.endswith((".py", "/"))}
    modules = {p.name for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    folders = {f"{p.name}/" for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"
               and p.relative_to(PACKAGE).parts[0] != "conf"}  # conf/'s groups are YAML, not modules
    listed_in_cli = {"train.py", "eval.py", "export.py", "summarize.py", "common.py"}  # on the cli/ line
    assert modules - listed_in_cli <= named | {"train.py"}, modules - listed_in_cli - named
    assert folders <= named | {"sgns/"}, folders - named
    assert {n for n in named if n.endswith(".py")} - {"__init__.py"} <= modules, "the page names a missing module"


# ------------------------------------------------------------------------------------------------- scripts

SCRIPTS = PACKAGE.parent / "scripts"
SCRIPT_FOLDERS = ("benchmarks", "studies", "tools")  # what a script is for: measure, study, or help run sgns


def script_files() -> List[Path]:
    return sorted(p for p in SCRIPTS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_every_script_is_sorted_by_purpose() -> None:
    assert script_files(), "no scripts found"
    loose = [str(p.relative_to(SCRIPTS)) for p in script_files()
             if len(p.relative_to(SCRIPTS).parts) != 2 or p.relative_to(SCRIPTS).parts[0] not in SCRIPT_FOLDERS]
    assert not loose, f"every script lives in scripts/{{{','.join(SCRIPT_FOLDERS)}}}/: {loose}"


def private_sgns_names(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, name) of every private sgns name a script reaches: `from sgns.x import _y`, a module `sgns._x`,
    or `m._y` where `m` is a name bound to an sgns module or object by an import."""
    tree = ast.parse(path.read_text(), str(path))
    from_sgns: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "sgns":
            for part in node.module.split("."):
                if part.startswith("_"):
                    yield node.lineno, node.module
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield node.lineno, f"{node.module}.{alias.name}"
                from_sgns.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sgns":
                    yield from ((node.lineno, alias.name) for part in alias.name.split(".") if part.startswith("_"))
                    from_sgns.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in from_sgns:
                yield node.lineno, f"{ast.unparse(node)}"


@pytest.mark.parametrize("script", [p for p in script_files() if p.suffix == ".py"], ids=lambda p: p.name)
def test_scripts_use_public_names_of_sgns_only(script: Path) -> None:
    found = [f"{script.relative_to(PACKAGE.parent)}:{line} uses {name}" for line, name in private_sgns_names(script)]
    assert not found, "a script uses sgns's public names only (make the name public or change the script):\n" + \
        "\n".join(found)


def test_the_private_name_check_sees_each_form(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sgns.pipelines.span_kernel as k\nfrom sgns.pipelines.span_kernel import _draw, draw\n"
                      "from sgns._hidden import x\nk._window(1)\nk.train_piece(1)\nimport os\nos._exit(0)\n")
    assert [name for _, name in private_sgns_names(script)] == [
        "sgns.pipelines.span_kernel._draw", "sgns._hidden", "k._window"]


# ------------------------------------------------------------------------------------------------- machine paths

MACHINE_PATHS = ("/work/", "/root/", "/home/", "/tmp/base")  # where this project was written, never a user's
# The checks that name the markers themselves.
MARKER_FILES = {Path("tests/test_layout.py"), Path("tests/test_docs.py")}


def tracked_text_files() -> List[Path]:
    """The checkout's files (git's list where there is one, else every file beside the package), text only."""
    root = PACKAGE.parent
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True) \
        if shutil.which("git") and (root / ".git").exists() else None
    if listed is not None and listed.returncode == 0:
        paths = [root / line for line in listed.stdout.splitlines()]
    else:
        paths = [p for p in root.rglob("*") if p.is_file() and not {".git", "__pycache__", "outputs", ".cache"}
                 & set(p.relative_to(root).parts)]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def test_no_file_names_a_path_of_the_machine_it_was_written_on() -> None:
    root = PACKAGE.parent
    found = [f"{path.relative_to(root)}:{number}: {marker}" for path in tracked_text_files()
             if path.relative_to(root) not in MARKER_FILES
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             for marker in MACHINE_PATHS if marker in line]
    assert not found, "a tracked file names a path of the machine it was written on:\n" + "\n".join(found)


# ------------------------------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")
                                           if p.parent.name not in ("conf", "benchmarks")))
def test_each_package_docstring_names_its_modules(package: str) -> None:
    """A sub-package's docstring is its map: every module in it is named there (its stem, as a word)."""
    folder = PACKAGE / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", doc))
    missing = [p.name for p in sorted(folder.glob("*.py")) if p.stem not in ("__init__", "__main__")
               and p.stem not in words]
    assert not missing, f"sgns/{package}/__init__.py's docstring does not name {', '.join(missing)}"


# ------------------------------------------------------------------------------------------------- module sizes

# Issue 28: the hot path and the reading stage split by job, each module read in one sitting (~500 and ~400 lines).
MODULE_LINES = {"pipelines": 500, "corpus": 450}


@pytest.mark.parametrize("package", sorted(MODULE_LINES))
def test_pipeline_and_corpus_modules_stay_one_sitting_long(package: str) -> None:
    limit = MODULE_LINES[package]
    long = [f"{p.name}: {n} lines" for p in sorted((PACKAGE / package).glob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]
    assert not long, f"sgns/{package} modules over {limit} lines (split by job): " + ", ".join(long)
