"""The template gallery: every template makes a valid spec from its defaults, and hostile values
(quotes, `$(...)`, `${{ }}`, `#`, sed's delimiter and specials, newlines) come out of the spec
exactly as typed: the steps' scripts are rendered as the helper renders them and run by a real
shell with real sed and find, GNU's and busybox's (the tests' container image is busybox)."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from busybox import BusyboxMissing, static_busybox
from ci import unavailable
from ruamel.yaml import YAML

from offload.batches import gallery
from offload.batches.gallery import FieldErrors
from offload.batches.spec.model import BatchSpec, OnQuery
from offload.batches.spec.reader import parse_spec
from offload.batches.template import engine as template

# The data a step's templates see, as the helper gives it (only what these templates read).
DATA = {
    "repository": {"name": "demo", "branch": "main"},
    "batch_change": {"name": "hostile", "description": ""},
    "steps": {},
    "outputs": {},
}
HOSTILE = [
    'it\'s "quoted"',
    "$(touch pwned) `touch pwned` $HOME",
    "${{ repository.name }} and {{ x }} and ${{",
    "# not a comment; ls | wc &",
    "a/b/c & \\1 \\n \\",
    ".* [a-z] ^start end$ x+ y? (g) {2} a|b",
]
# A file the hostile values must not have made (the text is in HOSTILE).
PWNED = "pwned"


@pytest.fixture(params=["gnu", "busybox"])
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The shell a step runs in (bash with the host's GNU tools, or busybox with its own)."""
    if request.param == "gnu":
        yield ["bash"]
        return
    try:
        busybox = static_busybox()
    except BusyboxMissing as exc:
        unavailable(str(exc))
    tools = tmp_path / "busybox-bin"
    tools.mkdir()
    for applet in ("sh", "sed", "find", "mkdir", "cp", "dirname", "printf", "cat"):
        (tools / applet).symlink_to(busybox)
    yield [str(tools / "sh")]


