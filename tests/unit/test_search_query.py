"""Search query parsing: Sourcegraph's boolean grammar, predicates, languages, quotes, limits.

What the parsed expression selects on real repositories is in tests/integration/test_search*.py;
here the tree is shown in a compact form: (and ...), (or ...), repo:R, -repo:R,
has(path=P content=C), file:P (lang: as the file pattern it stands for), "literal", /regex/,
with NOT as a leading !.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.repos.search_query import (
    MAX_QUERY_CHARS,
    MAX_QUERY_DEPTH,
    MAX_QUERY_PATTERNS,
    QueryError,
    parse_query,
)
from offload.repos.search_tree import And, Node, Or, PathFilter, RepoHas, RepoName, Term


def show(node: Node) -> str:
    """The expression in the compact form of this module's docstring."""
    if isinstance(node, And | Or):
        kind = "and" if isinstance(node, And) else "or"
        return f"({kind} {' '.join(show(o) for o in node.operands)})"
    if isinstance(node, RepoName):
        return f"{'-' if node.negated else ''}repo:{node.regex.pattern}"
    if isinstance(node, RepoHas):
        parts = [
            f"{k}={r.pattern}" for k, r in (("path", node.path), ("content", node.content)) if r
        ]
        return f"{'-' if node.negated else ''}has({' '.join(parts)})"
    if isinstance(node, PathFilter):
        return f"{'-' if node.negated else ''}file:{node.regex.pattern}"
    assert isinstance(node, Term)
    text = f"/{node.regex.pattern}/" if node.is_regex else f'"{node.pattern}"'
    return f"{'!' if node.negated else ''}{text}"


def tree(query: str) -> str:
    return show(parse_query(query).expr)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # AND binds tighter than OR; side by side is AND; operators in any case.
        ("a OR b AND c", '(or "a" (and "b" "c"))'),
        ("a or b c", '(or "a" (and "b" "c"))'),
        ("(a OR b) AND c", '(and (or "a" "b") "c")'),
        ("a AND (b OR (c d))", '(and "a" (or "b" "(c d)"))'),  # no operator inside: a pattern
        ("repo:x (file:a OR file:b)", "(and repo:x (or file:a file:b))"),
        ("(repo:x lang:go) OR (repo:y file:z)", None),
        # Without parentheses, filters at the ends scope the whole OR (Sourcegraph's hoisting).
        (
            "whitelist OR blacklist -file:vendor repo:sg",
            '(and -file:vendor repo:sg (or "whitelist" "blacklist"))',
        ),
        ("repo:sg a OR b", '(and repo:sg (or "a" "b"))'),
        ("a OR repo:sg b", '(or "a" (and repo:sg "b"))'),  # a filter between patterns: no hoist
        ("(a OR b) repo:sg", '(and (or "a" "b") repo:sg)'),
        # NOT and - negate one pattern or filter.
        ("tag not ServiceName", '(and "tag" !"ServiceName")'),
        ("NOT file:vendor foo", '(and -file:vendor "foo")'),
        ("-file:vendor NOT repo:x", "(and -file:vendor -repo:x)"),
        ("foo -content:bar", '(and !"bar" "foo")'),
        # Predicates.
        (r"repo:has.path(.*\.php$)", r"has(path=.*\.php$)"),
        ("-repo:has.content(phpstan/phpstan)", "-has(content=phpstan/phpstan)"),
        ("repo:has.file(path:package.json content:react)", "has(path=package.json content=react)"),
        ("repo:contains.file(go.mod)", "has(path=go.mod)"),  # Sourcegraph's older spelling
        ("repo:contains(file:a content:b)", "has(path=a content=b)"),
        ('repo:has.file(content:"a b" path:x)', "has(path=x content=a b)"),
        ("file:has.content(aws_vpc)", "/aws_vpc/"),
        # Parentheses that are part of a pattern stay in it.
        ("foo(bar, baz)", '"foo(bar, baz)"'),
        ("strings.Replace(a, b, -1) lang:go", None),
        ("()", '"()"'),
        ("(foo bar)", '"(foo bar)"'),
        # Quotes: literals in keyword mode (with escapes), regex text in regexp mode.
        (r'"say \"hi\"" x', '(and "say "hi"" "x")'),
        ('"it\'s"', '"it\'s"'),
        (r"'a\tb'", '"a\tb"'),
        (
            'f:package.json "bootstrap": ".?4 patterntype:regexp',
            '(and file:package.json /(?:"bootstrap":).*?(?:".?4)/)',
        ),
        ('patterntype:regexp "a.b" c+', r"/(?:a\.b).*?(?:c+)/"),
        ("patterntype:regexp (foo|bar) baz", "/(?:(foo|bar)).*?(?:baz)/"),
        # Scalars anywhere, given once.
        ("count:all case:true fork:yes archived:no context:global repo:x", "repo:x"),
        ("count:all", "(and )"),
    ],
)
def test_the_tree_follows_sourcegraphs_grammar(query: str, expected: str | None) -> None:
    got = tree(query)
    if expected is not None:
        assert got == expected
    elif query.startswith("(repo:x"):
        assert got == "(or (and repo:x file:(?:^|/)(?:(?i:[^/]*\\.go))$) (and repo:y file:z))"
    else:
        assert got.endswith('"strings.Replace(a, b, -1)")')


