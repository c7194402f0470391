#!/bin/sh
# Customize hook of the `code-interpreter-v1` template, run by mmdebstrap on
# the host with the new root filesystem as $1, after base's hook (this file
# holds only what the code interpreter adds to `base`).
#
# Where each kernel comes from (all from package registries, pinned):
#   python3  Debian's python3-ipykernel
#   bash     bash_kernel, PyPI
#   deno     Deno (JavaScript and TypeScript), npm @deno/linux-<arch>-glibc
#   ir       Debian's r-cran-irkernel (R 4.2)
#   java     JJava, PyPI `jjava` (a JShell kernel), on Debian's OpenJDK 17
set -eu
root="$1"

in_root() {
    chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}

kernels=/usr/local/share/jupyter/kernels

# --- Downloads. pip and npm need name resolution and the host's trust store
# (a TLS-inspecting egress proxy) for these steps only: the image keeps the
# empty resolv.conf that base's hook left, which the runtime fills per
# sandbox.
restore() {
    : > "$root/etc/resolv.conf"
    rm -rf "$root/tmp/host-ca.crt" "$root/tmp/requirements.txt" "$root/tmp/npm"
}
trap restore EXIT
cat /etc/resolv.conf > "$root/etc/resolv.conf"
host_ca="$root/etc/ssl/certs/ca-certificates.crt"
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -r "$bundle" ]; then host_ca="$bundle"; break; fi
done
cat "$host_ca" > "$root/tmp/host-ca.crt"
# A proxy or package index the host is told to use applies to these steps
# too; the hashes below keep the result the same whatever index serves it.
set --
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
    PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST \
    npm_config_registry NPM_CONFIG_REGISTRY; do
    eval "val=\${$var:-}"
    if [ -n "$val" ]; then set -- "$@" "$var=$val"; fi
done

# --- From PyPI, pinned by version and hash (one hash per wheel a supported
# architecture needs), binary wheels only; dependencies come from Debian
# (packages.txt) or are listed here, hence --no-deps.
#   bash_kernel        the bash kernel (Debian has no package)
#   jjava              the Java kernel: its jar and kernelspec
#   matplotlib         3.10: e2b-charts needs 3.8+, bookworm has 3.6
#   e2b-charts         E2B's chart extractor (result.chart), with pydantic 2
#                      (bookworm has 1.10) and what pydantic needs
cat > "$root/tmp/requirements.txt" <<'REQ'
bash_kernel==0.10.0 --hash=sha256:da28513230f5307c7a49e87352366304dc52b66faa207d6caed1b2bdec03c1fa
jjava==1.0a8 --hash=sha256:b86ddf2eee6037a33a0adc2ac2f318a94638f42eefaeeeb13db381587e5f2a69
matplotlib==3.10.9 \
    --hash=sha256:8e436d155fa8a3399dc62683f8f5d0e2e50d25d0144a73edd73f82eec8f4abfb \
    --hash=sha256:56fc0bd271b00025c6edfdc7c2dcd247372c8e1544971d62e1dc7c17367e8bf9
e2b-charts==1.0.0 --hash=sha256:c5a9ae62bd33a3cba0f7efd0fe10938f2909bf948e54029bb7b67c0fd8ca782c
pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc
pydantic-core==2.50.5 \
    --hash=sha256:488319076ec92908b91fc6265ce761f1d78748f69f85518564fd16bf333e1b70 \
    --hash=sha256:ba2b34529984a8e3cb1bc62a7687617722695a2cb4e57958de32a0eba128a07a
annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39
REQ
in_root "$@" PIP_CERT=/tmp/host-ca.crt \
    python3 -m pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: \
    --disable-pip-version-check --no-input --root-user-action=ignore \
    -r /tmp/requirements.txt

# --- Deno from npm: the registry publishes each platform's binary as a
# package of its own. The tarball is checked against the pinned integrity
# (sha512) before anything of it is used.
deno_version=2.9.6
case "$(in_root dpkg --print-architecture)" in
    amd64)
        deno_package=@deno/linux-x64-glibc
        deno_integrity=sha512-3md4TKLCuzsLDmfOoC5KN7NAZaxSVkMgm64vg6foD00JBADCpYS2/5QqXfzgnP5ZQz3iLP9vBQJtEgc116OAoQ==
        ;;
    arm64)
        deno_package=@deno/linux-arm64-glibc
        deno_integrity=sha512-poqhoH9B3nYloigEMPT5t8HY+wBeiuea1An5Q7fqgJzP0SYmWsoS/oUnWO/pEiA4ofzIBy1Elt/in58xKtxEoQ==
        ;;
    *)
        echo "no Deno build on npm for $(in_root dpkg --print-architecture)" >&2
        exit 1
        ;;
