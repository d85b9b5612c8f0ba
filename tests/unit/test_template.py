"""Batch spec templates: Go's text/template with ${{ }} delimiters, as Sourcegraph renders them.

Every expected output below is what Go's text/template prints for the same template and data.
"""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.batches.template import engine as template_module
from offload.batches.template.engine import (
    PathList,
    TemplateError,
    evaluate_condition,
    is_static,
    parse,
    render,
)

DATA: dict[str, Any] = {
    "repository": {
        "name": "github.com/sourcegraph/src-cli",
        "search_result_paths": PathList(["a.go", "cmd/b.go"]),
    },
    "batch_change": {"name": "hello", "description": "says hello"},
    "previous_step": {
        "modified_files": ["go.mod", "main.go"],
        "added_files": [],
        "stdout": "ok\n",
    },
    "step": {"stdout": "out"},
    "steps": {"path": "services/api", "modified_files": ["go.mod"]},
    "outputs": {
        "x": "ex",
        "count": 3,
        "names": ["a", "b", "c"],
        "flags": {"b": True, "a": False},
        "ratio": 1.5,
        "empty": "",
        "nothing": None,
        "nested": {"b": {"c": None}, "a": [1, 2]},
    },
    "secrets": {"TOKEN": "s3cret"},
}

GO_OUTPUTS = [
    # Text and Sourcegraph's context names, with and without the leading dot.
    ("plain text, no actions", "plain text, no actions"),
    ("${{ repository.name }}", "github.com/sourcegraph/src-cli"),
    ("${{ .repository.name }}", "github.com/sourcegraph/src-cli"),
    ('${{ join previous_step.modified_files " " }}', "go.mod main.go"),
    ('${{ replace repository.name "/" "-" }}', "github.com-sourcegraph-src-cli"),
    ('${{ join_if "-" "a" "" "b" }}', "a-b"),
    ('${{ matches repository.name "github.com/*" }}', "true"),
    ('${{ matches repository.name "gitlab.com/*" }}', "false"),
    ('${{ matches repository.name "github.com/{sourcegraph,other}/src-?li" }}', "true"),
    (
        '${{ matches "b" "[abc]" }} ${{ matches "d" "[!abc]" }} ${{ matches "x" "[a-f]" }}',
        "true true false",
    ),
    ("${{ outputs.x }}", "ex"),
    ("${{ steps.path }}", "services/api"),
    ("${{ batch_change.name }}: ${{ batch_change.description }}", "hello: says hello"),
    ("${{ secrets.TOKEN }}", "s3cret"),
    ("${{ step.stdout }}", "out"),
    ("${{ repository.search_result_paths }}", "a.go cmd/b.go"),
    ('${{ split "a,b,c" "," }}', "[a b c]"),
    ('${{ join (split repository.name "/") "+" }}', "github.com+sourcegraph+src-cli"),
    # Missing keys and nil, as Go prints them for a map[string]interface{}.
    ("${{ outputs.missing }}", "<no value>"),
    ("${{ outputs.nothing }}", "<no value>"),
    ('${{ index outputs.flags "zz" }}', "<no value>"),
    ("${{ print outputs.missing }} ${{ print nil }}", "<nil> <nil>"),
    ("${{ if outputs.missing }}yes${{ else }}no${{ end }}", "no"),
    ('${{ eq outputs.missing "x" }}', "false"),
    # %v printing of lists, maps, bools and floats.
    ("${{ outputs.names }}", "[a b c]"),
    ("${{ outputs.flags }}", "map[a:false b:true]"),
    ("${{ outputs.nested }}", "map[a:[1 2] b:map[c:<nil>]]"),
    ("${{ outputs.ratio }} ${{ 1e6 }} ${{ 0.000012 }} ${{ 2.0 }}", "1.5 1e+06 1.2e-05 2"),
    ("${{ print 1e21 123456.0 1234567.0 -0.5 }}", "1e+21 123456 1.234567e+06 -0.5"),
    (
        "${{ true }} ${{ false }} ${{ 0x1F }} ${{ -7 }} ${{ 1_000 }} ${{ 'a' }}",
        "true false 31 -7 1000 97",
    ),
    ('${{ "a\\tb" }}|${{ `a\\tb` }}', "a\tb|a\\tb"),
    # Whitespace, trim markers and comments.
    ("  ${{ outputs.x }}  \n", "  ex  \n"),
    ("a ${{- .outputs.x -}} b", "aexb"),
    ("a ${{ .outputs.x -}}\n\n  b", "a exb"),
    ('line1\n${{- " two" }}\nline3', "line1 two\nline3"),
    ("a  ${{- /* comment */ -}}  b", "ab"),
    ("a ${{- /* comment */}} b", "a b"),
    ("x${{/* a\nmultiline comment */}}y", "xy"),
    # Builtins.
    ('${{ and 1 0 "x" }}|${{ and 1 "x" }}|${{ or 0 "" "y" }}|${{ or 0 "" }}', "0|x|y|"),
    ('${{ eq 2 1 2 3 }} ${{ eq "a" "b" }} ${{ ne 1 2 }}', "true false true"),
    ('${{ lt 1 2 }} ${{ le 2 2 }} ${{ gt "b" "a" }} ${{ ge 1 2 }}', "true true true false"),
    ('${{ not true }} ${{ not "" }} ${{ not outputs.names }}', "false true false"),
    ('${{ len outputs.names }} ${{ len "héllo" }} ${{ len outputs.flags }}', "3 6 2"),
    (
        '${{ index outputs.names 1 }} ${{ index outputs.flags "b" }} ${{ index "abc" 0 }}',
        "b true 97",
    ),
    (
        '${{ slice outputs.names 1 }} ${{ slice outputs.names 0 2 }} ${{ slice "hello" 1 3 }}',
        "[b c] [a b] el",
    ),
    ('${{ print "a" "b" 1 2 "c" }}', "ab1 2c"),
    ('${{ println "a" 1 }}', "a 1\n"),
    ('${{ printf "%s=%d" "k" 42 }}', "k=42"),
    (
        '${{ printf "%v|%s|%q" outputs.names outputs.names outputs.names }}',
        '[a b c]|[a b c]|["a" "b" "c"]',
    ),
    ('${{ printf "%t %x %X %o %b %x" true 255 255 8 5 "hi" }}', "true ff FF 10 101 6869"),
    ('${{ printf "%5.2f|%-4s|%04d|%+d|%%" 3.14159 "ab" 7 5 }}', " 3.14|ab  |0007|+5|%"),
    ('${{ printf "%f %e %g" 1.5 1500000.0 0.0001 }}', "1.500000 1.500000e+06 0.0001"),
    ('${{ printf "%q" "héllo\\n" }}', '"héllo\\n"'),
    ('${{ printf "%d %s" 1 }}', "1 %!s(MISSING)"),
    ('${{ printf "%d" 1 2 }}', "1%!(EXTRA int=2)"),
    ('${{ printf "%d" "x" }}', "%!d(string=x)"),
    ('${{ html "<b>\\"x\\" & \'y\'</b>" }}', "&lt;b&gt;&#34;x&#34; &amp; &#39;y&#39;&lt;/b&gt;"),
    ('${{ js "it\'s <b>" }}', "it\\'s \\u003Cb\\u003E"),
    ('${{ urlquery "a b&c=d/é" }}', "a+b%26c%3Dd%2F%C3%A9"),
    # Pipelines and variables.
    ('${{ outputs.x | printf "%s!" }}', "ex!"),
    ('${{ "x" | printf "%s-%s" "y" }}', "y-x"),
    ('${{ .outputs.count | printf "%03d" }}', "003"),
    ('${{ split "a,b,c" "," | len }}', "3"),
    ("${{ $n := len outputs.names }}n=${{ $n }}", "n=3"),
    ('${{ $x := "a" }}${{ if true }}${{ $x = "b" }}${{ end }}${{ $x }}', "b"),
    ("${{ $r := repository }}${{ $r.name }}", "github.com/sourcegraph/src-cli"),
    # Control structures.
    (
        "${{ if eq outputs.count 1 }}one${{ else if eq outputs.count 3 }}three"
        "${{ else }}many${{ end }}",
        "three",
    ),
    ("${{ with outputs.x }}[${{ . }}]${{ else }}none${{ end }}", "[ex]"),
    ("${{ with outputs.empty }}[${{ . }}]${{ else }}none${{ end }}", "none"),
    ("${{ with outputs.missing }}a${{ else with outputs.x }}${{ . }}${{ end }}", "ex"),
    ("${{ with repository }}${{ .name }}${{ end }}", "github.com/sourcegraph/src-cli"),
    ("${{ range $i, $v := outputs.names }}${{ $i }}:${{ $v }} ${{ end }}", "0:a 1:b 2:c "),
    ("${{ range $k, $v := outputs.flags }}${{ $k }}=${{ $v }};${{ end }}", "a=false;b=true;"),
    ("${{ range previous_step.added_files }}x${{ else }}none${{ end }}", "none"),
    (
        "${{ range outputs.names }}${{ . }}@${{ $.batch_change.name }} ${{ end }}",
        "a@hello b@hello c@hello ",
    ),
    (
        '${{ range outputs.names }}${{ if eq . "b" }}${{ continue }}${{ end }}${{ . }}${{ end }}',
        "ac",
    ),
    ('${{ range outputs.names }}${{ if eq . "b" }}${{ break }}${{ end }}${{ . }}${{ end }}', "a"),
    ("${{ range 3 }}${{ . }}${{ end }}", "012"),
]