def run_step(spec: BatchSpec, workspace: Path, shell: list[str]) -> None:
    """Run the spec's only step in `workspace` as an executor would: its templates rendered,
    its files where it reads them (under the workspace here, not the container's /tmp)."""
    (step,) = spec.steps
    script = template.render(step.run, DATA)
    for n, (target, content) in enumerate(sorted(step.files.items())):
        path = workspace.parent / f"file-{n}"
        path.write_text(template.render(content, DATA))
        script = script.replace(target, str(path))
    env = {"PATH": os.pathsep.join([str(Path(shell[0]).parent), os.environ["PATH"]])}
    env["HOME"] = str(workspace.parent)
    done = subprocess.run(
        [*shell, "-c", script], cwd=workspace, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def tree(root: Path) -> dict[str, str]:
    """Every file under `root`, by relative path."""
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_every_template_makes_a_valid_spec_from_its_defaults() -> None:
    assert list(gallery.templates()) == list(gallery.TEMPLATES)
    assert {"sed", "file", "bump", "script"} <= set(gallery.TEMPLATES)
    for key, t in gallery.templates().items():
        text = t.fill({})
        spec = parse_spec(text, source=f"{key}.yaml")
        assert spec.name == t.name, key
        assert spec.on == (OnQuery(t.on),), key
        assert len(spec.steps) == 1 and spec.changeset_template is not None, key
        assert "<<" not in text, key
        assert t.title and t.description and "\n" not in t.description, key
        names = [f.name for f in t.form_fields()]
        assert names[0] == "name" and names[-1] == "on" and len(set(names)) == len(names)
        for f in t.form_fields():
            assert f.label and f.help, (key, f.name)
            assert f.check(f.default) == f.default, (key, f.name)


def test_every_placeholder_names_a_field_and_known_filters() -> None:
    for key, t in gallery.templates().items():
        fields = {f.name for f in t.form_fields()}
        found = list(gallery.PLACEHOLDER.finditer(t.skeleton))
        assert found, key
        for match in found:
            assert match[1] in fields, (key, match[0])
            for name in match[2].split("|")[1:]:
                assert name in gallery.FILTERS, (key, match[0])
        # Every field's value is used somewhere.
        assert {m[1] for m in found} == fields, key


@pytest.mark.parametrize("find", HOSTILE)
def test_hostile_text_is_replaced_exactly_as_typed(
    find: str, shell: list[str], tmp_path: Path
) -> None:
    replace = HOSTILE[(HOSTILE.index(find) + 1) % len(HOSTILE)] + " & \\0 /"
    text = gallery.render("sed", {"find": find, "replace": replace, "files": "*.md"})
    spec = parse_spec(text)
    workspace = tmp_path / "repo"
    (workspace / "docs").mkdir(parents=True)
    (workspace / ".git").mkdir()
    before = {
        "README.md": f"one {find} two {find}\nno match here\n",
        "docs/guide.md": f"{find}\n.* only a regex would match this\n",
        "notes.txt": f"{find} stays: not a .md file\n",
        ".git/config.md": f"{find} stays: git's own\n",
    }
    for path, content in before.items():
        (workspace / path).write_text(content)
    run_step(spec, workspace, shell)
    after = tree(workspace)
    expected = {
        path: content.replace(find, replace)
        if path.endswith(".md") and ".git" not in path
        else content
        for path, content in before.items()
    }
    assert after == expected
    assert not (tmp_path / PWNED).exists() and not (workspace / PWNED).exists()

    # The words of the changeset are the values too, printed, not evaluated.
    assert spec.changeset_template is not None
    title = template.render(spec.changeset_template.title, DATA)
    assert title == f'Replace "{find}" with "{replace}"'
    assert spec.description == f'Replace "{find}" with "{replace}" in the files named *.md.'


def test_a_hostile_file_name_pattern_is_a_pattern_not_code(
    shell: list[str], tmp_path: Path
) -> None:
    files = "$(touch pwned)*.md"
    spec = parse_spec(gallery.render("sed", {"find": "a", "replace": "b", "files": files}))
    workspace = tmp_path / "repo"
    workspace.mkdir()
    (workspace / "$(touch pwned)x.md").write_text("a\n")
    (workspace / "x.md").write_text("a\n")
    run_step(spec, workspace, shell)
    assert tree(workspace) == {"$(touch pwned)x.md": "b\n", "x.md": "a\n"}
    assert not (workspace / PWNED).exists()


def test_a_file_is_written_exactly_as_typed(shell: list[str], tmp_path: Path) -> None:
    content = (
        "${{ repository.name }} {{ x }}\n'\"$(touch pwned)\"'\n# comment?\n  indented  \n"
        "\ttab\\n\n\n\nno final newline"
    )
    path = "docs/it's $(touch pwned) #1.md"
    text = gallery.render("file", {"path": path, "content": content})
    spec = parse_spec(text)
    workspace = tmp_path / "repo"
    workspace.mkdir()
    run_step(spec, workspace, shell)
    assert tree(workspace) == {path: content}
    assert not (workspace / PWNED).exists()
    # Read back by the YAML library, the spec holds the content as it was typed.
    (step,) = YAML(typ="safe", pure=True).load(text)["steps"]
    assert template.render(next(iter(step["files"].values())), DATA) == content


@pytest.mark.parametrize(
    "content",
    ["", "no newline", "  leading\n", "\n\nblank lines\n\n\n", "trailing  \n", "tab\tx\n",
     "next line \x85 and \u2028 separators\n", "- a: [list]\n? key\n", "\ufeffbom\n"],
)  # fmt: skip
def test_any_content_reads_back_from_the_spec_as_typed(content: str) -> None:
    text = gallery.render("file", {"content": content})
    (step,) = parse_spec(text).steps
    assert [template.render(c, DATA) for c in step.files.values()] == [content]


def test_a_browsers_line_breaks_become_newlines() -> None:
    text = gallery.render("file", {"content": "a\r\nb\rc\n"})
    (step,) = parse_spec(text).steps
    assert list(step.files.values()) == ["a\nb\nc\n"]


def test_a_dependency_is_bumped_where_it_is_named(shell: list[str], tmp_path: Path) -> None:
    workspace = tmp_path / "repo"
    (workspace / "web").mkdir(parents=True)
    package = {"dependencies": {"lodash": "^4.0.0", "lodash-es": "1.0.0"}}
    (workspace / "web" / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    (workspace / "requirements.txt").write_text(
        "requests>=2.0  # http\nrequests-oauthlib==1.0\nrequests ~= 2.1; python_version > '3'\n"
    )
    values = {"manifest": "package.json", "dependency": "lodash", "version": "^4.17.21"}
    run_step(parse_spec(gallery.render("bump", values)), workspace, shell)
    values = {"manifest": "requirements.txt", "dependency": "requests", "version": "2.32.3"}
    run_step(parse_spec(gallery.render("bump", values)), workspace, shell)
    bumped = json.loads((workspace / "web" / "package.json").read_text())
    assert bumped == {"dependencies": {"lodash": "^4.17.21", "lodash-es": "1.0.0"}}
    assert (workspace / "requirements.txt").read_text().splitlines() == [
        "requests==2.32.3  # http",
        "requests-oauthlib==1.0",
        "requests ==2.32.3; python_version > '3'",
    ]


def test_a_scripts_arguments_reach_it_as_typed(shell: list[str], tmp_path: Path) -> None:
    workspace = tmp_path / "repo"
    (workspace / "scripts").mkdir(parents=True)
    (workspace / "scripts" / "update.sh").write_text('printf "%s\\n" "$@" > arguments.txt\n')
    arguments = "'two words' \"$(touch pwned)\" '${{ x }}' \"it's\" \\# ;"
    spec = parse_spec(gallery.render("script", {"arguments": arguments}))
    run_step(spec, workspace, shell)
    assert (workspace / "arguments.txt").read_text().splitlines() == [
        "two words",
        "$(touch pwned)",
        "${{ x }}",
        "it's",
        "#",
        ";",
    ]
    assert not (workspace / PWNED).exists()
    # Repositories without the script are left alone.
    (workspace / "scripts" / "update.sh").unlink()
    (workspace / "arguments.txt").unlink()
    run_step(spec, workspace, shell)
    assert tree(workspace) == {}


@pytest.mark.parametrize(
    ("key", "values", "field", "message"),
    [
        ("sed", {"find": "a\nb"}, "find", "Text to find must be one line"),
        ("sed", {"find": ""}, "find", "Text to find is required"),
        ("sed", {"find": "x" * 1001}, "find", "is at most 1,000 characters"),
        ("sed", {"name": "two words"}, "name", "Use only letters, digits"),
        ("sed", {"name": "a\u2028b"}, "name", "must be one line"),
        ("sed", {"on": ""}, "on", "Repositories is required"),
        ("file", {"path": "../outside"}, "path", "without . or .. parts"),
        ("file", {"path": "/etc/passwd"}, "path", "without a leading /"),
        ("file", {"content": "a\x00b"}, "content", "control character U+0000"),
        ("bump", {"manifest": "go.mod"}, "manifest", "must be one of package.json"),
        ("bump", {"dependency": "a b"}, "dependency", "A package name"),
        ("script", {"arguments": "'unclosed"}, "arguments", "cannot be split into words"),
        ("script", {"container": "busybox; rm"}, "container", "An image name"),
    ],
)
def test_values_a_field_refuses_are_told_by_field(
    key: str, values: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(FieldErrors) as caught:
        gallery.render(key, values)
    assert list(caught.value.errors) == [field]
    assert message in caught.value.errors[field]


def test_field_errors_survive_the_trip_from_a_spec_worker() -> None:
    import pickle

    errors = FieldErrors({"find": "Text to find is required"})
    assert pickle.loads(pickle.dumps(errors)).errors == errors.errors


def test_the_gallery_files_ship_with_the_package() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    shipped = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["offload"]
    for key in gallery.TEMPLATES:
        path = PurePosixPath(f"batches/gallery/{key}.yaml")
        assert any(path.match(glob) for glob in shipped), f"{path} is not in package-data"