esac
mkdir -p "$root/tmp/npm"
in_root "$@" npm_config_cafile=/tmp/host-ca.crt npm_config_cache=/tmp/npm/cache \
    npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false \
    npm pack --silent --pack-destination /tmp/npm "$deno_package@$deno_version" >/dev/null
tarball="$(ls "$root"/tmp/npm/*.tgz)"
in_root python3 - "/tmp/npm/$(basename "$tarball")" "$deno_integrity" <<'PY'
import base64, hashlib, sys
path, expected = sys.argv[1:]
with open(path, "rb") as f:
    got = "sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode()
if got != expected:
    raise SystemExit(f"{path}: integrity {got}, expected {expected}")
PY
tar -xzf "$tarball" -C "$root/tmp/npm" package/deno
install -m 0755 "$root/tmp/npm/package/deno" "$root/usr/local/bin/deno"
restore
trap - EXIT

# --- Kernelspecs, system-wide under /usr/local/share/jupyter/kernels, which
# Jupyter (and the interpreter server) prefer to /usr/share's. The server
# talks to ipykernel-based kernels over Unix sockets
# (`metadata.sandbar.transport`), to the others over loopback TCP.
in_root python3 -m ipykernel install --prefix /usr/local >/dev/null
in_root python3 -m bash_kernel.install --prefix /usr/local >/dev/null
in_root python3 - <<'PY'
import json

kernels = "/usr/local/share/jupyter/kernels"


def update(name, **fields):
    path = f"{kernels}/{name}/kernel.json"
    with open(path) as f:
        spec = json.load(f)
    spec.update(fields)
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")


for name in ("python3", "bash"):
    with open(f"{kernels}/{name}/kernel.json") as f:
        metadata = json.load(f).get("metadata", {})
    update(name, metadata={**metadata, "sandbar": {"transport": "ipc"}})

# JJava's own launcher starts a second JVM to add one option: the options go
# here instead, one JVM per kernel. java.lang and java.util are opened so
# that per-call env vars can change the environment (see the interpreter's
# envvars.rs). The JVM cannot see the sandbox's memory limit (no cgroup
# filesystem inside), so it would size its young generation for the host's
# memory and hold ~60 MiB more from the first cells: a small initial heap
# keeps an idle kernel near 100 MiB; it grows on demand. The serial
# collector and the client compiler start faster and hold less memory, which
# a notebook values over peak speed.
update(
    "java",
    argv=[
        "/usr/bin/java",
        "--add-opens", "jdk.jshell/jdk.jshell=ALL-UNNAMED",
        "--add-opens", "java.base/java.lang=ALL-UNNAMED",
        "--add-opens", "java.base/java.util=ALL-UNNAMED",
        "-Xms32m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-jar", "{resource_dir}/jjava.jar",
        "{connection_file}",
    ],
    display_name="Java (JJava)",
    interrupt_mode="message",
)
PY
rm -f "$root$kernels/java/jjava-launcher.jar"
# Deno's kernel takes SIGINT as a request to exit: interrupts go as
# interrupt_request messages. It sometimes publishes a cell's result just
# after reporting the cell done (well under a millisecond after, measured
# under load): a run without a result waits 30 ms more for one
# (`late_result_ms`). No colours in tracebacks, no update checks.
mkdir -p "$root$kernels/deno"
cat > "$root$kernels/deno/kernel.json" <<'JSON'
{
 "argv": ["/usr/local/bin/deno", "jupyter", "--kernel", "--conn", "{connection_file}"],
 "display_name": "Deno (JavaScript and TypeScript)",
 "language": "typescript",
 "interrupt_mode": "message",
 "env": {"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "DENO_NO_PROMPT": "1"},
 "metadata": {"sandbar": {"late_result_ms": 30}}
}
JSON

# --- IPython kernel defaults. Results are read by programs through the SDKs,
# not at a terminal: no ANSI colours in tracebacks, no "..." in long lists.
mkdir -p "$root/etc/ipython/startup"
cat > "$root/etc/ipython/ipython_kernel_config.py" <<'PY'
# System-wide configuration of the IPython kernels of sandbar's
# code-interpreter template. (The display hooks are in
# /etc/ipython/startup, which IPython runs for every profile.)
c = get_config()  # noqa: F821 (provided by IPython when it loads this file)

# Tracebacks reach SDK clients as text, where colour codes would be noise.
c.InteractiveShell.colors = "NoColor"
# text/plain results are read by programs: show sequences whole.
c.PlainTextFormatter.max_seq_length = 0
PY

cat > "$root/etc/ipython/startup/50-e2b-data.py" <<'PY'
# Adds the `e2b/data` representation of pandas DataFrames to every IPython
# kernel: the columns as lists (`to_dict(orient="list")`), in JSON terms,
# which the code-interpreter SDKs hand back as a result's `data`.
#
# The formatter is registered by type *name*, so pandas is never imported
# here: a kernel that does not use pandas does not pay for importing it.


def _sandbar_register_e2b_data():
    import datetime
    import math
    import sys
    import warnings

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    if shell is None:
        return

    class E2BDataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict,)

    def plain(value):
        """A JSON-representable equivalent of one cell."""
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        pandas = sys.modules.get("pandas")
        if pandas is not None:
            if value is pandas.NaT or value is pandas.NA:
                return None
            if isinstance(value, pandas.Timedelta):
                return value.isoformat()
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        if isinstance(value, datetime.timedelta):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        # numpy scalars (np.int64, np.bool_, np.datetime64, ...)
        if hasattr(value, "dtype") and hasattr(value, "item"):
            try:
                item = value.item()
            except (TypeError, ValueError):
                return str(value)
            if type(item) is not type(value):
                return plain(item)
        return str(value)

    def dataframe_to_e2b_data(df):
        with warnings.catch_warnings():
            # Duplicate column names: the last one wins, without a warning
            # in the user's output for a representation they did not ask for.
            warnings.simplefilter("ignore")
            columns = df.to_dict(orient="list")
        return {str(name): [plain(v) for v in values] for name, values in columns.items()}

    formatter = E2BDataFormatter(parent=shell.display_formatter)
    formatter.for_type_by_name("pandas.core.frame", "DataFrame", dataframe_to_e2b_data)
    shell.display_formatter.formatters[formatter.format_type] = formatter


