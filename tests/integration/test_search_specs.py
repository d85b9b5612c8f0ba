"""The queries of real batch specs select the right repositories and files on real mirrors.

The shapes come from Sourcegraph's public collection of batch specs (boolean operators,
repo:has.*() predicates, lang: of many languages, case:, quoted strings inside a regexp); the
repositories are made here, mirrored as `offload repos add` does, and searched at their heads,
as the resolver searches them to place workspaces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet import make_repo

from offload.db.base import Database
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.search import RepoTarget, parse_query, search
from offload.repos.syncer import Syncer

REPOS: dict[str, dict[str, str]] = {
    "github.com/acme/infra": {
        "main.tf": 'resource "aws_vpc" "main" {\n  cidr_block = "10.0.0.0/16"\n}\n',
        "locals.tf": 'locals {\n  tags = {\n    Team = "infra"\n  }\n}\n',
        "modules/app/locals.tf": 'locals {\n  tags = {\n    ServiceName = "app"\n  }\n}\n',
        "prod.tfvars": 'region = "eu-west-1"\n',
        "Dockerfile": "FROM golang:latest\nRUN make\n",
        "README.md": "# Infra\nThe whitelist of CIDRs.\n",
    },
    "github.com/acme/api": {
        "go.mod": "module github.com/acme/api\n",
        "main.go": 'package main\n\nimport "gopkg.in/inconshreveable/log15.v2"\n\n'
        "func handle(v interface{}) {}\n",
        "util/strings.go": "package util\n\n"
        'func Fix(s string) string { return strings.Replace(s, "a", "b", -1) }\n',
        "scripts/gen.py": 'print("generating")\n',
        "docker-compose.yaml": "services:\n  api:\n    entrypoint: /api\n",
        "docs/blacklist.md": "Avoid the word blacklist.\n",
        "docs/dates.md": "dd-mmm-yyyy is fine\n",
        "vendor/lib/README.md": "whitelist in vendor\n",
    },
    "github.com/acme/web": {
        "package.json": '{\n  "dependencies": {\n    "bootstrap": "^4.6.0",\n'
        '    "react": "18.2.0"\n  }\n}\n',
        ".eslintrc.json": "{}\n",
        "src/app.ts": 'console.warn("deprecated");\nexport const viewerConfiguration = 1;\n',
        "src/legacy.js": 'console.warn("old");\n',
        ".vscode/extensions.json": '{"recommendations": []}\n',
        "styles/site.scss": "body { color: red; }\n",
    },
    "github.com/acme/shop": {
        "index.php": "<?php echo 'hi';\n",
        "composer.json": '{"require-dev": {"phpstan/phpstan": "^1.10"}}\n',
        "Gemfile": "source 'https://rubygems.org'\n",
        "app/models/user.rb": "class User\n  # dd-MMM-YYYY is wrong\nend\n",
    },
    "github.com/acme/blog": {
        "wp/index.php": "<?php // whitelist\n",
        "src/Main.java": 'class Main { String f = "dd-MMM-YYYY"; }\n',
        "pom.xml": "<project><artifactId>blog</artifactId></project>\n",
    },
    "github.com/acme/empty-docs": {"README.md": "nothing here\n"},
    "gitlab.com/other/tools": {
        "Cargo.toml": '[package]\nname = "tools"\n',
        "src/main.rs": 'fn main() { println!("Hello World"); }\n',
        "build.sh": "#!/bin/sh\npushd src\n",
        "native/fast.c": "int main(void) { return 0; }\n",
        "native/fast.C": "// C++ by its capital C\nclass Fast {};\n",
        "README.md": "# tools\nhello world\n",
        "notes/quotes.txt": 'they say "hi" twice\n',
    },
}
ACME = [name for name in sorted(REPOS) if name.startswith("github.com/acme/")]
INFRA, API, WEB, SHOP, BLOG, EMPTY = (
    f"github.com/acme/{n}" for n in ("infra", "api", "web", "shop", "blog", "empty-docs")
)
TOOLS = "gitlab.com/other/tools"

# query -> {repository: its matching files}; () is a match of the repository as such.
CASES: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    # Repositories by name.
    (r"repo:^github\.com/acme/ -repo:empty", {n: () for n in ACME if n != EMPTY}),
    ("repo:web OR repo:tools", {WEB: (), TOOLS: ()}),
    # lang: HCL (and the Terraform variables linguist counts as HCL), tag but NOT ServiceName.
    ("file:locals.tf$ lang:HCL tag not ServiceName", {INFRA: ("locals.tf",)}),
    ("lang:HCl aws_vpc count:100", {INFRA: ("main.tf",)}),
    ("lang:hcl region", {INFRA: ("prod.tfvars",)}),
    ("count:2 lang:terraform", {INFRA: ("locals.tf", "main.tf")}),
    # Dockerfiles by name, a regexp with groups and alternatives.
    (
        r"^FROM (\w+\/)?\w+:latest($|\s) file:Dockerfile patternType:regexp fork:yes",
        {INFRA: ("Dockerfile",)},
    ),
    ("lang:dockerfile make", {INFRA: ("Dockerfile",)}),
    # Go.
    (
        "lang:go gopkg.in/inconshreveable/log15.v2 -repo:sourcegraph/sourcegraph$",
        {API: ("main.go",)},
    ),
    ("lang:go interface{}", {API: ("main.go",)}),
    (r"lang:go /strings\.Replace\(.*-1\)/", {API: ("util/strings.go",)}),
    ("select:repo lang:go", {API: ()}),
    # OR: hoisted filters scope both words; parentheses say it outright.
    (
        "whitelist OR blacklist lang:markdown -file:vendor repo:acme",
        {API: ("docs/blacklist.md",), INFRA: ("README.md",)},
    ),
    (
        "(whitelist OR blacklist) -file:vendor",
        {API: ("docs/blacklist.md",), BLOG: ("wp/index.php",), INFRA: ("README.md",)},
    ),
    (
        "(repo:infra lang:hcl) OR (repo:shop lang:php)",
        {
            INFRA: ("locals.tf", "main.tf", "modules/app/locals.tf", "prod.tfvars"),
            SHOP: ("index.php",),
        },
    ),
    ("repo:empty-docs OR lang:rust", {EMPTY: (), TOOLS: ("src/main.rs",)}),
    ("lang:java OR lang:ruby", {BLOG: ("src/Main.java",), SHOP: ("Gemfile", "app/models/user.rb")}),
    ("hello AND world NOT vendor", {TOOLS: ("README.md", "src/main.rs")}),
    ("NOT file:\\.tf$ repo:infra", {INFRA: ("Dockerfile", "README.md", "prod.tfvars")}),
    # Repository predicates.
    (r"repo:has.path(.*\.php$) -repo:has.content(phpstan/phpstan)", {BLOG: ()}),
    (r"repo:has.path(\.php$)", {BLOG: (), SHOP: ()}),
    ("repo:has.file(path:package.json content:bootstrap)", {WEB: ()}),
    ('repo:has.file(path:composer\\.json content:"phpstan/phpstan")', {SHOP: ()}),
    (r"-repo:has.file(path:\.go$) repo:acme", {n: () for n in ACME if n != API}),
    ("repo:has.content(Hello World) lang:rust", {TOOLS: ("src/main.rs",)}),
    ("file:has.content(aws_vpc)", {INFRA: ("main.tf",)}),
    # Quoted strings: inside a regexp (as regexp text), and as literals with escapes.
    (
        'f:package.json "bootstrap": ".?4 patterntype:regexp -r:13k -r:ghe -r:gitlab',
        {WEB: ("package.json",)},
    ),
    ('\'"bootstrap": "^4\'', {WEB: ("package.json",)}),
    (r'"say \"hi\""', {TOOLS: ("notes/quotes.txt",)}),
    # case: yes/no/true/false.
    (
        "repo:acme dd-MMM-YYYY fork:yes patternType:regexp case:true",
        {BLOG: ("src/Main.java",), SHOP: ("app/models/user.rb",)},
    ),
    (
        "dd-MMM-YYYY case:no",
        {API: ("docs/dates.md",), BLOG: ("src/Main.java",), SHOP: ("app/models/user.rb",)},
    ),
    ('"Hello World" case:yes', {TOOLS: ("src/main.rs",)}),
    # Files by name and path.
    (r"file:^.eslintrc[\.js|\.json]?", {WEB: (".eslintrc.json",)}),
    (r"path:.vscode\/extensions.json$", {WEB: (".vscode/extensions.json",)}),
    ("file:docker-compose.yaml entrypoint: count:10", {API: ("docker-compose.yaml",)}),
    (r"lang:YAML r:^github\.com/acme/api$", {API: ("docker-compose.yaml",)}),
    # More languages: TypeScript, JavaScript, shell, Python, C and C++ (by the case of .c/.C).
    ("console.warn lang:typescript", {WEB: ("src/app.ts",)}),
    ("console.warn lang:javascript", {WEB: ("src/legacy.js",)}),
    ("lang:shell pushd", {TOOLS: ("build.sh",)}),
    ("lang:python print", {API: ("scripts/gen.py",)}),
    ("lang:c", {TOOLS: ("native/fast.c",)}),
    ("lang:c++", {TOOLS: ("native/fast.C",)}),
    ("lang:scss OR lang:xml", {BLOG: ("pom.xml",), WEB: ("styles/site.scss",)}),
]


@pytest.fixture
async def mirrored(db: Database, tmp_path: Path) -> tuple[Mirrors, list[RepoTarget]]:
    """REPOS registered and mirrored, each searched at its default branch's head."""
    hosting = Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))
    for name, files in REPOS.items():
        make_repo(tmp_path / "sources" / name, files)
        await hosting.add(str(tmp_path / "sources" / name), name=name)
    targets = []
    for repo in await hosting.registry.list():
        assert repo.head_commit is not None
        targets.append(RepoTarget(repo.name, repo.head_commit))
    return hosting.mirrors, targets


async def test_queries_of_real_specs_select_the_right_repositories_and_files(
    mirrored: tuple[Mirrors, list[RepoTarget]],
) -> None:
    mirrors, targets = mirrored
    assert len(CASES) >= 25
    wrong = []
    for text, expected in CASES:
        found = await search(parse_query(text), targets, mirrors)
        got = {match.name: match.paths for match in found}
        if got != expected:
            wrong.append(f"{text}\n    expected {expected}\n    got      {got}")
    assert not wrong, "\n".join(wrong)
