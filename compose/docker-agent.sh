#!/bin/sh
# The Docker-backend agent of compose.yaml. It asks the host's engine (through the mounted
# socket) to start job containers, and the engine resolves every bind mount on the host: the
# job's folder and the agent's Python packages (which job containers import the SDK from) must
# be at the same path on the host as in this container. So the agent runs from
# $CAIRN_DOCKER_AGENT_DIR, a host folder mounted at the same path: its home (work folders,
# caches) lives there, and so does a copy of the image's virtualenv, made once per image.
#   usage (compose.yaml): sh docker-agent.sh agent --backend docker ARGUMENTS...
set -eu
dir="${CAIRN_DOCKER_AGENT_DIR:?set CAIRN_DOCKER_AGENT_DIR to a host folder mounted at the same path}"
if [ ! -w "$dir" ]; then
    echo "$dir is not writable by uid $(id -u): create it on the host, owned by 10001" >&2
    exit 1
fi
# one copy per image: named after the digest of what is installed
stamp=$(cat /opt/cairn/requirements.lock /opt/cairn/venv/lib/python3*/site-packages/cairn-*.dist-info/RECORD \
    | sha256sum | cut -c1-16)
venv="$dir/venv-$stamp"
if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv.part"
    cp -a /opt/cairn/venv "$venv.part"
    mv "$venv.part" "$venv"
fi
export CAIRN_HOME="$dir/home"
mkdir -p "$CAIRN_HOME"
cd "$dir"
# the script by path (its shebang names the image's folder, which the host does not have)
exec "$venv/bin/python" "$venv/bin/cairn" "$@"
