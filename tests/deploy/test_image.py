"""The image without a container daemon: its build steps (deploy/build.sh, with the Dockerfile's environment)
run in a scratch copy of what the Dockerfile copies; compose.yaml, .env.example and the Dockerfile are read as
the tools would read them; the entrypoint and the health check run against a real server."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import scaled

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VOLUME = "/var/lib/lensweb"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_env() -> dict[str, str]:
    """What ARG (with its default) and ENV give the build steps."""
    env = {}
    for name, args in instructions():
        if name in ("ARG", "ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def copy_build_context(target: Path) -> None:
    """Copy what the Dockerfile's COPY lines copy (WORKDIR /app is `target`): only the named sources, less
    bytecode (.dockerignore keeps the rest of the repository, .env included, out of the context)."""
    for name, args in instructions():
        if name != "COPY":
            continue
        *sources, dest = shlex.split(args)
        for source in sources:
            src = REPO / source
            into = target / dest
            if src.is_dir():
                shutil.copytree(
                    src, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True
                )
            else:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into / src.name)


def scratch_venv(path: Path) -> Path:
    """A venv whose own site-packages receives the install, with the development venv's packages behind it
    (the dependencies; the image gets them from PyPI). A plain path line: the dev venv's editable lensweb
    finder (a .pth there) is not activated."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_development_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_images_install_and_collectstatic_steps_succeed(tmp_path):
    """The `project` and `static` steps as the Dockerfile RUNs them (same script, same environment); the
    `torch`, `demo-package` and `demo` steps download wheels or convert the demo model and are not run here
    (--no-deps --no-index: the dependencies come from the development venv)."""
    app = tmp_path / "app"
    copy_build_context(app)
    python = scratch_venv(tmp_path / "venv")
    env = {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **image_env(),
        "PYTHON": str(python),
        "PIP_INSTALL": f"{python} -m pip install --no-deps --no-build-isolation --no-index",
    }
    result = subprocess.run(
        ["sh", "deploy/build.sh", "project", "static"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )
    assert result.returncode == 0, f"build steps failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    installed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.distribution('lensweb').locate_file(''))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0 and str(tmp_path / "venv") in installed.stdout, installed
    static_root = (
        app / "staticfiles"
    )  # production's STATIC_ROOT: BASE_DIR/staticfiles, /app/staticfiles there
    for name in ("vendor/htmx.min.js", "vendor/ws.js", "css/app.css", "js/app.js", "results/results.js"):
        collected = static_root / name
        assert collected.is_file(), f"collectstatic did not write {name} into {static_root}"
        assert collected.read_bytes() == (REPO / "static" / name).read_bytes(), name
    assert (static_root / "admin" / "css" / "base.css").is_file(), "the admin's static files are missing"


def build_step_commands(*steps, **env) -> subprocess.CompletedProcess:
    """What a step would install: PIP_INSTALL=echo prints the installer's arguments instead."""
    return subprocess.run(
        ["sh", "deploy/build.sh", *steps],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PIP_INSTALL": "echo", **env},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    "build_args, installed",
    [
        ({}, "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"),
        ({"VARIANT": "cuda"}, "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"),
        (
            {"VARIANT": "cuda", "TORCH_SPEC": "torch==2.13.0 --index-url https://x.test/cu126"},
            "torch==2.13.0 --index-url https://x.test/cu126",
        ),
    ],
    ids=["cpu-default", "cuda", "spec-overrides"],
)
def test_torch_wheels_by_build_argument(build_args, installed):
    env = {k: v for k, v in image_env().items() if k in ("VARIANT", "TORCH_SPEC")} | build_args
    result = build_step_commands("torch", **env)
    assert result.returncode == 0 and result.stdout.strip() == installed, result


def test_an_unknown_variant_or_step_is_refused():
    assert build_step_commands("torch", VARIANT="rocm").returncode == 2
    assert "unknown build step" in build_step_commands("collectstatic").stderr


# --- compose.yaml ----------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_runs_web_workers_postgres_and_redis_with_health_checks():
    services = compose()["services"]
    assert set(services) >= {"web", "worker", "db", "redis"}
    assert services["db"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in str(services["db"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("web", "worker"):
        service = services[name]
        assert service["healthcheck"]["test"][:3] == ["CMD", "python", "deploy/healthcheck.py"], name
        assert (REPO / "deploy" / "healthcheck.py").is_file()
        for dependency in ("db", "redis"):
            assert service["depends_on"][dependency] == {"condition": "service_healthy"}, (name, dependency)
        env = service["environment"]
        assert env["LENSWEB_ENV"] == "production", name
        assert env["DATABASE_URL"].startswith("postgres://") and "@db:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:6379"), name
        assert f"models:{VOLUME}" in service["volumes"], f"{name} does not share the model cache volume"
        assert service["env_file"] == [{"path": ".env", "required": False}], name
    assert services["web"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]
    # The worker needs the schema, which the web container's entrypoint migrates.
    assert services["worker"]["depends_on"]["web"] == {"condition": "service_healthy"}
    assert "replicas" in services["worker"]["deploy"]
    assert "postgres-data:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert set(compose()["volumes"]) >= {"models", "postgres-data"}


def test_compose_demands_a_secret_key_and_a_demo_password_and_publishes_on_loopback():
    web = compose()["services"]["web"]
    env = web["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # compose stops, saying so, when it is missing
    assert env["LENSWEB_DEMO_PASSWORD"].startswith("${LENSWEB_DEMO_PASSWORD?")  # set; empty: no demo user
    # No proxy, no TLS in a first look: daphne faces the browser, plain HTTP, on loopback only.
    assert env["LENSWEB_BEHIND_PROXY"] == "${LENSWEB_BEHIND_PROXY:-false}"
    assert env["SECURE_SSL_REDIRECT"] == "${SECURE_SSL_REDIRECT:-false}"
    assert all(port.startswith("127.0.0.1:") for port in web["ports"]), web["ports"]


# --- .env.example: every setting the code reads ----------------------------------------------------------

READS = [
    re.compile(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"'),  # django-environ in the settings
    re.compile(r'\benviron(?:\.get)?[\[(]\s*"([A-Z][A-Z0-9_]+)"'),  # os.environ / a passed-in environ
    re.compile(r'\bgetenv\(\s*"([A-Z][A-Z0-9_]+)"'),
    re.compile(r'_env_\w+\(\s*"([A-Z][A-Z0-9_]+)"'),  # inference.limits
    re.compile(r'^\w*ENV\w* = "([A-Z][A-Z0-9_]+)"', re.MULTILINE),  # a constant naming the variable
]
NOT_SETTINGS = {
    "RATELIMIT_IP_META_KEY",  # read only to refuse the old name
    "PYTEST_VERSION",  # pytest's own
}


def settings_the_code_reads() -> set[str]:
    files = [*REPO.glob("lensweb/**/*.py"), *REPO.glob("inference/**/*.py"), REPO / "manage.py"]
    names = set()
    for path in files:
        text = path.read_text()
        for pattern in READS:
            names.update(pattern.findall(text))
    return names - NOT_SETTINGS


def test_env_example_lists_every_setting_the_code_reads():
    read = settings_the_code_reads()
    assert {"SECRET_KEY", "LENSWEB_MODEL_CACHE", "LENSWEB_ROWS_BUDGET", "LENSWEB_MAX_TOKENS", "PORT"} <= read
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    assert not read - listed, f".env.example misses {sorted(read - listed)}"


def test_env_example_sets_nothing_and_keeps_values_free_of_comments():
    """Copied as is, it changes no default; and django-environ reads `A=b  # note` as the value `b  # note`."""
    for line in (REPO / ".env.example").read_text().splitlines():
        assert not line or line.startswith("#"), line
        if re.match(r"^# [A-Z][A-Z0-9_]+=", line):
            assert " #" not in line, line


# --- the Dockerfile --------------------------------------------------------------------------------------


def test_the_image_runs_production_settings_as_a_user_with_a_health_check_and_a_volume():
    steps = instructions()
    env = image_env()
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    assert any(name == "RUN" and "useradd" in args and "--uid 10001" in args for name, args in steps)
    assert env["LENSWEB_ENV"] == "production"
    assert env["DJANGO_SETTINGS_MODULE"] == "lensweb.settings.production"
    assert not {"SECRET_KEY", "ALLOWED_HOSTS", "LENSWEB_BEHIND_PROXY"} & set(env), (
        "build-time values baked in"
    )
    health = [args for name, args in steps if name == "HEALTHCHECK"]
    assert len(health) == 1 and 'CMD ["python", "deploy/healthcheck.py"]' in health[0], health
    volumes = [args for name, args in steps if name == "VOLUME"]
    assert volumes == [f'["{VOLUME}"]'], volumes
    assert env["LENSWEB_MODEL_CACHE"].startswith(VOLUME + "/")
    assert env["DATABASE_URL"] == f"sqlite:///{VOLUME}/db.sqlite3"  # SQLite, when no DATABASE_URL is given
    # The build steps write what the volume starts with after the user switch, before VOLUME (later writes
    # to a volume path are discarded).
    order = [name for name, _ in steps]
    demo = next(
        i for i, (n, a) in enumerate(steps) if n == "RUN" and "build.sh demo" in a.replace(" demo-", " x-")
    )
    assert order.index("USER") < demo < order.index("VOLUME")
    assert [a for n, a in steps if n == "ENTRYPOINT"] == ['["sh", "deploy/entrypoint.sh"]']


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".env", ".venv", ".git", "*.sqlite3"} <= set(ignored)


# --- the entrypoint and the health check, for real ------------------------------------------------------


def load_healthcheck():
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "allowed", ["lens.example.org", ".example.org", "*", "", "lens.example.org,localhost", "[::1]"]
)
def test_the_probes_host_header_is_one_the_settings_allow(allowed):
    from django.http.request import validate_host

    host = load_healthcheck().probe_host(allowed)
    hosts = [h.strip() for h in allowed.split(",") if h.strip()] or ["127.0.0.1", "localhost", "[::1]"]
    assert validate_host(host, hosts), (host, hosts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_entrypoint_serves_production_on_plain_http_localhost(tmp_path):
    """compose's first look, without compose: production settings, no proxy, no redirect, the demo user
    with the operator's password; the health check (as the image runs it) passes, and `demo` logs in."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LENSWEB_", "SECURE_"))}
    for name in ("REDIS_URL", "PYTEST_VERSION", "ALLOWED_HOSTS"):
        env.pop(name, None)
    password = "a-first-look-" + os.urandom(6).hex()
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        LENSWEB_ENV="production",
        LENSWEB_ENV_FILE="",
        SECRET_KEY="test-" + os.urandom(24).hex(),
        ALLOWED_HOSTS="localhost,127.0.0.1",
        LENSWEB_BEHIND_PROXY="false",
        SECURE_SSL_REDIRECT="false",
        LENSWEB_DEMO_PASSWORD=password,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        HOST="127.0.0.1",
        PORT=str(port),
    )
    server = subprocess.Popen(
        ["sh", "deploy/entrypoint.sh", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + scaled(90)
        probe = None
        while time.monotonic() < deadline and server.poll() is None:
            probe = subprocess.run(
                [sys.executable, "deploy/healthcheck.py"], cwd=REPO, env=env, capture_output=True, text=True
            )
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        assert probe is not None and probe.returncode == 0, (
            f"the health check did not pass within {scaled(90):.0f} s: {probe and probe.stderr}"
        )
        login = subprocess.run(
            [sys.executable, "-c", LOGIN, str(port), password], env=env, capture_output=True, text=True
        )
        assert login.returncode == 0 and login.stdout.split() == ["200", "302", "/"], login
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=scaled(30))
    assert "Created user 'demo'" in output, output
    assert password not in output, "the operator's demo password was written to the log"


# A browser on http://localhost keeps Secure cookies (Chromium, Firefox); urllib's cookie jar does not, so the
# cookie is carried by hand. Plain HTTP: no redirect, CSRF passes on Origin, the session cookie comes back.
LOGIN = """
import re, sys, urllib.parse, urllib.request
port, password = sys.argv[1], sys.argv[2]
base = f"http://localhost:{port}"
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args): return None
opener = urllib.request.build_opener(NoRedirect)
page = opener.open(base + "/accounts/login/")
cookie = page.headers["Set-Cookie"].split(";")[0]
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode()).group(1)
form = urllib.parse.urlencode({"username": "demo", "password": password, "csrfmiddlewaretoken": token}).encode()
request = urllib.request.Request(base + "/accounts/login/", form, headers={"Cookie": cookie, "Origin": base})
try:
    opener.open(request)
    status, location = 200, ""
except urllib.error.HTTPError as answer:
    status, location = answer.code, answer.headers.get("Location")
print(page.status, status, location)
"""


WORKER = """
import django, sys
django.setup()
from django.core.management import call_command
from lensweb.analyses import services
from lensweb.analyses.models import WorkerRecord
call_command("migrate", verbosity=0)
if sys.argv[1] == "register":
    services.register_worker("test-channel")
else:
    WorkerRecord.objects.update(state=WorkerRecord.State.STOPPED)
"""


def test_the_worker_health_check_wants_a_live_worker_of_its_own_host(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LENSWEB_", "SECURE_"))}
    env.pop("REDIS_URL", None)
    env.update(
        LENSWEB_ENV="production",
        DJANGO_SETTINGS_MODULE="lensweb.settings.production",  # as the image sets it
        LENSWEB_ENV_FILE="",
        SECRET_KEY="test-" + os.urandom(24).hex(),
        ALLOWED_HOSTS="localhost",
        LENSWEB_BEHIND_PROXY="false",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(60)
        )

    assert run("-c", WORKER, "stop").returncode == 0  # migrated, no worker
    assert run("deploy/healthcheck.py", "worker").returncode == 1
    assert run("-c", WORKER, "register").returncode == 0
    assert run("deploy/healthcheck.py", "worker").returncode == 0, "a live worker on this host is healthy"
    assert run("-c", WORKER, "stop").returncode == 0
    assert run("deploy/healthcheck.py", "worker").returncode == 1, "a stopped worker is not"


def test_an_empty_demo_password_creates_no_demo_user(db, settings, django_user_model):
    """`LENSWEB_DEMO_PASSWORD=` in .env: production through compose, with no demo login at all."""
    from django.core.management import call_command

    settings.LENSWEB_DEMO_PASSWORD = ""
    call_command("ensure_demo_user")
    assert not django_user_model.objects.filter(username=settings.LENSWEB_DEMO_USERNAME).exists()