_sandbar_register_e2b_data()
del _sandbar_register_e2b_data
PY

cat > "$root/etc/ipython/startup/60-e2b-display.py" <<'PY'
# Display hooks E2B's code-interpreter template gives every IPython kernel,
# written for sandbar:
#
# - `e2b/chart`: a matplotlib figure's data (type, title, axes, elements),
#   extracted by the `e2b-charts` package, beside its PNG, which the SDKs
#   hand back as a result's `chart`;
# - a PIL image saved to a file is also shown as a result of the cell;
# - `Image.show()` displays in the notebook instead of looking for a viewer.
#
# Nothing is imported until user code imports it: the formatter is
# registered by type name, and PIL is patched when it is first imported.


def _sandbar_register_displays():
    import functools
    import importlib.abc
    import math
    import os
    import sys
    import warnings

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    # Once per kernel, even if a profile's exec_files lists this file too.
    if shell is None or getattr(shell, "_sandbar_displays", False):
        return
    shell._sandbar_displays = True

    def plain(value):
        """JSON terms for what the chart extractor returns (numpy scalars included)."""
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "item") and hasattr(value, "dtype"):
            return plain(value.item())
        if hasattr(value, "value") and isinstance(getattr(value, "value"), str):
            return value.value  # an enum member
        return str(value)

    def figure_to_chart(figure):
        try:
            from e2b_charts import chart_figure_to_dict
        except ImportError:
            return None
        # The extractor's pydantic models warn about numpy values they
        # serialize anyway: not the user's output.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                chart = chart_figure_to_dict(figure)
            except Exception:  # a figure the extractor does not know: PNG only
                return None
        return plain(chart) or None

    class E2BChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            # Figures are recognised here rather than registered by type:
            # matplotlib's inline backend removes every formatter's Figure
            # printer when it sets up its own.
            figure = sys.modules.get("matplotlib.figure")
            if figure is not None and isinstance(obj, figure.Figure):
                return figure_to_chart(obj)
            return super().__call__(obj)

    chart_formatter = E2BChartFormatter(parent=shell.display_formatter)
    shell.display_formatter.formatters[chart_formatter.format_type] = chart_formatter

    def show_saved_images(image_module):
        original = image_module.Image.save
        if getattr(original, "_sandbar_shows", False):
            return

        @functools.wraps(original)
        def save(self, fp, format=None, **params):
            result = original(self, fp, format, **params)
            # To a named file (not a buffer), by the user's code: the cell
            # shows what it saved. matplotlib writes PNGs through PIL, and
            # shows the figure itself.
            caller = sys._getframe(1).f_globals.get("__name__") or ""
            if isinstance(fp, (str, bytes, os.PathLike)) and not caller.startswith("matplotlib"):
                from IPython.display import display

                display(self)
            return result

        save._sandbar_shows = True
        image_module.Image.save = save

    def show_in_the_notebook(imageshow):
        # There is no screen: IPython's viewer first, before any desktop one.
        viewer = getattr(imageshow, "IPythonViewer", None)
        if viewer is not None:
            imageshow.register(viewer, order=-1)

    hooks = {"PIL.Image": show_saved_images, "PIL.ImageShow": show_in_the_notebook}

    class AfterImport(importlib.abc.MetaPathFinder):
        """Runs a hook on a module once it is imported, without importing it first."""

        def find_spec(self, fullname, path, target=None):
            hook = hooks.get(fullname)
            if hook is None:
                return None
            for finder in sys.meta_path:
                if isinstance(finder, AfterImport) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
            loader = spec.loader
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            exec_module = loader.exec_module

            def exec_then_hook(module):
                exec_module(module)
                hooks.pop(fullname, None)
                if not hooks and finder_ in sys.meta_path:
                    sys.meta_path.remove(finder_)
                hook(module)

            loader.exec_module = exec_then_hook
            return spec

    for name in list(hooks):
        module = sys.modules.get(name)
        if module is not None:
            hooks.pop(name)(module)
    finder_ = AfterImport()
    if hooks:
        sys.meta_path.insert(0, finder_)


