"""The user documentation (README.md and docs/) says what cnnc does.

- The operator table lists every operator of the registry, once, with the arguments and
  defaults cnnc itself prints in its help (`signature_help`), and nothing else.
- Every fenced code block names its language, so no example escapes the checks below.
- Every ```cnn block is checked, by what its info string says it is:
    ```cnn            a whole file: parsed, its imports read, every network built and
                      shape-checked (a file of blocks and consts: every const evaluated);
    ```cnn error      a whole file that `cnnc check` refuses: exit 1, and the ```text
                      block right after it is exactly what it prints;
    ```cnn keys       a whole file of one network: the ```text block right after it lists
                      its state_dict, one `name [shape]` a line, in order;
    ```cnn body       statements of a network or block body: parsed by the grammar inside
                      `network Fragment { ... }` (a fragment names tensors it does not bind).
  Files are written as example.cnn into a directory that also holds examples/blocks/, so
  `import "blocks/resnet_blocks.cnn"` works as it does next to examples/.
- Every ```python block compiles; a ```python run block also runs.
- Every ```sh block is valid shell, and its `cnnc` command lines parse as cnnc's own.
- Relative links point at files that exist, and the README links into docs/.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

import cnnc
from cnnc.cli import main, make_parser
from cnnc.frontend import load_program
from cnnc.frontend.arguments import signature_help
from cnnc.frontend.builder import Builder
from cnnc.frontend.parser import lark_parser
from cnnc.ops import OPS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LANGUAGES = {"cnn", "python", "sh", "text"}
CNN_MODES = {"", "error", "keys", "body"}


@dataclass(frozen=True)
class Fence:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    mode: str  # the rest of the info string
    text: str
    after: Fence | None = None  # the next fenced block of the page, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fences(page: Path) -> list[Fence]:
    found: list[Fence] = []
    lines = page.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        opening = re.match(r"^ {0,3}(`{3,})(.*)$", lines[i])
        if opening is None:
            i += 1
            continue
        marker, info = opening[1], opening[2].strip()
        end = i + 1
        while end < len(lines) and not re.match(rf"^ {{0,3}}{marker}\s*$", lines[end]):
            end += 1
        assert end < len(lines), f"{page.name}:{i + 1}: a code block is never closed"
        language, _, mode = info.partition(" ")
        found.append(Fence(page, i + 1, language, mode.strip(), "\n".join(lines[i + 1:end])))
        i = end + 1
    return [Fence(f.page, f.line, f.language, f.mode, f.text,
                  found[k + 1] if k + 1 < len(found) else None) for k, f in enumerate(found)]


ALL_FENCES = [fence for page in PAGES for fence in fences(page)]
CNN = [f for f in ALL_FENCES if f.language == "cnn"]
PYTHON = [f for f in ALL_FENCES if f.language == "python"]
SHELL = [f for f in ALL_FENCES if f.language == "sh"]


def _ids(items: list[Fence]) -> list[str]:
    return [f.where for f in items]


def test_the_docs_exist_and_hold_examples():
    names = {p.name for p in DOCS.glob("*.md")}
    assert {"README.md", "language.md", "operators.md", "naming.md", "diagnostics.md",
            "api.md", "cli.md", "pytorch-differences.md"} <= names
    modes = {f.mode for f in CNN}
    assert CNN_MODES <= modes, f"no ```cnn example of modes {CNN_MODES - modes}"


# ------------------------------------------------------------------ the operator table

def _operator_rows() -> list[list[str]]:
    rows = []
    for line in (DOCS / "operators.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]  # no cell holds a `|`
        if line.startswith("| `") and len(cells) == 4:
            rows.append(cells)
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    return match[1] if match else cell


def test_operator_table_lists_every_registered_operator_once():
    names = [_code(row[0]) for row in _operator_rows()]
    assert len(names) == len(set(names)), "an operator has two rows"
    assert sorted(set(OPS) - set(names)) == [], "operators missing from docs/operators.md"
    assert sorted(set(names) - set(OPS)) == [], "rows for operators cnnc does not have"


def test_operator_table_gives_the_arguments_cnnc_takes():
    for row in _operator_rows():
        op = OPS[_code(row[0])]
        expected = signature_help(op)[len(op.name) + 1:-1] or "—"
        assert _code(row[1]) == expected, f"{op.name}: the table says {row[1]!r}"


# ------------------------------------------------------------------ code blocks

def test_every_code_block_names_its_language():
    unnamed = [f.where for f in ALL_FENCES if f.language not in LANGUAGES]
    assert unnamed == [], f"code blocks without one of {sorted(LANGUAGES)}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples" / "blocks", tmp_path / "blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _following_text(fence: Fence) -> str:
    after = fence.after
    assert after is not None and after.language == "text", \
        f"{fence.where}: a ```cnn {fence.mode} block is followed by a ```text block"
    return after.text


@pytest.mark.parametrize("fence", CNN, ids=_ids(CNN))
def test_cnn_example(fence: Fence, workdir, capsys):
    assert fence.mode in CNN_MODES, f"{fence.where}: unknown ```cnn mode {fence.mode!r}"
    if fence.mode == "body":
        lark_parser().parse("network Fragment {\n" + fence.text + "\n}\n")
        return
    path = workdir / "example.cnn"
    path.write_text(fence.text + "\n", encoding="utf-8")
    if fence.mode == "error":
        assert main(["check", "example.cnn"]) == 1, f"{fence.where}: no error"
        assert capsys.readouterr().err.rstrip("\n") == _following_text(fence)
        return
    if fence.mode == "keys":
        model = cnnc.reference(path)
        listed = [f"{name} {list(t.shape)}" for name, t in model.state_dict().items()]
        expected = [" ".join(line.split()) for line in _following_text(fence).splitlines()]
        assert listed == expected
        return
    program = load_program(path)
    for net in program.networks:
        cnnc.load(path, net.name)
    builder = Builder(program)
    for name in program.consts:
        builder.const(name)


@pytest.mark.parametrize("fence", PYTHON, ids=_ids(PYTHON))
def test_python_example(fence: Fence, monkeypatch, tmp_path):
    code = compile(fence.text, fence.where, "exec")
    assert fence.mode in ("", "run"), f"{fence.where}: unknown ```python mode {fence.mode!r}"
    if fence.mode == "run":
        monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path / "cache"))
        exec(code, {"__name__": "docs_example"})


@pytest.mark.parametrize("fence", SHELL, ids=_ids(SHELL))
def test_shell_example(fence: Fence):
    """Shell syntax, and every `cnnc` command line is one cnnc's parser accepts."""
    done = subprocess.run(["bash", "-n"], input=fence.text, capture_output=True, text=True)
    assert done.returncode == 0, f"{fence.where}: {done.stderr}"
    for line in fence.text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["cnnc"]:
            make_parser().parse_args(words[1:])  # a usage error exits


# ------------------------------------------------------------------ links

def _links(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code is not links
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_point_at_files(page: Path):
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue
        file, _, anchor = link.partition("#")
        target = (page.parent / file).resolve() if file else page
        assert target.exists(), f"{page.relative_to(ROOT)} links to missing {link}"
        assert ROOT in target.parents, f"{page.relative_to(ROOT)} links outside the project"
        if anchor:
            assert anchor in _anchors(target), f"{page.relative_to(ROOT)}: no heading for {link}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces
    made hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_readme_links_into_every_page_of_the_docs():
    linked = {(ROOT / link.split("#")[0]).resolve() for link in _links(ROOT / "README.md")}
    pages = set(DOCS.glob("*.md"))
    assert sorted(p.name for p in pages - linked) == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_pages_send_no_one_to_files_outside_the_project(page: Path):
    """The language contract (LANGUAGE.md) lives outside the project; users have docs/."""
    text = page.read_text(encoding="utf-8")
    assert "LANGUAGE.md" not in text and "../shared" not in text