@pytest.mark.parametrize(("text", "expected"), GO_OUTPUTS)
def test_renders_as_go_text_template(text: str, expected: str) -> None:
    assert render(text, DATA) == expected


ERRORS = [
    (
        'echo ${{ jion previous_step.modified_files " " }}',
        1,
        10,
        'function "jion" not defined (known: and, batch_change, eq,',
    ),
    ("${{ .x", 1, 1, "unclosed action"),
    ("a\n${{ end }}", 2, 5, "unexpected ${{ end }}"),
    ("${{ if true }}x", 1, 5, "${{ if }} is never closed: add ${{ end }}"),
    (
        "${{ range outputs.names }}\n${{ else }}${{ else }}${{ end }}",
        2,
        16,
        "already has an ${{ else }}",
    ),
    ("${{ }}", 1, 5, "missing value for command"),
    ("x\n  y ${{ if }}", 2, 12, "missing value for if"),
    ("${{ $y }}", 1, 5, "undefined variable $y"),
    ("${{ if true }}${{ $v := 1 }}${{ end }}${{ $v }}", 1, 43, "undefined variable $v"),
    ("${{ break }}", 1, 5, "${{ break }} outside ${{ range }}"),
    ("${{ .x | 1 }}", 1, 10, "non executable command in pipeline stage 2"),
    ('${{ "abc }}', 1, 5, "unterminated quoted string"),
    ("${{/* c */ }}", 1, 11, "comment ends before closing delimiter"),
    ('${{ join(outputs.names, ",") }}', 1, 9, "call functions with spaces"),
    ("${{ outputs.my-key }}", 1, 15, 'write (index outputs "my-key")'),
    ('${{ define "x" }}${{ end }}', 1, 5, "not supported"),
    ("a\nb\n  ${{ index outputs.names 9 }}", 3, 7, "error calling index: index out of range: 9"),
    ('${{ eq 1 "a" }}', 1, 5, "incompatible types for comparison: int and string"),
    ('${{ join outputs.x "," }}', 1, 10, "expected []string; got string"),
    ('${{ replace 1 "a" "b" }}', 1, 13, "expected string; found 1"),
    ("${{ len }}", 1, 5, "wrong number of args for len: want 1 got 0"),
    ("${{ outputs.x.y }}", 1, 5, "can't evaluate field y in type string"),
    ('${{ range "abc" }}${{ end }}', 1, 5, "range can't iterate over abc"),
    ('${{ matches "a" "[a" }}', 1, 5, "unclosed '['"),
    ("${{ " + "(" * 150 + "1" + ")" * 150 + " }}", 1, 105, "nest at most 100 levels"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERRORS)
def test_errors_say_where_and_what(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(text, DATA)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert fragment in caught.value.message
    assert f"{line}:{column}: " in str(caught.value)


def test_unknown_functions_fail_when_parsing_not_when_rendering() -> None:
    with pytest.raises(TemplateError, match=r"steps\[0\]\.run:1:8: function \"nope\""):
        parse("${{ if nope }}${{ end }}", name="steps[0].run")


def test_errors_survive_pickling() -> None:
    error = TemplateError("boom", 3, 7, "steps[1].run")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.line, copy.column) == ("steps[1].run:3:7: boom", 3, 7)


def test_output_is_limited() -> None:
    with pytest.raises(TemplateError, match="output is longer than"):
        render('${{ range 2000 }}${{ printf "%10000s" "x" }}${{ end }}', DATA)


def test_runaway_ranges_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_module, "MAX_STEPS", 10_000)
    with pytest.raises(TemplateError, match=r"1:5: template ran more than 10000 steps"):
        render("${{ range 1000000000 }}${{ end }}", DATA)