def test_case_decides_how_patterns_match_but_not_repository_names() -> None:
    for value, sensitive in (("yes", True), ("true", True), ("no", False), ("false", False)):
        query = parse_query(f"repo:Acme Foo file:Bar case:{value}")
        assert query.case_sensitive is sensitive
        repo, path, term = query.expr.operands  # type: ignore[union-attr]
        assert repo.matches("github.com/ACME/x")  # type: ignore[union-attr]
        assert term.matches("x", "foo") is not sensitive  # type: ignore[union-attr]
        assert path.matches("bar") is not sensitive  # type: ignore[union-attr]


# Ten languages of real specs (and linguist's names for them), each with files it must find
# and files it must leave.
LANGUAGES = [
    ("HCL", ["main.tf", "vars/prod.tfvars", "x.hcl"], ["main.tf.json", "README.md"]),
    ("terraform", ["a/b/locals.tf"], ["tf"]),
    ("Dockerfile", ["Dockerfile", "build/Dockerfile", "dockerfile"], ["Dockerfile.md"]),
    ("go", ["main.go", "MAIN.GO"], ["go.mod", "main.gopher"]),
    ("Python", ["a.py", "stubs/x.pyi"], ["a.pyc"]),
    ("markdown", ["README.md", "docs/x.markdown"], ["md"]),
    ("YAML", ["a.yml", "k8s/deploy.yaml"], ["a.yaml.j2"]),
    ("typescript", ["src/app.ts", "x.mts"], ["src/app.js"]),
    ("JavaScript", ["a.js", "b.mjs"], ["a.ts"]),
    ("java", ["src/Main.java"], ["Main.class"]),
    ("Ruby", ["app/user.rb", "Gemfile"], ["user.erb.txt"]),
    ("rust", ["src/main.rs"], ["src/main.rsx"]),
    ("shell", ["build.sh", "x.bash"], ["sh"]),
    ("PHP", ["index.php"], ["index.phtml.txt"]),
    ("C", ["fast.c", "fast.h"], ["fast.C", "fast.cc"]),
    ("c++", ["fast.C", "fast.cpp", "x.hpp"], ["fast.c"]),
    ("c#", ["Program.cs"], ["Program.css"]),
    ("json", ["package.json"], ["package.json5"]),
]


@pytest.mark.parametrize(("name", "found", "left"), LANGUAGES)
def test_lang_knows_the_languages_of_a_maintained_table(
    name: str, found: list[str], left: list[str]
) -> None:
    (path_filter,) = [parse_query(f"lang:{name}").expr]
    assert isinstance(path_filter, PathFilter)
    assert [p for p in found if not path_filter.matches(p)] == []
    assert [p for p in left if path_filter.matches(p)] == []
    negated = parse_query(f"-lang:{name}").expr
    assert isinstance(negated, PathFilter) and not negated.matches(found[0])


def test_a_quoted_language_name_may_have_spaces() -> None:
    query = parse_query('lang:"Protocol Buffer"')
    assert isinstance(query.expr, PathFilter) and query.expr.matches("api/v1/service.proto")