_sandbar_register_displays()
del _sandbar_register_displays
PY

# --- Matplotlib. ipykernel makes the inline backend the default (through
# MPLBACKEND when it is unset), so figures come back as image/png (and
# e2b/chart). Building the font cache takes seconds: do it now, for root and
# for `user`, rather than on every sandbox's first plot.
in_root python3 -c 'import matplotlib.pyplot'
chroot --userspec=1000:1000 "$root" env -i PATH=/usr/bin:/bin HOME=/home/user \
    LANG=C.UTF-8 python3 -c 'import matplotlib.pyplot'

# --- The toolchain stays out unless chosen (see packages.txt).
if [ -e "$root/usr/share/doc/python3-pythran" ]; then
    echo "python3-pythran (g++, Boost) was pulled in: a dependency chose python3-scipy" >&2
    exit 1
fi
if [ -e "$root/usr/share/doc/python3-matplotlib" ]; then
    echo "Debian's python3-matplotlib was pulled in: it would shadow parts of the wheel's" >&2
    exit 1
fi

# --- Check what the interpreter server relies on, so a broken image fails
# the build instead of the first runCode.
in_root python3 - <<'PY'
import os
import shutil

from jupyter_client.kernelspec import KernelSpecManager

specs = KernelSpecManager().find_kernel_specs()
for name in ("python3", "bash", "deno", "ir", "java"):
    if name not in specs:
        raise SystemExit(f"kernelspec {name} not found (found: {sorted(specs)})")
    argv = KernelSpecManager().get_kernel_spec(name).argv
    if not (os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)) and not shutil.which(argv[0]):
        raise SystemExit(f"kernelspec {name}: {argv[0]} is not an executable")
    if "{connection_file}" not in argv:
        raise SystemExit(f"kernelspec {name}: argv {argv} takes no connection file")
if not os.path.isfile("/usr/local/share/jupyter/kernels/java/jjava.jar"):
    raise SystemExit("jjava.jar is missing")
import bash_kernel, e2b_charts, filetype, ipykernel, matplotlib, numpy, pandas, pexpect, PIL  # noqa: E401,F401

# The chart extractor works with these versions of matplotlib and numpy.
matplotlib.use("agg")
import matplotlib.pyplot as plt

figure, axes = plt.subplots()
axes.bar(["a", "b"], [1, 2])
chart = e2b_charts.chart_figure_to_dict(figure)
if chart.get("type") != "bar" or len(chart.get("elements", [])) != 2:
    raise SystemExit(f"e2b-charts extracted {chart} from a bar chart")
PY
in_root deno --version >/dev/null
in_root java -version 2>/dev/null
in_root R --slave -e 'library(IRkernel)'

# Nothing of the checks above stays behind. (Not /tmp as a whole: mmdebstrap
# keeps its apt configuration there until the end of the build.)
rm -rf "$root/root/.ipython" "$root/home/user/.ipython" "$root/root/.cache/deno"