def test_runaway_string_growth_is_stopped() -> None:
    text = '${{ $s := "ab" }}${{ range 40 }}${{ $s = replace $s "a" $s }}${{ end }}'
    with pytest.raises(TemplateError, match="error calling replace: result would be longer"):
        render(text, DATA)


def test_templates_are_reusable() -> None:
    compiled = parse("${{ repository.name }}")
    assert compiled.render({"repository": {"name": "a"}}) == "a"
    assert compiled.render({"repository": {"name": "b"}}) == "b"
    assert compiled.render({}) == "<no value>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo hello", True),
        ("", True),
        ("{{ .x }} and $x and }}", True),
        ("${{ repository.name }}", False),
        ("${{/* only a comment */}}", False),
    ],
)
def test_is_static(text: str, expected: bool) -> None:
    assert is_static(text) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('${{ eq repository.name "github.com/sourcegraph/src-cli" }}', True),
        ('${{ eq repository.name "github.com/other/repo" }}', False),
        ('${{ matches repository.name "*src-cli" }}', True),
        (" true\n", True),
        ("${{ if outputs.x }}\n  true\n${{ end }}", True),
        ("true true", False),
        ("TRUE", False),
        ("false", False),
        ("${{ outputs.missing }}", False),
        ("", True),
    ],
)
def test_evaluate_condition(condition: str, expected: bool) -> None:
    assert evaluate_condition(condition, DATA) is expected


