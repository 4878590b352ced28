"""Two versions of the portal, one page at a time: this checkout against a baseline commit, in lockstep.

On a machine whose speed drifts within minutes, separate runs of two versions are not comparable. Here each
version runs in its own process (the baseline in a temporary git worktree), both signed in as the benchmark's
reviewer through Django's test client, and the two take turns request by request, the first of each pair
alternating, so that whatever the machine does meets both alike. It prints each page's p25, p50 and p90 per
version. The database is the one bench/web.py seeds (run it once first, with the same --database):

    .venv/bin/python bench/web.py --scenario reviewers --faces 30000 --candidates 10000 --duration 5 --workers 4
    .venv/bin/python bench/lockstep.py --baseline 530caf6
    .venv/bin/python bench/lockstep.py --baseline HEAD~1 --loads 300 /admin/reviews/reviewitem/?items=all

With --without-templates, this checkout answers every page with an empty body instead of rendering its template:
against --baseline HEAD, what a page costs in its queries, checks and writes alone, next to the whole page, in one
run. That is the floor no template work can lower:

    .venv/bin/python bench/lockstep.py --baseline HEAD --without-templates
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["/healthz", "/admin/reviews/reviewitem/", "/admin/reviews/reviewitem/?items=all&o=-4", "candidate"]


def serve(args: argparse.Namespace) -> None:
    """The child: loads each path it reads on stdin and answers with the milliseconds it took. The portal's code
    comes from --code (the baseline's worktree or this checkout), the benchmark's settings from this checkout."""
    sys.path.insert(0, str(ROOT / "bench"))
    from web import environment_set

    environment_set(args)
    sys.path.insert(0, args.code)  # ahead of this checkout, which environment_set puts on the path
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from reviews.models import ReviewItem

    reviewer = get_user_model().objects.get(username="bench-review")
    # The item the reviewers scenario opens: the organisation's first pending one.
    candidate = (
        ReviewItem.objects.filter(case__reference__startswith="WEB-", outcome="pending")
        .order_by("id")
        .values_list("id", flat=True)
    )
    if args.without_templates:
        from django.template.response import SimpleTemplateResponse

        SimpleTemplateResponse.rendered_content = property(lambda response: "")
    client = Client()
    client.force_login(reviewer)
    answer, sys.stdout = sys.stdout, sys.stderr  # whatever the portal prints stays off the pipe
    for line in sys.stdin:
        path = line.strip()
        if path == "candidate":
            path = f"/admin/reviews/reviewitem/{candidate.first()}/change/"
        start = time.perf_counter()
        status = client.get(path).status_code
        answer.write(json.dumps([(time.perf_counter() - start) * 1e3, status]) + "\n")
        answer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*", default=PAGES, help="paths; 'candidate' is the first pending item")
    parser.add_argument("--baseline", default="HEAD~1", help="the commit to compare this checkout with")
    parser.add_argument("--loads", type=int, default=150, help="loads of each page by each version")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="server URL, no database")
    parser.add_argument("--database", default="portal_bench_web", help="seeded by bench/web.py")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--var-dir", default="/tmp/perfvar/bench-web")
    parser.add_argument(
        "--without-templates", action="store_true", help="this checkout answers every page with an empty body"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    with tempfile.TemporaryDirectory(prefix="lockstep-") as folder:
        worktree = Path(folder) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.baseline], check=True
        )
        try:
            this = "this checkout, no templates" if args.without_templates else "this checkout"
            compare(args, {f"baseline {args.baseline}": worktree, this: ROOT})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)


def compare(args: argparse.Namespace, roots: dict[str, Path]) -> None:
    options = [
        "--database",
        args.database,
        "--postgres",
        args.postgres,
        "--redis",
        args.redis,
        "--var-dir",
        args.var_dir,
    ]
    versions = {
        name: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--code",
                str(root),
                *options,
                *(["--without-templates"] if args.without_templates and root == ROOT else []),
            ],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        for name, root in roots.items()
    }

    def load(process: subprocess.Popen, path: str) -> float:
        process.stdin.write(path + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"a version stopped while loading {path}: run it alone to see why")
        elapsed, status = json.loads(line)
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        return elapsed

    print(f"{args.loads} loads of each page by each version, in turns; ms")
    print(f"{'page':45} {'version':28} {'p25':>7} {'p50':>7} {'p90':>7}")
    try:
        for path in args.pages:
            times: dict[str, list[float]] = {name: [] for name in versions}
            for process in versions.values():  # connections, caches, templates
                for _ in range(3):
                    load(process, path)
            order = list(versions.items())
            for turn in range(args.loads):
                for name, process in order if turn % 2 == 0 else reversed(order):
                    times[name].append(load(process, path))
            for name, values in times.items():
                values.sort()
                p25, p90 = values[len(values) // 4], values[int(0.9 * (len(values) - 1))]
                print(f"{path[:45]:45} {name:28} {p25:7.1f} {statistics.median(values):7.1f} {p90:7.1f}")
    finally:
        for process in versions.values():
            process.stdin.close()
            process.wait()


if __name__ == "__main__":
    main()
