"""The docs stay true: every relative link resolves, every flag and override they name exists, and the README's
two commands are the ones CI runs."""

from __future__ import annotations

import argparse
import importlib
import re
import runpy
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple
from unittest import mock

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from sgns import hydra_app
from sgns.hydra_app import args_parser  # Hydra's own command-line parser: the flags sgns-train takes

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)  # indented ones too (in a list)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
TRAIN_MODULE = "sgns.train"  # `python -m sgns.train` and `torchrun -m sgns.train` are sgns-train


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------------- links


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where a link is a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    found: Set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def broken_links(page: Path) -> List[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not ours to check
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(f"{rel(page)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{rel(page)}: {target} (no heading #{anchor} in {rel(dest)})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_broken_link_and_a_broken_anchor_are_seen(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: `code`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section-code) [gone](missing.md) [bad](other.md#no-such) "
                    "`[in code](missing.md)`\n```\n[in a fence](missing.md)\n```\n")
    with mock.patch(f"{__name__}.ROOT", tmp_path):
        assert broken_links(page) == ["page.md: missing.md (no such file)",
                                      "page.md: other.md#no-such (no heading #no-such in other.md)"]


def test_docs_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    listed = {Path(t).name for t in LINK.findall(prose(index))}
    missing = {p.name for p in PAGES[1:] if p.name != "index.md"} - listed
    assert not missing, f"docs/index.md does not list {sorted(missing)}"


USER_PATH = ["quickstart.md", "choosing_settings.md", "troubleshooting.md"]  # in the order a new user needs them
DEVELOPER_NOTES = {"architecture.md", "notes_from_code.md", "device_pipeline.md", "gpu_howto.md", "startup.md",
                   "kernel_quality.md", "scale.md", "memory.md"}


def index_sections() -> List[Tuple[str, List[str]]]:
    """docs/index.md's `## ` sections in order: (heading, the .md pages its prose links)."""
    sections = prose((ROOT / "docs" / "index.md").read_text()).split("\n## ")[1:]
    return [(s.split("\n", 1)[0].strip(), [Path(t).name for t in LINK.findall(s) if t.endswith(".md")])
            for s in sections]


def test_docs_index_starts_with_the_user_path_and_keeps_developer_notes_apart() -> None:
    sections = index_sections()
    assert sections and sections[0][0] == "Start here", [h for h, _ in sections]
    assert sections[0][1] == USER_PATH, sections[0][1]
    assert all((ROOT / "docs" / name).exists() for name in USER_PATH)
    developer = [pages for heading, pages in sections if heading == "Developer notes"]
    assert developer, "docs/index.md has no Developer notes section"
    assert set(developer[0]) == DEVELOPER_NOTES, set(developer[0]) ^ DEVELOPER_NOTES
    users = [name for heading, pages in sections if heading != "Developer notes" for name in pages]
    assert not DEVELOPER_NOTES & set(users), "developer notes listed among the users' pages"
    every_page = {p.name for p in PAGES[1:] if p.name != "index.md"}
    assert set(users) | DEVELOPER_NOTES == every_page, every_page ^ (set(users) | DEVELOPER_NOTES)


@pytest.mark.parametrize("page", PAGES[1:], ids=rel)
def test_docs_name_no_machine_path(page: Path) -> None:
    for marker in ("/work/", "/root/", "/home/"):
        assert marker not in page.read_text(), f"{rel(page)} names a machine path ({marker})"


# ------------------------------------------------------------------------------------------------- commands


def command_lines(page: Path) -> Iterator[Tuple[str, List[str], bool]]:
    """(where, tokens, is_bash) of every command in a page: each line of a ```bash block, and each `$ ` line of
    another block (a transcript), continuation lines joined, comments and shell variables expanded away."""
    text = page.read_text()
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        line_no = text.count("\n", 0, match.start()) + 2
        variables: Dict[str, str] = {}
        logical, start = "", line_no
        for i, line in enumerate(body.splitlines()):
            if not logical:
                start = line_no + i
            logical += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
            if line.rstrip().endswith("\\"):
                continue
            command, logical = logical.strip(), ""
            if lang != "bash":
                if not command.startswith("$ "):
                    continue
                command = command[2:]
            assignment = re.fullmatch(r'([A-Z_]+)="([^"]*)"', command)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            for name, value in variables.items():
                command = command.replace(f"${name}", value)
            tokens = shlex.split(command, comments=True)
            for part in split_pipeline(tokens):
                if part:
                    yield f"{rel(page)}:{start}", part, lang == "bash"
    for n, line in enumerate(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text).splitlines(), 1):
        for span in INLINE_CODE.findall(line):  # `sgns-eval PATH --topn K` in prose: a command too
            if re.match(r"`(sgns-\w+|python|torchrun|flock) ", span):
                yield f"{rel(page)}:{n}", shlex.split(span.strip("`")), True