FRAGMENTS = [
    "${{",
    "${{- ",
    "}}",
    " -}}",
    " ",
    "\n",
    "if ",
    "else ",
    "end",
    "range ",
    "with ",
    "break",
    "continue",
    "|",
    "$x := ",
    "$x = ",
    "$i, $v := ",
    "$",
    ".",
    "$x",
    "repository.name",
    "outputs.names",
    "outputs.flags",
    "outputs.nothing.x",
    '"',
    '"a"',
    "`",
    "'",
    "(",
    ")",
    "/*",
    "*/",
    ",",
    "1",
    "-2.5",
    "nil",
    "true",
    "eq ",
    "and ",
    "index ",
    "slice ",
    "len ",
    "printf ",
    '"%v %d %q %5s %!"',
    "join ",
    "split ",
    "replace ",
    "matches ",
    '"{a,*}[!b]?"',
    "\\",
]

fragment_texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=30).map(
    "".join
)
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow],
)


def _render_or_error(text: str) -> None:
    # A small step budget keeps generated ranges over large numbers quick.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(template_module, "MAX_STEPS", 20_000)
        try:
            render(text, DATA)
        except TemplateError as error:
            assert error.line >= 1 and error.column >= 1


@FUZZ
@given(st.text())
def test_any_text_renders_or_raises_template_error(text: str) -> None:
    _render_or_error(text)


@FUZZ
@given(fragment_texts)
def test_template_like_text_renders_or_raises_template_error(text: str) -> None:
    _render_or_error(text)


@FUZZ
@given(st.text().filter(lambda text: "${{" not in text))
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert is_static(text)
    assert render(text, DATA) == text