# (query, column, what the message says)
INVALID = [
    ("lang:go log.Printf(x) patternType:structural", 35, "offload cannot run"),
    ("foo patterntype:structural", 17, "with patterntype:regexp"),
    ("foo OR", 5, "OR at column 5 has nothing on its right"),
    ("OR foo", 1, "OR at column 1 has nothing on its left"),
    ("a AND OR b", 3, "AND at column 3 has nothing on its right"),
    ("(lang:go OR lang:python", 1, "the ( at column 1 is never closed"),
    ("(a OR b))", 9, "this ) closes no ("),
    ("NOT", 1, "NOT has nothing after it"),
    ("NOT (a OR b)", 1, "NOT applies to one pattern or filter, not to a group"),
    ("NOT -file:vendor", 1, "NOT before -file: negates it twice"),
    ("NOT count:1 x", 1, "count: cannot be negated: remove the NOT"),
    ("repo:has.commit.after(1 month ago)", 1, "keeps no commit dates"),
    ("repo:has.topic(go)", 1, "repo:has.topic() is not supported"),
    ("repo:has.paths(x)", 6, "unknown predicate repo:has.paths()"),
    ("repo:has.path(x", 14, "the ( of repo:has.path() at column 14 is never closed"),
    ("repo:has.path()", 15, "needs a regular expression inside"),
    ("repo:has.path(a[b)", 16, "invalid regular expression 'a[b' in the path of repo:has.path()"),
    ("repo:has.file(path:a OR content:b)", 22, "has no OR"),
    ("repo:has.file(name:x)", 15, "takes path: and content: only, not name:"),
    ("repo:has.file(path:a path:b)", 22, "is given path: twice"),
    ("repo:has.file()", 15, "needs path: or content:"),
    ("repo:has.path(x)y", 17, "must end at a space"),
    ("-file:has.content(x)", 1, "cannot be negated"),
    ("lang:klingon", 6, "unknown language 'klingon' in lang:; lang: takes"),
    ("lang:pyhton", 6, "did you mean python"),
    ("case:maybe", 6, "case:maybe must be case:yes or case:no"),
    ('content:"a b', 9, "unbalanced quote"),
    ("patterntype:regexp foo (?i)bar", 20, "global flags not at the start"),
]


@pytest.mark.parametrize(("query", "column", "fragment"), INVALID)
def test_unsupported_and_malformed_queries_say_what_and_where(
    query: str, column: int, fragment: str
) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    assert fragment in caught.value.message
    assert caught.value.column == column, caught.value.message


def test_parsing_is_bounded() -> None:
    with pytest.raises(QueryError) as caught:
        parse_query("a" * (MAX_QUERY_CHARS + 1))
    assert "MAX_QUERY_CHARS" in caught.value.message
    assert caught.value.column == MAX_QUERY_CHARS + 1
    parse_query("repo:" + "a" * (MAX_QUERY_CHARS - 5))  # at the limit

    deep = "(" * (MAX_QUERY_DEPTH + 1) + "a OR b" + ")" * (MAX_QUERY_DEPTH + 1)
    with pytest.raises(QueryError) as caught:
        parse_query(deep)
    assert "MAX_QUERY_DEPTH" in caught.value.message
    assert caught.value.column == MAX_QUERY_DEPTH + 1
    nested = "(" * MAX_QUERY_DEPTH + "a OR b" + ")" * MAX_QUERY_DEPTH
    assert tree(nested) == '(or "a" "b")'

    with pytest.raises(QueryError) as caught:
        parse_query(" ".join(f"w{i}" for i in range(MAX_QUERY_PATTERNS + 1)))
    assert "MAX_QUERY_PATTERNS" in caught.value.message
    parse_query(" OR ".join(f"repo:r{i}" for i in range(500)))  # names cost no git work

    # The worst shapes for the parenthesis heuristic (spaces inside parentheses belong to a
    # pattern unless an operator or filter follows), at the length limit, parse quickly.
    worst = [
        "x( " * 3333,
        "x(a " * 2500,
        "( " * 4990 + "or",
        "x( " * 1600 + "or " + ")" * 1600,
        "repo:has.path(( " * 600,
    ]
    for text in worst:
        started = time.monotonic()
        with pytest.raises(QueryError):
            parse_query(text[:MAX_QUERY_CHARS])
        assert time.monotonic() - started < 1.0, text[:40]


def test_text_that_looks_like_a_filter_or_an_operator_is_searched_for() -> None:
    query = parse_query("std::vector http://example.com -rf foo() entrypoint: android")
    assert show(query.expr) == (
        '(and "std::vector" "http://example.com" "-rf" "foo()" "entrypoint:" "android")'
    )
    assert tree('content:"or"') == '"or"'


# Pieces of queries that exercise every branch of the parser, in any order.
PIECES = [
    *"repo: -repo: file: path: lang: lang:go lang:HCL content: -content: count:".split(),
    *"count:all case:yes type:path select:repo patterntype:regexp patterntype:literal".split(),
    *"rev:x repo:has.file( repo:has.content( repo:has.path( file:has.content(".split(),
    *"repo:contains( NOT not AND and OR or ( ) \" ' / \\ : - . * [ ] { } @ $ ^ | ?".split(),
    *"+ (?i) a foo é".split(),
    " ",
    " ",
    "\t",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=14).map("".join))
def test_any_text_parses_or_fails_with_a_column_inside_it(text: str) -> None:
    try:
        parse_query(text)
    except QueryError as exc:
        assert 1 <= exc.column <= len(text) + 1, (text, exc.column, exc.message)