def split_pipeline(tokens: List[str]) -> Iterator[List[str]]:
    """The simple commands of a shell line: split at && | ; and without redirections."""
    part: List[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in ("&&", "||", "|", ";"):
            yield part
            part = []
        elif token in (">", ">>", "<", "2>"):
            skip = True
        else:
            part.append(token)
    yield part


@cache
def entry_points() -> Dict[str, str]:
    """pyproject's [project.scripts]: command -> "module:function" (read as text: tomllib needs Python 3.11)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section, re.M))


def classify(tokens: List[str]) -> Tuple[str, List[str]]:
    """(command, its arguments): "sgns-train", another entry point, "scripts/NAME.py", or "" (not ours)."""
    if tokens[0] == "flock":
        tokens = tokens[2:]
    if tokens[0] in ("python", "python3", "torchrun"):
        for i, token in enumerate(tokens[1:], 1):
            if token == "-m" and i + 1 < len(tokens):
                return ("sgns-train" if tokens[i + 1] == TRAIN_MODULE else ""), tokens[i + 2:]
            if token.endswith(".py"):
                return token, tokens[i + 1:]
        return "", []
    if tokens[0] in entry_points():
        return tokens[0], tokens[1:]
    return "", []


class _Parsed(BaseException):  # BaseException: no `except Exception` in a command swallows it
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


@cache
def options_of(command: str) -> frozenset:
    """The option strings of a command's argparse, read from the parser it builds (stopped before parsing)."""
    def stop(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", stop), \
            mock.patch.object(sys, "argv", [command]):
        try:
            if command.endswith(".py"):
                runpy.run_path(str(ROOT / command), run_name="__main__")
            else:
                module, function = entry_points()[command].split(":")
                getattr(importlib.import_module(module), function)()
        except _Parsed as parsed:
            # argparse lists its actions only in _actions; every option string of the parser is there
            return frozenset(s for action in parsed.parser._actions for s in action.option_strings)
    raise AssertionError(f"{command} built no argparse parser")


@cache
def config_groups() -> Dict[str, List[str]]:
    """group -> options, packaged or a recipe of the checkout (sgns-train finds both)."""
    return hydra_app.option_names(hydra_groups=True)


@cache
def composed(choices: Tuple[str, ...]) -> DictConfig:
    return hydra_app.compose(choices, hydra_config=True)


def override_problems(overrides: List[str]) -> List[str]:
    """What is wrong with a sgns-train command's overrides: an unknown group option or an unknown key."""
    parser, parsed, problems = OverridesParser.create(), [], []
    for override in overrides:
        if override == "...":  # "and so on" in a usage line
            continue
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException:
            problems.append(f"{override}: not an override Hydra can parse")
    groups = config_groups()
    choices: List[str] = []
    for o in parsed:
        if o.key_or_group in groups:
            options = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            missing = [x for x in options if x not in groups[o.key_or_group]]
            problems += [f"{o.key_or_group}={x}: no such option" for x in missing]
            choices += [f"{o.key_or_group}={x}" for x in options[:1] if x not in missing]
    cfg = composed(tuple(choices))
    for o in parsed:
        if o.key_or_group in groups or o.type == OverrideType.ADD:
            continue
        parent_key, _, last = o.key_or_group.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig) or last not in parent:
            problems.append(f"{o.key_or_group}: no such key")
    return problems


def unbracket(args: List[str]) -> List[str]:
    """`[--rows 1000]` in a usage line is an optional part: check what is inside."""
    out, inside = [], False
    for arg in args:
        if arg.startswith("[") and not inside:
            arg, inside = arg[1:], True
        if inside and arg.endswith("]"):
            arg, inside = arg[:-1], False
        out.append(arg)
    return out


def flag_problems(command: str, args: List[str]) -> List[str]:
    args = unbracket(args)
    if command != "sgns-train" and "--" in args:  # a script passes what follows `--` on to sgns-train
        cut = args.index("--")
        return flag_problems(command, args[:cut]) + override_problems(args[cut + 1:])
    if command == "sgns-train":
        try:
            with mock.patch.object(sys, "stderr"):
                known = args_parser().parse_args(args)
        except SystemExit:
            return [f"sgns-train {' '.join(args)}: a flag Hydra does not know"]
        return override_problems(known.overrides)
    options = options_of(command)
    return [f"{command} {a}: no such flag" for a in args if a.startswith("-") and a.split("=")[0] not in options]


@cache
def commands() -> Tuple[Tuple[str, str, List[str], bool], ...]:
    found = []
    for page in PAGES:
        for where, tokens, is_bash in command_lines(page):
            command, args = classify(tokens)
            if command:
                found.append((where, command, args, is_bash))
    return tuple(found)


def test_the_docs_name_commands() -> None:
    named = {command for _, command, _, _ in commands()}
    assert {"sgns-train", "sgns-eval", "sgns-export", "sgns-summarize"} <= named, named
    assert any(c.startswith("scripts/") for c in named), named


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_flag_and_override_the_docs_name_exists(page: Path) -> None:
    problems = []
    for where, command, args, is_bash in commands():
        if not where.startswith(rel(page) + ":"):
            continue
        if command == "sgns-train" and not is_bash:  # transcripts may show a wrong key on purpose
            continue
        problems += [f"{where}: {p}" for p in flag_problems(command, args)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("args, expected", [
    (["model.dim=3", "data.window=2,5", "experiment=gutenberg_baseline", "hydra.run.dir=x"], []),
    (["model.dimm=3"], ["model.dimm: no such key"]),
    (["corpus=txt"], ["corpus=txt: no such option"]),
    (["-m", "hparams_search=optuna_sgns", "hydra.sweeper.n_trials=5"], []),
    (["hydra.sweeper.n_trials=5"], ["hydra.sweeper.n_trials: no such key"]),  # only with the optuna sweeper
    (["--cfgg", "job"], ["sgns-train --cfgg job: a flag Hydra does not know"]),
    (["model.dim=[1,", "..."], ["model.dim=[1,: not an override Hydra can parse"]),
])
def test_a_wrong_override_or_train_flag_is_seen(args: List[str], expected: List[str]) -> None:
    assert flag_problems("sgns-train", args) == expected


def test_a_wrong_command_flag_is_seen() -> None:
    assert flag_problems("sgns-eval", ["x", "--analogies", "a.txt", "--topn", "3"]) == []
    assert flag_problems("sgns-eval", ["x", "--top-n", "3"]) == ["sgns-eval --top-n: no such flag"]
    assert flag_problems("scripts/benchmarks/benchmark.py", ["--repeats", "1", "[--repeat", "2]"]) == \
        ["scripts/benchmarks/benchmark.py --repeat: no such flag"]
    assert flag_problems("scripts/benchmarks/bench_distributed.py", ["--repeats", "1", "--", "dist.hot_row=0"]) == \
        ["dist.hot_row: no such key"]


# ------------------------------------------------------------------------------------------------------- CI


def section_commands(heading: str) -> List[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    [block] = [m.group(2) for m in FENCE.finditer(section) if m.group(1) == "bash"][:1]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("heading", ["Install and train", "Run the tests"])
def test_the_readme_commands_are_what_ci_runs(heading: str) -> None:
    ci = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    for command in section_commands(heading):
        assert command in ci, f"README's {heading!r} command {command!r} is not a line of .ci/run"


def test_the_readme_is_a_front_page() -> None:
    """Issue 19: at most about 250 lines; measurements and long explanations go to docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to a docs/ page"
