#!/bin/sh
# Customize hook of the `code-interpreter-v1` template, run by mmdebstrap on
# the host with the new root filesystem as $1, after base's hook (this file
# holds only what the code interpreter adds to `base`).
set -eu
root="$1"

in_root() {
    chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 "$@"
}

# --- bash_kernel from PyPI (Debian has no package), pinned by version and
# hash; its dependencies come from Debian (packages.txt), hence --no-deps.
# pip needs name resolution and the host's trust store (a TLS-inspecting
# egress proxy) for this step only: the image keeps the empty resolv.conf that
# base's hook left, which the runtime fills per sandbox.
restore() {
    : > "$root/etc/resolv.conf"
    rm -f "$root/tmp/host-ca.crt" "$root/tmp/requirements.txt"
}
trap restore EXIT
cat /etc/resolv.conf > "$root/etc/resolv.conf"
host_ca="$root/etc/ssl/certs/ca-certificates.crt"
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -r "$bundle" ]; then host_ca="$bundle"; break; fi
done
cat "$host_ca" > "$root/tmp/host-ca.crt"
cat > "$root/tmp/requirements.txt" <<'REQ'
bash_kernel==0.10.0 --hash=sha256:da28513230f5307c7a49e87352366304dc52b66faa207d6caed1b2bdec03c1fa
REQ
# A proxy or package index the host is told to use applies to this step too;
# the hash above keeps the result the same whatever index serves it.
set --
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
    PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    eval "val=\${$var:-}"
    if [ -n "$val" ]; then set -- "$@" "$var=$val"; fi
done
in_root "$@" PIP_CERT=/tmp/host-ca.crt \
    python3 -m pip install --no-cache-dir --no-deps --require-hashes \
    --disable-pip-version-check --no-input --root-user-action=ignore \
    -r /tmp/requirements.txt
restore
trap - EXIT

# --- Kernelspecs, system-wide, where Jupyter (and the interpreter server)
# look: /usr/share/jupyter/kernels (python3, from Debian's ipykernel) and
# /usr/local/share/jupyter/kernels (bash).
if [ ! -f "$root/usr/share/jupyter/kernels/python3/kernel.json" ]; then
    in_root python3 -m ipykernel install --prefix /usr/local >/dev/null
fi
in_root python3 -m bash_kernel.install --prefix /usr/local >/dev/null

# --- IPython kernel defaults. Results are read by programs through the SDKs,
# not at a terminal: no ANSI colours in tracebacks, no "..." in long lists.
mkdir -p "$root/etc/ipython/startup"
cat > "$root/etc/ipython/ipython_kernel_config.py" <<'PY'
# System-wide configuration of the IPython kernels of sandbar's
# code-interpreter template.
c = get_config()  # noqa: F821 (provided by IPython when it loads this file)

# Tracebacks reach SDK clients as text, where colour codes would be noise.
c.InteractiveShell.colors = "NoColor"
# text/plain results are read by programs: show sequences whole.
c.PlainTextFormatter.max_seq_length = 0

# IPython has no system-wide startup directory, only per-profile ones.
c.InteractiveShellApp.exec_files = ["/etc/ipython/startup/50-e2b-data.py"]
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

# --- Matplotlib. ipykernel makes the inline backend the default (through
# MPLBACKEND when it is unset), so figures come back as image/png. Building
# the font cache takes seconds: do it now, for root and for `user`, rather
# than on every sandbox's first plot.
in_root python3 -c 'import matplotlib.pyplot'
chroot --userspec=1000:1000 "$root" env -i PATH=/usr/bin:/bin HOME=/home/user \
    LANG=C.UTF-8 python3 -c 'import matplotlib.pyplot'

# --- The toolchain stays out unless chosen (see packages.txt).
if [ -e "$root/usr/share/doc/python3-pythran" ]; then
    echo "python3-pythran (g++, Boost) was pulled in: a dependency chose python3-scipy" >&2
    exit 1
fi

# --- Check what the interpreter server relies on, so a broken image fails
# the build instead of the first runCode.
in_root python3 - <<'PY'
import os
import shutil

from jupyter_client.kernelspec import KernelSpecManager

specs = KernelSpecManager().find_kernel_specs()
for name in ("python3", "bash"):
    if name not in specs:
        raise SystemExit(f"kernelspec {name} not found (found: {sorted(specs)})")
    argv = KernelSpecManager().get_kernel_spec(name).argv
    if not (os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)) and not shutil.which(argv[0]):
        raise SystemExit(f"kernelspec {name}: {argv[0]} is not an executable")
    if "{connection_file}" not in argv:
        raise SystemExit(f"kernelspec {name}: argv {argv} takes no connection file")
import bash_kernel, filetype, ipykernel, matplotlib, numpy, pandas, pexpect, PIL  # noqa: E401,F401
PY

# Nothing of the checks above stays behind. (Not /tmp as a whole: mmdebstrap
# keeps its apt configuration there until the end of the build.)
rm -rf "$root/root/.ipython" "$root/home/user/.ipython"
